//! `stacksmith-acceptance`: the acceptance suite `cargo xtask acceptance --stack NAME` runs
//! (README.md, "Acceptance on AWS").
//!
//! It deploys an instance of a template stack of its own (`--instance`, `acc-` and a random
//! suffix by default) with the `provisioner` binary, as a user would: `validate`, `up`, `plan
//! --refresh` (a second run must change nothing), `output`; then, inside the cluster, a Job runs
//! `controlplane check` with the control plane's configuration (Postgres and Redis reached from a
//! pod, a workflow through the installed API and worker pools); then `down`, also after a failure
//! or Ctrl-C, and `down` again (nothing left to delete). It prints a report (text, or JSON with
//! `--json`).
//!
//! It runs only with `STACKSMITH_ACC=1` and AWS credentials. A stack that points at other
//! endpoints (`aws.endpoint_url`, `cluster.kubeconfig`: emulators) is refused unless
//! `--allow-emulators`. Against emulators with the tests' kubelet (`stacksmith_testkit::kubelet`,
//! which registers a Node and runs the stack's Jobs) the in-cluster check runs for real; against
//! an emulator without one (no Node: nothing runs pods there), a check Job that never gets a pod
//! is reported as skipped rather than failed, and the report says why.
//!
//! Exit codes: 0 passed (skipped steps allowed), 1 a step failed, 2 refused before anything was
//! created.

mod in_cluster;
mod provisioner;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;

use crate::in_cluster::{CheckSettings, Outcome};
use crate::provisioner::Provisioner;
use crate::report::{Report, Status};

/// The acceptance suite: deploys an instance of a stack on AWS, checks it works from inside the
/// cluster, runs a workflow through its control plane, tears it down and reports.
#[derive(Debug, Parser)]
#[command(name = "stacksmith-acceptance")]
struct Args {
    /// The template stack to deploy an instance of.
    #[arg(long)]
    stack: String,
    /// Where the stack file is.
    #[arg(long, default_value = "tests/fixtures/acceptance")]
    stacks_dir: PathBuf,
    /// The instance to deploy (default: `acc-` and six random hex digits).
    #[arg(long)]
    instance: Option<String>,
    /// Print the report as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    json: bool,
    /// Allow a stack whose AWS endpoint or cluster is overridden (emulators).
    #[arg(long, env = "STACKSMITH_ACC_ALLOW_EMULATORS")]
    allow_emulators: bool,
    /// The cluster's kubeconfig (default: the stack's `cluster.kubeconfig`, else one written by
    /// `provisioner kubeconfig`).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The `provisioner` binary (default: next to this one).
    #[arg(long)]
    provisioner: Option<PathBuf>,
    /// The workflow the in-cluster check runs through the control plane.
    #[arg(long, default_value = "controlplane/workflows/local-release.json")]
    workflow: PathBuf,
    /// Longest wait, in seconds, for the check Job to get a pod.
    #[arg(long, default_value_t = 180)]
    job_start_seconds: u64,
    /// Longest run, in seconds, of the check Job once it has a pod.
    #[arg(long, default_value_t = 600)]
    check_seconds: u64,
    /// Deadline of `up`, in seconds.
    #[arg(long, default_value_t = 5400)]
    up_seconds: u64,
    /// Deadline of each `down`, in seconds.
    #[arg(long, default_value_t = 3600)]
    down_seconds: u64,
}

const SHORT: Duration = Duration::from_secs(300);

fn main() -> ExitCode {
    let args = Args::parse();
    if std::env::var("STACKSMITH_ACC").as_deref() != Ok("1") {
        eprintln!(
            "stacksmith-acceptance: refused: the acceptance suite creates AWS resources that cost \
             money (a VPC with a NAT gateway, an EKS cluster and nodes, RDS, ElastiCache) and \
             deletes them again; set STACKSMITH_ACC=1 to run it, with AWS credentials of the \
             account to use."
        );
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(args))
}

/// What `provisioner policy check --print-input` says about the stack.
struct StackFacts {
    qualified_name: String,
    emulated: Vec<String>,
    kubeconfig: Option<PathBuf>,
    namespace: Option<String>,
    image: Option<String>,
    template: bool,
}

fn stack_facts(input: &Value) -> StackFacts {
    let stack = &input["stack"];
    let config = &stack["config"];
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    let endpoint = text(&config["aws"]["endpoint_url"]);
    let kubeconfig = text(&config["cluster"]["kubeconfig"]);
    let mut emulated = Vec::new();
    if let Some(endpoint) = &endpoint {
        emulated.push(format!("aws.endpoint_url is {endpoint}"));
    }
    if let Some(kubeconfig) = &kubeconfig {
        emulated.push(format!("cluster.kubeconfig is {kubeconfig}"));
    }
    StackFacts {
        qualified_name: text(&stack["qualified_name"]).unwrap_or_default(),
        emulated,
        kubeconfig: kubeconfig.map(PathBuf::from),
        namespace: text(&config["controlplane"]["namespace"]),
        image: text(&config["controlplane"]["image"]),
        template: config["instances"]["allowed"].as_bool() == Some(true),
    }
}

async fn run(args: Args) -> ExitCode {
    let started = Instant::now();
    let instance = args
        .instance
        .clone()
        .unwrap_or_else(|| format!("acc-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]));
    let program = args.provisioner.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("provisioner")))
            .unwrap_or_else(|| PathBuf::from("provisioner"))
    });
    let provisioner = Provisioner {
        program,
        stacks_dir: args.stacks_dir.clone(),
        stack: args.stack.clone(),
        instance: instance.clone(),
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let interrupted = interrupted.clone();
        let (stack, instance) = (args.stack.clone(), instance.clone());
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.store(true, Ordering::SeqCst);
                eprintln!(
                    "acceptance: interrupted: tearing the instance down (Ctrl-C again leaves it: \
                     then run `provisioner down --stack {stack} --instance {instance} --yes`)"
                );
            }
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        });
    }
    let mut report = Report::new(&args.stack, &instance, "aws");
    let code = match preflight(&args, &provisioner, &mut report).await {
        Err(why) => {
            eprintln!("stacksmith-acceptance: refused: {why}");
            2
        }
        Ok(facts) => {
            deploy_check_destroy(&args, &provisioner, &facts, &interrupted, &mut report).await;
            u8::from(report.failed())
        }
    };
    report.seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report is JSON")
        );
    } else {
        print!("{}", report.text());
    }
    ExitCode::from(code)
}

/// Validates the stack, reads what it targets and checks the credentials; nothing is created.
async fn preflight(
    args: &Args,
    provisioner: &Provisioner,
    report: &mut Report,
) -> Result<StackFacts, String> {
    let step = Instant::now();
    let run = provisioner
        .run(&["validate"], &[], SHORT, true)
        .await
        .map_err(|e| format!("cannot run {}: {e}", provisioner.program.display()))?;
    if !run.success() {
        report.record("validate", Status::Failed, step.elapsed(), run.failure());
        return Err(format!("the stack `{}` is not valid", args.stack));
    }
    report.record("validate", Status::Passed, step.elapsed(), "");

    let step = Instant::now();
    let run = provisioner
        .run(&["policy", "check"], &["--print-input"], SHORT, false)
        .await
        .map_err(|e| e.to_string())?;
    let input: Value = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
    if !run.success() || input.is_null() {
        report.record("stack", Status::Failed, step.elapsed(), run.failure());
        return Err("cannot read the stack (provisioner policy check --print-input)".to_owned());
    }
    let facts = stack_facts(&input);
    let refuse = |report: &mut Report, why: String| {
        report.record("stack", Status::Failed, step.elapsed(), why.clone());
        Err(why)
    };
    if !facts.template {
        return refuse(
            report,
            format!(
                "`{}` is not a template stack (`instances: {{ allowed: true }}`): the suite \
                 deploys an instance of its own so that it never touches a deployment in use",
                args.stack
            ),
        );
    }
    if facts.namespace.is_none() || facts.image.is_none() {
        return refuse(
            report,
            format!(
                "`{}` has no `controlplane`: there is nothing to check inside the cluster",
                args.stack
            ),
        );
    }
    if !facts.emulated.is_empty() {
        if !args.allow_emulators {
            return refuse(
                report,
                format!(
                    "the stack does not target AWS ({}); pass --allow-emulators (or set \
                     STACKSMITH_ACC_ALLOW_EMULATORS=1) to run against emulators",
                    facts.emulated.join(", ")
                ),
            );
        }
        report.target = "emulators";
    }
    report.record(
        "stack",
        Status::Passed,
        step.elapsed(),
        format!(
            "deploys {} against {}{}",
            facts.qualified_name,
            report.target,
            if facts.emulated.is_empty() {
                String::new()
            } else {
                format!(" ({})", facts.emulated.join(", "))
            }
        ),
    );

    // `token` resolves the standard credential chain and signs a request, without sending it.
    let step = Instant::now();
    let run = provisioner
        .run(&["token"], &[], SHORT, false)
        .await
        .map_err(|e| e.to_string())?;
    if !run.success() {
        report.record("credentials", Status::Failed, step.elapsed(), run.failure());
        return Err(
            "no AWS credentials (the standard chain: AWS_PROFILE, AWS_ACCESS_KEY_ID, SSO, ...)"
                .to_owned(),
        );
    }
    report.record(
        "credentials",
        Status::Passed,
        step.elapsed(),
        "found by the standard chain",
    );
    Ok(facts)
}

async fn deploy_check_destroy(
    args: &Args,
    provisioner: &Provisioner,
    facts: &StackFacts,
    interrupted: &AtomicBool,
    report: &mut Report,
) {
    let workflow = match std::fs::read_to_string(&args.workflow) {
        Ok(text) => text,
        Err(e) => {
            let why = format!("cannot read {}: {e}", args.workflow.display());
            report.record("workflow file", Status::Failed, Duration::ZERO, why);
            return;
        }
    };
    let step = Instant::now();
    let up = provisioner
        .run(
            &["up"],
            &["--yes"],
            Duration::from_secs(args.up_seconds),
            true,
        )
        .await;
    let up_ok = matches!(&up, Ok(run) if run.success());
    match &up {
        Ok(run) if run.success() => report.record("up", Status::Passed, step.elapsed(), ""),
        Ok(run) => report.record("up", Status::Failed, step.elapsed(), run.failure()),
        Err(e) => report.record("up", Status::Failed, step.elapsed(), e.to_string()),
    }
    if up_ok && !interrupted.load(Ordering::SeqCst) {
        check_deployment(args, provisioner, facts, workflow, interrupted, report).await;
    }
    if up.is_err() {
        // The binary never ran: nothing was created.
        return;
    }
    tear_down(args, provisioner, report).await;
}

/// Everything between `up` and `down`.
async fn check_deployment(
    args: &Args,
    provisioner: &Provisioner,
    facts: &StackFacts,
    workflow: String,
    interrupted: &AtomicBool,
    report: &mut Report,
) {
    let step = Instant::now();
    match provisioner
        .run(
            &["plan"],
            &["--refresh", "--detailed-exitcode"],
            SHORT,
            false,
        )
        .await
    {
        Ok(run) if run.success() => report.record(
            "plan again",
            Status::Passed,
            step.elapsed(),
            "no change after up",
        ),
        Ok(run) if run.code == Some(2) => {
            let changes: Vec<&str> = run.stdout.lines().take(12).collect();
            report.record(
                "plan again",
                Status::Failed,
                step.elapsed(),
                format!(
                    "a second up would change something: {}",
                    changes.join(" | ")
                ),
            );
        }
        Ok(run) => report.record("plan again", Status::Failed, step.elapsed(), run.failure()),
        Err(e) => report.record("plan again", Status::Failed, step.elapsed(), e.to_string()),
    }

    let step = Instant::now();
    let outputs = match provisioner
        .run(&["output"], &["--json"], SHORT, false)
        .await
    {
        Ok(run) if run.success() => serde_json::from_str::<Value>(&run.stdout).ok(),
        _ => None,
    };
    let Some(outputs) = outputs else {
        report.record(
            "output",
            Status::Failed,
            step.elapsed(),
            "provisioner output --json gave nothing readable",
        );
        return;
    };
    let endpoint = |section: &str| -> String {
        let s = &outputs[section];
        match (s["address"].as_str(), s["port"].as_u64()) {
            (Some(address), Some(port)) => format!("{address}:{port}"),
            (Some(address), None) => address.to_owned(),
            _ => "none".to_owned(),
        }
    };
    let has_cache = !outputs["cache"].is_null();
    report.record(
        "output",
        Status::Passed,
        step.elapsed(),
        format!(
            "cluster {}, database {}, cache {}",
            outputs["cluster"]["endpoint"].as_str().unwrap_or("none"),
            endpoint("database"),
            endpoint("cache")
        ),
    );
    if interrupted.load(Ordering::SeqCst) {
        return;
    }
    let endpoints = [endpoint("database"), endpoint("cache")];
    in_cluster_checks(
        args,
        provisioner,
        facts,
        workflow,
        has_cache,
        &endpoints,
        report,
    )
    .await;
}

const IN_CLUSTER_STEPS: [&str; 3] = ["pod reaches postgres", "pod reaches redis", "workflow"];

async fn in_cluster_checks(
    args: &Args,
    provisioner: &Provisioner,
    facts: &StackFacts,
    workflow: String,
    has_cache: bool,
    endpoints: &[String; 2],
    report: &mut Report,
) {
    let step = Instant::now();
    let run_id = provisioner.instance.clone();
    let fail_all = |report: &mut Report, why: String| {
        for name in IN_CLUSTER_STEPS {
            report.record(name, Status::Failed, step.elapsed(), why.clone());
        }
    };
    let mut written = None;
    let kubeconfig = match (&args.kubeconfig, &facts.kubeconfig) {
        (Some(path), _) | (None, Some(path)) => path.clone(),
        (None, None) => {
            let path = std::env::temp_dir().join(format!("stacksmith-acceptance-{run_id}.yaml"));
            let out = path.display().to_string();
            match provisioner
                .run(&["kubeconfig"], &["--out", &out], SHORT, false)
                .await
            {
                Ok(run) if run.success() => {}
                Ok(run) => return fail_all(report, format!("kubeconfig: {}", run.failure())),
                Err(e) => return fail_all(report, format!("kubeconfig: {e}")),
            }
            written = Some(path.clone());
            path
        }
    };
    let client = match in_cluster::client(&kubeconfig).await {
        Ok(client) => client,
        Err(e) => return fail_all(report, e),
    };
    let settings = CheckSettings {
        run_id,
        qualified_name: facts.qualified_name.clone(),
        namespace: facts.namespace.clone().unwrap_or_default(),
        image: facts.image.clone().unwrap_or_default(),
        workflow,
        start_deadline: Duration::from_secs(args.job_start_seconds),
        finish_deadline: Duration::from_secs(args.check_seconds),
    };
    let outcome = match in_cluster::find_api(&client, &settings).await {
        Err(e) => Err(e),
        Ok(()) => match in_cluster::create(&client, &settings).await {
            Err(e) => Err(e),
            Ok(()) => in_cluster::wait(&client, &settings).await,
        },
    };
    let cleanup = in_cluster::remove(&client, &settings).await;
    if let Some(path) = written {
        let _ = std::fs::remove_file(path);
    }
    match outcome {
        Err(why) => fail_all(report, why),
        Ok(Outcome::NotStarted { waited, nodes }) => {
            let waited = waited.as_secs();
            let (status, why) = match nodes {
                Some(0) if report.target == "emulators" => (
                    Status::Skipped,
                    format!(
                        "skipped (no pods run in the emulator: it has no kubelet, no Node; the \
                         check Job had no pod after {waited} s)"
                    ),
                ),
                Some(0) => (
                    Status::Failed,
                    format!("the check Job had no pod after {waited} s: the cluster has no Node"),
                ),
                Some(n) => (
                    Status::Failed,
                    format!(
                        "the check Job had no pod after {waited} s although the cluster has {n} \
                         Node(s) (are they Ready? does admission refuse the pod?)"
                    ),
                ),
                None => (
                    Status::Failed,
                    format!(
                        "the check Job had no pod after {waited} s: nothing schedules pods (are \
                         the nodes Ready?)"
                    ),
                ),
            };
            for name in IN_CLUSTER_STEPS {
                report.record(name, status, step.elapsed(), why.clone());
            }
        }
        Ok(Outcome::TimedOut { pod_status }) => fail_all(
            report,
            format!(
                "the check Job did not finish within {} s ({pod_status})",
                args.check_seconds
            ),
        ),
        Ok(Outcome::Ran {
            succeeded,
            checks,
            log_tail,
            failure,
        }) => {
            for (name, check) in IN_CLUSTER_STEPS
                .into_iter()
                .zip(["postgres", "redis", "workflow"])
            {
                if check == "redis" && !has_cache {
                    report.record(
                        name,
                        Status::Skipped,
                        step.elapsed(),
                        "the stack has no cache",
                    );
                    continue;
                }
                match checks.iter().find(|c| c["check"] == check) {
                    Some(line) if line["ok"] == true => {
                        report.record(name, Status::Passed, step.elapsed(), summary(line))
                    }
                    Some(line) => report.record(
                        name,
                        Status::Failed,
                        step.elapsed(),
                        unreachable(check, line["error"].as_str().unwrap_or("failed"), endpoints),
                    ),
                    None => report.record(
                        name,
                        Status::Failed,
                        step.elapsed(),
                        format!(
                            "no result in the check Job's log (Job {}{}): {}",
                            if succeeded { "succeeded" } else { "failed" },
                            failure
                                .as_ref()
                                .map(|f| format!(", {f}"))
                                .unwrap_or_default(),
                            log_tail.join(" | ")
                        ),
                    ),
                }
            }
        }
    }
    if !cleanup.is_empty() {
        report.record(
            "in-cluster cleanup",
            Status::Failed,
            Duration::ZERO,
            cleanup.join("; "),
        );
    }
}

/// Why a check failed, with the endpoint the pod tried and where to look.
fn unreachable(check: &str, error: &str, endpoints: &[String; 2]) -> String {
    let (what, endpoint) = match check {
        "postgres" => ("the database", &endpoints[0]),
        "redis" => ("the cache", &endpoints[1]),
        _ => return error.to_owned(),
    };
    format!(
        "{error}: a pod of the cluster cannot reach {what} at {endpoint} (do its security groups \
         admit the nodes? does the stack's NetworkPolicy allow the port?)"
    )
}

/// One passed check line in a few words.
fn summary(line: &Value) -> String {
    let ms = line["ms"].as_u64().unwrap_or(0);
    match line["check"].as_str() {
        Some("postgres") => format!(
            "PostgreSQL {} in {ms} ms",
            line["server_version"].as_str().unwrap_or("?")
        ),
        Some("redis") => format!("{} in {ms} ms", line["answer"].as_str().unwrap_or("?")),
        Some("workflow") => {
            let tasks = line["tasks"].as_array().map_or(0, Vec::len);
            format!(
                "workflow {} {} ({tasks} tasks) in {:.1} s",
                line["workflow_id"].as_str().unwrap_or("?"),
                line["state"].as_str().unwrap_or("?"),
                ms as f64 / 1000.0
            )
        }
        _ => String::new(),
    }
}

/// `down`, then `down` again: the second must find nothing to delete.
async fn tear_down(args: &Args, provisioner: &Provisioner, report: &mut Report) {
    let deadline = Duration::from_secs(args.down_seconds);
    for (name, expect_nothing) in [("down", false), ("down again", true)] {
        let step = Instant::now();
        match provisioner.run(&["down"], &["--yes"], deadline, true).await {
            Ok(run) if run.success() => {
                let nothing = run
                    .stderr_tail
                    .iter()
                    .chain(
                        run.stdout
                            .lines()
                            .map(str::to_owned)
                            .collect::<Vec<_>>()
                            .iter(),
                    )
                    .any(|l| l.contains("Nothing to delete"));
                if expect_nothing && !nothing {
                    report.record(
                        name,
                        Status::Failed,
                        step.elapsed(),
                        "the second down deleted something: the first left it",
                    );
                } else {
                    let detail = if nothing {
                        "nothing left to delete"
                    } else {
                        ""
                    };
                    report.record(name, Status::Passed, step.elapsed(), detail);
                }
            }
            Ok(run) => {
                report.record(name, Status::Failed, step.elapsed(), run.failure());
                eprintln!(
                    "acceptance: the instance may still exist: run `provisioner down --stacks-dir \
                     {} --stack {} --instance {} --yes` (or `provisioner gc` after its ttl)",
                    provisioner.stacks_dir.display(),
                    provisioner.stack,
                    provisioner.instance
                );
                return;
            }
            Err(e) => {
                report.record(name, Status::Failed, step.elapsed(), e.to_string());
                return;
            }
        }
    }
}
