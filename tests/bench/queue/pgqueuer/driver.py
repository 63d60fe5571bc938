"""Our driver for pgqueuer in `cargo xtask bench queue` (see README.md, "Benchmarks").

    python driver.py install --database-url URL
    python driver.py work    --database-url URL [--consumers 5] [--batch-size 10]
    python driver.py produce --database-url URL --tasks N --producers P --mode single|batch
                             [--batch-size 1000]

The worker runs `--consumers` queue managers in one process, each on its own asyncpg connection
(`QueueManager(Queries(AsyncpgDriver(conn)))`, as pgqueuer 1.6 wants it) and dequeuing
`--batch-size` jobs at a time: the defaults of pgqueuer's own benchmark tool (5 dequeue tasks,
batch size 10). Its one entrypoint, `noop`, only records the job's payload id.

The protocol with the Rust load driver (tests/src/bin/queue_bench) is line-based: `work` and
`produce` print `READY` once connected; `produce` starts submitting when it reads `GO` on stdin
and prints `SUBMITTED <count>` when done; `work` stops when stdin reaches its end (or reads
`STOP`) and prints `HANDLED <id>,<id>,...` with every payload id its entrypoint saw, duplicates
included, so the caller can check that each job ran exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncpg
from pgqueuer import AsyncpgDriver, QueueManager
from pgqueuer.models import Job
from pgqueuer.queries import Queries


async def stdin_says(word: str) -> None:
    """Returns at the first stdin line equal to `word`, or at the end of stdin."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == word:
            return


async def install(url: str) -> None:
    connection = await asyncpg.connect(dsn=url)
    try:
        await Queries(AsyncpgDriver(connection)).install()
    finally:
        await connection.close()


async def work(url: str, consumers: int, batch_size: int) -> None:
    handled: list[int] = []
    managers: list[QueueManager] = []
    for _ in range(consumers):
        manager = QueueManager(Queries(AsyncpgDriver(await asyncpg.connect(dsn=url))))

        @manager.entrypoint("noop")
        async def noop(job: Job) -> None:
            handled.append(int(job.payload or b"-1"))

        managers.append(manager)
    running = [asyncio.create_task(m.run(batch_size=batch_size)) for m in managers]
    # Let every manager check the schema and start listening before the clock starts.
    await asyncio.sleep(0.5)
    for task in running:
        if task.done():
            task.result()
    print("READY", flush=True)
    await stdin_says("STOP")
    for manager in managers:
        manager.shutdown.set()
    await asyncio.gather(*running)
    print("HANDLED " + ",".join(map(str, handled)), flush=True)


async def produce(url: str, tasks: int, producers: int, mode: str, batch_size: int) -> None:
    if mode not in ("single", "batch"):
        raise SystemExit(f"--mode is single or batch, not {mode}")
    connections = [await asyncpg.connect(dsn=url) for _ in range(max(1, producers))]
    queries = [Queries(AsyncpgDriver(c)) for c in connections]
    print("READY", flush=True)
    await stdin_says("GO")
    next_id = 0
    submitted = 0

    async def producer(q: Queries) -> None:
        nonlocal next_id, submitted
        while next_id < tasks:
            if mode == "single":
                job = next_id
                next_id += 1
                await q.enqueue("noop", str(job).encode())
                submitted += 1
            else:
                start = next_id
                end = min(tasks, start + batch_size)
                next_id = end
                count = end - start
                await q.enqueue(
                    ["noop"] * count,
                    [str(job).encode() for job in range(start, end)],
                    [0] * count,
                )
                submitted += count

    await asyncio.gather(*(producer(q) for q in queries))
    for connection in connections:
        await connection.close()
    print(f"SUBMITTED {submitted}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["install", "work", "produce"])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--consumers", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=0)
    parser.add_argument("--producers", type=int, default=16)
    parser.add_argument("--mode", default="single")
    parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args()
    if args.role == "install":
        asyncio.run(install(args.database_url))
    elif args.role == "work":
        asyncio.run(work(args.database_url, args.consumers, args.batch_size or 10))
    else:
        asyncio.run(
            produce(
                args.database_url, args.tasks, args.producers, args.mode, args.batch_size or 1000
            )
        )


if __name__ == "__main__":
    main()
