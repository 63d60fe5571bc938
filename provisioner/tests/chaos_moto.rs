//! The chaos suite (issue 14, item 3): SIGKILL at random progress events of `up` and `down` of
//! the shipped `local` stack (cache included) against a private moto behind the fault proxy with
//! throttling on (and new EC2 ids eventually consistent), N rounds drawn from a seed.
//!
//! Each round starts from an empty emulator. A round kills `up` (two rounds in three) or `down`
//! (after a clean `up`) at a random progress event, a random moment after it, then:
//!
//! * one rerun exits 0 (else `reruns_failed`; a second rerun lets the round go on);
//! * the inventory of every object in moto (`/moto-api/data.json`, untagged routes, rules and
//!   associations included) equals the one a clean `up` leaves (more: `duplicates`, fewer:
//!   `missing`);
//! * `plan --refresh --detailed-exitcode` and `drift` exit 0;
//! * after `down` the inventory equals the empty emulator's (`orphans` otherwise).
//!
//! The in-cluster objects are left out (`--skip-cluster-install`, `--skip-cluster`): the suite is
//! about the cloud side. At the end it prints
//! `RESULT chaos rounds=R kills=K reruns_failed=F duplicates=D missing=M orphans=O`.
//!
//! `STACKSMITH_CHAOS_ROUNDS` (default 2) and `STACKSMITH_CHAOS_SEED` (default 14) choose the run;
//! `cargo xtask chaos --rounds 50 [--seed S]` runs the long one. Needs the venv of `cargo xtask
//! test` (moto).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use stacksmith_testkit::faultproxy::{FaultConfig, FaultProxy, Rule, draw};
use stacksmith_testkit::moto::{MotoServer, differences};

type Inventory = BTreeMap<String, usize>;

/// Every object in the emulator, by kind, through the AWS APIs (tagged or not, the region's
/// defaults left out: the default VPC and its subnets, default groups, main route tables and
/// their local routes, `default.*` parameter groups).
async fn inventory(sdk: &aws_config::SdkConfig) -> Inventory {
    let mut n = Inventory::new();
    let mut add = |kind: &str, count: usize| {
        *n.entry(kind.to_owned()).or_default() += count;
    };
    let ec2 = aws_sdk_ec2::Client::new(sdk);
    let vpcs = ec2.describe_vpcs().send().await.unwrap();
    add(
        "ec2/vpc",
        vpcs.vpcs()
            .iter()
            .filter(|v| v.is_default() != Some(true))
            .count(),
    );
    let subnets = ec2.describe_subnets().send().await.unwrap();
    add(
        "ec2/subnet",
        subnets
            .subnets()
            .iter()
            .filter(|s| s.default_for_az() != Some(true))
            .count(),
    );
    add(
        "ec2/internet_gateway",
        ec2.describe_internet_gateways()
            .send()
            .await
            .unwrap()
            .internet_gateways()
            .len(),
    );
    let nats = ec2.describe_nat_gateways().send().await.unwrap();
    add(
        "ec2/nat_gateway",
        nats.nat_gateways()
            .iter()
            .filter(|g| !matches!(g.state().map(|s| s.as_str()), Some("deleted" | "deleting")))
            .count(),
    );
    add(
        "ec2/eip",
        ec2.describe_addresses()
            .send()
            .await
            .unwrap()
            .addresses()
            .len(),
    );
    let tables = ec2.describe_route_tables().send().await.unwrap();
    for table in tables.route_tables() {
        let main = table.associations().iter().any(|a| a.main() == Some(true));
        if !main {
            add("ec2/route_table", 1);
        }
        add(
            "ec2/route",
            table
                .routes()
                .iter()
                .filter(|r| r.gateway_id() != Some("local"))
                .count(),
        );
        add(
            "ec2/route_table_association",
            table
                .associations()
                .iter()
                .filter(|a| a.main() != Some(true))
                .count(),
        );
    }
    let groups = ec2.describe_security_groups().send().await.unwrap();
    add(
        "ec2/security_group",
        groups
            .security_groups()
            .iter()
            .filter(|g| g.group_name() != Some("default"))
            .count(),
    );
    let rules = ec2.describe_security_group_rules().send().await.unwrap();
    add(
        "ec2/security_group_rule",
        rules.security_group_rules().len(),
    );
    add(
        "ec2/flow_log",
        ec2.describe_flow_logs()
            .send()
            .await
            .unwrap()
            .flow_logs()
            .len(),
    );

    let iam = aws_sdk_iam::Client::new(sdk);
    for role in iam.list_roles().send().await.unwrap().roles() {
        add("iam/role", 1);
        let name = role.role_name();
        add(
            "iam/role_policy_attachment",
            iam.list_attached_role_policies()
                .role_name(name)
                .send()
                .await
                .unwrap()
                .attached_policies()
                .len(),
        );
        add(
            "iam/role_policy",
            iam.list_role_policies()
                .role_name(name)
                .send()
                .await
                .unwrap()
                .policy_names()
                .len(),
        );
    }
    add(
        "iam/oidc_provider",
        iam.list_open_id_connect_providers()
            .send()
            .await
            .unwrap()
            .open_id_connect_provider_list()
            .len(),
    );

    let eks = aws_sdk_eks::Client::new(sdk);
    for cluster in eks.list_clusters().send().await.unwrap().clusters() {
        add("eks/cluster", 1);
        add(
            "eks/node_group",
            eks.list_nodegroups()
                .cluster_name(cluster)
                .send()
                .await
                .unwrap()
                .nodegroups()
                .len(),
        );
        if let Ok(entries) = eks.list_access_entries().cluster_name(cluster).send().await {
            add("eks/access_entry", entries.access_entries().len());
        }
    }
    let rds = aws_sdk_rds::Client::new(sdk);
    add(
        "rds/instance",
        rds.describe_db_instances()
            .send()
            .await
            .unwrap()
            .db_instances()
            .len(),
    );
    add(
        "rds/db_subnet_group",
        rds.describe_db_subnet_groups()
            .send()
            .await
            .unwrap()
            .db_subnet_groups()
            .len(),
    );
    let parameter_groups = rds.describe_db_parameter_groups().send().await.unwrap();
    add(
        "rds/db_parameter_group",
        parameter_groups
            .db_parameter_groups()
            .iter()
            .filter(|g| {
                !g.db_parameter_group_name()
                    .unwrap_or("")
                    .starts_with("default.")
            })
            .count(),
    );
    let cache = aws_sdk_elasticache::Client::new(sdk);
    add(
        "elasticache/replication_group",
        cache
            .describe_replication_groups()
            .send()
            .await
            .unwrap()
            .replication_groups()
            .len(),
    );
    let cache_subnets = cache.describe_cache_subnet_groups().send().await.unwrap();
    add(
        "elasticache/subnet_group",
        cache_subnets
            .cache_subnet_groups()
            .iter()
            .filter(|g| g.cache_subnet_group_name() != Some("default"))
            .count(),
    );
    let logs = aws_sdk_cloudwatchlogs::Client::new(sdk);
    add(
        "logs/log_group",
        logs.describe_log_groups()
            .send()
            .await
            .unwrap()
            .log_groups()
            .len(),
    );
    n.retain(|_, count| *count > 0);
    n
}

mod moto_support;
use moto_support::Deployment;

/// One command of a round may take this long at most.
const STEP_BOUND: Duration = Duration::from_secs(240);

/// A private moto behind the fault proxy, with an inventory of every object in it.
struct Emulator {
    runtime: tokio::runtime::Runtime,
    moto: MotoServer,
    sdk: aws_config::SdkConfig,
    proxy: FaultProxy,
}

impl Emulator {
    fn start(config: FaultConfig) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let moto = MotoServer::start();
        let sdk = runtime.block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new("us-east-1"))
                .endpoint_url(moto.url())
                .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                    "testing", "testing", None, None, "chaos",
                ))
                .load(),
        );
        let proxy = runtime
            .block_on(FaultProxy::start(&moto.url(), config))
            .unwrap();
        Self {
            runtime,
            moto,
            sdk,
            proxy,
        }
    }

    fn inventory(&self) -> Inventory {
        self.runtime.block_on(inventory(&self.sdk))
    }

    /// An empty emulator and fresh proxy counters, for the next round.
    fn reset(&self) {
        self.moto.reset();
        self.proxy.reset();
    }
}

#[derive(Debug, Default)]
struct Tally {
    rounds: u32,
    kills: u32,
    reruns_failed: u32,
    duplicates: usize,
    missing: usize,
    orphans: usize,
    unclean: Vec<String>,
}

impl Tally {
    fn line(&self) -> String {
        format!(
            "RESULT chaos rounds={} kills={} reruns_failed={} duplicates={} missing={} orphans={}",
            self.rounds,
            self.kills,
            self.reruns_failed,
            self.duplicates,
            self.missing,
            self.orphans
        )
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs a command of the deployment with a deadline (killed past it).
fn bounded(deployment: &Deployment, args: &[&str]) -> Output {
    let child = deployment
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = child.id();
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match wait.recv_timeout(STEP_BOUND) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-9", &id.to_string()])
                .status();
            panic!("`{}` did not finish within {STEP_BOUND:?}", args.join(" "));
        }
    }
}

/// Starts `args` with `--json` progress, SIGKILLs it `delay_ms` after its `at`-th progress
/// event; `true` when it was killed (false: it finished first), and the progress lines seen.
fn kill_at_event(
    deployment: &Deployment,
    args: &[&str],
    at: u64,
    delay_ms: u64,
) -> (bool, Vec<String>) {
    let mut child = deployment
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let started = Instant::now();
    let mut seen = 0;
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if line.contains("\"event\":\"started\"") || line.contains("\"event\":\"finished\"") {
            seen += 1;
        }
        lines.push(line);
        if seen >= at {
            std::thread::sleep(Duration::from_millis(delay_ms));
            let killed = child.try_wait().ok().flatten().is_none();
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
            return (killed, lines);
        }
        assert!(started.elapsed() < STEP_BOUND, "the run did not finish");
    }
    let _ = child.wait();
    (false, lines)
}

fn account(
    tally: &mut Tally,
    round: u32,
    what: &str,
    expected: &BTreeMap<String, usize>,
    found: &BTreeMap<String, usize>,
) {
    for (model, e, f) in differences(expected, found) {
        let line = format!("round {round}: {what}: {model} expected {e}, found {f}");
        eprintln!("{line}");
        if what == "after down" {
            tally.orphans += f.saturating_sub(e);
        } else if f > e {
            tally.duplicates += f - e;
        } else {
            tally.missing += e - f;
        }
    }
}

/// `moto_support` adds `--skip-cluster-install` (and `--skip-cluster` to `plan` and `drift`).
fn up_args() -> Vec<&'static str> {
    vec!["up", "--yes"]
}

#[test]
fn sigkill_at_random_progress_events_never_breaks_the_local_stack() {
    let rounds = env_number("STACKSMITH_CHAOS_ROUNDS", 2) as u32;
    let seed = env_number("STACKSMITH_CHAOS_SEED", 14);
    // Rounds are drawn from the seed by number: a failing round is rerun alone from its number.
    let first = env_number("STACKSMITH_CHAOS_FIRST_ROUND", 0) as u32;
    let emulator = Emulator::start(FaultConfig {
        seed,
        rules: vec![Rule::throttle(0.2, "*")],
        consistency: Some(Duration::from_millis(300)),
        ..FaultConfig::default()
    });
    let (proxy, inventory) = (&emulator.proxy, || emulator.inventory());
    let empty = inventory();

    // The reference: what a clean `up` leaves, and how many progress events `up` and `down` emit.
    let reference = Deployment::new("ch", &proxy.url());
    let up = bounded(&reference, &[&up_args()[..], &["--json"]].concat());
    assert!(up.status.success(), "{}", stacksmith_testkit::describe(&up));
    let up_events = String::from_utf8_lossy(&up.stdout)
        .lines()
        .filter(|l| l.contains("\"event\":\"started\"") || l.contains("\"event\":\"finished\""))
        .count() as u64;
    let deployed = inventory();
    let down = bounded(&reference, &["down", "--yes", "--json"]);
    assert!(
        down.status.success(),
        "{}",
        stacksmith_testkit::describe(&down)
    );
    let down_events = String::from_utf8_lossy(&down.stdout)
        .lines()
        .filter(|l| l.contains("\"event\":\"started\"") || l.contains("\"event\":\"finished\""))
        .count() as u64;
    assert!(
        up_events > 20 && down_events > 20,
        "{up_events} {down_events}"
    );
    assert!(
        differences(&empty, &inventory()).is_empty(),
        "a clean down leaves nothing: {:?}",
        differences(&empty, &inventory())
    );
    eprintln!("chaos: up emits {up_events} progress events, down {down_events}; seed {seed}");

    let mut tally = Tally::default();
    for round in first..first + rounds {
        emulator.reset();
        let deployment = Deployment::new("ch", &proxy.url());
        let kill_down = draw(seed, "chaos:kind", u64::from(round), 0) < 1.0 / 3.0;
        let events = if kill_down { down_events } else { up_events };
        let at = 1 + (draw(seed, "chaos:event", u64::from(round), 0) * events as f64) as u64;
        let delay = (draw(seed, "chaos:delay", u64::from(round), 0) * 400.0) as u64;
        tally.rounds += 1;
        let (verb, args): (&str, Vec<&str>) = if kill_down {
            let up = bounded(&deployment, &up_args());
            assert!(up.status.success(), "{}", stacksmith_testkit::describe(&up));
            ("down", vec!["down", "--yes", "--json"])
        } else {
            ("up", [&up_args()[..], &["--json"]].concat())
        };
        let (killed, progress) = kill_at_event(&deployment, &args, at, delay);
        tally.kills += u32::from(killed);
        eprintln!("round {round}: {verb} killed at event {at} (+{delay} ms): {killed}");

        let rerun_args: Vec<&str> = if kill_down {
            vec!["down", "--yes"]
        } else {
            up_args()
        };
        let rerun = bounded(&deployment, &rerun_args);
        if !rerun.status.success() {
            tally.reruns_failed += 1;
            eprintln!(
                "round {round}: the rerun failed:\n{}",
                stacksmith_testkit::describe(&rerun)
            );
            let again = bounded(&deployment, &rerun_args);
            assert!(
                again.status.success(),
                "round {round}: a second rerun failed too:\n{}",
                stacksmith_testkit::describe(&again)
            );
        }
        if !kill_down {
            let before = tally.duplicates + tally.missing;
            account(
                &mut tally,
                round,
                "after the rerun",
                &deployed,
                &inventory(),
            );
            if tally.duplicates + tally.missing > before {
                // What the killed run was doing, and what the rerun did: enough to find the bug.
                let from = progress.len().saturating_sub(12);
                eprintln!(
                    "round {round}: the killed run's last progress lines:\n{}\nthe rerun:\n{}",
                    progress[from..].join("\n"),
                    stacksmith_testkit::describe(&rerun)
                );
            }
            let plan = bounded(&deployment, &["plan", "--refresh", "--detailed-exitcode"]);
            if plan.status.code() != Some(0) {
                tally.unclean.push(format!(
                    "round {round}: plan after the rerun:\n{}",
                    stacksmith_testkit::describe(&plan)
                ));
            }
            let drift = bounded(&deployment, &["drift"]);
            if drift.status.code() != Some(0) {
                tally.unclean.push(format!(
                    "round {round}: drift after the rerun:\n{}",
                    stacksmith_testkit::describe(&drift)
                ));
            }
            let down = bounded(&deployment, &["down", "--yes"]);
            assert!(
                down.status.success(),
                "round {round}: down:\n{}",
                stacksmith_testkit::describe(&down)
            );
        }
        account(&mut tally, round, "after down", &empty, &inventory());
    }
    let calls: u64 = proxy.stats().values().map(|s| s.calls).sum();
    let throttled: u64 = proxy.stats().values().map(|s| s.throttled).sum();
    println!("{}", tally.line());
    eprintln!("{}", tally.line());
    eprintln!("chaos: the last round made {calls} calls, {throttled} throttled");
    for problem in &tally.unclean {
        eprintln!("{problem}");
    }
    assert!(
        tally.reruns_failed == 0
            && tally.duplicates == 0
            && tally.missing == 0
            && tally.orphans == 0
            && tally.unclean.is_empty(),
        "{}",
        tally.line()
    );
}

/// Starts `up --json`, SIGKILLs it the moment the proxy receives the first `operation` (the
/// objects made before it exist; the one it names may be half made), and returns whether it
/// was killed.
fn kill_at_operation(deployment: &Deployment, proxy: &FaultProxy, operation: &str) -> bool {
    let mut child = deployment
        .command(&[&up_args()[..], &["--json"]].concat())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if proxy.stats().get(operation).is_some_and(|s| s.calls > 0) {
            let killed = child.try_wait().ok().flatten().is_none();
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
            return killed;
        }
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        assert!(started.elapsed() < STEP_BOUND, "`up` did not finish");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A call of each kind of create `up` of `local` makes (`STACKSMITH_CHAOS_KILL_AT=all`).
const EVERY_KILL_POINT: &[&str] = &[
    "ec2:CreateVpc",
    "ec2:ModifyVpcAttribute",
    "ec2:CreateSubnet",
    "ec2:ModifySubnetAttribute",
    "ec2:CreateRouteTable",
    "ec2:CreateRoute",
    "ec2:AssociateRouteTable",
    "ec2:CreateSecurityGroup",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:CreateInternetGateway",
    "ec2:AttachInternetGateway",
    "ec2:AllocateAddress",
    "ec2:CreateNatGateway",
    "ec2:CreateFlowLogs",
    "logs:CreateLogGroup",
    "iam:CreateRole",
    "iam:AttachRolePolicy",
    "iam:CreateOpenIDConnectProvider",
    "eks:CreateCluster",
    "eks:CreateNodegroup",
    "rds:CreateDBSubnetGroup",
    "rds:CreateDBInstance",
    "elasticache:CreateCacheSubnetGroup",
    "elasticache:CreateReplicationGroup",
];

/// The moments random kills rarely hit, made exact: `up` SIGKILLed as the proxy receives each
/// named call (by default `AttachInternetGateway`: the gateway exists, unattached, and EC2 may
/// still answer "not found" for its new id when the rerun starts), then one rerun, and the
/// inventory, `plan --refresh --detailed-exitcode`, `drift` and `down` checked as in the random
/// rounds. `STACKSMITH_CHAOS_KILL_AT` lists the calls (`service:Operation`, comma-separated, or
/// `all`: [`EVERY_KILL_POINT`]); `cargo xtask chaos` runs them all.
#[test]
fn sigkill_as_each_named_call_is_received_never_breaks_the_local_stack() {
    let operations = match std::env::var("STACKSMITH_CHAOS_KILL_AT") {
        Ok(list) if list == "all" => EVERY_KILL_POINT.join(","),
        Ok(list) => list,
        Err(_) => "ec2:AttachInternetGateway".to_owned(),
    };
    let emulator = Emulator::start(FaultConfig {
        seed: 14,
        // Long enough that the rerun's first reads of what the killed run made still get "not
        // found" (as EC2 may answer for seconds), whatever the machine's load.
        consistency: Some(Duration::from_millis(1500)),
        ..FaultConfig::default()
    });
    let (proxy, inventory) = (&emulator.proxy, || emulator.inventory());
    let empty = inventory();
    let reference = Deployment::new("ck", &proxy.url());
    reference.up();
    let deployed = inventory();
    let down = bounded(&reference, &["down", "--yes"]);
    assert!(
        down.status.success(),
        "{}",
        stacksmith_testkit::describe(&down)
    );
    reference.deployed.set(false);

    let mut problems = Vec::new();
    for operation in operations
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
    {
        emulator.reset();
        let deployment = Deployment::new("ck", &proxy.url());
        deployment.deployed.set(true);
        let killed = kill_at_operation(&deployment, proxy, operation);
        assert!(killed, "`up` made no {operation} call");
        let rerun = bounded(&deployment, &up_args());
        let mut problem = |what: String| problems.push(format!("killed at {operation}: {what}"));
        if !rerun.status.success() {
            problem(format!(
                "the rerun failed:\n{}",
                stacksmith_testkit::describe(&rerun)
            ));
            let _ = bounded(&deployment, &up_args());
        }
        let found = inventory();
        for (model, e, f) in differences(&deployed, &found) {
            problem(format!(
                "{model} expected {e}, found {f}; the rerun:\n{}",
                stacksmith_testkit::describe(&rerun)
            ));
        }
        let plan = bounded(&deployment, &["plan", "--refresh", "--detailed-exitcode"]);
        if plan.status.code() != Some(0) {
            problem(format!(
                "plan after the rerun:\n{}",
                stacksmith_testkit::describe(&plan)
            ));
        }
        let drift = bounded(&deployment, &["drift"]);
        if drift.status.code() != Some(0) {
            problem(format!(
                "drift after the rerun:\n{}",
                stacksmith_testkit::describe(&drift)
            ));
        }
        let down = bounded(&deployment, &["down", "--yes"]);
        assert!(
            down.status.success(),
            "killed at {operation}: down:\n{}",
            stacksmith_testkit::describe(&down)
        );
        deployment.deployed.set(false);
        for (model, e, f) in differences(&empty, &inventory()) {
            problem(format!("after down: {model} expected {e}, found {f}"));
        }
        eprintln!("killed at {operation}: checked");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
