//! Runs the `provisioner` binary the way a user does, with a deadline on every call.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

/// The target every call names: `--stacks-dir DIR --stack S --instance I`.
#[derive(Debug, Clone)]
pub struct Provisioner {
    pub program: PathBuf,
    pub stacks_dir: PathBuf,
    pub stack: String,
    pub instance: String,
}

/// What a finished (or killed) call left.
#[derive(Debug)]
pub struct Run {
    /// The exit code; `None` when it was killed at the deadline or by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    /// The last lines of stderr (all of it went to our stderr as it came).
    pub stderr_tail: Vec<String>,
    pub timed_out: bool,
}

impl Run {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Why a call failed, in one line: the deadline, or the exit code and its last words.
    pub fn failure(&self) -> String {
        if self.timed_out {
            return "killed at its deadline".to_owned();
        }
        let last = self
            .stderr_tail
            .iter()
            .rev()
            .find(|line| !line.trim().is_empty())
            .map(|line| line.trim().to_owned())
            .unwrap_or_default();
        match self.code {
            Some(code) => format!("exit {code}: {last}"),
            None => format!("ended by a signal: {last}"),
        }
    }
}

const TAIL: usize = 20;

impl Provisioner {
    /// `provisioner <verb> --stacks-dir D --stack S --instance I <extra...>`; stderr is passed
    /// through with a prefix, stdout is captured (and shown on stderr when `show_stdout`).
    pub async fn run(
        &self,
        verb: &[&str],
        extra: &[&str],
        deadline: Duration,
        show_stdout: bool,
    ) -> std::io::Result<Run> {
        let mut command = Command::new(&self.program);
        command
            .args(verb)
            .arg("--stacks-dir")
            .arg(&self.stacks_dir)
            .args([
                "--stack",
                self.stack.as_str(),
                "--instance",
                self.instance.as_str(),
            ])
            .args(extra)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        eprintln!(
            "acceptance: $ provisioner {} --stack {} --instance {} {}",
            verb.join(" "),
            self.stack,
            self.instance,
            extra.join(" ")
        );
        let mut child = command.spawn()?;
        let mut stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let out = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text).await;
            text
        });
        let err = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut tail: Vec<String> = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("  | {line}");
                tail.push(line);
                if tail.len() > TAIL {
                    tail.remove(0);
                }
            }
            tail
        });
        let (code, timed_out) = match tokio::time::timeout(deadline, child.wait()).await {
            Ok(status) => (status?.code(), false),
            Err(_) => {
                let _ = child.kill().await;
                (None, true)
            }
        };
        let stdout = out.await.unwrap_or_default();
        let stderr_tail = err.await.unwrap_or_default();
        if show_stdout {
            for line in stdout.lines() {
                eprintln!("  | {line}");
            }
        }
        Ok(Run {
            code,
            stdout,
            stderr_tail,
            timed_out,
        })
    }
}
