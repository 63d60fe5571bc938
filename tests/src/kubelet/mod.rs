//! A kubelet for tests: runs what `provisioner up` applied to the Kubernetes API emulator, as a
//! cluster would, so that a test proves the installed system works rather than that the objects
//! were accepted ("what `up` installs is what the tests run", ARCHITECTURE.md).
//!
//! Started against the emulator (run with `--kubelet external`, so that readiness is this
//! kubelet's to report), it reads back, every few hundred milliseconds, the Deployments, Jobs,
//! Services, ConfigMaps, Secrets and ServiceAccounts carrying the stack's label
//! (`stacksmith.dev/stack`), and:
//!
//! - keeps `spec.replicas` pods of each Deployment's current template (a new template gets new
//!   pods; the old ones are stopped once the new ones are ready, as `maxUnavailable: 0` says),
//!   runs each Job's pod to completion, and replaces a pod that was deleted ([`Kubelet::delete_pod`]);
//! - runs each pod's init containers in order, then its containers, each with its `command` and
//!   `args` exactly as applied (`$(VAR)` expanded), the environment of `env`, `envFrom` and
//!   `valueFrom` (ConfigMaps and Secrets as read back, the pod's own fields), its
//!   `securityContext` user, its volumes (emptyDirs shared by the containers of the pod), and the
//!   image mapped to a `PATH` holding the binaries we built ([`runtime`]); restarts a container
//!   that exits or fails its liveness probe (with back-off), runs startup and readiness probes;
//! - gives each pod a loopback address of its own and each Service an address whose proxy spreads
//!   connections over the ready pods behind it; the pods' `/etc/hosts` resolves Service names
//!   (`<svc>.<ns>.svc`, `<svc>.<ns>.svc.cluster.local`), the Kubernetes API
//!   (`kubernetes.default.svc`, and `KUBERNETES_SERVICE_HOST`/`PORT` in every container) and the
//!   database and cache endpoints that the stack's configuration names, which lead to the local
//!   Postgres and Redis with the stack's TLS and auth ([`network`]);
//! - projects a service-account token (TokenRequest) into pods that automount one, so that RBAC
//!   decides what they may do;
//! - writes each Deployment's and Job's status from what runs (`observedGeneration`, `replicas`,
//!   `updatedReplicas`, `readyReplicas`, `availableReplicas`, conditions), so `up`'s rollout wait
//!   sees real readiness;
//! - runs Jobs as the Job controller does: `completions` pods succeeded (`parallelism` at a time),
//!   `backoffLimit` failed pods (`BackoffLimitExceeded`), `activeDeadlineSeconds` (its pods
//!   stopped, `DeadlineExceeded`), `suspend`, `startTime`/`completionTime` and the `Complete` or
//!   `Failed` condition, and deletes a finished Job after `ttlSecondsAfterFinished`; a Job's pods
//!   are Pod objects in the API (owned by the Job, `spec.nodeName` this kubelet's Node, their
//!   phase, address and container states as they run), deleted with their Job;
//! - registers a Node (Ready, its kubelet endpoint) and serves `/containerLogs/...` there, which
//!   the emulator's `pods/{name}/log` relays, as the API server asks a node's kubelet.
//!
//! Not done: NetworkPolicies (every pod reaches every address), resource limits and quotas at
//! run time, node scheduling (affinity, spread, taints, priority, preemption), `exec` probes,
//! image contents (the "image" is this machine's root filesystem, read-only when the container
//! asks for it). Needs root (namespaces, `setpriv`, binding Service ports below 1024).

pub mod api;
pub mod emulator;
pub mod network;
pub mod runtime;
pub mod spec;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use api::KubeApi;
use network::{Addresses, Endpoints};
use runtime::{Launch, Mount, Running};
use spec::{Check, PodFacts, Probe, Sources};

/// The label naming the stack an object belongs to (the provisioner's apply inventory).
pub const STACK_LABEL: &str = "stacksmith.dev/stack";
/// How often the kubelet reads the API and advances its pods.
const TICK: Duration = Duration::from_millis(250);
/// Longest time a terminating pod is given before it is killed (bounds test runs).
const MAX_GRACE: Duration = Duration::from_secs(40);
/// Longest restart back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// An image reference and the `PATH` its binaries are found under.
#[derive(Debug, Clone)]
pub struct Image {
    /// `registry/name` (any tag or digest matches) or `registry/name:tag`.
    pub reference: String,
    pub path: String,
}

impl Image {
    /// The control plane image (any tag): the `controlplane` binary this workspace built
    /// (distroless: nothing else).
    pub fn controlplane() -> Self {
        let binary = crate::workspace_binary("controlplane");
        Self {
            reference: "ghcr.io/acme/stacksmith-controlplane".into(),
            path: binary
                .parent()
                .expect("a binary sits in a folder")
                .display()
                .to_string(),
        }
    }

    /// The default task runtime image (any tag): this machine's programs.
    pub fn debian() -> Self {
        Self {
            reference: "docker.io/library/debian".into(),
            path: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        }
    }
}

/// What the kubelet runs and where it finds the local servers.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// The emulator's base URL (plain HTTP; the kubelet is a cluster administrator).
    pub api_url: String,
    /// The stack whose objects it runs (the `stacksmith.dev/stack` label).
    pub stack: String,
    /// Pods' volumes, logs and the hosts file go here.
    pub scratch: PathBuf,
    pub images: Vec<Image>,
    /// An administrator URL of the local Postgres: a database endpoint of the stack leads to a
    /// database of this kubelet there (created with the stack's user; dropped when it stops).
    pub postgres_url: Option<String>,
    /// The local Redis: a cache endpoint of the stack leads there.
    pub redis_url: Option<String>,
    /// Print what happens on stderr (`kubelet: ...` lines).
    pub verbose: bool,
}

/// A pod as a test sees it.
#[derive(Debug, Clone)]
pub struct PodView {
    pub name: String,
    pub namespace: String,
    /// `Deployment/<name>` or `Job/<name>`.
    pub owner: String,
    pub ip: Ipv4Addr,
    /// Pending, Running, Succeeded, Failed or Terminating.
    pub phase: String,
    pub ready: bool,
    /// Restarts of all its containers.
    pub restarts: u32,
    /// The template hash it runs.
    pub template: String,
    /// Why it does not run, when it does not.
    pub problem: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Running init container `n`.
    Init(usize),
    Running,
    Succeeded,
    Failed,
    Terminating(Instant),
}

#[derive(Debug, Default)]
struct ProbeState {
    probe: Option<Probe>,
    successes: u32,
    failures: u32,
    next: Option<Instant>,
}

#[derive(Debug)]
struct ContainerState {
    spec: Value,
    running: Option<Running>,
    restarts: u32,
    /// When the next start may happen (back-off).
    next_start: Instant,
    started_at: Instant,
    /// The startup probe passed (or there is none).
    started: bool,
    ready: bool,
    last_exit: Option<i32>,
    startup: ProbeState,
    liveness: ProbeState,
    readiness: ProbeState,
}

impl ContainerState {
    fn new(spec: &Value) -> Result<Self, String> {
        let probe = |field| {
            Ok::<_, String>(ProbeState {
                probe: spec::probe(spec, field)?,
                ..ProbeState::default()
            })
        };
        Ok(Self {
            spec: spec.clone(),
            running: None,
            restarts: 0,
            next_start: Instant::now(),
            started_at: Instant::now(),
            started: false,
            ready: false,
            last_exit: None,
            startup: probe("startupProbe")?,
            liveness: probe("livenessProbe")?,
            readiness: probe("readinessProbe")?,
        })
    }

    fn name(&self) -> &str {
        self.spec["name"].as_str().unwrap_or("container")
    }

    fn backoff(&self) -> Duration {
        (Duration::from_secs(1) * 2u32.saturating_pow(self.restarts.min(5))).min(MAX_BACKOFF)
    }
}

#[derive(Debug)]
struct Pod {
    name: String,
    namespace: String,
    owner: (String, String),
    /// The owner's uid (the Pod object's `ownerReferences`).
    owner_uid: String,
    template: String,
    labels: Value,
    spec: Value,
    ip: Ipv4Addr,
    dir: PathBuf,
    phase: Phase,
    init: Vec<ContainerState>,
    containers: Vec<ContainerState>,
    problem: Option<String>,
    /// Containers exit with a failure: restart (Deployments) or not (Jobs: `Never`).
    restart_always: bool,
    created: Instant,
}

/// What the Job controller keeps of a Job (by uid).
#[derive(Debug)]
struct JobRun {
    started: Instant,
    /// Pods it stopped (deadline, failure): they count as failed.
    stopped: usize,
    /// When it finished and its condition (`Complete` or `Failed`).
    finished: Option<(Instant, Value)>,
    /// Deleted after `ttlSecondsAfterFinished`.
    deleted: bool,
}

impl Pod {
    fn ready(&self) -> bool {
        self.phase == Phase::Running && self.containers.iter().all(|c| c.ready)
    }

    fn terminating(&self) -> bool {
        matches!(self.phase, Phase::Terminating(_))
    }

    fn view(&self) -> PodView {
        PodView {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            owner: format!("{}/{}", self.owner.0, self.owner.1),
            ip: self.ip,
            phase: match self.phase {
                Phase::Init(_) => "Pending",
                Phase::Running => "Running",
                Phase::Succeeded => "Succeeded",
                Phase::Failed => "Failed",
                Phase::Terminating(_) => "Terminating",
            }
            .to_owned(),
            ready: self.ready(),
            restarts: self
                .containers
                .iter()
                .chain(&self.init)
                .map(|c| c.restarts)
                .sum(),
            template: self.template.clone(),
            problem: self.problem.clone(),
        }
    }

    fn stop_all(&mut self, signal: i32) {
        for container in self.init.iter_mut().chain(self.containers.iter_mut()) {
            if let Some(running) = &container.running {
                running.signal(signal);
            }
        }
    }

    fn all_exited(&mut self) -> bool {
        self.init
            .iter_mut()
            .chain(self.containers.iter_mut())
            .all(|c| c.running.as_mut().is_none_or(|r| r.exited().is_some()))
    }
}

#[derive(Debug, Clone)]
struct ServiceEntry {
    ip: Ipv4Addr,
    selector: Value,
    /// (port, targetPort)
    ports: Vec<(u16, Value)>,
}

struct State {
    addresses: Addresses,
    pods: BTreeMap<String, Pod>,
    services: HashMap<(String, String), ServiceEntry>,
    /// Hosts outside the cluster the stack names -> their address here.
    externals: HashMap<String, Ipv4Addr>,
    redis_targets: HashMap<String, Arc<Mutex<network::RedisTarget>>>,
    hosts: Vec<(Ipv4Addr, Vec<String>)>,
    sources: Sources,
    /// ServiceAccounts: (namespace, name) -> automountServiceAccountToken.
    accounts: HashMap<(String, String), bool>,
    /// The last status written per object path.
    written: HashMap<String, Value>,
    /// Deleted pods' replacements get new names: a counter.
    serial: u64,
    /// Databases created on the local Postgres (dropped when the kubelet stops).
    databases: Vec<String>,
    /// The pods table last written to `<scratch>/pods`.
    pods_table: String,
    /// Jobs by uid.
    jobs: HashMap<String, JobRun>,
    /// The Pod objects written to the API: pod name -> its path ("" when the API refused it).
    pod_objects: BTreeMap<String, String>,
}

struct Shared {
    config: KubeletConfig,
    api: KubeApi,
    ca: crate::tls::TestCa,
    kube_ip: Ipv4Addr,
    hosts_path: PathBuf,
    bundle_path: PathBuf,
    state: Mutex<State>,
    endpoints: Endpoints,
    events: Mutex<Vec<String>>,
    /// This kubelet's Node.
    node: String,
    /// When it started, to turn `Instant`s into API timestamps.
    boot: (Instant, chrono::DateTime<chrono::Utc>),
}

impl Shared {
    /// An API timestamp (RFC 3339, seconds) of an instant of this kubelet.
    fn stamp(&self, at: Instant) -> String {
        let since = at.saturating_duration_since(self.boot.0);
        let time = self.boot.1 + chrono::Duration::from_std(since).unwrap_or_default();
        time.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }
}

impl Shared {
    fn event(&self, text: String) {
        if self.config.verbose {
            eprintln!("kubelet: {text}");
        }
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(text);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running kubelet; dropping it stops every pod and proxy it started.
pub struct Kubelet {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Holds this kubelet's loopback block ([`claim_address_block`]) while it lives.
    _block: std::net::TcpListener,
}

impl std::fmt::Debug for Kubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelet")
            .field("stack", &self.shared.config.stack)
            .finish()
    }
}

/// Where this kubelet starts looking for a loopback /16 (by process id and a counter).
fn address_base() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    std::process::id().wrapping_mul(7) + NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A loopback /16 (`127.B.0.0/16`, B in 10..250) that no other kubelet of this machine holds:
/// claimed by listening on `127.B.255.254:1` (an address the blocks never hand out) for as long
/// as the listener lives. Tests run in parallel processes; picking B from the process id alone
/// let two kubelets meet on the same addresses ("address already in use").
fn claim_address_block() -> Result<(u8, std::net::TcpListener), String> {
    let start = address_base();
    for offset in 0..240 {
        let base = (10 + start.wrapping_add(offset) % 240) as u8;
        if let Ok(claim) = std::net::TcpListener::bind((Ipv4Addr::new(127, base, 255, 254), 1)) {
            return Ok((base, claim));
        }
    }
    Err("every loopback block 127.10-249.0.0/16 is held by another kubelet".to_owned())
}

impl Kubelet {
    /// Starts the kubelet: its Kubernetes API proxy, then the loop that runs the stack's
    /// objects. Needs root.
    pub fn start(config: KubeletConfig) -> Result<Self, String> {
        std::fs::create_dir_all(config.scratch.join("pods"))
            .map_err(|e| format!("cannot create {}: {e}", config.scratch.display()))?;
        open_to_all(&config.scratch);
        open_to_all(&config.scratch.join("pods"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("kubelet")
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        let ca = crate::tls::TestCa::new().map_err(|e| format!("cannot make a CA: {e}"))?;
        let (base, block) = claim_address_block()?;
        let mut addresses = Addresses::new(base);
        let kube_ip = addresses.external();
        let hosts_path = config.scratch.join("hosts");
        let bundle_path = config.scratch.join("ca-certificates.crt");
        let system =
            std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
        std::fs::write(&bundle_path, format!("{system}\n{}", ca.pem()))
            .map_err(|e| format!("cannot write {}: {e}", bundle_path.display()))?;
        let upstream = url_address(&config.api_url)
            .ok_or_else(|| format!("the API URL {} names no address", config.api_url))?;
        let kube_names: Vec<String> = [
            kube_ip.to_string(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            "kubernetes.default.svc.cluster.local".into(),
        ]
        .into();
        let acceptor = ca
            .acceptor(&kube_names)
            .map_err(|e| format!("cannot make the API's certificate: {e}"))?;
        let listener = runtime
            .block_on(network::bind(SocketAddr::from((kube_ip, 443))))
            .map_err(|e| e.to_string())?;
        runtime.spawn(network::https_proxy(listener, acceptor, upstream));
        let hosts = vec![(kube_ip, kube_names[1..].to_vec())];
        network::write_hosts(&hosts_path, &hosts)
            .map_err(|e| format!("cannot write {}: {e}", hosts_path.display()))?;
        // The kubelet's endpoint: container logs, which the API relays (`pods/{name}/log`).
        let log_listener = runtime
            .block_on(network::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))))
            .map_err(|e| e.to_string())?;
        let log_port = log_listener.local_addr().map_err(|e| e.to_string())?.port();
        runtime.spawn(network::log_server(
            log_listener,
            config.scratch.join("pods"),
        ));
        let node = format!(
            "stacksmith-kubelet-{}-{}",
            kube_ip.octets()[1],
            std::process::id()
        );
        let api = KubeApi::new(&config.api_url);
        runtime
            .block_on(api.register_node(&node, log_port))
            .map_err(|e| format!("cannot register Node {node}: {e}"))?;
        let shared = Arc::new(Shared {
            api,
            node,
            boot: (Instant::now(), chrono::Utc::now()),
            config,
            ca,
            kube_ip,
            hosts_path,
            bundle_path,
            state: Mutex::new(State {
                addresses,
                pods: BTreeMap::new(),
                services: HashMap::new(),
                externals: HashMap::new(),
                redis_targets: HashMap::new(),
                hosts,
                sources: Sources::default(),
                accounts: HashMap::new(),
                written: HashMap::new(),
                serial: 0,
                databases: Vec::new(),
                pods_table: String::new(),
                jobs: HashMap::new(),
                pod_objects: BTreeMap::new(),
            }),
            endpoints: Endpoints::default(),
            events: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let shared = shared.clone();
            let stop = stop.clone();
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name("kubelet-loop".into())
                .spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let started = Instant::now();
                        if let Err(error) = tick(&shared, &handle) {
                            shared.event(format!("cannot read the API: {error}"));
                        }
                        std::thread::sleep(TICK.saturating_sub(started.elapsed()));
                    }
                })
                .map_err(|e| format!("cannot start the kubelet: {e}"))?
        };
        Ok(Self {
            shared,
            runtime: Some(runtime),
            stop,
            thread: Some(thread),
            _block: block,
        })
    }

    /// The address of a Service (its ClusterIP here).
    pub fn service(&self, namespace: &str, name: &str) -> Option<Ipv4Addr> {
        self.shared
            .state()
            .services
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|s| s.ip)
    }

    /// The address an external host the stack names (a database or cache endpoint) leads to.
    pub fn external(&self, host: &str) -> Option<Ipv4Addr> {
        self.shared.state().externals.get(host).copied()
    }

    /// This kubelet's Node (registered in the API).
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// From now on, new connections to the stack's cache endpoints are accepted and never
    /// answered, as when a security group stops admitting the nodes (AWS drops the packets, so
    /// clients time out); connections already open go on. The number of endpoints cut.
    pub fn drop_cache_traffic(&self) -> usize {
        let targets: Vec<_> = self
            .shared
            .state()
            .redis_targets
            .values()
            .cloned()
            .collect();
        for target in &targets {
            target.lock().unwrap_or_else(|e| e.into_inner()).dropped = true;
        }
        self.shared.event(format!(
            "{} cache endpoint(s) drop new connections",
            targets.len()
        ));
        targets.len()
    }

    /// The pods, in name order.
    pub fn pods(&self) -> Vec<PodView> {
        self.shared.state().pods.values().map(Pod::view).collect()
    }

    /// What happened so far (the `kubelet: ...` lines).
    pub fn events(&self) -> Vec<String> {
        self.shared
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The hosts file every pod sees as `/etc/hosts`.
    pub fn hosts_file(&self) -> &Path {
        &self.shared.hosts_path
    }

    /// Where a pod's container logs are (`<scratch>/pods/<pod>/<container>.log`).
    pub fn log_of(&self, pod: &str, container: &str) -> PathBuf {
        self.shared
            .config
            .scratch
            .join("pods")
            .join(pod)
            .join(format!("{container}.log"))
    }

    /// Deletes a pod without a grace period (its node vanished): every container is killed at
    /// once; its Deployment replaces it.
    pub fn delete_pod(&self, name: &str) -> bool {
        let pod = self.shared.state().pods.remove(name);
        match pod {
            Some(mut pod) => {
                pod.stop_all(9);
                self.shared.event(format!(
                    "pod {}/{} deleted (killed)",
                    pod.namespace, pod.name
                ));
                drop(pod);
                true
            }
            None => false,
        }
    }

    /// Waits (bounded) until `done` holds for the pods; the pods and the last events otherwise.
    pub fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&[PodView]) -> bool,
    ) -> Result<Vec<PodView>, String> {
        let deadline = Instant::now() + limit;
        loop {
            let pods = self.pods();
            if done(&pods) {
                return Ok(pods);
            }
            if Instant::now() >= deadline {
                let events = self.events();
                let tail = events[events.len().saturating_sub(30)..].join("\n  ");
                return Err(format!(
                    "{what}: not after {limit:?}\npods: {pods:#?}\nlast events:\n  {tail}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a one-off client container (like `kubectl run --rm`) that sees the cluster as pods
    /// do (Service names, the trust store), as `uid`, with `env` (and a `PATH`); bounded by
    /// `limit`. Its stdout and stderr are returned.
    pub fn run_client(
        &self,
        argv: &[String],
        env: &[(String, String)],
        uid: u32,
        limit: Duration,
    ) -> std::io::Result<std::process::Output> {
        let mut environment = vec![("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned())];
        environment.extend(env.iter().cloned());
        client(&self.shared.config.scratch, argv, &environment, uid, limit)
    }

    /// Where the services' addresses are listed (`<namespace>/<name> <address>` lines), for
    /// other processes.
    pub fn services_file(&self) -> PathBuf {
        self.shared.config.scratch.join("services")
    }

    /// Where the pods are listed for other processes (`stacksmith-kubelet`'s callers): see
    /// [`pods_table`].
    pub fn pods_file(&self) -> PathBuf {
        pods_file(&self.shared.config.scratch)
    }

    /// Stops every pod (SIGTERM, then SIGKILL after a short grace) and the proxies; drops the
    /// databases it created.
    pub fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let (mut pods, databases) = {
            let mut state = self.shared.state();
            (
                std::mem::take(&mut state.pods),
                std::mem::take(&mut state.databases),
            )
        };
        for pod in pods.values_mut() {
            pod.stop_all(15);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !pods.values_mut().all(Pod::all_exited) {
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(pods);
        if let Some(runtime) = &self.runtime {
            let objects: Vec<String> = std::mem::take(&mut self.shared.state().pod_objects)
                .into_values()
                .filter(|p| !p.is_empty())
                .collect();
            for path in objects {
                let _ = runtime.block_on(self.shared.api.delete(&path));
            }
            let _ = runtime.block_on(
                self.shared
                    .api
                    .delete(&format!("/api/v1/nodes/{}", self.shared.node)),
            );
        }
        if let (Some(runtime), Some(admin)) = (&self.runtime, &self.shared.config.postgres_url) {
            for database in databases {
                let _ = runtime.block_on(drop_database(admin, &database));
            }
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `<scratch>/pods`: the pods of the kubelet whose scratch folder is `scratch`, rewritten (whole,
/// by rename) whenever one changes; see [`pods_table`].
pub fn pods_file(scratch: &Path) -> PathBuf {
    scratch.join("pods.tsv")
}

/// The pods as lines of tab-separated fields: namespace, name, owner (`Deployment/<name>`),
/// phase, `ready` or `not-ready`, restarts, address. Read back by [`parse_pods_table`] (and by
/// `cargo xtask local`, which has no dependencies).
pub fn pods_table(pods: &[PodView]) -> String {
    pods.iter()
        .map(|p| {
            format!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                p.namespace,
                p.name,
                p.owner,
                p.phase,
                if p.ready { "ready" } else { "not-ready" },
                p.restarts,
                p.ip
            )
        })
        .collect()
}

/// The pods of a [`pods_table`] (template and problem are not in it).
pub fn parse_pods_table(text: &str) -> Vec<PodView> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [namespace, name, owner, phase, ready, restarts, ip] = fields[..] else {
                return None;
            };
            Some(PodView {
                name: name.to_owned(),
                namespace: namespace.to_owned(),
                owner: owner.to_owned(),
                ip: ip.parse().ok()?,
                phase: phase.to_owned(),
                ready: ready == "ready",
                restarts: restarts.parse().ok()?,
                template: String::new(),
                problem: None,
            })
        })
        .collect()
}

/// Runs a one-off container that sees the cluster of the kubelet whose scratch folder is
/// `scratch` (its hosts file and trust store), with exactly `env`, as `uid`; bounded by `limit`.
/// Works from another process than the kubelet's (the `stacksmith-kubelet exec` command).
pub fn client(
    scratch: &Path,
    argv: &[String],
    env: &[(String, String)],
    uid: u32,
    limit: Duration,
) -> std::io::Result<std::process::Output> {
    let name = format!("client-{}", crate::unique_name("c").replace('_', "-"));
    let launch = Launch {
        argv: argv.to_vec(),
        env: env.to_vec(),
        uid,
        gid: uid,
        hostname: name.chars().take(63).collect(),
        mounts: cluster_mounts(&scratch.join("hosts"), &scratch.join("ca-certificates.crt")),
        read_only_root: false,
        workdir: "/".into(),
        log: scratch.join("client.log"),
        capture: true,
    };
    Ok(Running::start(&launch)?.output(limit))
}

/// What `kubectl exec deploy/<name> -c <container>` would run with: the environment and user of
/// a container of a Deployment of `stack`, read back from the API as the kubelet reads it (the
/// pod's own fields are those of an exec client: no pod address).
pub fn exec_environment(
    api_url: &str,
    stack: &str,
    namespace: &str,
    deployment: &str,
    container: Option<&str>,
    images: &[Image],
) -> Result<(Vec<(String, String)>, u32), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let api = KubeApi::new(api_url);
    let snapshot = runtime
        .block_on(snapshot(&api, stack))
        .map_err(|e| e.to_string())?;
    let object = snapshot
        .deployments
        .iter()
        .find(|d| namespace_of(d) == namespace && name_of(d) == deployment)
        .ok_or_else(|| format!("no Deployment {namespace}/{deployment} in stack {stack}"))?;
    let spec = &object["spec"]["template"]["spec"];
    let chosen = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| container.is_none_or(|name| c["name"] == name))
        .ok_or_else(|| format!("no such container in {namespace}/{deployment}"))?;
    let image = chosen["image"].as_str().unwrap_or_default();
    let path = image_path(images, image).ok_or_else(|| format!("no image {image}"))?;
    let facts = PodFacts {
        name: format!("{deployment}-exec"),
        namespace: namespace.to_owned(),
        ip: "127.0.0.1".into(),
        service_account: spec["serviceAccountName"]
            .as_str()
            .unwrap_or("default")
            .to_owned(),
        node: "stacksmith-kubelet".into(),
    };
    let env = spec::environment(
        chosen,
        &facts,
        &snapshot.sources,
        vec![("PATH".into(), path)],
    )?;
    Ok((env, spec::user(chosen, spec).0))
}

/// The `PATH` of an image reference.
fn image_path(images: &[Image], image: &str) -> Option<String> {
    images
        .iter()
        .find(|i| {
            image == i.reference
                || image
                    .strip_prefix(i.reference.as_str())
                    .is_some_and(|rest| rest.starts_with(':') || rest.starts_with('@'))
        })
        .map(|i| i.path.clone())
}

/// The mounts that let a container see the cluster: its `/etc/hosts` and trust store.
fn cluster_mounts(hosts: &Path, bundle: &Path) -> Vec<Mount> {
    vec![
        Mount {
            source: hosts.to_path_buf(),
            target: "/etc/hosts".into(),
            read_only: true,
        },
        Mount {
            source: bundle.to_path_buf(),
            target: "/etc/ssl/certs/ca-certificates.crt".into(),
            read_only: true,
        },
    ]
}

/// Makes a directory traversable and writable by the pods' users (as the kubelet's emptyDirs).
fn open_to_all(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777));
}

/// `scheme://[user[:pass]@]host[:port]/...` split; None when it is not such a URL.
#[derive(Debug, Clone, PartialEq)]
struct Url {
    scheme: String,
    user: Option<String>,
    password: Option<String>,
    host: String,
    port: Option<u16>,
}

fn parse_url(text: &str) -> Option<Url> {
    let (scheme, rest) = text.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => (Some(userinfo), hostport),
        None => (None, authority),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => (host, Some(port.parse().ok()?)),
        _ => (hostport, None),
    };
    let (user, password) = match userinfo {
        Some(info) => match info.split_once(':') {
            Some((user, password)) => (Some(decode(user)), Some(decode(password))),
            None => (Some(decode(info)), None),
        },
        None => (None, None),
    };
    Some(Url {
        scheme: scheme.to_ascii_lowercase(),
        user: user.filter(|u| !u.is_empty()),
        password,
        host: host.to_owned(),
        port,
    })
}

/// Percent-decoding of URL userinfo.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The socket address of a URL's host and port (resolved).
fn url_address(text: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    let url = parse_url(text)?;
    let port = url.port.unwrap_or(match url.scheme.as_str() {
        "https" => 443,
        "postgres" | "postgresql" => 5432,
        "redis" | "rediss" => 6379,
        _ => 80,
    });
    (url.host.trim_matches(['[', ']']), port)
        .to_socket_addrs()
        .ok()?
        .find(SocketAddr::is_ipv4)
}

fn sql_identifier(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A database for the stack on the local Postgres, owned by the stack's user.
async fn create_database(
    admin: &str,
    database: &str,
    user: &str,
    password: &str,
) -> Result<(), sqlx::Error> {
    use sqlx::{AssertSqlSafe, Connection};
    let mut connection = sqlx::PgConnection::connect(admin).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(user)
            .fetch_one(&mut connection)
            .await?;
    let verb = if exists { "ALTER" } else { "CREATE" };
    sqlx::raw_sql(AssertSqlSafe(format!(
        "{verb} ROLE {} LOGIN PASSWORD {}",
        sql_identifier(user),
        sql_literal(password)
    )))
    .execute(&mut connection)
    .await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE DATABASE {} OWNER {}",
        sql_identifier(database),
        sql_identifier(user)
    )))
    .execute(&mut connection)
    .await?;
    Ok(())
}

async fn drop_database(admin: &str, database: &str) -> Result<(), sqlx::Error> {
    use sqlx::{AssertSqlSafe, Connection};
    let mut connection = sqlx::PgConnection::connect(admin).await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        sql_identifier(database)
    )))
    .execute(&mut connection)
    .await?;
    Ok(())
}

/// A short stable digest of a JSON value (the pod template hash).
fn digest(value: &Value) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.to_string().hash(&mut hasher);
    format!("{:010x}", hasher.finish() & 0xff_ffff_ffff)
}

fn namespace_of(object: &Value) -> String {
    object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_owned()
}

fn name_of(object: &Value) -> String {
    object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Everything the API says about the stack, read in one go.
struct Snapshot {
    deployments: Vec<Value>,
    jobs: Vec<Value>,
    services: Vec<Value>,
    sources: Sources,
    accounts: HashMap<(String, String), bool>,
}

async fn snapshot(api: &KubeApi, stack: &str) -> Result<Snapshot, api::ApiError> {
    let selector = format!("{STACK_LABEL}={stack}");
    let (deployments, jobs, services, config_maps, secrets, accounts) = tokio::try_join!(
        api.list("/apis/apps/v1/deployments", &selector),
        api.list("/apis/batch/v1/jobs", &selector),
        api.list("/api/v1/services", &selector),
        api.list("/api/v1/configmaps", &selector),
        api.list("/api/v1/secrets", &selector),
        api.list("/api/v1/serviceaccounts", &selector),
    )?;
    let mut sources = Sources::default();
    for object in config_maps.iter().chain(&secrets) {
        let mut object = object.clone();
        if object["kind"].is_null() {
            object["kind"] = json!(if secrets.contains(&object) {
                "Secret"
            } else {
                "ConfigMap"
            });
        }
        sources.add(&object);
    }
    let accounts = accounts
        .iter()
        .map(|a| {
            (
                (namespace_of(a), name_of(a)),
                a["automountServiceAccountToken"].as_bool().unwrap_or(true),
            )
        })
        .collect();
    Ok(Snapshot {
        deployments,
        jobs,
        services,
        sources,
        accounts,
    })
}

/// One turn: read the API, then converge pods, proxies, hosts and status.
fn tick(shared: &Arc<Shared>, handle: &tokio::runtime::Handle) -> Result<(), String> {
    let snapshot = handle
        .block_on(snapshot(&shared.api, &shared.config.stack))
        .map_err(|e| e.to_string())?;
    {
        let mut state = shared.state();
        state.sources = snapshot.sources.clone();
        state.accounts = snapshot.accounts.clone();
    }
    sync_services(shared, handle, &snapshot.services);
    sync_externals(shared, handle, &snapshot.sources);
    let mut wanted: Vec<(String, String)> = Vec::new();
    for deployment in &snapshot.deployments {
        wanted.push((
            "Deployment".into(),
            format!("{}/{}", namespace_of(deployment), name_of(deployment)),
        ));
        converge_deployment(shared, handle, deployment);
    }
    for job in &snapshot.jobs {
        wanted.push((
            "Job".into(),
            format!("{}/{}", namespace_of(job), name_of(job)),
        ));
        converge_job(shared, handle, job);
    }
    // Pods whose owner is gone are stopped.
    {
        let mut state = shared.state();
        let now = Instant::now();
        for pod in state.pods.values_mut() {
            let owner = (
                pod.owner.0.clone(),
                format!("{}/{}", pod.namespace, pod.owner.1),
            );
            if !wanted.contains(&owner) && !pod.terminating() {
                terminate(shared, pod, now);
            }
        }
    }
    advance_pods(shared, handle);
    publish(shared);
    write_status(shared, handle, &snapshot.deployments, &snapshot.jobs);
    sync_pod_objects(shared, handle);
    Ok(())
}

/// Services: an address each, a proxy per port.
fn sync_services(shared: &Arc<Shared>, handle: &tokio::runtime::Handle, services: &[Value]) {
    for service in services {
        let key = (namespace_of(service), name_of(service));
        let ports: Vec<(u16, Value)> = service["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let port = u16::try_from(p["port"].as_u64()?).ok()?;
                let target = if p["targetPort"].is_null() {
                    json!(port)
                } else {
                    p["targetPort"].clone()
                };
                Some((port, target))
            })
            .collect();
        let selector = service["spec"]["selector"].clone();
        let mut state = shared.state();
        if let Some(entry) = state.services.get_mut(&key) {
            entry.selector = selector;
            entry.ports = ports;
            continue;
        }
        let ip = state.addresses.service();
        let (namespace, name) = key.clone();
        state.hosts.push((
            ip,
            vec![
                format!("{name}.{namespace}.svc"),
                format!("{name}.{namespace}.svc.cluster.local"),
                format!("{name}.{namespace}"),
            ],
        ));
        state.services.insert(
            key.clone(),
            ServiceEntry {
                ip,
                selector,
                ports: ports.clone(),
            },
        );
        drop(state);
        for (port, _) in &ports {
            match handle.block_on(network::bind(SocketAddr::from((ip, *port)))) {
                Ok(listener) => {
                    handle.spawn(network::service_proxy(
                        listener,
                        (namespace.clone(), name.clone(), *port),
                        shared.endpoints.clone(),
                    ));
                }
                Err(e) => shared.event(format!("service {namespace}/{name}: {e}")),
            }
        }
        shared.event(format!("service {namespace}/{name} at {ip}"));
        write_hosts(shared);
    }
}

fn write_hosts(shared: &Shared) {
    let (hosts, mut services): (_, Vec<String>) = {
        let state = shared.state();
        (
            state.hosts.clone(),
            state
                .services
                .iter()
                .map(|((namespace, name), s)| format!("{namespace}/{name} {}\n", s.ip))
                .collect(),
        )
    };
    services.sort();
    if let Err(e) = network::write_hosts(&shared.hosts_path, &hosts)
        .and_then(|()| std::fs::write(shared.config.scratch.join("services"), services.concat()))
    {
        shared.event(format!("cannot write the hosts file: {e}"));
    }
}

/// The database and cache endpoints the stack's configuration names: an address each, a proxy
/// to the local server.
fn sync_externals(shared: &Arc<Shared>, handle: &tokio::runtime::Handle, sources: &Sources) {
    let urls: Vec<Url> = sources.values().filter_map(|v| parse_url(v)).collect();
    for url in urls {
        let postgres = matches!(url.scheme.as_str(), "postgres" | "postgresql");
        let redis = matches!(url.scheme.as_str(), "redis" | "rediss");
        if !(postgres || redis)
            || url.host.ends_with(".svc")
            || url.host.parse::<std::net::IpAddr>().is_ok()
        {
            continue;
        }
        let known = shared.state().externals.contains_key(&url.host);
        if known {
            if redis {
                // A rotated token takes effect for new connections.
                if let Some(target) = shared.state().redis_targets.get(&url.host) {
                    target.lock().unwrap_or_else(|e| e.into_inner()).password =
                        url.password.clone();
                }
            }
            continue;
        }
        let ip = shared.state().addresses.external();
        let port = url.port.unwrap_or(if postgres { 5432 } else { 6379 });
        let listen = SocketAddr::from((ip, port));
        let names = vec![url.host.clone(), ip.to_string()];
        let started = if postgres {
            start_postgres(shared, handle, &url, listen, &names)
        } else {
            start_redis(shared, handle, &url, listen, &names)
        };
        match started {
            Ok(what) => {
                let mut state = shared.state();
                state.externals.insert(url.host.clone(), ip);
                state.hosts.push((ip, vec![url.host.clone()]));
                drop(state);
                write_hosts(shared);
                shared.event(format!("{} at {listen}: {what}", url.host));
            }
            Err(e) => {
                shared.event(format!("{}: cannot serve it: {e}", url.host));
                // Not retried every turn: the host is recorded without a proxy.
                shared.state().externals.insert(url.host.clone(), ip);
            }
        }
    }
}

fn start_postgres(
    shared: &Arc<Shared>,
    handle: &tokio::runtime::Handle,
    url: &Url,
    listen: SocketAddr,
    names: &[String],
) -> Result<String, String> {
    let admin = shared
        .config
        .postgres_url
        .clone()
        .ok_or("no local Postgres was given to the kubelet")?;
    let upstream = url_address(&admin).ok_or("the Postgres URL names no address")?;
    let user = url.user.clone().unwrap_or_else(|| "postgres".into());
    let database = crate::unique_name(&format!("kubelet_{}", shared.config.stack))
        .replace('-', "_")
        .to_lowercase();
    handle
        .block_on(create_database(
            &admin,
            &database,
            &user,
            url.password.as_deref().unwrap_or(""),
        ))
        .map_err(|e| format!("cannot create database {database}: {e}"))?;
    shared.state().databases.push(database.clone());
    let acceptor = shared.ca.acceptor(names).map_err(|e| e.to_string())?;
    let listener = handle
        .block_on(network::bind(listen))
        .map_err(|e| e.to_string())?;
    handle.spawn(network::postgres_proxy(
        listener,
        acceptor,
        network::PostgresTarget {
            upstream,
            database: database.clone(),
        },
    ));
    Ok(format!(
        "the local Postgres, database {database} owned by {user}, TLS offered"
    ))
}

fn start_redis(
    shared: &Arc<Shared>,
    handle: &tokio::runtime::Handle,
    url: &Url,
    listen: SocketAddr,
    names: &[String],
) -> Result<String, String> {
    let local = shared
        .config
        .redis_url
        .clone()
        .ok_or("no local Redis was given to the kubelet")?;
    let upstream = url_address(&local).ok_or("the Redis URL names no address")?;
    let tls = url.scheme == "rediss";
    let acceptor = if tls {
        Some(shared.ca.acceptor(names).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let target = Arc::new(Mutex::new(network::RedisTarget {
        upstream,
        password: url.password.clone(),
        dropped: false,
    }));
    shared
        .state()
        .redis_targets
        .insert(url.host.clone(), target.clone());
    let listener = handle
        .block_on(network::bind(listen))
        .map_err(|e| e.to_string())?;
    handle.spawn(network::redis_proxy(listener, acceptor, target));
    Ok(format!(
        "the local Redis{}{}",
        if tls { ", TLS" } else { "" },
        if url.password.is_some() {
            ", AUTH with the stack's token"
        } else {
            ""
        }
    ))
}

/// Keeps a Deployment's pods: `spec.replicas` of its current template; old ones stopped once
/// the new ones are ready.
fn converge_deployment(shared: &Arc<Shared>, handle: &tokio::runtime::Handle, deployment: &Value) {
    let namespace = namespace_of(deployment);
    let name = name_of(deployment);
    let replicas = deployment["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
    let template = &deployment["spec"]["template"];
    let hash = digest(template);
    let now = Instant::now();
    let (current, current_ready, mut old): (usize, usize, Vec<String>) = {
        let state = shared.state();
        let ours: Vec<&Pod> = state
            .pods
            .values()
            .filter(|p| {
                p.namespace == namespace
                    && p.owner == ("Deployment".into(), name.clone())
                    && !p.terminating()
            })
            .collect();
        let current: Vec<&&Pod> = ours.iter().filter(|p| p.template == hash).collect();
        (
            current.len(),
            current.iter().filter(|p| p.ready()).count(),
            ours.iter()
                .filter(|p| p.template != hash)
                .map(|p| p.name.clone())
                .collect(),
        )
    };
    for _ in current..replicas {
        create_pod(
            shared,
            handle,
            &namespace,
            ("Deployment", &name),
            template,
            &hash,
            true,
        );
    }
    let mut state = shared.state();
    if current > replicas {
        // Scale down: the newest (by name order of creation) go first.
        let mut extra: Vec<(Instant, String)> = state
            .pods
            .values()
            .filter(|p| {
                p.namespace == namespace
                    && p.owner == ("Deployment".into(), name.clone())
                    && !p.terminating()
                    && p.template == hash
            })
            .map(|p| (p.created, p.name.clone()))
            .collect();
        extra.sort();
        for (_, pod) in extra.into_iter().rev().take(current - replicas) {
            if let Some(pod) = state.pods.get_mut(&pod) {
                terminate(shared, pod, now);
            }
        }
    }
    // maxUnavailable 0: old pods go once enough new ones are ready.
    if current_ready >= replicas {
        for pod in old.drain(..) {
            if let Some(pod) = state.pods.get_mut(&pod) {
                terminate(shared, pod, now);
            }
        }
    }
}

/// A Job, as the Job controller runs it: pods (`parallelism` at a time) until `completions`
/// succeeded; failed once more than `backoffLimit` pods failed or after `activeDeadlineSeconds`
/// (its running pods are stopped); nothing while `suspend`; deleted `ttlSecondsAfterFinished`
/// after it finished.
fn converge_job(shared: &Arc<Shared>, handle: &tokio::runtime::Handle, job: &Value) {
    let namespace = namespace_of(job);
    let name = name_of(job);
    let uid = job["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let spec = &job["spec"];
    let limit = spec["backoffLimit"].as_u64().unwrap_or(6) as usize;
    let completions = spec["completions"].as_u64().unwrap_or(1) as usize;
    let parallelism = spec["parallelism"].as_u64().unwrap_or(1) as usize;
    let template = &spec["template"];
    let hash = digest(template);
    let now = Instant::now();
    if spec["suspend"] == true {
        return;
    }
    let mut state = shared.state();
    let run = state.jobs.entry(uid.clone()).or_insert_with(|| JobRun {
        started: now,
        stopped: 0,
        finished: None,
        deleted: false,
    });
    if let Some((at, _)) = &run.finished {
        if let Some(ttl) = spec["ttlSecondsAfterFinished"].as_u64()
            && !run.deleted
            && now >= *at + Duration::from_secs(ttl)
        {
            run.deleted = true;
            drop(state);
            let path = format!("/apis/batch/v1/namespaces/{namespace}/jobs/{name}");
            match handle.block_on(shared.api.delete(&path)) {
                Ok(()) => shared.event(format!(
                    "job {namespace}/{name} deleted {ttl} s after it finished (ttlSecondsAfterFinished)"
                )),
                Err(e) => shared.event(format!("cannot delete job {namespace}/{name}: {e}")),
            }
        }
        return;
    }
    let (started, stopped) = (run.started, run.stopped);
    let ours: Vec<&Pod> = state
        .pods
        .values()
        .filter(|p| p.namespace == namespace && p.owner == ("Job".into(), name.clone()))
        .collect();
    let active: Vec<String> = ours
        .iter()
        .filter(|p| !matches!(p.phase, Phase::Succeeded | Phase::Failed) && !p.terminating())
        .map(|p| p.name.clone())
        .collect();
    let succeeded = ours.iter().filter(|p| p.phase == Phase::Succeeded).count();
    let failed = ours.iter().filter(|p| p.phase == Phase::Failed).count() + stopped;
    let deadline = spec["activeDeadlineSeconds"]
        .as_u64()
        .map(Duration::from_secs);
    let condition = if succeeded >= completions {
        Some(json!({"type": "Complete", "status": "True"}))
    } else if failed > limit {
        Some(
            json!({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit"}),
        )
    } else if deadline.is_some_and(|d| now >= started + d) {
        Some(
            json!({"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                    "message": "Job was active longer than specified deadline"}),
        )
    } else {
        None
    };
    if let Some(mut condition) = condition {
        condition["lastTransitionTime"] = json!(shared.stamp(now));
        shared.event(format!(
            "job {namespace}/{name}: {} {}",
            condition["type"].as_str().unwrap_or_default(),
            condition["reason"].as_str().unwrap_or_default()
        ));
        let failing = condition["type"] == "Failed";
        if failing {
            for pod in &active {
                if let Some(pod) = state.pods.get_mut(pod) {
                    terminate(shared, pod, now);
                }
            }
        }
        let run = state.jobs.get_mut(&uid).expect("the run is there");
        if failing {
            run.stopped += active.len();
        }
        run.finished = Some((now, condition));
        return;
    }
    let wanted = parallelism
        .min(completions.saturating_sub(succeeded))
        .saturating_sub(active.len());
    drop(state);
    let always = template["spec"]["restartPolicy"] == "OnFailure";
    for _ in 0..wanted {
        let pod = create_pod(
            shared,
            handle,
            &namespace,
            ("Job", &name),
            template,
            &hash,
            always,
        );
        if let Some(pod) = shared.state().pods.get_mut(&pod) {
            pod.owner_uid = uid.clone();
        }
    }
}

impl Shared {
    fn cluster_mounts(&self) -> Vec<Mount> {
        cluster_mounts(&self.hosts_path, &self.bundle_path)
    }
}

fn create_pod(
    shared: &Arc<Shared>,
    handle: &tokio::runtime::Handle,
    namespace: &str,
    owner: (&str, &str),
    template: &Value,
    hash: &str,
    restart_always: bool,
) -> String {
    let spec = template["spec"].clone();
    let (name, ip) = {
        let mut state = shared.state();
        state.serial += 1;
        let suffix = digest(&json!([state.serial, std::process::id()]));
        let name = format!("{}-{}-{}", owner.1, &hash[..8], &suffix[..5]);
        let ip = state.addresses.pod();
        state.hosts.push((ip, vec![name.clone()]));
        (name, ip)
    };
    write_hosts(shared);
    let dir = shared.config.scratch.join("pods").join(&name);
    let mut problem = None;
    let mut containers = Vec::new();
    let mut init = Vec::new();
    for (list, field) in [
        (&mut init, "initContainers"),
        (&mut containers, "containers"),
    ] {
        for container in spec[field].as_array().into_iter().flatten() {
            match ContainerState::new(container) {
                Ok(state) => list.push(state),
                Err(e) => problem = Some(e),
            }
        }
    }
    if let Err(e) = prepare_pod_dir(shared, handle, &dir, namespace, &spec) {
        problem = Some(e);
    }
    shared.event(format!(
        "pod {namespace}/{name} ({}/{}) at {ip}{}",
        owner.0,
        owner.1,
        problem
            .as_ref()
            .map(|p| format!(": {p}"))
            .unwrap_or_default()
    ));
    let pod = Pod {
        name: name.clone(),
        namespace: namespace.to_owned(),
        owner: (owner.0.to_owned(), owner.1.to_owned()),
        owner_uid: String::new(),
        template: hash.to_owned(),
        labels: template["metadata"]["labels"].clone(),
        spec,
        ip,
        dir,
        phase: Phase::Init(0),
        init,
        containers,
        problem,
        restart_always,
        created: Instant::now(),
    };
    shared.state().pods.insert(name.clone(), pod);
    name
}

/// The pod's directory: its volumes and, when it automounts one, its service-account token.
fn prepare_pod_dir(
    shared: &Arc<Shared>,
    handle: &tokio::runtime::Handle,
    dir: &Path,
    namespace: &str,
    spec: &Value,
) -> Result<(), String> {
    let volumes = dir.join("volumes");
    std::fs::create_dir_all(&volumes).map_err(|e| e.to_string())?;
    open_to_all(dir);
    open_to_all(&volumes);
    let sources = shared.state().sources.clone();
    for volume in spec["volumes"].as_array().into_iter().flatten() {
        let name = volume["name"].as_str().unwrap_or_default();
        let path = volumes.join(name);
        std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
        open_to_all(&path);
        let files = if volume["emptyDir"].is_object() {
            None
        } else if let Some(source) = volume["configMap"]["name"].as_str() {
            sources
                .config_maps
                .get(&(namespace.to_owned(), source.to_owned()))
        } else if let Some(source) = volume["secret"]["secretName"].as_str() {
            sources
                .secrets
                .get(&(namespace.to_owned(), source.to_owned()))
        } else {
            return Err(format!(
                "volume {name}: only emptyDir, configMap and secret volumes run here"
            ));
        };
        for (key, value) in files.into_iter().flatten() {
            std::fs::write(path.join(key), value).map_err(|e| e.to_string())?;
        }
    }
    let account = spec["serviceAccountName"]
        .as_str()
        .unwrap_or("default")
        .to_owned();
    let automount = spec["automountServiceAccountToken"]
        .as_bool()
        .unwrap_or_else(|| {
            shared
                .state()
                .accounts
                .get(&(namespace.to_owned(), account.clone()))
                .copied()
                .unwrap_or(true)
        });
    if automount {
        let token = handle
            .block_on(shared.api.token(namespace, &account))
            .map_err(|e| format!("service account token: {e}"))?;
        let sa = dir.join("serviceaccount");
        std::fs::create_dir_all(&sa).map_err(|e| e.to_string())?;
        std::fs::write(sa.join("token"), token).map_err(|e| e.to_string())?;
        std::fs::write(sa.join("ca.crt"), shared.ca.pem()).map_err(|e| e.to_string())?;
        std::fs::write(sa.join("namespace"), namespace).map_err(|e| e.to_string())?;
        use std::os::unix::fs::PermissionsExt;
        for entry in ["", "token", "ca.crt", "namespace"] {
            let mode = if entry.is_empty() { 0o755 } else { 0o644 };
            let _ = std::fs::set_permissions(sa.join(entry), std::fs::Permissions::from_mode(mode));
        }
    }
    Ok(())
}

/// The launch of one container of `pod`: environment, argv, user, mounts.
fn launch_of(shared: &Shared, pod: &Pod, container: &Value) -> Result<Launch, String> {
    let image = container["image"].as_str().unwrap_or_default();
    let path = image_path(&shared.config.images, image)
        .ok_or_else(|| format!("ErrImagePull: the kubelet of the tests has no image {image}"))?;
    let facts = PodFacts {
        name: pod.name.clone(),
        namespace: pod.namespace.clone(),
        ip: pod.ip.to_string(),
        service_account: pod.spec["serviceAccountName"]
            .as_str()
            .unwrap_or("default")
            .to_owned(),
        node: "stacksmith-kubelet".into(),
    };
    let kube = shared.kube_ip.to_string();
    let base = vec![
        ("PATH".to_owned(), path),
        ("HOSTNAME".to_owned(), pod.name.clone()),
        ("KUBERNETES_SERVICE_HOST".to_owned(), kube.clone()),
        ("KUBERNETES_SERVICE_PORT".to_owned(), "443".to_owned()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".to_owned(), "443".to_owned()),
        ("KUBERNETES_PORT".to_owned(), format!("tcp://{kube}:443")),
        (
            "KUBERNETES_PORT_443_TCP".to_owned(),
            format!("tcp://{kube}:443"),
        ),
        ("KUBERNETES_PORT_443_TCP_PROTO".to_owned(), "tcp".to_owned()),
        ("KUBERNETES_PORT_443_TCP_PORT".to_owned(), "443".to_owned()),
        ("KUBERNETES_PORT_443_TCP_ADDR".to_owned(), kube),
    ];
    let sources = shared.state().sources.clone();
    let env = spec::environment(container, &facts, &sources, base)
        .map_err(|e| format!("CreateContainerConfigError: {e}"))?;
    let argv = spec::argv(container, &env)?;
    let (uid, gid) = spec::user(container, &pod.spec);
    let mut mounts = shared.cluster_mounts();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let volume = mount["name"].as_str().unwrap_or_default();
        mounts.push(Mount {
            source: pod.dir.join("volumes").join(volume),
            target: mount["mountPath"].as_str().unwrap_or_default().into(),
            read_only: mount["readOnly"] == true,
        });
    }
    if pod.dir.join("serviceaccount").is_dir() {
        mounts.push(Mount {
            source: pod.dir.join("serviceaccount"),
            target: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
            read_only: true,
        });
    }
    Ok(Launch {
        argv,
        env,
        uid,
        gid,
        hostname: pod.name.clone(),
        mounts,
        read_only_root: container["securityContext"]["readOnlyRootFilesystem"] == true,
        workdir: container["workingDir"].as_str().unwrap_or("/").to_owned(),
        log: pod.dir.join(format!(
            "{}.log",
            container["name"].as_str().unwrap_or("container")
        )),
        capture: false,
    })
}

fn terminate(shared: &Shared, pod: &mut Pod, now: Instant) {
    let grace = pod.spec["terminationGracePeriodSeconds"]
        .as_u64()
        .map_or(Duration::from_secs(30), Duration::from_secs)
        .min(MAX_GRACE);
    pod.stop_all(15);
    pod.phase = Phase::Terminating(now + grace);
    shared.event(format!(
        "pod {}/{} terminating (SIGTERM, grace {grace:?})",
        pod.namespace, pod.name
    ));
}

/// Starts a container when its back-off allows; false when it cannot start.
fn start_container(shared: &Shared, pod: &mut Pod, init: bool, index: usize) -> bool {
    let spec = if init {
        &pod.init[index].spec
    } else {
        &pod.containers[index].spec
    }
    .clone();
    match launch_of(shared, pod, &spec)
        .and_then(|launch| Running::start(&launch).map_err(|e| e.to_string()))
    {
        Ok(running) => {
            let container = if init {
                &mut pod.init[index]
            } else {
                &mut pod.containers[index]
            };
            container.running = Some(running);
            container.started_at = Instant::now();
            container.started = container.startup.probe.is_none();
            container.ready = false;
            for probe in [
                &mut container.startup,
                &mut container.liveness,
                &mut container.readiness,
            ] {
                probe.successes = 0;
                probe.failures = 0;
                probe.next = probe
                    .probe
                    .as_ref()
                    .map(|p| Instant::now() + p.initial_delay);
            }
            pod.problem = None;
            true
        }
        Err(e) => {
            if pod.problem.as_deref() != Some(e.as_str()) {
                shared.event(format!("pod {}/{}: {e}", pod.namespace, pod.name));
            }
            pod.problem = Some(e);
            false
        }
    }
}

/// Runs one probe check now: true when it succeeded.
fn check(ip: Ipv4Addr, probe: &Probe) -> bool {
    use std::io::{Read, Write};
    let port = match &probe.check {
        Check::Http { port, .. } | Check::Tcp { port } => *port,
    };
    let Ok(mut stream) =
        std::net::TcpStream::connect_timeout(&SocketAddr::from((ip, port)), probe.timeout)
    else {
        return false;
    };
    let Check::Http { path, .. } = &probe.check else {
        return true;
    };
    let _ = stream.set_read_timeout(Some(probe.timeout));
    let _ = stream.set_write_timeout(Some(probe.timeout));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.33\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    if stream.read_exact(&mut head).is_err() {
        return false;
    }
    // 200-399 succeed.
    head.starts_with(b"HTTP/1.") && matches!(head[9], b'2' | b'3')
}

/// Advances every pod: init containers in order, containers started and restarted, probes,
/// terminations.
fn advance_pods(shared: &Arc<Shared>, _handle: &tokio::runtime::Handle) {
    let now = Instant::now();
    let names: Vec<String> = shared.state().pods.keys().cloned().collect();
    for name in names {
        // Each pod is taken out while it advances, so that probes do not hold the lock.
        let Some(mut pod) = shared.state().pods.remove(&name) else {
            continue;
        };
        let keep = advance(shared, &mut pod, now);
        if keep {
            shared.state().pods.insert(name, pod);
        } else {
            let mut state = shared.state();
            state
                .hosts
                .retain(|(_, names)| names.first() != Some(&pod.name));
            drop(state);
            write_hosts(shared);
        }
    }
}

/// One pod's turn; false when it is gone.
fn advance(shared: &Shared, pod: &mut Pod, now: Instant) -> bool {
    match pod.phase.clone() {
        Phase::Terminating(deadline) => {
            if pod.all_exited() {
                shared.event(format!("pod {}/{} gone", pod.namespace, pod.name));
                return false;
            }
            if now >= deadline {
                pod.stop_all(9);
            }
            true
        }
        Phase::Succeeded | Phase::Failed => true,
        Phase::Init(index) if index < pod.init.len() => {
            let exited = pod.init[index].running.as_mut().and_then(Running::exited);
            match (&pod.init[index].running, exited) {
                (None, _) => {
                    if now >= pod.init[index].next_start
                        && start_container(shared, pod, true, index)
                    {
                        shared.event(format!(
                            "pod {}/{}: init container {} started",
                            pod.namespace,
                            pod.name,
                            pod.init[index].name()
                        ));
                    }
                }
                (Some(_), Some(0)) => {
                    shared.event(format!(
                        "pod {}/{}: init container {} exited 0",
                        pod.namespace,
                        pod.name,
                        pod.init[index].name()
                    ));
                    pod.init[index].running = None;
                    pod.init[index].last_exit = Some(0);
                    pod.phase = Phase::Init(index + 1);
                }
                (Some(_), Some(code)) => {
                    let container = &mut pod.init[index];
                    container.running = None;
                    container.last_exit = Some(code);
                    container.restarts += 1;
                    container.next_start = now + container.backoff();
                    let problem = format!(
                        "Init:Error: init container {} exited {code} (log: {})",
                        container.name(),
                        pod.dir.join(format!("{}.log", container.name())).display()
                    );
                    shared.event(format!("pod {}/{}: {problem}", pod.namespace, pod.name));
                    pod.problem = Some(problem);
                    if !pod.restart_always {
                        pod.phase = Phase::Failed;
                    }
                }
                (Some(_), None) => {}
            }
            true
        }
        Phase::Init(_) => {
            let mut all = true;
            for index in 0..pod.containers.len() {
                if start_container(shared, pod, false, index) {
                    shared.event(format!(
                        "pod {}/{}: container {} started",
                        pod.namespace,
                        pod.name,
                        pod.containers[index].name()
                    ));
                } else {
                    all = false;
                }
            }
            if all {
                pod.phase = Phase::Running;
            } else {
                // Stop what started and try again later.
                for container in &mut pod.containers {
                    if let Some(mut running) = container.running.take() {
                        running.kill();
                    }
                    container.next_start = now + Duration::from_secs(1);
                }
            }
            true
        }
        Phase::Running => {
            let mut succeeded = 0;
            for index in 0..pod.containers.len() {
                run_container(shared, pod, index, now, &mut succeeded);
            }
            if !pod.restart_always && succeeded == pod.containers.len() {
                pod.phase = Phase::Succeeded;
                shared.event(format!("pod {}/{} succeeded", pod.namespace, pod.name));
            }
            true
        }
    }
}

/// A running container's turn: exits and restarts, then its probes.
fn run_container(
    shared: &Shared,
    pod: &mut Pod,
    index: usize,
    now: Instant,
    succeeded: &mut usize,
) {
    let exited = pod.containers[index]
        .running
        .as_mut()
        .and_then(Running::exited);
    if pod.containers[index].running.is_none() {
        if pod.containers[index].last_exit == Some(0) && !pod.restart_always {
            *succeeded += 1;
            return;
        }
        if now >= pod.containers[index].next_start && start_container(shared, pod, false, index) {
            shared.event(format!(
                "pod {}/{}: container {} restarted ({} restarts)",
                pod.namespace,
                pod.name,
                pod.containers[index].name(),
                pod.containers[index].restarts
            ));
        }
        return;
    }
    if let Some(code) = exited {
        let log = pod
            .dir
            .join(format!("{}.log", pod.containers[index].name()));
        let container = &mut pod.containers[index];
        container.running = None;
        container.ready = false;
        container.last_exit = Some(code);
        if code == 0 && !pod.restart_always {
            *succeeded += 1;
            return;
        }
        if !pod.restart_always && pod.spec["restartPolicy"] == "Never" {
            pod.phase = Phase::Failed;
        }
        container.restarts += 1;
        container.next_start = now + container.backoff();
        shared.event(format!(
            "pod {}/{}: container {} exited {code} (log: {}); restart in {:?}",
            pod.namespace,
            pod.name,
            container.name(),
            log.display(),
            container.backoff()
        ));
        return;
    }
    let ip = pod.ip;
    let container = &mut pod.containers[index];
    // Startup first; liveness and readiness only once it passed.
    if !container.started {
        if let Some(result) = due(&mut container.startup, ip, now) {
            if result {
                container.started = true;
            } else if container.startup.failures >= threshold(&container.startup) {
                restart_unhealthy(shared, &pod.namespace, &pod.name, container, "startup", now);
            }
        }
        return;
    }
    if let Some(false) = due(&mut container.liveness, ip, now)
        && container.liveness.failures >= threshold(&container.liveness)
    {
        {
            restart_unhealthy(
                shared,
                &pod.namespace,
                &pod.name,
                container,
                "liveness",
                now,
            );
            return;
        }
    }
    if container.readiness.probe.is_none() {
        container.ready = true;
    } else if let Some(result) = due(&mut container.readiness, ip, now) {
        let probe = container
            .readiness
            .probe
            .as_ref()
            .expect("a readiness probe");
        let was = container.ready;
        if result && container.readiness.successes >= probe.success_threshold {
            container.ready = true;
        } else if !result && container.readiness.failures >= probe.failure_threshold {
            container.ready = false;
        }
        if was != container.ready {
            shared.event(format!(
                "pod {}/{}: container {} {}",
                pod.namespace,
                pod.name,
                container.name(),
                if container.ready {
                    "ready"
                } else {
                    "not ready"
                }
            ));
        }
    }
}

fn threshold(state: &ProbeState) -> u32 {
    state
        .probe
        .as_ref()
        .map_or(u32::MAX, |p| p.failure_threshold)
}

/// Runs a probe when it is due: Some(result), or None when not due (or there is none).
fn due(state: &mut ProbeState, ip: Ipv4Addr, now: Instant) -> Option<bool> {
    let probe = state.probe.as_ref()?;
    if state.next.is_some_and(|next| now < next) {
        return None;
    }
    let ok = check(ip, probe);
    state.next = Some(now + probe.period);
    if ok {
        state.successes += 1;
        state.failures = 0;
    } else {
        state.failures += 1;
        state.successes = 0;
    }
    Some(ok)
}

fn restart_unhealthy(
    shared: &Shared,
    namespace: &str,
    pod: &str,
    container: &mut ContainerState,
    which: &str,
    now: Instant,
) {
    shared.event(format!(
        "pod {namespace}/{pod}: container {} failed its {which} probe: killed, restarting",
        container.name()
    ));
    if let Some(mut running) = container.running.take() {
        running.kill();
    }
    container.ready = false;
    container.restarts += 1;
    container.next_start = now + container.backoff();
}

/// The ready endpoints of every Service port.
fn publish(shared: &Shared) {
    let state = shared.state();
    let mut endpoints = HashMap::new();
    for ((namespace, name), service) in &state.services {
        for (port, target) in &service.ports {
            let ready: Vec<SocketAddr> = state
                .pods
                .values()
                .filter(|p| {
                    p.namespace == *namespace
                        && p.ready()
                        && spec::selects(&service.selector, &p.labels)
                })
                .filter_map(|p| {
                    let port = p
                        .containers
                        .iter()
                        .find_map(|c| {
                            spec::port(&c.spec, target).filter(|_| {
                                target.is_number()
                                    || c.spec["ports"].as_array().is_some_and(|ports| {
                                        ports.iter().any(|x| x["name"] == *target)
                                    })
                            })
                        })
                        .or_else(|| target.as_u64().and_then(|n| u16::try_from(n).ok()))?;
                    Some(SocketAddr::from((p.ip, port)))
                })
                .collect();
            endpoints.insert((namespace.clone(), name.clone(), *port), ready);
        }
    }
    let pods: Vec<PodView> = state.pods.values().map(Pod::view).collect();
    drop(state);
    *shared.endpoints.lock().unwrap_or_else(|e| e.into_inner()) = endpoints;
    write_pods(shared, &pods);
}

/// `<scratch>/pods.tsv`, when the pods changed.
fn write_pods(shared: &Shared, pods: &[PodView]) {
    let table = pods_table(pods);
    if shared.state().pods_table == table {
        return;
    }
    let path = pods_file(&shared.config.scratch);
    let temporary = path.with_extension("tsv.new");
    match std::fs::write(&temporary, &table).and_then(|()| std::fs::rename(&temporary, &path)) {
        Ok(()) => shared.state().pods_table = table,
        Err(e) => shared.event(format!("cannot write {}: {e}", path.display())),
    }
}

/// Deployment and Job status from what runs, written when it changed.
fn write_status(
    shared: &Shared,
    handle: &tokio::runtime::Handle,
    deployments: &[Value],
    jobs: &[Value],
) {
    let mut writes: Vec<(String, Value)> = Vec::new();
    {
        let state = shared.state();
        for deployment in deployments {
            let namespace = namespace_of(deployment);
            let name = name_of(deployment);
            let wanted = deployment["spec"]["replicas"].as_u64().unwrap_or(1);
            let hash = digest(&deployment["spec"]["template"]);
            let pods: Vec<&Pod> = state
                .pods
                .values()
                .filter(|p| {
                    p.namespace == namespace
                        && p.owner == ("Deployment".into(), name.clone())
                        && !p.terminating()
                })
                .collect();
            let replicas = pods.len() as u64;
            let updated = pods.iter().filter(|p| p.template == hash).count() as u64;
            let ready = pods.iter().filter(|p| p.ready()).count() as u64;
            let problem = pods.iter().find_map(|p| p.problem.clone());
            let available = if ready >= wanted { "True" } else { "False" };
            let mut conditions = vec![json!({
                "type": "Available",
                "status": available,
                "reason": if available == "True" { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                "message": if available == "True" { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." },
            })];
            conditions.push(json!({
                "type": "Progressing",
                "status": "True",
                "reason": if updated >= wanted && ready >= wanted { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" },
                "message": problem.clone().unwrap_or_else(|| format!("{ready} of {wanted} replicas ready")),
            }));
            let status = json!({
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": updated,
                "readyReplicas": ready,
                "availableReplicas": ready,
                "unavailableReplicas": wanted.saturating_sub(ready),
                "conditions": conditions,
            });
            let path = format!("/apis/apps/v1/namespaces/{namespace}/deployments/{name}");
            if state.written.get(&path) != Some(&status) {
                writes.push((path, status));
            }
        }
        for job in jobs {
            let namespace = namespace_of(job);
            let name = name_of(job);
            let pods: Vec<&Pod> = state
                .pods
                .values()
                .filter(|p| p.namespace == namespace && p.owner == ("Job".into(), name.clone()))
                .collect();
            let uid = job["metadata"]["uid"].as_str().unwrap_or_default();
            let Some(run) = state.jobs.get(uid) else {
                continue;
            };
            let succeeded = pods.iter().filter(|p| p.phase == Phase::Succeeded).count();
            let failed = pods.iter().filter(|p| p.phase == Phase::Failed).count() + run.stopped;
            let active = pods
                .iter()
                .filter(|p| {
                    !matches!(p.phase, Phase::Succeeded | Phase::Failed) && !p.terminating()
                })
                .count();
            let ready = pods.iter().filter(|p| p.ready()).count();
            let mut status = json!({
                "active": active,
                "ready": ready,
                "succeeded": succeeded,
                "failed": failed,
                "startTime": shared.stamp(run.started),
            });
            if let Some((at, condition)) = &run.finished {
                if condition["type"] == "Complete" {
                    status["completionTime"] = json!(shared.stamp(*at));
                }
                status["conditions"] = json!([condition]);
            }
            let path = format!("/apis/batch/v1/namespaces/{namespace}/jobs/{name}");
            if state.written.get(&path) != Some(&status) {
                writes.push((path, status));
            }
        }
    }
    for (path, status) in writes {
        match handle.block_on(shared.api.patch_status(&path, &status)) {
            Ok(()) => {
                let n = |field: &str| status[field].as_u64().unwrap_or(0);
                shared.event(if path.contains("/jobs/") {
                    format!(
                        "status of {path}: {} active, {} succeeded, {} failed",
                        n("active"),
                        n("succeeded"),
                        n("failed")
                    )
                } else {
                    format!(
                        "status of {path}: {} ready of {} ({} updated)",
                        n("readyReplicas"),
                        n("replicas"),
                        n("updatedReplicas")
                    )
                });
                shared.state().written.insert(path, status);
            }
            Err(e) => shared.event(format!("cannot write the status of {path}: {e}")),
        }
    }
}

/// The status of a Job's pod as a kubelet reports it.
fn pod_status(shared: &Shared, pod: &Pod) -> Value {
    let phase = match pod.phase {
        Phase::Init(_) => "Pending",
        Phase::Running | Phase::Terminating(_) => "Running",
        Phase::Succeeded => "Succeeded",
        Phase::Failed => "Failed",
    };
    let containers: Vec<Value> = pod
        .containers
        .iter()
        .map(|c| {
            let state = match (&c.running, c.last_exit) {
                (Some(_), _) => json!({"running": {"startedAt": shared.stamp(c.started_at)}}),
                (None, Some(code)) => json!({"terminated": {
                    "exitCode": code,
                    "reason": if code == 0 { "Completed" } else { "Error" },
                    "startedAt": shared.stamp(c.started_at),
                }}),
                (None, None) => json!({"waiting": {
                    "reason": if matches!(pod.phase, Phase::Init(_)) { "PodInitializing" } else { "ContainerCreating" },
                    "message": pod.problem.clone().unwrap_or_default(),
                }}),
            };
            json!({
                "name": c.name(),
                "image": c.spec["image"],
                "ready": c.ready,
                "started": c.running.is_some(),
                "restartCount": c.restarts,
                "state": state,
            })
        })
        .collect();
    json!({
        "phase": phase,
        "hostIP": "127.0.0.1",
        "podIP": pod.ip.to_string(),
        "podIPs": [{"ip": pod.ip.to_string()}],
        "startTime": shared.stamp(pod.created),
        "conditions": [{"type": "Ready", "status": if pod.ready() { "True" } else { "False" }}],
        "containerStatuses": containers,
    })
}

/// The Pods of Jobs as objects of the API: created when the kubelet starts them (owned by the
/// Job, on this kubelet's Node), their status written as it changes, deleted when they are gone.
fn sync_pod_objects(shared: &Shared, handle: &tokio::runtime::Handle) {
    let mut creates: Vec<(String, String, Value)> = Vec::new();
    let mut updates: Vec<(String, Value)> = Vec::new();
    let mut deletes: Vec<(String, String)> = Vec::new();
    {
        let state = shared.state();
        for pod in state.pods.values() {
            if pod.owner.0 != "Job" || pod.owner_uid.is_empty() {
                continue;
            }
            let path = format!("/api/v1/namespaces/{}/pods/{}", pod.namespace, pod.name);
            let status = pod_status(shared, pod);
            match state.pod_objects.get(&pod.name) {
                None => {
                    let job = &pod.owner.1;
                    let mut labels = pod.labels.as_object().cloned().unwrap_or_default();
                    for (key, value) in [
                        ("batch.kubernetes.io/job-name", job.as_str()),
                        ("job-name", job.as_str()),
                        ("batch.kubernetes.io/controller-uid", pod.owner_uid.as_str()),
                        ("controller-uid", pod.owner_uid.as_str()),
                    ] {
                        labels.insert(key.to_owned(), json!(value));
                    }
                    let mut spec = pod.spec.clone();
                    spec["nodeName"] = json!(shared.node);
                    let object = json!({
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {
                            "name": pod.name,
                            "namespace": pod.namespace,
                            "labels": labels,
                            "ownerReferences": [{
                                "apiVersion": "batch/v1",
                                "kind": "Job",
                                "name": job,
                                "uid": pod.owner_uid,
                                "controller": true,
                                "blockOwnerDeletion": true,
                            }],
                        },
                        "spec": spec,
                        "status": status,
                    });
                    creates.push((pod.name.clone(), path, object));
                }
                Some(written) if written.is_empty() || pod.terminating() => {}
                Some(_) => {
                    if state.written.get(&path) != Some(&status) {
                        updates.push((path, status));
                    }
                }
            }
        }
        for (name, path) in &state.pod_objects {
            if !state.pods.contains_key(name) {
                deletes.push((name.clone(), path.clone()));
            }
        }
    }
    for (name, path, object) in creates {
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
        let collection = format!("/api/v1/namespaces/{namespace}/pods");
        let result = handle.block_on(shared.api.create(&collection, &object));
        let mut state = shared.state();
        match result {
            Ok(()) => {
                state.written.insert(path.clone(), object["status"].clone());
                state.pod_objects.insert(name, path);
            }
            Err(e) => {
                drop(state);
                shared.event(format!("cannot create Pod {path}: {e}"));
                shared.state().pod_objects.insert(name, String::new());
            }
        }
    }
    for (path, status) in updates {
        match handle.block_on(shared.api.patch_status(&path, &status)) {
            Ok(()) => {
                shared.state().written.insert(path, status);
            }
            Err(e) => shared.event(format!("cannot write the status of {path}: {e}")),
        }
    }
    for (name, path) in deletes {
        if !path.is_empty()
            && let Err(e) = handle.block_on(shared.api.delete(&path))
        {
            shared.event(format!("cannot delete {path}: {e}"));
            continue;
        }
        let mut state = shared.state();
        state.pod_objects.remove(&name);
        state.written.remove(&path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelets_never_share_a_loopback_block() {
        // Starting from the same base (one process, counter aside) the second claim moves on.
        let (first, _held) = claim_address_block().unwrap();
        let (second, _also_held) = claim_address_block().unwrap();
        assert_ne!(first, second);
        assert!(std::net::TcpListener::bind((Ipv4Addr::new(127, first, 255, 254), 1)).is_err());
    }

    #[test]
    fn the_pods_table_reads_back() {
        let pod = |name: &str, ready: bool, restarts: u32| PodView {
            name: name.into(),
            namespace: "system".into(),
            owner: "Deployment/stacksmith-controlplane".into(),
            ip: Ipv4Addr::new(127, 42, 0, 3),
            phase: "Running".into(),
            ready,
            restarts,
            template: String::new(),
            problem: None,
        };
        let pods = vec![pod("api-1", true, 0), pod("api-2", false, 3)];
        let table = pods_table(&pods);
        assert_eq!(
            table.lines().next(),
            Some(
                "system\tapi-1\tDeployment/stacksmith-controlplane\tRunning\tready\t0\t127.42.0.3"
            )
        );
        let back = parse_pods_table(&table);
        assert_eq!(back.len(), 2);
        assert_eq!(
            (back[1].name.as_str(), back[1].ready, back[1].restarts),
            ("api-2", false, 3)
        );
        assert_eq!(back[0].ip, pods[0].ip);
        // A torn or foreign line is skipped, not misread.
        assert_eq!(parse_pods_table("system\tapi-1\tRunning\n").len(), 0);
    }

    #[test]
    fn urls_of_the_stack_are_split() {
        let url = parse_url(
            "postgres://stacksmith:p%40ss@db.fake.internal:5432/postgres?sslmode=require",
        )
        .unwrap();
        assert_eq!(url.scheme, "postgres");
        assert_eq!(url.user.as_deref(), Some("stacksmith"));
        assert_eq!(url.password.as_deref(), Some("p@ss"));
        assert_eq!(url.host, "db.fake.internal");
        assert_eq!(url.port, Some(5432));
        let cache = parse_url("rediss://:tok@cache.fake.internal:6379").unwrap();
        assert_eq!(cache.user, None);
        assert_eq!(cache.password.as_deref(), Some("tok"));
        assert_eq!(
            parse_url("redis://127.0.0.1:6379").unwrap().port,
            Some(6379)
        );
        assert!(parse_url("not a url").is_none());
    }
}
