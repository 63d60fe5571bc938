//! A private moto server for suites that need an emulator of their own (the chaos suite resets
//! it every round and counts every object in it through the AWS APIs: moto's
//! `/moto-api/data.json` lists every object ever made, deleted ones too), started through `tests/emulators/moto_server.py` (AWS's
//! filter matching and the other fixes listed in `provisioner/docs/testing.md`) with the python
//! of the venv `cargo xtask test` made.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A moto server on a free port of 127.0.0.1, killed when dropped.
pub struct MotoServer {
    child: Child,
    port: u16,
}

impl MotoServer {
    /// Starts moto and waits (at most 30 s) until it answers.
    pub fn start() -> Self {
        let tool = crate::venv_tool("moto_server");
        let python = std::fs::canonicalize(&tool)
            .unwrap_or_else(|e| panic!("{}: {e}", tool.display()))
            .parent()
            .expect("a venv's bin folder")
            .join("python");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let launcher: PathBuf = crate::workspace_root().join("tests/emulators/moto_server.py");
        let child = Command::new(&python)
            .arg(&launcher)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // AWS's managed policies (AmazonEKSClusterPolicy...), as `cargo xtask` starts moto.
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", python.display()));
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.get("/moto-api/data.json").is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Wipes every object (`POST /moto-api/reset`).
    pub fn reset(&self) {
        self.request("POST", "/moto-api/reset")
            .expect("moto resets");
    }

    fn get(&self, path: &str) -> std::io::Result<String> {
        self.request("GET", path)
    }

    fn request(&self, method: &str, path: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\r\n",
            self.port
        )?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        let text = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no HTTP answer"))?;
        if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
            return Err(std::io::Error::other(format!(
                "{method} {path}: {}",
                head.lines().next().unwrap_or("")
            )));
        }
        Ok(body.to_owned())
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The differences between two inventories (`kind` -> count): `(model, expected, found)` for every model whose
/// count differs.
pub fn differences(
    expected: &BTreeMap<String, usize>,
    found: &BTreeMap<String, usize>,
) -> Vec<(String, usize, usize)> {
    let mut keys: Vec<&String> = expected.keys().chain(found.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| {
            let (e, f) = (
                expected.get(key).copied().unwrap_or(0),
                found.get(key).copied().unwrap_or(0),
            );
            (e != f).then(|| (key.clone(), e, f))
        })
        .collect()
}
