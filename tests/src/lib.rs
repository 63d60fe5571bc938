//! Test harness shared by Stacksmith's crates.
//!
//! `cargo xtask test` starts the servers the suite talks to (moto, Postgres, Redis, the
//! Kubernetes API emulator) on 127.0.0.1 and passes their addresses through environment variables.
//! The functions here read them. Postgres and Redis fall back to the usual local ports, so a
//! single test can also be run with plain `cargo test` on a machine that has them; the emulators
//! have no fallback, and a test that needs one fails with an instruction instead of skipping.

use std::path::{Path, PathBuf};

pub mod container;
pub mod faultproxy;
pub mod kubelet;
pub mod moto;
pub mod tls;

/// `STACKSMITH_TEST_DATABASE_URL`: a Postgres URL whose user may create databases.
pub const DATABASE_URL_VAR: &str = "STACKSMITH_TEST_DATABASE_URL";
/// `STACKSMITH_TEST_REDIS_URL`: a Redis URL; tests give their keys a unique prefix.
pub const REDIS_URL_VAR: &str = "STACKSMITH_TEST_REDIS_URL";
/// `STACKSMITH_TEST_AWS_ENDPOINT`: the moto server's base URL.
pub const AWS_ENDPOINT_VAR: &str = "STACKSMITH_TEST_AWS_ENDPOINT";
/// `STACKSMITH_TEST_KUBE_URL`: the Kubernetes API emulator's base URL (plain HTTP).
pub const KUBE_URL_VAR: &str = "STACKSMITH_TEST_KUBE_URL";
/// `STACKSMITH_TEST_KUBECONFIG`: a kubeconfig file pointing at the Kubernetes API emulator.
pub const KUBECONFIG_VAR: &str = "STACKSMITH_TEST_KUBECONFIG";
/// `STACKSMITH_TEST_VENV_BIN`: the `bin` folder of the Python venv holding the emulators and checkers.
pub const VENV_BIN_VAR: &str = "STACKSMITH_TEST_VENV_BIN";

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The Postgres server for tests (an admin-capable URL: create a database per test from it).
pub fn database_url() -> String {
    std::env::var(DATABASE_URL_VAR).unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned())
}

/// The Redis server for tests.
pub fn redis_url() -> String {
    std::env::var(REDIS_URL_VAR).unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned())
}

/// The moto server's base URL. Panics with an instruction when the suite was not started by
/// `cargo xtask test`.
pub fn aws_endpoint() -> String {
    required(AWS_ENDPOINT_VAR, "the moto server")
}

/// The Kubernetes API emulator's base URL (`http://127.0.0.1:PORT`). Panics with an instruction
/// when the suite was not started by `cargo xtask test`.
pub fn kube_url() -> String {
    required(KUBE_URL_VAR, "the Kubernetes API emulator")
}

/// A kubeconfig (context `stacksmith-test`) for the Kubernetes API emulator. Panics with an
/// instruction when the suite was not started by `cargo xtask test`.
pub fn kubeconfig() -> PathBuf {
    PathBuf::from(required(
        KUBECONFIG_VAR,
        "a kubeconfig for the Kubernetes API emulator",
    ))
}

/// Path of a tool installed in the test venv (`moto_server`, `schemathesis`, `hadolint`, ...).
pub fn venv_tool(name: &str) -> PathBuf {
    PathBuf::from(required(VENV_BIN_VAR, "the Python test venv")).join(name)
}

/// The workspace root (the folder holding `Cargo.toml`, `stacks/`, `tests/`).
///
/// Found at run time from the package under test (cargo and nextest set `CARGO_MANIFEST_DIR`
/// when they run a test): the path compiled into this crate can name another checkout when one
/// target directory serves several (cargo hashes path dependencies relative to the workspace).
pub fn workspace_root() -> PathBuf {
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR"));
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| compiled.to_path_buf(), PathBuf::from);
    start
        .ancestors()
        .find(|dir| dir.join("Cargo.toml").is_file() && dir.join("stacks").is_dir())
        .or_else(|| compiled.parent())
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}

/// The `provisioner` at `binary` set up against moto at `endpoint`: moto's test credentials, no
/// instance metadata, `state_key` encrypting the state, no colour, and none of the caller's own
/// provider, profile, call log or log filter; standard input closed. The caller adds the
/// arguments, the directory, the policies and the kubeconfig.
pub fn provisioner_against_moto(
    binary: impl AsRef<std::ffi::OsStr>,
    endpoint: &str,
    state_key: &str,
) -> std::process::Command {
    let mut command = std::process::Command::new(binary);
    command
        .env("STACKSMITH_AWS_ENDPOINT", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("STACKSMITH_STATE_KEY", state_key)
        .env("NO_COLOR", "1")
        .env_remove("STACKSMITH_PROVIDER")
        .env_remove("STACKSMITH_AWS_CALL_LOG")
        .env_remove("AWS_PROFILE")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null());
    command
}

/// Runs `command` (a `provisioner` invocation) with its AWS call log on, in a new file under
/// `dir` (`STACKSMITH_AWS_CALL_LOG`): the output and the calls made, one `service:Operation`
/// per line.
pub fn output_with_aws_calls(
    command: &mut std::process::Command,
    dir: &Path,
) -> (std::process::Output, Vec<String>) {
    let log = dir.join(format!("{}.calls", unique_name("c")));
    let output = command
        .env("STACKSMITH_AWS_CALL_LOG", &log)
        .output()
        .expect("the provisioner runs");
    let calls = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    (output, calls)
}

/// A name unique to this process and call: for per-test databases, Redis key prefixes, stack names.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn required(var: &str, what: &str) -> String {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{var} is not set: this test needs {what}. Run the suite with `cargo xtask test` \
             (it starts the servers and sets {var}), or set it yourself."
        ),
    }
}

/// A finished process's status, stdout and stderr, for assertion messages.
pub fn describe(output: &std::process::Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The `provisioner` binary (`binary`: the test's `env!("CARGO_BIN_EXE_provisioner")`) run in
/// `dir` against the test-only fake cloud in `dir/cloud`, with the shipped policies, the state key
/// `state_key`, no colour, no stdin, and none of the fake's fault knobs inherited from the caller.
pub fn fake_cloud_provisioner(
    binary: &str,
    dir: &std::path::Path,
    state_key: &str,
) -> std::process::Command {
    let mut command = std::process::Command::new(binary);
    command
        .current_dir(dir)
        .env("STACKSMITH_PROVIDER", "fake")
        .env("STACKSMITH_FAKE_CLOUD_DIR", dir.join("cloud"))
        .env("STACKSMITH_POLICIES_DIR", workspace_root().join("policies"))
        .env("STACKSMITH_STATE_KEY", state_key)
        .env("NO_COLOR", "1")
        .env_remove("STACKSMITH_FAKE_FAIL")
        .env_remove("STACKSMITH_FAKE_THROTTLE")
        .env_remove("STACKSMITH_FAKE_LATENCY_MS")
        .stdin(std::process::Stdio::null());
    command
}

/// A binary of the workspace built next to the running test (`target/<profile>/<name>`): for a
/// binary of another package, which `env!("CARGO_BIN_EXE_...")` cannot name. `cargo xtask test`
/// and `cargo build --workspace --all-targets` build them all.
pub fn workspace_binary(name: &str) -> PathBuf {
    let test = std::env::current_exe().expect("the test's path");
    let profile_dir = test
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first (`cargo build --workspace --all-targets`)",
        path.display()
    );
    path
}

/// The objects of a file `provisioner render` wrote: block YAML documents, each after a `---`
/// line, as JSON values. Panics, naming the document, when one is not YAML.
pub fn rendered_objects(text: &str) -> Vec<serde_json::Value> {
    text.split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| {
            serde_saphyr::from_str(d).unwrap_or_else(|e| panic!("not a YAML document ({e}):\n{d}"))
        })
        .collect()
}
