//! The servers the tests and the main job talk to, started once per run.
//!
//! | server   | how it is found or started                                                  |
//! |----------|-----------------------------------------------------------------------------|
//! | moto     | always a private moto (`tests/emulators/moto_server.py`: AWS tag-filter matching) on a free port |
//! | Postgres | `STACKSMITH_TEST_DATABASE_URL`, else 127.0.0.1:5432, else a private cluster   |
//! | Redis    | `STACKSMITH_TEST_REDIS_URL`, else 127.0.0.1:6379, else a private server       |
//! | Kubernetes | always a private `tests/emulators/kube_emulator.py` (kmock) on a free port   |
//!
//! For `cargo xtask local` the Kubernetes emulator runs with `--kubelet external`: the test
//! kubelet (`stacksmith-kubelet run`) runs the pods and reports readiness
//! ([`TestEnvironment::start_with_external_kubelet`]).
//!
//! Private servers get a scratch folder under the cache dir and are stopped when the
//! environment is dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{
    self, RemoveOnDrop, Server, apt_install, exchange, free_port, on_path, port_open, wait_until,
};
use crate::python;

/// The running servers and how to reach them.
pub struct TestEnvironment {
    pub aws_endpoint: String,
    pub database_url: String,
    pub redis_url: String,
    /// The Kubernetes API emulator's base URL (plain HTTP).
    pub kube_url: String,
    /// A kubeconfig pointing at the emulator (context `stacksmith-test`).
    pub kubeconfig: PathBuf,
    pub venv_bin: PathBuf,
    // Dropped last-to-first: the servers we started.
    _servers: Vec<Server>,
    // Scratch folders of those servers, removed after them (fields drop in declaration order).
    _scratch: Vec<RemoveOnDrop>,
}

impl TestEnvironment {
    /// Starts (or finds) every server; the Kubernetes emulator makes admitted replicas ready.
    pub fn start() -> Result<Self, String> {
        Self::start_inner(false)
    }

    /// Like [`start`](Self::start), but Deployment readiness is left to a kubelet of ours
    /// (`--kubelet external`): `up`'s rollout wait passes only on what really runs.
    pub fn start_with_external_kubelet() -> Result<Self, String> {
        Self::start_inner(true)
    }

    fn start_inner(external_kubelet: bool) -> Result<Self, String> {
        let scratch = python::cache_dir().join("servers");
        std::fs::create_dir_all(&scratch)
            .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
        let venv_bin = python::ensure_venvs()?;
        let mut servers = Vec::new();
        let mut scratch_dirs = Vec::new();
        let (aws_endpoint, moto) = start_moto(&scratch)?;
        servers.push(moto);
        let Databases {
            database_url,
            redis_url,
            servers: database_servers,
            scratch: database_scratch,
        } = Databases::find_or_start(&scratch)?;
        servers.extend(database_servers);
        scratch_dirs.extend(database_scratch);
        let (kube_url, kubeconfig, kube) = start_kube_emulator(&scratch, external_kubelet)?;
        servers.push(kube);
        println!(
            "xtask: moto at {aws_endpoint}, Postgres at {}, Redis at {redis_url}, Kubernetes at {kube_url}",
            redact(&database_url)
        );
        Ok(Self {
            aws_endpoint,
            database_url,
            redis_url,
            kube_url,
            kubeconfig,
            venv_bin,
            _servers: servers,
            _scratch: scratch_dirs,
        })
    }

    /// The variables tests read (see `tests/src/lib.rs`).
    pub fn variables(&self) -> Vec<(&'static str, String)> {
        vec![
            ("STACKSMITH_TEST_AWS_ENDPOINT", self.aws_endpoint.clone()),
            ("STACKSMITH_AWS_ENDPOINT", self.aws_endpoint.clone()),
            ("STACKSMITH_TEST_DATABASE_URL", self.database_url.clone()),
            ("DATABASE_URL", self.database_url.clone()),
            ("STACKSMITH_TEST_REDIS_URL", self.redis_url.clone()),
            ("STACKSMITH_TEST_KUBE_URL", self.kube_url.clone()),
            (
                "STACKSMITH_TEST_KUBECONFIG",
                self.kubeconfig.display().to_string(),
            ),
            (
                "STACKSMITH_KUBECONFIG",
                self.kubeconfig.display().to_string(),
            ),
            (
                "STACKSMITH_TEST_VENV_BIN",
                self.venv_bin.display().to_string(),
            ),
        ]
    }

    /// Passes the variables to a command.
    pub fn apply(&self, command: &mut Command) {
        for (name, value) in self.variables() {
            command.env(name, value);
        }
    }
}

/// Postgres and Redis: the ones named by the environment, else the machine's own on their usual
/// ports, else private servers (stopped when dropped). `cargo xtask bench` needs only these.
pub struct Databases {
    pub database_url: String,
    pub redis_url: String,
    // Dropped before `scratch`: the servers we started, then their folders.
    pub servers: Vec<Server>,
    pub scratch: Vec<RemoveOnDrop>,
}

impl Databases {
    pub fn find_or_start(scratch: &Path) -> Result<Self, String> {
        let mut servers = Vec::new();
        let mut scratch_dirs = Vec::new();
        // STACKSMITH_TEST_PRIVATE_SERVERS=1: never reuse the machine's Postgres and Redis.
        let private = std::env::var_os("STACKSMITH_TEST_PRIVATE_SERVERS").is_some_and(|v| v == "1");
        let database_url = match std::env::var("STACKSMITH_TEST_DATABASE_URL") {
            Ok(url) => url,
            Err(_) if !private && port_open(5432) => {
                "postgres://postgres@127.0.0.1:5432/postgres".to_owned()
            }
            Err(_) => {
                let (url, server, data) = start_postgres(scratch)?;
                servers.push(server);
                scratch_dirs.push(data);
                url
            }
        };
        let redis_url = match std::env::var("STACKSMITH_TEST_REDIS_URL") {
            Ok(url) => url,
            Err(_) if !private && redis_answers(6379) => "redis://127.0.0.1:6379".to_owned(),
            Err(_) => {
                let (url, server) = start_redis(scratch)?;
                servers.push(server);
                url
            }
        };
        Ok(Self {
            database_url,
            redis_url,
            servers,
            scratch: scratch_dirs,
        })
    }
}

/// `postgres://user:secret@host` without the secret, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme_end), Some(at)) if url[scheme_end + 3..at].contains(':') => {
            let user_end = scheme_end + 3 + url[scheme_end + 3..at].find(':').unwrap_or(0);
            format!("{}:***{}", &url[..user_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn log_file(scratch: &Path, name: &str) -> Result<(PathBuf, std::fs::File), String> {
    let path = scratch.join(format!("{name}.log"));
    let file = std::fs::File::create(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    Ok((path, file))
}

/// Starts moto through `tests/emulators/moto_server.py`: moto's own server, with EC2 filter values
/// matched the way AWS matches them (only `*` and `?` are wildcards; plain moto uses fnmatch, where
/// `[0]` in `network.subnet.private[0]` is a character class).
fn start_moto(scratch: &Path) -> Result<(String, Server), String> {
    let port = free_port()?;
    let (log_path, log) = log_file(scratch, &format!("moto-{port}"))?;
    let stderr = log.try_clone().map_err(|e| e.to_string())?;
    let launcher = crate::root()
        .join("tests")
        .join("emulators")
        .join("moto_server.py");
    let child = Command::new(python::venv_python("emulators"))
        .arg(&launcher)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        // AWS managed policies (AmazonEKSWorkerNodePolicy, ...) exist in every real account; the
        // node role attaches them.
        .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", launcher.display()))?;
    let mut server = Server {
        name: "moto",
        child,
    };
    let request = format!("GET /moto-api/data.json HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    wait_until(
        "moto",
        Duration::from_secs(60),
        Some(&log_path),
        &mut server.child,
        || {
            exchange(port, request.as_bytes())
                .is_some_and(|r| r.starts_with("HTTP/1.") && r.contains(" 200 "))
        },
    )?;
    Ok((format!("http://127.0.0.1:{port}"), server))
}

/// Starts `tests/emulators/kube_emulator.py` (kmock plus our adapter) with the `emulators` venv's
/// python, waits for its `READY <url>` line and writes a kubeconfig for it next to its log.
/// `external_kubelet`: `--kubelet external` (a kubelet of ours writes Deployment status).
fn start_kube_emulator(
    scratch: &Path,
    external_kubelet: bool,
) -> Result<(String, PathBuf, Server), String> {
    let script = crate::root()
        .join("tests")
        .join("emulators")
        .join("kube_emulator.py");
    let python = python::venv_python("emulators");
    // The emulator picks its port (`--port 0`) and reports it: no window for another process to
    // take a port we probed.
    let (log_path, log) = log_file(scratch, &format!("kube-emulator-{}", std::process::id()))?;
    let stderr = log.try_clone().map_err(|e| e.to_string())?;
    let child = Command::new(&python)
        .arg(&script)
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(if external_kubelet {
            &["--kubelet", "external"][..]
        } else {
            &[]
        })
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", python.display()))?;
    let mut server = Server {
        name: "kube-emulator",
        child,
    };
    let ready_url = || -> Option<String> {
        let log = std::fs::read_to_string(&log_path).ok()?;
        log.lines()
            .find_map(|line| line.strip_prefix("READY "))
            .map(|url| url.trim().to_owned())
    };
    wait_until(
        "the Kubernetes emulator",
        Duration::from_secs(30),
        Some(&log_path),
        &mut server.child,
        || ready_url().is_some(),
    )?;
    let url = ready_url().ok_or("the Kubernetes emulator printed no URL")?;
    let kubeconfig = scratch.join(format!("kube-emulator-{}.kubeconfig", std::process::id()));
    std::fs::write(&kubeconfig, kubeconfig_yaml(&url))
        .map_err(|e| format!("cannot write {}: {e}", kubeconfig.display()))?;
    Ok((url, kubeconfig, server))
}

/// A kubeconfig for a plain-HTTP server with a dummy token, context `stacksmith-test`.
fn kubeconfig_yaml(url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: stacksmith-test
  cluster:
    server: {url}
users:
- name: stacksmith-test
  user:
    token: stacksmith-test-token
contexts:
- name: stacksmith-test
  context:
    cluster: stacksmith-test
    user: stacksmith-test
    namespace: default
current-context: stacksmith-test
"
    )
}

fn redis_answers(port: u16) -> bool {
    exchange(port, b"PING\r\n").is_some_and(|r| r.starts_with("+PONG"))
}

fn start_redis(scratch: &Path) -> Result<(String, Server), String> {
    if !on_path("redis-server") {
        apt_install(&["redis-server"])
            .map_err(|e| format!("Redis is needed for the tests: {e}"))?;
    }
    let port = free_port()?;
    let (log_path, log) = log_file(scratch, &format!("redis-{port}"))?;
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(scratch)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start redis-server: {e}"))?;
    let mut server = Server {
        name: "redis",
        child,
    };
    wait_until(
        "redis",
        Duration::from_secs(20),
        Some(&log_path),
        &mut server.child,
        || redis_answers(port),
    )?;
    Ok((format!("redis://127.0.0.1:{port}"), server))
}

/// The folder holding `initdb` and `postgres`, installing PostgreSQL when absent.
fn postgres_bin_dir() -> Result<PathBuf, String> {
    let find = || {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|bin| bin.join("initdb").is_file())
            .collect();
        dirs.sort();
        dirs.pop().or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths).find(|d| d.join("initdb").is_file())
            })
        })
    };
    if let Some(dir) = find() {
        return Ok(dir);
    }
    apt_install(&["postgresql"]).map_err(|e| format!("PostgreSQL is needed for the tests: {e}"))?;
    find().ok_or_else(|| "PostgreSQL was installed but initdb is not found".to_owned())
}

fn start_postgres(scratch: &Path) -> Result<(String, Server, RemoveOnDrop), String> {
    let bin = postgres_bin_dir()?;
    let port = free_port()?;
    // As root, Postgres runs as the `postgres` user, which cannot enter /root: keep its data in
    // the system temp dir then.
    let data = if process::is_root() {
        std::env::temp_dir().join(format!("stacksmith-postgres-{port}"))
    } else {
        scratch.join(format!("postgres-{port}"))
    };
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).map_err(|e| format!("cannot create {}: {e}", data.display()))?;
    // Postgres refuses to run as root: run it as the `postgres` user when we are root.
    let as_server_user = |program: PathBuf| -> Command {
        if process::is_root() {
            let _ = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&data)
                .status();
            let mut command = Command::new("setpriv");
            command
                .args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                ])
                .arg(program);
            command
        } else {
            Command::new(program)
        }
    };
    let cluster = data.join("cluster");
    process::run(
        "initialising a private Postgres cluster",
        as_server_user(bin.join("initdb"))
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&cluster)
            .stdout(Stdio::null()),
    )?;
    let (log_path, log) = log_file(scratch, &format!("postgres-{port}"))?;
    let stderr = log.try_clone().map_err(|e| e.to_string())?;
    let child = as_server_user(bin.join("postgres"))
        .arg("-D")
        .arg(&cluster)
        .args([
            "-p",
            &port.to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-k",
        ])
        .arg(&data)
        .args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=300",
        ])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start postgres: {e}"))?;
    let mut server = Server {
        name: "postgres",
        child,
    };
    wait_until(
        "postgres",
        Duration::from_secs(30),
        Some(&log_path),
        &mut server.child,
        || {
            port_open(port)
                && std::fs::read_to_string(&log_path)
                    .is_ok_and(|log| log.contains("ready to accept connections"))
        },
    )?;
    Ok((
        format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        server,
        RemoveOnDrop(data),
    ))
}
