//! The installed half of `cargo xtask local`: the control plane runs as `up` installed it.
//!
//! Before `up`, [`Cluster::start`] starts the test kubelet (`stacksmith-kubelet run`, from
//! `tests/src/kubelet/`) against the Kubernetes emulator (which runs with `--kubelet external`):
//! it runs the Deployments `up` applies (the API replicas, their `migrate` init container, the
//! worker pool) with their command, args, environment, users and probes as applied, gives the
//! Services their names, and leads the database and cache endpoints `up` recorded in moto to the
//! local Postgres and Redis. `up`'s rollout wait passes on the readiness it reports.
//!
//! After `up`, [`Cluster::run_workflow`] creates a team and its key the way an operator would on
//! a cluster (`kubectl exec` into the API's Deployment: `stacksmith-kubelet exec --deployment`),
//! runs `controlplane/workflows/local-release.json` from a client pod through the Service name,
//! and checks from each task's result (its `host`, the pod's name) that a pod of the installed
//! worker pool ran it.
//!
//! The pods' logs stay under `/var/tmp/stacksmith-local/pods/` after the run; the kubelet's own log
//! is `.stacksmith/local/kubelet.log`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::environment::TestEnvironment;
use crate::process::{Server, wait_until};

/// The workflow run against the installed control plane, relative to the workspace root.
pub const WORKFLOW: &str = "controlplane/workflows/local-release.json";
/// The kubelet's folder: the pods' volumes and logs, the hosts file, the "image".
const SCRATCH: &str = "/var/tmp/stacksmith-local";
/// Where the pods' logs are (`<pod>/<container>.log`).
pub const PODS_LOGS: &str = "/var/tmp/stacksmith-local/pods";
/// The stack whose objects the kubelet runs (its `stacksmith.dev/stack` label).
const STACK: &str = "local";
/// The API's Deployment, `NAMESPACE/NAME`.
const API_DEPLOYMENT: &str = "system/stacksmith-controlplane";
/// The API's Service as pods name it.
const API_SERVICE_URL: &str = "http://stacksmith-controlplane.system.svc";
/// The control plane image (any tag): the binary we built.
const CONTROLPLANE_IMAGE: &str = "ghcr.io/acme/stacksmith-controlplane";
/// The default pool's task image (any tag): this machine's programs.
const TASK_IMAGE: &str = "docker.io/library/debian";
const TASK_IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The worker pool whose pods must run the workflow's tasks.
const WORKER_POOL: &str = "Deployment/stacksmith-worker-default";

/// A pod as the kubelet lists it (`<scratch>/pods.tsv`, see
/// `stacksmith_testkit::kubelet::pods_table`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub owner: String,
    pub phase: String,
    pub ready: bool,
    pub restarts: u32,
    pub ip: String,
}

/// The lines of a `pods.tsv`; torn or foreign lines are skipped.
fn parse_pods(text: &str) -> Vec<Pod> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [namespace, name, owner, phase, ready, restarts, ip] = fields[..] else {
                return None;
            };
            Some(Pod {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                owner: owner.to_owned(),
                phase: phase.to_owned(),
                ready: ready == "ready",
                restarts: restarts.parse().ok()?,
                ip: ip.to_owned(),
            })
        })
        .collect()
}

/// The test kubelet running the `local` stack; stopped (its pods with it) when dropped.
pub struct Cluster {
    scratch: PathBuf,
    kubelet: PathBuf,
    api_url: String,
    images: [String; 2],
    log: PathBuf,
    server: Server,
}

impl Cluster {
    /// Starts `stacksmith-kubelet run` for the `local` stack. `debug` holds the binaries we built;
    /// `logs` gets `kubelet.log`. Needs root.
    pub fn start(environment: &TestEnvironment, debug: &Path, logs: &Path) -> Result<Self, String> {
        // The pods run as the users their manifests name: their folder, the "image" and the
        // workflow file must be theirs to read, wherever the workspace is (/root is private).
        // Not under /tmp: containers get an emptyDir there, which would hide the image.
        let scratch = PathBuf::from(SCRATCH);
        let _ = std::fs::remove_dir_all(&scratch);
        let image = scratch.join("image");
        std::fs::create_dir_all(&image)
            .map_err(|e| format!("cannot create {}: {e}", image.display()))?;
        open(&scratch, 0o755)?;
        open(&image, 0o755)?;
        let binary = image.join("controlplane");
        let built = debug.join("controlplane");
        if std::fs::hard_link(&built, &binary).is_err() {
            std::fs::copy(&built, &binary)
                .map_err(|e| format!("cannot copy {}: {e}", built.display()))?;
        }
        open(&binary, 0o755)?;
        std::fs::create_dir_all(logs)
            .map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
        let log = logs.join("kubelet.log");
        let file = std::fs::File::create(&log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let kubelet = debug.join("stacksmith-kubelet");
        let images = [
            format!("{CONTROLPLANE_IMAGE}={}", image.display()),
            format!("{TASK_IMAGE}={TASK_IMAGE_PATH}"),
        ];
        println!(
            "xtask: start the test kubelet for the `{STACK}` stack: stacksmith-kubelet run \
             (pods under {}, log: {})",
            scratch.display(),
            log.display()
        );
        let child = Command::new(&kubelet)
            .args(["run", "--api", &environment.kube_url, "--stack", STACK])
            .arg("--scratch")
            .arg(&scratch)
            .args(images.iter().flat_map(|i| ["--image", i.as_str()]))
            .args(["--postgres", &environment.database_url])
            .args(["--redis", &environment.redis_url])
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", kubelet.display()))?;
        let mut server = Server {
            name: "stacksmith-kubelet",
            child,
        };
        let hosts = scratch.join("hosts");
        wait_until(
            "the test kubelet",
            Duration::from_secs(30),
            Some(&log),
            &mut server.child,
            || hosts.is_file(),
        )?;
        Ok(Self {
            scratch,
            kubelet,
            api_url: environment.kube_url.clone(),
            images,
            log,
            server,
        })
    }

    /// The pods the kubelet runs now.
    pub fn pods(&self) -> Vec<Pod> {
        std::fs::read_to_string(self.scratch.join("pods.tsv"))
            .map(|text| parse_pods(&text))
            .unwrap_or_default()
    }

    /// Fails when the kubelet stopped.
    fn alive(&mut self) -> Result<(), String> {
        match self.server.child.try_wait() {
            Ok(None) => Ok(()),
            _ => Err(format!(
                "the test kubelet stopped (log: {})",
                self.log.display()
            )),
        }
    }

    /// Prints the pods, one `xtask:` line each.
    pub fn print_pods(&self, heading: &str) {
        let pods = self.pods();
        println!("xtask: {heading}: {} pods", pods.len());
        for pod in pods {
            println!(
                "xtask:   {:<50} {:<40} {:<8} {:<9} restarts {} at {}",
                format!("{}/{}", pod.namespace, pod.name),
                pod.owner,
                pod.phase,
                if pod.ready { "ready" } else { "not ready" },
                pod.restarts,
                pod.ip
            );
        }
    }

    /// Prints what the kubelet reported about the endpoints `up` recorded (where they lead) and
    /// the API's migrations (its init container).
    pub fn print_endpoints_and_migrations(&self) {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        for line in log.lines().filter(|line| {
            line.contains(": the local Postgres")
                || line.contains(": the local Redis")
                || line.contains("init container migrate exited")
        }) {
            println!("xtask: {line}");
        }
    }

    /// Waits (bounded) until every Deployment pod is ready and one of the worker pool is.
    pub fn wait_running(&mut self) -> Result<Vec<Pod>, String> {
        let limit = Duration::from_secs(60);
        let deadline = std::time::Instant::now() + limit;
        loop {
            self.alive()?;
            let pods = self.pods();
            let running = pods
                .iter()
                .filter(|p| p.owner.starts_with("Deployment/"))
                .all(|p| p.ready);
            if running && pods.iter().any(|p| p.owner == WORKER_POOL && p.ready) {
                return Ok(pods);
            }
            if std::time::Instant::now() >= deadline {
                self.print_pods("the pods");
                return Err(format!(
                    "the installed pods were not all ready within {}s (kubelet log: {})",
                    limit.as_secs(),
                    self.log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `kubectl exec deploy/stacksmith-controlplane -- controlplane ARGS`: the API container's
    /// environment and user, its binary; the output on success.
    fn exec_api(&self, args: &[&str]) -> Result<String, String> {
        let output = self.command("exec", "--deployment", API_DEPLOYMENT, |command| {
            command
                .args(["--api", &self.api_url, "--stack", STACK])
                .args(self.images.iter().flat_map(|i| ["--image", i.as_str()]))
                .args(["--timeout-seconds", "60", "--", "controlplane"])
                .args(args);
        })?;
        if !output.status.success() {
            return Err(format!(
                "`controlplane {}` in {API_DEPLOYMENT} failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `stacksmith-kubelet SUBCOMMAND --scratch S FLAG VALUE ...`, its output captured.
    fn command(
        &self,
        subcommand: &str,
        flag: &str,
        value: &str,
        more: impl FnOnce(&mut Command),
    ) -> Result<Output, String> {
        let mut command = Command::new(&self.kubelet);
        command
            .arg(subcommand)
            .arg("--scratch")
            .arg(&self.scratch)
            .args([flag, value]);
        more(&mut command);
        command
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.kubelet.display()))
    }

    /// Creates a team and its key through the API's Deployment, runs the workflow from a client
    /// pod through the API's Service name, and checks that the worker pool's pods ran every
    /// task. True when the workflow succeeded and they did.
    pub fn run_workflow(&mut self, root: &Path) -> Result<bool, String> {
        self.alive()?;
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let team_name = format!("local-demo-{seconds}");
        println!(
            "xtask: create a team as an operator would: stacksmith-kubelet exec --deployment \
             {API_DEPLOYMENT} -- controlplane teams create --name {team_name}"
        );
        let team = self.exec_api(&["teams", "create", "--name", &team_name])?;
        let team_id =
            json_string_field(&team, "id").ok_or_else(|| format!("no team id in {team}"))?;
        println!(
            "xtask: and its key: stacksmith-kubelet exec --deployment {API_DEPLOYMENT} -- \
             controlplane keys create --team {team_id} --name xtask-local"
        );
        let key = self.exec_api(&[
            "keys",
            "create",
            "--team",
            &team_id,
            "--name",
            "xtask-local",
        ])?;
        let team_key =
            json_string_field(&key, "key").ok_or("no key in the output of `keys create`")?;

        // The client pod reads the workflow file and runs our binary as `nobody`.
        let file = self.scratch.join("local-release.json");
        std::fs::copy(root.join(WORKFLOW), &file)
            .map_err(|e| format!("cannot copy {WORKFLOW}: {e}"))?;
        open(&file, 0o644)?;
        let binary = self.scratch.join("image").join("controlplane");
        println!(
            "xtask: run {WORKFLOW} from a client pod through the Service: controlplane \
             workflows run --url {API_SERVICE_URL} --file {}",
            file.display()
        );
        let output = self.command("exec", "--pass-env", "CONTROLPLANE_API_KEY", |command| {
            command
                .args(["--timeout-seconds", "180", "--"])
                .arg(&binary)
                .args([
                    "workflows",
                    "run",
                    "--url",
                    API_SERVICE_URL,
                    "--wait-seconds",
                    "120",
                    "--file",
                ])
                .arg(&file)
                .env("CONTROLPLANE_API_KEY", &team_key);
        })?;
        let progress = String::from_utf8_lossy(&output.stderr);
        let summary = String::from_utf8_lossy(&output.stdout);
        for line in progress.lines().chain(summary.lines()) {
            println!("  {line}");
        }
        if !output.status.success() {
            return Ok(false);
        }
        // Which pod ran each task: its result names the pod's host name.
        let pods = self.pods();
        let mut all_in_pool = true;
        let ran = tasks_and_hosts(&summary);
        if ran.is_empty() {
            println!("xtask: no task result names its host");
            return Ok(false);
        }
        for (task, host) in ran {
            match pods.iter().find(|p| p.name == host) {
                Some(pod) if pod.owner == WORKER_POOL => println!(
                    "xtask: task {task} ran in pod {}/{} of {} (at {})",
                    pod.namespace, pod.name, pod.owner, pod.ip
                ),
                _ => {
                    all_in_pool = false;
                    println!(
                        "xtask: task {task} ran on `{host}`, which is no pod of {WORKER_POOL}"
                    );
                }
            }
        }
        Ok(all_in_pool)
    }
}

/// Makes a path readable (and a folder traversable) by the pods' users.
fn open(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))
}

/// The value of `"field":"..."` in one-line JSON the controlplane CLI printed.
fn json_string_field(text: &str, field: &str) -> Option<String> {
    let start = text.find(&format!("\"{field}\":\""))? + field.len() + 4;
    let end = start + text[start..].find('"')?;
    Some(text[start..end].to_owned())
}

/// (task, host) from the summary `controlplane workflows run` prints: lines
/// `  NAME  STATE  result {...}` whose result's top-level `"host"` is the task's own (a
/// dependency's results, nested, name theirs; keys come in any order).
fn tasks_and_hosts(summary: &str) -> Vec<(String, String)> {
    summary
        .lines()
        .filter_map(|line| {
            let (head, result) = line.split_once(" result ")?;
            let task = head.split_whitespace().next()?;
            let host = top_level_string(result.trim(), "host")?;
            Some((task.to_owned(), host))
        })
        .collect()
}

/// The string value of `field` among the top-level keys of a JSON object (escapes other than
/// `\"` and `\\` are left as they are: host names have none).
fn top_level_string(json: &str, field: &str) -> Option<String> {
    let bytes = json.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    // Whether the string that just ended was a key at depth 1, and which.
    let mut last_key: Option<String> = None;
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.checked_sub(1)?,
            b'"' => {
                let (text, end) = json_string(json, i)?;
                let after = json[end..].trim_start();
                if depth == 1 && after.starts_with(':') {
                    last_key = Some(text);
                } else if depth == 1 && last_key.as_deref() == Some(field) {
                    return Some(text);
                } else {
                    last_key = None;
                }
                i = end;
                continue;
            }
            b',' => last_key = None,
            _ => {}
        }
        i += 1;
    }
    None
}

/// The string starting at the quote at `start`, and the index just after its closing quote.
fn json_string(json: &str, start: usize) -> Option<(String, usize)> {
    let mut text = String::new();
    let mut chars = json[start + 1..].char_indices();
    while let Some((offset, c)) = chars.next() {
        match c {
            '"' => return Some((text, start + 1 + offset + 1)),
            '\\' => text.push(chars.next()?.1),
            c => text.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelets_pods_table_is_read() {
        let table = "system\tstacksmith-controlplane-6f9c-1\tDeployment/stacksmith-controlplane\tRunning\tready\t0\t127.42.0.3\n\
                     workers\tstacksmith-worker-default-77-2\tDeployment/stacksmith-worker-default\tPending\tnot-ready\t2\t127.42.0.4\n\
                     torn\tline\n";
        let pods = parse_pods(table);
        assert_eq!(pods.len(), 2);
        assert_eq!(pods[0].name, "stacksmith-controlplane-6f9c-1");
        assert!(pods[0].ready);
        assert_eq!((pods[1].ready, pods[1].restarts), (false, 2));
        assert_eq!(pods[1].owner, WORKER_POOL);
    }

    #[test]
    fn each_task_is_paired_with_its_own_host() {
        let summary = r#"workflow 0193 succeeded after 4.1s
  checkout         succeeded  result {"commit":"4f2a9c1","host":"stacksmith-worker-default-a"}
  lint             succeeded  result {"host":"stacksmith-worker-default-b","warnings":0}
  package          succeeded  result {"host":"stacksmith-worker-default-c","checks":{"lint":{"host":"stacksmith-worker-default-b","warnings":0}},"artifact":"app.tar.gz"}
  unit-tests       succeeded  result {"checks": {"host": "x"}, "host" : "stacksmith-worker-default-d"}
  odd              succeeded  result {"hostname":"h","list":["host"],"note":"host"}
  broken           failed     error: exit status 1
"#;
        assert_eq!(
            tasks_and_hosts(summary),
            [
                ("checkout", "stacksmith-worker-default-a"),
                ("lint", "stacksmith-worker-default-b"),
                ("package", "stacksmith-worker-default-c"),
                ("unit-tests", "stacksmith-worker-default-d"),
            ]
            .map(|(t, h)| (t.to_owned(), h.to_owned()))
        );
        let team = r#"{"id":"0193a1b2-0000-7000-8000-000000000001","name":"local-demo"}"#;
        assert_eq!(
            json_string_field(team, "id").as_deref(),
            Some("0193a1b2-0000-7000-8000-000000000001")
        );
        assert_eq!(json_string_field(team, "missing"), None);
    }
}
