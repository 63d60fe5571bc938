//! PID 1 of a worker container: `controlplane worker` started as the first process of its PID
//! namespace (a container whose pod does not share its process namespace) runs this instead of
//! the worker, like `tini`: it starts the worker again as its child (the same executable and
//! arguments), forwards the signals a container runtime sends (SIGTERM, SIGINT, SIGHUP, SIGQUIT,
//! SIGUSR1, SIGUSR2) to it, reaps every process that is reparented to it (tasks' orphaned
//! grandchildren would otherwise stay zombies, since PID 1 inherits them), and exits with the
//! worker's status (128 + the signal when a signal ended it). When PID 1 exits, the kernel kills
//! whatever is left in the namespace.

use std::os::unix::process::CommandExt;

use anyhow::Context;
use rustix::process::{Pid, Signal, WaitOptions};
use tokio::signal::unix::{SignalKind, signal};

/// Set in the worker's environment by [`supervise`]: the worker's parent is this init, so the
/// worker owns the PID namespace (and may kill everything else in it between tasks).
pub const UNDER_INIT_VAR: &str = "STACKSMITH_WORKER_UNDER_INIT";

/// True when this process is the first of its PID namespace.
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// True when this process is the worker started by [`supervise`] (its parent is PID 1 and set
/// the marker).
pub fn under_init() -> bool {
    std::env::var_os(UNDER_INIT_VAR).is_some_and(|v| v == "1")
        && rustix::process::getppid() == Some(Pid::INIT)
}

/// Runs the worker as a child and reaps until it exits; returns the exit code to exit with.
pub async fn supervise() -> anyhow::Result<i32> {
    // Handlers first, so that nothing sent between the spawn and the loop is lost.
    let mut term = signal(SignalKind::terminate()).context("cannot handle signals as PID 1")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let mut quit = signal(SignalKind::quit()).context("cannot handle SIGQUIT")?;
    let mut usr1 = signal(SignalKind::user_defined1()).context("cannot handle SIGUSR1")?;
    let mut usr2 = signal(SignalKind::user_defined2()).context("cannot handle SIGUSR2")?;
    let mut children = signal(SignalKind::child()).context("cannot handle SIGCHLD")?;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "controlplane".into());
    // The executable's path rather than /proc/self/exe, so that the worker's name (comm) is
    // `controlplane` in process listings.
    let executable =
        std::env::current_exe().unwrap_or_else(|_| std::path::PathBuf::from("/proc/self/exe"));
    let worker = std::process::Command::new(executable)
        .arg0(arg0)
        .args(args)
        .env(UNDER_INIT_VAR, "1")
        .spawn()
        .context("cannot start the worker under PID 1")?;
    let worker = Pid::from_child(&worker);
    tracing::info!(
        worker = worker.as_raw_nonzero().get(),
        "PID 1: running the worker as a child and reaping orphans"
    );
    loop {
        // Reap everything that has ended; the worker's end ends the container.
        while let Some((pid, status)) =
            rustix::process::wait(WaitOptions::NOHANG).context("waitpid")?
        {
            if pid == worker {
                if let Some(code) = status.exit_status() {
                    return Ok(code);
                }
                return Ok(128 + status.terminating_signal().unwrap_or(0));
            }
        }
        let forward = tokio::select! {
            _ = term.recv() => Some(Signal::TERM),
            _ = int.recv() => Some(Signal::INT),
            _ = hup.recv() => Some(Signal::HUP),
            _ = quit.recv() => Some(Signal::QUIT),
            _ = usr1.recv() => Some(Signal::USR1),
            _ = usr2.recv() => Some(Signal::USR2),
            _ = children.recv() => None,
        };
        if let Some(signal) = forward {
            // ESRCH: the worker has just exited; the next round reaps it.
            let _ = rustix::process::kill_process(worker, signal);
        }
    }
}
