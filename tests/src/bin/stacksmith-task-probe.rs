//! A task program for the isolation tests: what a hostile task of one team would try.
//!
//! `stacksmith-task-probe probe [PATH...]` tries every way a task could reach secrets that are not
//! its own and prints a JSON report on stdout (its result): its own environment; for every other
//! process it can see, `/proc/<pid>/environ`, `cmdline`, `mem`, `maps`, `fd`, `root`, `cwd` and
//! `exe`; every file below the writable and mounted directories it can see (`/tmp`, `/dev/shm`,
//! `/run`, `/var/run/secrets`, the mount points of `/proc/self/mountinfo`); and each PATH given
//! (another task's `HOME` and `TMPDIR`, say). A secret is recognised by name
//! (`CONTROLPLANE_WORKER_KEY`, `CONTROLPLANE_ADMIN_KEY`, `DATABASE_URL`, `REDIS_URL`,
//! `PLANTED_SECRET`) or by the prefixes the tests give secret values (`worker-key-`,
//! `planted-secret-`); the report names the secret found, never its value.
//!
//! `stacksmith-task-probe plant` is the other team's task: it writes `$PLANTED_SECRET` into files
//! of its `HOME` and `TMPDIR`, `/tmp` (world-readable, as a careless task would) and `/dev/shm`,
//! then connects to `$PROBE_READY_ADDR`, sends its `HOME`, `TMPDIR` and process id, and stays
//! alive until the test closes the connection (at most 5 minutes).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// Variable names whose value is a secret that is not the task's.
const SECRET_NAMES: &[&str] = &[
    "CONTROLPLANE_WORKER_KEY",
    "CONTROLPLANE_ADMIN_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "PLANTED_SECRET",
];
/// Prefixes the tests give secret values.
const SECRET_PREFIXES: &[&str] = &["worker-key-", "planted-secret-"];
/// What a task may find in its own environment.
const ALLOWED_OWN: &[&str] = &["PATH", "HOME", "TMPDIR"];

fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("probe") => {
            let extra: Vec<PathBuf> = args.map(PathBuf::from).collect();
            println!("{}", probe(&extra));
        }
        Some("plant") => plant(),
        _ => {
            eprintln!("usage: stacksmith-task-probe probe [PATH...] | plant");
            std::process::exit(2);
        }
    }
}

/// The secrets `bytes` contains (names and value prefixes), never their values.
fn secrets_in(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    SECRET_NAMES
        .iter()
        .chain(SECRET_PREFIXES)
        .filter(|needle| text.contains(*needle))
        .map(|needle| (*needle).to_owned())
        .collect()
}

/// An attempt's outcome: `refused (...)`, `absent`, `readable, no secret` or `LEAK: ...`.
fn outcome(result: std::io::Result<Vec<u8>>) -> String {
    match result {
        Ok(bytes) => {
            let found = secrets_in(&bytes);
            if found.is_empty() {
                format!("readable, no secret ({} bytes)", bytes.len())
            } else {
                format!("LEAK: {}", found.join(", "))
            }
        }
        Err(error) => match error.kind() {
            std::io::ErrorKind::PermissionDenied => format!("refused ({error})"),
            std::io::ErrorKind::NotFound => "absent (no such file or process)".to_owned(),
            _ => format!("refused ({error})"),
        },
    }
}

fn read_limited(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Reads a few bytes of a process's memory at the start of its first mapping (or a usual
/// address when its `maps` is refused too).
fn read_mem(pid: u32) -> std::io::Result<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    let address = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .ok()
        .and_then(|maps| {
            let first = maps.lines().next()?.split('-').next()?.to_owned();
            u64::from_str_radix(&first, 16).ok()
        })
        .unwrap_or(0x40_0000);
    let mut file = std::fs::File::open(format!("/proc/{pid}/mem"))?;
    file.seek(SeekFrom::Start(address))?;
    let mut bytes = vec![0u8; 4096];
    let read = file.read(&mut bytes)?;
    bytes.truncate(read);
    Ok(bytes)
}

/// Every entry of a directory listing, joined (a listing of `fd` shows sockets and pipes).
fn list(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        names.push(entry.file_name().to_string_lossy().into_owned());
        // Follow fd links' targets as far as they are readable.
        if let Ok(target) = std::fs::read_link(entry.path()) {
            names.push(target.to_string_lossy().into_owned());
        }
    }
    Ok(names.join("\n").into_bytes())
}

fn status_field(pid: u32, field: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .map(|value| value.split_whitespace().next().unwrap_or("").to_owned())
}

fn processes() -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids
}

/// Walks `root` (no symlinks followed, bounded), reading every regular file.
fn walk(
    root: &Path,
    attempts: &mut Vec<Value>,
    seen: &mut BTreeSet<PathBuf>,
    budget: &mut u32,
    read_without_secret: &mut u32,
) {
    if *budget == 0 || !seen.insert(root.to_path_buf()) {
        return;
    }
    *budget -= 1;
    let metadata = match std::fs::symlink_metadata(root) {
        Ok(metadata) => metadata,
        Err(error) => {
            attempts.push(json!({"target": root, "outcome": outcome(Err(error))}));
            return;
        }
    };
    if metadata.is_dir() {
        match std::fs::read_dir(root) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    walk(&entry.path(), attempts, seen, budget, read_without_secret);
                }
            }
            Err(error) => {
                attempts.push(
                    json!({"target": root, "what": "directory", "outcome": outcome(Err(error))}),
                );
            }
        }
    } else if metadata.is_file() {
        let result = read_limited(root, 1 << 20);
        // Only the files that hold something worth reporting: refusals and secrets.
        let text = outcome(result);
        if text.starts_with("readable") {
            *read_without_secret += 1;
        } else {
            attempts.push(json!({"target": root, "what": "file", "outcome": text}));
        }
    }
}

fn probe(extra: &[PathBuf]) -> Value {
    let me = std::process::id();
    // Its own environment.
    let names: Vec<String> = std::env::vars_os()
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .collect();
    let unexpected: Vec<&String> = names
        .iter()
        .filter(|name| !ALLOWED_OWN.contains(&name.as_str()) && !name.starts_with("STACKSMITH_"))
        .collect();
    let own_values: Vec<u8> = std::env::vars_os()
        .flat_map(|(name, value)| {
            let mut line = name.to_string_lossy().into_owned();
            line.push('=');
            line.push_str(&value.to_string_lossy());
            line.push('\n');
            line.into_bytes()
        })
        .collect();
    let mut attempts = Vec::new();
    attempts.push(json!({"target": "own environment", "outcome": outcome(Ok(own_values))}));
    // Every other process in sight.
    let mut seen_processes = Vec::new();
    for pid in processes() {
        if pid == me {
            continue;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim().to_owned())
            .unwrap_or_default();
        let uid = status_field(pid, "Uid").unwrap_or_default();
        let state = status_field(pid, "State").unwrap_or_default();
        seen_processes.push(json!({"pid": pid, "comm": comm, "uid": uid, "state": state}));
        let what = format!("pid {pid} ({comm}, uid {uid})");
        let base = PathBuf::from(format!("/proc/{pid}"));
        for (file, result) in [
            ("environ", read_limited(&base.join("environ"), 1 << 20)),
            ("cmdline", read_limited(&base.join("cmdline"), 1 << 16)),
            ("mem", read_mem(pid)),
            ("maps", read_limited(&base.join("maps"), 1 << 16)),
            ("fd", list(&base.join("fd"))),
            ("root", list(&base.join("root/tmp"))),
            ("cwd", list(&base.join("cwd"))),
            (
                "exe",
                std::fs::read_link(base.join("exe"))
                    .map(|p| p.to_string_lossy().into_owned().into_bytes()),
            ),
        ] {
            attempts
                .push(json!({"target": base.join(file), "what": what, "outcome": outcome(result)}));
        }
    }
    // Files: the writable and mounted places of the container, and the paths given.
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let tmpdir = std::env::var_os("TMPDIR").map(PathBuf::from);
    let mut roots: Vec<PathBuf> = [
        "/tmp",
        "/dev/shm",
        "/run",
        "/var/run/secrets",
        "/stacksmith",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    if let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in mountinfo.lines() {
            if let Some(point) = line.split_whitespace().nth(4) {
                let skip = point == "/"
                    || [
                        "/proc", "/sys", "/dev", "/usr", "/etc", "/boot", "/work", "/root",
                    ]
                    .iter()
                    .any(|p| point == *p || point.starts_with(&format!("{p}/")))
                        && !point.starts_with("/dev/shm");
                if !skip {
                    roots.push(PathBuf::from(point));
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    let mut budget = 5000;
    let mut files_read_without_secret = 0;
    for root in &roots {
        walk(
            root,
            &mut attempts,
            &mut seen,
            &mut budget,
            &mut files_read_without_secret,
        );
    }
    // Other tasks' private directories in sight.
    let others: Vec<PathBuf> = std::fs::read_dir("/tmp")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("stacksmith-task-"))
                && !home.as_ref().is_some_and(|h| h.starts_with(path))
        })
        .collect();
    for path in others.iter().chain(extra) {
        attempts.push(json!({"target": path, "what": "another task's directory", "outcome": outcome(list(path))}));
        let file = path.join("secret");
        attempts.push(json!({"target": file, "what": "another task's file", "outcome": outcome(read_limited(&file, 1 << 20))}));
    }
    let count = |prefix: &str| {
        attempts
            .iter()
            .filter(|a| a["outcome"].as_str().is_some_and(|o| o.starts_with(prefix)))
            .count()
    };
    let scratch: serde_json::Map<String, Value> = ["/tmp", "/dev/shm"]
        .iter()
        .map(|dir| {
            let names: Vec<String> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            ((*dir).to_owned(), json!(names))
        })
        .collect();
    json!({
        "uid": status_field(me, "Uid"),
        "scratch": scratch,
        "pid": me,
        "home": home,
        "tmpdir": tmpdir,
        "own_environment": {"names": names, "unexpected": unexpected},
        "processes": seen_processes,
        "other_task_directories_in_tmp": others,
        "summary": {
            "attempts": attempts.len(),
            "refused": count("refused"),
            "absent": count("absent"),
            "readable_without_secret": count("readable"),
            "leaks": count("LEAK"),
            "files_read_without_secret": files_read_without_secret,
        },
        "attempts": attempts,
    })
}

fn plant() {
    let secret = std::env::var("PLANTED_SECRET").expect("PLANTED_SECRET");
    let home = PathBuf::from(std::env::var_os("HOME").expect("HOME"));
    let tmpdir = PathBuf::from(std::env::var_os("TMPDIR").expect("TMPDIR"));
    for dir in [&home, &tmpdir] {
        std::fs::write(dir.join("secret"), &secret).expect("plant a secret");
    }
    let careless = PathBuf::from(format!("/tmp/planted-{}", std::process::id()));
    std::fs::write(&careless, &secret).expect("plant a secret in /tmp");
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&careless, std::fs::Permissions::from_mode(0o644));
    }
    let shm = PathBuf::from(format!("/dev/shm/planted-{}", std::process::id()));
    let _ = std::fs::write(&shm, &secret);
    let address = std::env::var("PROBE_READY_ADDR").expect("PROBE_READY_ADDR");
    let mut stream = std::net::TcpStream::connect(&address).expect("reach the test");
    writeln!(
        stream,
        "HOME={}\nTMPDIR={}\nPID={}\n",
        home.display(),
        tmpdir.display(),
        std::process::id()
    )
    .expect("tell the test");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(300)))
        .expect("timeout");
    // Until the test closes the connection.
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let _ = std::fs::remove_file(&shm);
    println!("{}", json!({"planted": true}));
}
