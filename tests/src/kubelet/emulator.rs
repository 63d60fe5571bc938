//! A Kubernetes API emulator of a test's own (`tests/emulators/kube_emulator.py`), started with
//! `--kubelet external` so that Deployment readiness is the [`Kubelet`](super::Kubelet)'s to
//! report (or with its own kubelet), with a kubeconfig for it. Stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct PrivateEmulator {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// A kubeconfig for it (context `stacksmith-test`).
    pub kubeconfig: PathBuf,
    child: Child,
}

/// The python of the `emulators` venv, found next to `STACKSMITH_TEST_VENV_BIN`
/// (`<cache>/bin` -> `<cache>/venvs/emulators/bin/python`).
pub fn emulator_python() -> PathBuf {
    crate::venv_tool("python")
        .parent()
        .and_then(Path::parent)
        .expect("the venv bin folder has a parent")
        .join("venvs")
        .join("emulators")
        .join("bin")
        .join("python")
}

impl PrivateEmulator {
    /// Starts it with `python` (see [`emulator_python`]) and writes its log and kubeconfig into
    /// `dir`. Bounded by 30 s.
    pub fn start(python: &Path, dir: &Path) -> Result<Self, String> {
        Self::start_with(python, dir, "external")
    }

    /// [`PrivateEmulator::start`] with the emulator's own kubelet (`--kubelet emulated`: admitted
    /// replicas are ready at once), for a test that needs a cluster no other test reaches.
    pub fn start_emulated(python: &Path, dir: &Path) -> Result<Self, String> {
        Self::start_with(python, dir, "emulated")
    }

    fn start_with(python: &Path, dir: &Path, kubelet: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let script = crate::workspace_root().join("tests/emulators/kube_emulator.py");
        let log_path = dir.join("kube-emulator.log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let child = Command::new(python)
            .arg(&script)
            .args(["--host", "127.0.0.1", "--port", "0", "--kubelet", kubelet])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", python.display()))?;
        let mut emulator = Self {
            url: String::new(),
            kubeconfig: dir.join("kubeconfig"),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(url) = text.lines().find_map(|l| l.strip_prefix("READY ")) {
                emulator.url = url.trim().to_owned();
                break;
            }
            if Instant::now() >= deadline || matches!(emulator.child.try_wait(), Ok(Some(_))) {
                return Err(format!("the Kubernetes emulator did not start:\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::fs::write(
            &emulator.kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: stacksmith-test\n  cluster:\n    server: {}\n\
                 users:\n- name: stacksmith-test\n  user:\n    token: stacksmith-test-token\n\
                 contexts:\n- name: stacksmith-test\n  context:\n    cluster: stacksmith-test\n    user: stacksmith-test\n\
                 current-context: stacksmith-test\n",
                emulator.url
            ),
        )
        .map_err(|e| e.to_string())?;
        Ok(emulator)
    }
}

impl Drop for PrivateEmulator {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
