//! The peers' runs: our drivers for graphile-worker (Node.js) and pgqueuer (Python), each in a
//! database of its own, spoken to line by line (see `tests/bench/queue/*/driver.*`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::Args;
use crate::report::Outcome;
use crate::scratch;

/// How to run one peer.
pub struct Peer {
    pub name: &'static str,
    /// The program and the arguments before the role (`node driver.mjs`, `python driver.py`).
    program: PathBuf,
    prefix: Vec<String>,
    /// The role that creates the schema.
    setup_role: &'static str,
    /// Worker processes, and arguments for each.
    processes: u64,
    worker_args: Vec<String>,
    /// A query that is true while any job is left in the queue.
    jobs_left: &'static str,
    /// What the `RESULT` line says about the settings.
    settings: String,
}

impl Peer {
    /// graphile-worker with the settings of its performance test (see `driver.mjs`).
    pub fn graphile(args: &Args) -> Option<Self> {
        let dir = args.graphile_dir.as_ref()?;
        Some(Self {
            name: "graphile-worker",
            program: args.node.clone(),
            prefix: vec![dir.join("driver.mjs").display().to_string()],
            setup_role: "migrate",
            processes: args.graphile_processes.max(1),
            worker_args: vec![
                "--concurrency".into(),
                "24".into(),
                "--local-queue".into(),
                "500".into(),
            ],
            jobs_left: "SELECT EXISTS (SELECT 1 FROM graphile_worker._private_jobs)",
            settings: format!(
                "processes={},concurrency=24,local_queue=500,complete_batch_delay=0",
                args.graphile_processes.max(1)
            ),
        })
    }

    /// pgqueuer with the defaults of its benchmark tool (see `driver.py`).
    pub fn pgqueuer(args: &Args) -> Option<Self> {
        let python = args.pgqueuer_python.as_ref()?;
        let driver = args.pgqueuer_driver.as_ref()?;
        Some(Self {
            name: "pgqueuer",
            program: python.clone(),
            prefix: vec![driver.display().to_string()],
            setup_role: "install",
            processes: 1,
            worker_args: vec![
                "--consumers".into(),
                "5".into(),
                "--batch-size".into(),
                "10".into(),
            ],
            jobs_left: "SELECT EXISTS (SELECT 1 FROM pgqueuer)",
            settings: "consumers=5,dequeue_batch=10".to_owned(),
        })
    }

    fn command(&self, role: &str, database_url: &str) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.prefix)
            .arg(role)
            .args(["--database-url", database_url])
            .kill_on_drop(true);
        command
    }
}

/// A driver process we talk to over stdin/stdout.
struct Driver {
    what: String,
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Driver {
    fn spawn(what: String, mut command: Command, log: &Path) -> anyhow::Result<Self> {
        let stderr = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        Ok(Self {
            what,
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The next line starting with `word`, within `limit`.
    async fn expect(&mut self, word: &str, limit: Duration) -> anyhow::Result<String> {
        let read = async {
            while let Some(line) = self.lines.next_line().await? {
                if let Some(rest) = line.strip_prefix(word) {
                    return Ok(rest.trim().to_owned());
                }
            }
            anyhow::bail!("{} ended before printing {word}", self.what)
        };
        tokio::time::timeout(limit, read)
            .await
            .with_context(|| format!("{} did not print {word} within {limit:?}", self.what))?
    }

    async fn say(&mut self, word: &str) -> anyhow::Result<()> {
        let stdin = self.child.stdin.as_mut().context("stdin closed")?;
        stdin.write_all(format!("{word}\n").as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }

    async fn finish(mut self, limit: Duration) -> anyhow::Result<()> {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .with_context(|| format!("{} did not exit within {limit:?}", self.what))??;
        anyhow::ensure!(status.success(), "{} failed ({status})", self.what);
        Ok(())
    }
}

/// One run of a peer in `mode` (`single` or `batch`).
pub async fn throughput(args: &Args, peer: &Peer, mode: &'static str) -> anyhow::Result<Outcome> {
    let label = format!("{}-{mode}", peer.name);
    println!(
        "queue-bench: {label}: {} jobs ({})",
        args.tasks, peer.settings
    );
    scratch::with_database(
        &args.database_url,
        &label.replace('-', "_"),
        |url| async move { run(args, peer, mode, &label, &url).await },
    )
    .await
}

async fn run(
    args: &Args,
    peer: &Peer,
    mode: &'static str,
    label: &str,
    url: &str,
) -> anyhow::Result<Outcome> {
    let startup = Duration::from_secs(60);
    let setup = peer
        .command(peer.setup_role, url)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {}", peer.program.display()))?;
    anyhow::ensure!(
        setup.status.success(),
        "{} {} failed: {}",
        peer.name,
        peer.setup_role,
        String::from_utf8_lossy(&setup.stderr)
    );
    let mut workers = Vec::new();
    for index in 0..peer.processes {
        let mut command = peer.command("work", url);
        command.args(&peer.worker_args);
        let log = args.logs.join(format!("{label}-work-{index}.log"));
        workers.push(Driver::spawn(
            format!("{} worker {index}", peer.name),
            command,
            &log,
        )?);
    }
    for worker in &mut workers {
        worker.expect("READY", startup).await?;
    }
    let mut producer_command = peer.command("produce", url);
    producer_command.args([
        "--tasks",
        &args.tasks.to_string(),
        "--producers",
        &args.producers.to_string(),
        "--mode",
        mode,
        "--batch-size",
        &args.batch_size.to_string(),
    ]);
    let mut producer = Driver::spawn(
        format!("{} producer", peer.name),
        producer_command,
        &args.logs.join(format!("{label}-produce.log")),
    )?;
    producer.expect("READY", startup).await?;
    let mut db = PgConnection::connect(url).await?;
    let postgres = scratch::PostgresCpu::find(url).await;
    let postgres_before = postgres.and_then(|p| p.seconds());

    let started = Instant::now();
    producer.say("GO").await?;
    let submitted: u64 = producer
        .expect("SUBMITTED", args.run_timeout())
        .await?
        .parse()
        .context("SUBMITTED <count>")?;
    let submitted_after = started.elapsed();
    producer.finish(Duration::from_secs(30)).await?;
    anyhow::ensure!(
        submitted == args.tasks,
        "the producer submitted {submitted} of {} jobs",
        args.tasks
    );
    // Every job is in the queue table until its completion is committed.
    let deadline = started + args.run_timeout();
    while sqlx::query_scalar::<_, bool>(peer.jobs_left)
        .fetch_one(&mut db)
        .await?
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{label}: jobs left in the queue after {:?}",
            args.run_timeout()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let postgres_cpu = postgres_before
        .zip(postgres.and_then(|p| p.seconds()))
        .map(|(before, after)| after - before);

    let mut seen = vec![0u32; args.tasks as usize];
    let mut stray = 0u64;
    for mut worker in workers {
        worker.say("STOP").await?;
        let handled = worker.expect("HANDLED", Duration::from_secs(60)).await?;
        worker.finish(Duration::from_secs(30)).await?;
        for id in handled.split(',').filter(|s| !s.is_empty()) {
            match id.parse::<usize>().ok().and_then(|id| seen.get_mut(id)) {
                Some(count) => *count += 1,
                None => stray += 1,
            }
        }
    }
    let missing = seen.iter().filter(|&&c| c == 0).count();
    let repeated = seen.iter().filter(|&&c| c > 1).count();
    let problem = (missing > 0 || repeated > 0 || stray > 0).then(|| {
        format!("{missing} jobs never ran, {repeated} ran more than once, {stray} unknown ids")
    });
    Ok(Outcome {
        system: peer.name,
        mode,
        tasks: args.tasks,
        seconds,
        backlog: None,
        extra: vec![
            (
                "submitted_after_s",
                format!("{:.3}", submitted_after.as_secs_f64()),
            ),
            (
                "postgres_cpu_ms_per_task",
                scratch::per_task_ms(postgres_cpu, args.tasks),
            ),
            ("settings", peer.settings.clone()),
        ],
        exactly_once_problem: problem,
        round: None,
    })
}
