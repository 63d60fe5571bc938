//! `stacksmith-kubelet`: the test kubelet (`stacksmith_testkit::kubelet`) as a program, for
//! `cargo xtask local` (see README.md).
//!
//! - `run`: runs the Deployments and Jobs of a stack that `provisioner up` applied to the
//!   Kubernetes API emulator (started with `--kubelet external`), until SIGTERM or Ctrl-C,
//!   printing what happens (`kubelet: ...` lines on stderr) and listing its pods in
//!   `<scratch>/pods.tsv` (`stacksmith_testkit::kubelet::pods_table`).
//! - `exec`: runs a command in a one-off container that sees that cluster (Service names, its
//!   trust store), either with the environment and user of a Deployment's container (like
//!   `kubectl exec deploy/NAME`) or as a client pod with the variables passed; exits with its
//!   status, its output on stdout and stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use stacksmith_testkit::kubelet::{self, Image, Kubelet, KubeletConfig};

#[derive(Debug, Parser)]
#[command(about = "The test kubelet: runs what `provisioner up` applied to the emulator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the stack's Deployments and Jobs until SIGTERM or Ctrl-C.
    Run {
        /// The Kubernetes API emulator's base URL.
        #[arg(long)]
        api: String,
        /// The stack (its `stacksmith.dev/stack` label: the instance-qualified name).
        #[arg(long)]
        stack: String,
        /// Pods' volumes, logs, the hosts file.
        #[arg(long)]
        scratch: PathBuf,
        /// IMAGE=PATH: an image reference (any tag) and the PATH its binaries are under.
        #[arg(long = "image", value_parser = parse_image)]
        images: Vec<Image>,
        /// An administrator URL of the local Postgres (the stack's database endpoint leads there).
        #[arg(long)]
        postgres: Option<String>,
        /// The local Redis (the stack's cache endpoint leads there).
        #[arg(long)]
        redis: Option<String>,
    },
    /// Run a command in a one-off container that sees the cluster.
    Exec {
        /// The scratch folder of the running kubelet.
        #[arg(long)]
        scratch: PathBuf,
        /// With the environment and user of this Deployment's container (`NAMESPACE/NAME`);
        /// needs --api, --stack and --image.
        #[arg(long)]
        deployment: Option<String>,
        #[arg(long)]
        container: Option<String>,
        #[arg(long)]
        api: Option<String>,
        #[arg(long)]
        stack: Option<String>,
        #[arg(long = "image", value_parser = parse_image)]
        images: Vec<Image>,
        /// Variables of this process passed to the container (client pods).
        #[arg(long = "pass-env")]
        pass_env: Vec<String>,
        /// The user of a client pod.
        #[arg(long, default_value_t = 65534)]
        uid: u32,
        /// Longest run.
        #[arg(long, default_value_t = 600)]
        timeout_seconds: u64,
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
}

fn parse_image(text: &str) -> Result<Image, String> {
    let (reference, path) = text
        .split_once('=')
        .ok_or_else(|| format!("expected IMAGE=PATH, got {text}"))?;
    Ok(Image {
        reference: reference.to_owned(),
        path: path.to_owned(),
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            api,
            stack,
            scratch,
            images,
            postgres,
            redis,
        } => {
            let mut kubelet = match Kubelet::start(KubeletConfig {
                api_url: api,
                stack,
                scratch,
                images,
                postgres_url: postgres,
                redis_url: redis,
                verbose: true,
            }) {
                Ok(kubelet) => kubelet,
                Err(error) => {
                    eprintln!("stacksmith-kubelet: {error}");
                    return ExitCode::FAILURE;
                }
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM handler");
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            });
            eprintln!("kubelet: stopping every pod");
            kubelet.stop();
            ExitCode::SUCCESS
        }
        Command::Exec {
            scratch,
            deployment,
            container,
            api,
            stack,
            images,
            pass_env,
            uid,
            timeout_seconds,
            argv,
        } => {
            let (env, uid) = match deployment {
                Some(deployment) => {
                    let Some((namespace, name)) = deployment.split_once('/') else {
                        eprintln!("stacksmith-kubelet: --deployment is NAMESPACE/NAME");
                        return ExitCode::FAILURE;
                    };
                    let (Some(api), Some(stack)) = (api, stack) else {
                        eprintln!("stacksmith-kubelet: --deployment needs --api and --stack");
                        return ExitCode::FAILURE;
                    };
                    match kubelet::exec_environment(
                        &api,
                        &stack,
                        namespace,
                        name,
                        container.as_deref(),
                        &images,
                    ) {
                        Ok(found) => found,
                        Err(error) => {
                            eprintln!("stacksmith-kubelet: {error}");
                            return ExitCode::FAILURE;
                        }
                    }
                }
                None => {
                    let mut env =
                        vec![("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned())];
                    for name in pass_env {
                        if let Ok(value) = std::env::var(&name) {
                            env.push((name, value));
                        }
                    }
                    (env, uid)
                }
            };
            match kubelet::client(
                &scratch,
                &argv,
                &env,
                uid,
                Duration::from_secs(timeout_seconds),
            ) {
                Ok(output) => {
                    use std::io::Write;
                    let _ = std::io::stdout().write_all(&output.stdout);
                    let _ = std::io::stderr().write_all(&output.stderr);
                    ExitCode::from(output.status.code().unwrap_or(1).clamp(0, 255) as u8)
                }
                Err(error) => {
                    eprintln!("stacksmith-kubelet: cannot start the container: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
