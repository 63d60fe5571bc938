use std::path::PathBuf;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use controlplane::config::Config;
use uuid::Uuid;

/// Stacksmith control plane.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (configuration: environment, optionally a JSON file).
    Serve {
        /// JSON configuration file; environment variables override it.
        #[arg(long, env = "CONTROLPLANE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Apply the database migrations (DATABASE_URL).
    Migrate {
        /// Create the database first when it does not exist.
        #[arg(long)]
        create_database: bool,
    },
    /// Exit 0 when the local server answers `GET /healthz` with 200 (the image's HEALTHCHECK).
    Healthcheck {
        /// Address to probe; defaults to CONTROLPLANE_LISTEN (8080), 127.0.0.1 when it listens on
        /// every address.
        #[arg(long)]
        address: Option<std::net::SocketAddr>,
    },
    /// Check that this process reaches the database (DATABASE_URL) and the cache (REDIS_URL)
    /// and, with --url and --workflow, that a workflow runs through the control plane (as a
    /// throwaway team whose key is revoked afterwards). One JSON line per check on stdout; exit 1
    /// when one fails. What `cargo xtask acceptance` runs as a Job inside the cluster.
    Check {
        /// Base URL of the control plane to run the workflow through.
        #[arg(long, requires = "workflow")]
        url: Option<String>,
        /// A workflow file (the body of `POST /v1/workflows`).
        #[arg(long, requires = "url")]
        workflow: Option<PathBuf>,
        /// Longest time each connection may take.
        #[arg(long, default_value_t = 10)]
        timeout_seconds: u64,
        /// Longest time to follow the workflow.
        #[arg(long, default_value_t = 300)]
        wait_seconds: u64,
    },
    /// Lease tasks of a pool from the control plane and run them.
    Worker {
        /// Base URL of the control plane.
        #[arg(long, env = "CONTROLPLANE_URL")]
        url: String,
        /// The worker key (or the admin key).
        #[arg(long, env = "CONTROLPLANE_WORKER_KEY", hide_env_values = true)]
        api_key: String,
        #[arg(long)]
        pool: String,
        /// Tasks run at once.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Lease duration; heartbeats every third of it.
        #[arg(long, default_value_t = 30)]
        lease_seconds: u32,
        /// Long-poll wait of each lease request.
        #[arg(long, default_value_t = 5)]
        wait_seconds: u32,
        /// Output kept per stream (stdout and stderr) of each task.
        #[arg(long, default_value_t = 4096)]
        max_output_bytes: usize,
        /// After SIGTERM, how long running tasks may finish before they are killed and released.
        #[arg(long, default_value_t = 30)]
        drain_seconds: u64,
        /// Name recorded with each attempt (default: host name and process id).
        #[arg(long)]
        name: Option<String>,
        /// Where each task gets its private HOME and TMPDIR (default: TMPDIR, else /tmp).
        #[arg(long)]
        task_dir: Option<PathBuf>,
        /// This worker owns its container (one task slot of a worker pod): it must be the
        /// container's first process (PID 1) and run one task at a time; after each task it kills
        /// every process the task left and empties the task directory.
        #[arg(long)]
        container_slot: bool,
        /// Serve `GET /healthz` (alive) and `GET /readyz` (the control plane answers this
        /// worker's lease requests) on this address, for a pod's probes.
        #[arg(long)]
        health_listen: Option<std::net::SocketAddr>,
    },
    /// The task runtime of worker pods.
    Runtime {
        #[command(subcommand)]
        command: RuntimeCommand,
    },
    /// Submit and follow workflows through the HTTP API, as a team.
    Workflows {
        #[command(subcommand)]
        command: WorkflowsCommand,
    },
    /// Submit tasks through the HTTP API, as a team.
    Tasks {
        #[command(subcommand)]
        command: TasksCommand,
    },
    /// Manage teams (talks to the database directly).
    Teams {
        #[command(subcommand)]
        command: TeamsCommand,
    },
    /// Manage API keys (talks to the database directly).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
enum WorkflowsCommand {
    /// Submit a workflow file (the body of `POST /v1/workflows`, JSON) and follow it until every
    /// task is final. Progress on stderr; the outcome on stdout. Exit 0 when it succeeded, 1
    /// when it failed, was cancelled or is still running at --wait-seconds.
    Run {
        /// Base URL of the control plane.
        #[arg(long, env = "CONTROLPLANE_URL")]
        url: String,
        /// The team's API key.
        #[arg(long, env = "CONTROLPLANE_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The workflow file.
        #[arg(long)]
        file: PathBuf,
        /// Longest time to follow the workflow.
        #[arg(long, default_value_t = 300)]
        wait_seconds: u64,
        /// Print the final workflow as JSON (the API's representation).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TasksCommand {
    /// Submit a file of tasks, one JSON object per line (an item of `POST /v1/tasks/batch`: a
    /// task, optionally with its own `idempotency_key`), in batches that are each stored whole
    /// or not at all. Prints one JSON line per task on stdout (line, task_id, state, replayed),
    /// a summary on stderr. Lines without a key get one derived from their text (see
    /// --key-prefix), so running it again stores nothing twice. Exit 1 when a line or a batch
    /// is refused (each bad line named as FILE:LINE).
    Submit {
        /// Base URL of the control plane.
        #[arg(long, env = "CONTROLPLANE_URL")]
        url: String,
        /// The team's API key.
        #[arg(long, env = "CONTROLPLANE_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The tasks: JSON Lines; blank lines and lines starting with `#` are skipped.
        #[arg(long)]
        file: PathBuf,
        /// Tasks per request (1 to 1000).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=1000))]
        batch_size: u16,
        /// Scopes the keys derived for lines without one (`PREFIX:DIGEST:N`): the same prefix
        /// and line give the same task; use a new one (a run id, a date) to submit the same
        /// lines again as new tasks.
        #[arg(long, default_value = "tasks-submit")]
        key_prefix: String,
        /// Derive no keys: every run creates every line's task anew.
        #[arg(long, conflicts_with = "key_prefix")]
        no_idempotency: bool,
    },
}

#[derive(Debug, Subcommand)]
enum RuntimeCommand {
    /// Copy this executable to DIR/controlplane (atomically, mode 0555): what a worker pod's init
    /// container runs, so that the pool's own image can run the worker from a shared volume.
    Install {
        /// The directory to copy into (created when missing).
        #[arg(long)]
        to: PathBuf,
    },
}

/// Copies the running executable into `dir` (a temporary name, then a rename).
fn install_runtime(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let target = dir.join("controlplane");
    let partial = dir.join(format!(".controlplane.{}", std::process::id()));
    std::fs::copy("/proc/self/exe", &partial)
        .with_context(|| format!("cannot copy the executable to {}", partial.display()))?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o555))?;
    std::fs::rename(&partial, &target)
        .with_context(|| format!("cannot move it to {}", target.display()))?;
    Ok(target)
}

#[derive(Debug, Subcommand)]
enum TeamsCommand {
    /// Create a team and print its id.
    Create {
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create an API key for a team; the key is printed once.
    Create {
        #[arg(long)]
        team: Uuid,
        #[arg(long)]
        name: String,
    },
    /// Revoke an API key.
    Revoke {
        #[arg(long)]
        key_id: Uuid,
    },
}

fn init_logging() {
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

async fn database() -> anyhow::Result<sqlx::PgPool> {
    let url = std::env::var("DATABASE_URL").context("DATABASE_URL is not set")?;
    controlplane::store::connect(&url, 2)
        .await
        .context("cannot connect to Postgres")
}

/// A minimal HTTP/1.0 GET, so the runtime image needs no curl.
fn healthcheck(address: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let address = match address {
        Some(address) => address,
        None => {
            let listen: std::net::SocketAddr = std::env::var("CONTROLPLANE_LISTEN")
                .unwrap_or_else(|_| "0.0.0.0:8080".to_owned())
                .parse()
                .context("CONTROLPLANE_LISTEN is not an address")?;
            if listen.ip().is_unspecified() {
                std::net::SocketAddr::from(([127, 0, 0, 1], listen.port()))
            } else {
                listen
            }
        }
    };
    let timeout = std::time::Duration::from_secs(2);
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    anyhow::ensure!(
        head.starts_with(b"HTTP/1.") && &head[9..12] == b"200",
        "not healthy"
    );
    Ok(())
}

/// `controlplane check`: each check as one JSON line (`check`, `ok`, `ms`, then `error` or what
/// was seen); true when all passed.
async fn check(
    workflow: Option<(String, PathBuf)>,
    timeout: std::time::Duration,
    wait: std::time::Duration,
) -> bool {
    use serde_json::json;
    let mut all_ok = true;
    let mut report = |check: &str, started: std::time::Instant, outcome: serde_json::Value| {
        let mut line = json!({"check": check, "ms": started.elapsed().as_millis() as u64});
        let ok = outcome.get("error").is_none();
        all_ok &= ok;
        line["ok"] = json!(ok);
        if let (Some(line), Some(outcome)) = (line.as_object_mut(), outcome.as_object()) {
            line.extend(outcome.clone());
        }
        println!("{line}");
    };
    let started = std::time::Instant::now();
    let pool = match std::env::var("DATABASE_URL") {
        Err(_) => {
            report(
                "postgres",
                started,
                json!({"error": "DATABASE_URL is not set"}),
            );
            None
        }
        Ok(url) => {
            let probe = async {
                let pool = controlplane::store::connect(&url, 2).await?;
                let version: String = sqlx::query_scalar("SHOW server_version")
                    .fetch_one(&pool)
                    .await?;
                Ok::<_, sqlx::Error>((pool, version))
            };
            match tokio::time::timeout(timeout, probe).await {
                Ok(Ok((pool, version))) => {
                    report("postgres", started, json!({"server_version": version}));
                    Some(pool)
                }
                Ok(Err(error)) => {
                    report("postgres", started, json!({"error": error.to_string()}));
                    None
                }
                Err(_) => {
                    report(
                        "postgres",
                        started,
                        json!({"error": format!("no answer within {timeout:?}")}),
                    );
                    None
                }
            }
        }
    };
    let started = std::time::Instant::now();
    match std::env::var("REDIS_URL") {
        Err(_) => report("redis", started, json!({"error": "REDIS_URL is not set"})),
        Ok(url) => {
            let probe = async {
                let client = redis::Client::open(url.as_str())?;
                let mut connection = client.get_multiplexed_async_connection().await?;
                redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
            };
            match tokio::time::timeout(timeout, probe).await {
                Ok(Ok(answer)) => report("redis", started, json!({"answer": answer})),
                Ok(Err(error)) => report("redis", started, json!({"error": error.to_string()})),
                Err(_) => report(
                    "redis",
                    started,
                    json!({"error": format!("no answer within {timeout:?}")}),
                ),
            }
        }
    }
    let Some((url, file)) = workflow else {
        return all_ok;
    };
    let started = std::time::Instant::now();
    let Some(pool) = pool else {
        report(
            "workflow",
            started,
            json!({"error": "not run: the database cannot be reached (a throwaway team is made there)"}),
        );
        return false;
    };
    let name = format!("acceptance-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let outcome = async {
        let team = controlplane::store::teams::create(&pool, &name).await?;
        let key = controlplane::store::api_keys::create(&pool, team.id, &name)
            .await?
            .context("the team just made is gone")?;
        let options = controlplane::client::workflows::RunOptions {
            url,
            api_key: key.secret.expose().to_owned(),
            file,
            wait,
            poll: std::time::Duration::from_millis(500),
        };
        let outcome =
            controlplane::client::workflows::run(&options, |line| eprintln!("{line}")).await;
        controlplane::store::api_keys::revoke(&pool, key.row.id, None).await?;
        Ok::<_, anyhow::Error>((team.id, outcome?))
    }
    .await;
    match outcome {
        Ok((team, outcome)) => {
            let tasks: Vec<serde_json::Value> = outcome
                .workflow
                .tasks
                .iter()
                .map(|task| json!({"name": task.name, "state": task.task.state}))
                .collect();
            let mut seen = json!({
                "team": team,
                "workflow_id": outcome.workflow.id,
                "state": outcome.workflow.state,
                "tasks": tasks,
            });
            if !outcome.succeeded() {
                seen["error"] = json!(if outcome.finished {
                    "the workflow did not succeed"
                } else {
                    "the workflow was still running at the deadline"
                });
            }
            report("workflow", started, seen);
        }
        Err(error) => report("workflow", started, json!({"error": format!("{error:#}")})),
    }
    all_ok
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let worker_key_in_argv = matches
        .subcommand_matches("worker")
        .and_then(|worker| worker.value_source("api_key"))
        == Some(ValueSource::CommandLine);
    if matches!(cli.command, Command::Worker { .. }) {
        // First thing: the environment holds the worker key; tasks run as the same user.
        controlplane::worker::sandbox::harden_worker()
            .context("cannot make the worker non-dumpable (prctl PR_SET_DUMPABLE)")?;
    }
    init_logging();
    match cli.command {
        Command::Serve { config } => {
            let config = Config::load(config.as_deref()).context("invalid configuration")?;
            controlplane::serve(config).await?;
        }
        Command::Healthcheck { address } => healthcheck(address)?,
        Command::Check {
            url,
            workflow,
            timeout_seconds,
            wait_seconds,
        } => {
            let workflow = url.zip(workflow);
            let timeout = std::time::Duration::from_secs(timeout_seconds);
            let wait = std::time::Duration::from_secs(wait_seconds);
            if !check(workflow, timeout, wait).await {
                std::process::exit(1);
            }
        }
        Command::Runtime {
            command: RuntimeCommand::Install { to },
        } => {
            let target = install_runtime(&to)?;
            tracing::info!(path = %target.display(), "worker runtime installed");
        }
        Command::Worker {
            url,
            api_key,
            pool,
            concurrency,
            lease_seconds,
            wait_seconds,
            max_output_bytes,
            drain_seconds,
            name,
            task_dir,
            container_slot,
            health_listen,
        } => {
            if controlplane::worker::init::is_pid1() {
                let code = controlplane::worker::init::supervise().await?;
                std::process::exit(code);
            }
            if worker_key_in_argv {
                anyhow::ensure!(
                    !container_slot,
                    "--api-key on the command line is readable by every task (/proc/PID/cmdline): \
                     pass the worker key in CONTROLPLANE_WORKER_KEY"
                );
                tracing::warn!(
                    "the worker key was given with --api-key: every process of this machine can \
                     read it in /proc/PID/cmdline; pass it in CONTROLPLANE_WORKER_KEY instead"
                );
            }
            anyhow::ensure!(
                !container_slot || controlplane::worker::init::under_init(),
                "--container-slot needs the worker to be the first process of its container \
                 (PID 1 of its PID namespace): it kills every other process there between tasks"
            );
            let name = name.unwrap_or_else(|| {
                let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_owned());
                format!("{host}-{}", std::process::id())
            });
            let options = controlplane::worker::WorkerOptions {
                url,
                api_key,
                pool,
                concurrency,
                lease_seconds,
                wait_seconds: wait_seconds.min(20),
                max_output_bytes,
                drain: std::time::Duration::from_secs(drain_seconds),
                name,
                sandbox: controlplane::worker::sandbox::Sandbox::new(task_dir, container_slot),
                health_listen,
            };
            controlplane::worker::run(options, controlplane::shutdown::signal()).await?;
        }
        Command::Migrate { create_database } => {
            if create_database {
                use sqlx::migrate::MigrateDatabase;
                let url = std::env::var("DATABASE_URL").context("DATABASE_URL is not set")?;
                if !sqlx::Postgres::database_exists(&url)
                    .await
                    .context("cannot connect to Postgres")?
                {
                    sqlx::Postgres::create_database(&url)
                        .await
                        .context("cannot create the database")?;
                    tracing::info!("database created");
                }
            }
            controlplane::store::migrate(&database().await?).await?;
            tracing::info!("migrations applied");
        }
        Command::Tasks {
            command:
                TasksCommand::Submit {
                    url,
                    api_key,
                    file,
                    batch_size,
                    key_prefix,
                    no_idempotency,
                },
        } => {
            anyhow::ensure!(
                (1..=200).contains(&key_prefix.len())
                    && key_prefix.bytes().all(|b| b.is_ascii_graphic()),
                "--key-prefix must be 1-200 visible ASCII characters"
            );
            let options = controlplane::client::tasks::SubmitOptions {
                url,
                api_key,
                file,
                batch_size: usize::from(batch_size),
                key_prefix: (!no_idempotency).then_some(key_prefix),
            };
            let outcome = controlplane::client::tasks::submit(&options, |batch| {
                for item in batch {
                    println!("{}", serde_json::json!(item));
                }
            })
            .await;
            match outcome {
                Ok(submitted) => {
                    let replayed = submitted.iter().filter(|item| item.replayed).count();
                    eprintln!(
                        "{} task(s): {} created, {replayed} already submitted",
                        submitted.len(),
                        submitted.len() - replayed
                    );
                }
                Err(error) => {
                    eprintln!("{error}");
                    std::process::exit(1);
                }
            }
        }
        Command::Workflows {
            command:
                WorkflowsCommand::Run {
                    url,
                    api_key,
                    file,
                    wait_seconds,
                    json,
                },
        } => {
            let options = controlplane::client::workflows::RunOptions {
                url,
                api_key,
                file,
                wait: std::time::Duration::from_secs(wait_seconds),
                poll: std::time::Duration::from_millis(500),
            };
            let outcome =
                controlplane::client::workflows::run(&options, |line| eprintln!("{line}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&outcome.workflow)?);
            } else {
                print!("{}", controlplane::client::workflows::summary(&outcome));
            }
            if !outcome.succeeded() {
                std::process::exit(1);
            }
        }
        Command::Teams {
            command: TeamsCommand::Create { name },
        } => {
            controlplane::model::team::validate_name(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
            let team = controlplane::store::teams::create(&database().await?, &name).await?;
            println!("{}", serde_json::json!({"id": team.id, "name": team.name}));
        }
        Command::Keys {
            command: KeysCommand::Create { team, name },
        } => {
            controlplane::model::team::validate_name(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
            let created = controlplane::store::api_keys::create(&database().await?, team, &name)
                .await?
                .with_context(|| format!("no team {team}"))?;
            println!(
                "{}",
                serde_json::json!({"id": created.row.id, "team_id": team, "key": created.secret.expose()})
            );
        }
        Command::Keys {
            command: KeysCommand::Revoke { key_id },
        } => {
            controlplane::store::api_keys::revoke(&database().await?, key_id, None)
                .await?
                .with_context(|| format!("no API key {key_id}"))?;
            println!("{}", serde_json::json!({"revoked": key_id}));
        }
    }
    Ok(())
}
