// Our driver for graphile-worker in `cargo xtask bench queue` (see README.md, "Benchmarks").
//
//   node driver.mjs migrate --database-url URL
//   node driver.mjs work    --database-url URL [--concurrency 24] [--local-queue 500]
//   node driver.mjs produce --database-url URL --tasks N --producers P --mode single|batch
//                           [--batch-size 1000]
//
// The worker uses the settings of graphile-worker's own performance test: 24 concurrent jobs, a
// pool of 25 connections, a local queue of 500 jobs refetched after 10 ms, and completions
// batched (`completeJobBatchDelay: 0`). Its one task, `noop`, only records the job's payload id.
//
// The protocol with the Rust load driver (tests/src/bin/queue_bench) is line-based: `work` and
// `produce` print `READY` once connected; `produce` starts submitting when it reads `GO` on stdin
// and prints `SUBMITTED <count>` when done; `work` stops when stdin reaches its end (or reads
// `STOP`) and prints `HANDLED <id>,<id>,...` with every payload id its task saw, duplicates
// included, so the caller can check that each job ran exactly once.
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { Logger, makeWorkerUtils, run, runMigrations } from "graphile-worker";

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    "database-url": { type: "string" },
    concurrency: { type: "string", default: "24" },
    "local-queue": { type: "string", default: "500" },
    tasks: { type: "string", default: "0" },
    producers: { type: "string", default: "16" },
    mode: { type: "string", default: "single" },
    "batch-size": { type: "string", default: "1000" },
  },
});
const role = positionals[0];
const connectionString = values["database-url"];
if (!connectionString) {
  throw new Error("--database-url is required");
}
const number = (name) => {
  const value = Number.parseInt(values[name], 10);
  if (!Number.isInteger(value) || value < 0) {
    throw new Error(`--${name} must be a whole number, not ${values[name]}`);
  }
  return value;
};

// Resolves at the first stdin line equal to `word`, or at the end of stdin.
function stdinSays(word) {
  return new Promise((resolve) => {
    const lines = createInterface({ input: process.stdin });
    lines.on("line", (line) => {
      if (line.trim() === word) {
        lines.close();
        resolve();
      }
    });
    lines.on("close", resolve);
  });
}

// Warnings and errors only, on stderr: a line per job would cost more than the job.
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") {
    console.error(`graphile-worker ${level}: ${message}`);
  }
});

async function work() {
  const concurrency = number("concurrency");
  const handled = [];
  const runner = await run({
    noHandleSignals: true,
    logger,
    taskList: {
      noop: async (payload) => {
        handled.push(payload.id);
      },
    },
    preset: {
      worker: {
        connectionString,
        concurrentJobs: concurrency,
        maxPoolSize: concurrency + 1,
        localQueue: {
          size: number("local-queue"),
          refetchDelay: { durationMs: 10 },
        },
        completeJobBatchDelay: 0,
        failJobBatchDelay: 0,
      },
    },
  });
  console.log("READY");
  await stdinSays("STOP");
  await runner.stop();
  await runner.promise;
  console.log(`HANDLED ${handled.join(",")}`);
}

async function produce() {
  const tasks = number("tasks");
  const producers = Math.max(1, number("producers"));
  const batchSize = Math.max(1, number("batch-size"));
  const single = values.mode === "single";
  if (!single && values.mode !== "batch") {
    throw new Error(`--mode is single or batch, not ${values.mode}`);
  }
  const utils = await makeWorkerUtils({
    connectionString,
    maxPoolSize: producers,
    logger,
  });
  // Open the connections before the clock starts, as the other systems' producers do.
  await Promise.all(
    Array.from({ length: producers }, () => utils.withPgClient((c) => c.query("select 1"))),
  );
  console.log("READY");
  await stdinSays("GO");
  let next = 0;
  let submitted = 0;
  const producer = async () => {
    while (next < tasks) {
      if (single) {
        const id = next++;
        await utils.addJob("noop", { id });
        submitted += 1;
      } else {
        const start = next;
        const end = Math.min(tasks, start + batchSize);
        next = end;
        const specs = [];
        for (let id = start; id < end; id++) {
          specs.push({ identifier: "noop", payload: { id } });
        }
        await utils.addJobs(specs);
        submitted += specs.length;
      }
    }
  };
  await Promise.all(Array.from({ length: producers }, producer));
  await utils.release();
  console.log(`SUBMITTED ${submitted}`);
}

async function main() {
  switch (role) {
    case "migrate":
      await runMigrations({ connectionString, logger });
      break;
    case "work":
      await work();
      break;
    case "produce":
      await produce();
      break;
    default:
      throw new Error(`unknown role ${role}: migrate, work or produce`);
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
