//! The executor against the fake provider, in process: ordering, the parallelism bound, reverse
//! deletes, failures, throttling, interrupts, replacements and secrets.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use provisioner::engine::events::{ExecutionEvent, TimedEvent};
use provisioner::engine::executor::{self, ApplyReport, ExecutorOptions, Interrupt};
use provisioner::engine::fake::{FakeConfig, FakeObject, FakeProvider, FakeStats};
use provisioner::engine::plan::{ActionKind, Plan};
use provisioner::engine::planner::{self, PlanInput};
use provisioner::engine::provider::ProviderRegistry;
use provisioner::engine::secrets::StateCipher;
use provisioner::engine::types::TypeCatalog;
use provisioner::engine::value::{OutputRef, generated_secret};
use provisioner::engine::{Address, DesiredResource, DesiredSet};
use provisioner::state::journal::Journal;
use provisioner::state::local::LocalBackend;
use provisioner::state::{StateBackend, StateDocument};
use serde_json::json;

struct World {
    dir: PathBuf,
}

impl World {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(stacksmith_testkit::unique_name("engine-exec"));
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    fn cloud(&self) -> PathBuf {
        self.dir.join("cloud")
    }

    fn backend(&self) -> Arc<dyn StateBackend> {
        Arc::new(LocalBackend::new(&self.dir.join("state"), "t"))
    }

    fn provider(&self, config: FakeConfig) -> (ProviderRegistry, Arc<FakeStats>) {
        let fake = Arc::new(FakeProvider::new(&self.cloud(), config).unwrap());
        let stats = fake.stats();
        let mut registry = ProviderRegistry::new();
        registry.register_fallback(fake);
        (registry, stats)
    }

    async fn state(&self) -> StateDocument {
        self.backend()
            .load()
            .await
            .unwrap()
            .expect("state was saved")
    }

    fn objects(&self) -> Vec<FakeObject> {
        FakeProvider::objects(&self.cloud()).unwrap()
    }

    /// Plans `desired` against the saved state and applies it.
    async fn up(
        &self,
        desired: &DesiredSet,
        registry: &ProviderRegistry,
        options: ExecutorOptions,
    ) -> (Plan, ApplyReport) {
        let backend = self.backend();
        let journal = Arc::new(Journal::open(backend, "t", None).await.unwrap());
        let snapshot = journal.snapshot().await;
        let state = (snapshot.serial > 0).then_some(snapshot);
        let plan = planner::plan(&PlanInput {
            desired,
            state: state.as_ref(),
            live: None,
            catalog: &TypeCatalog::builtin(),
        })
        .unwrap();
        let report = executor::apply(&plan, journal, registry, options)
            .await
            .unwrap();
        (plan, report)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn set(resources: Vec<DesiredResource>) -> DesiredSet {
    DesiredSet {
        stack: "t".into(),
        instance: None,
        resources,
    }
}

fn id_of(address: &str) -> serde_json::Value {
    OutputRef::new(&Address::new(address), "id").to_value()
}

/// root -> 24 middles -> leaf, plus a chain of three.
fn wide_graph() -> DesiredSet {
    let mut resources = vec![DesiredResource::new("root", "test.thing").with("n", json!(0))];
    for i in 0..24 {
        resources.push(
            DesiredResource::new(&format!("middle[{i}]"), "test.thing")
                .with("parent", id_of("root")),
        );
    }
    let mut leaf = DesiredResource::new("leaf", "test.thing");
    for i in 0..24 {
        leaf = leaf.after(&Address::new(format!("middle[{i}]")));
    }
    resources.push(leaf);
    resources.push(DesiredResource::new("chain.a", "test.thing"));
    resources.push(DesiredResource::new("chain.b", "test.thing").with("a", id_of("chain.a")));
    resources.push(DesiredResource::new("chain.c", "test.thing").with("b", id_of("chain.b")));
    set(resources)
}

fn latency(ms: u64) -> FakeConfig {
    FakeConfig {
        latency: Duration::from_millis(ms),
        ..FakeConfig::default()
    }
}

/// Every address has exactly one object in the fake cloud; returns the count per address.
fn assert_no_duplicates(objects: &[FakeObject]) -> HashMap<String, usize> {
    let mut per_address: HashMap<String, usize> = HashMap::new();
    for object in objects {
        *per_address
            .entry(object.tags["stacksmith:address"].clone())
            .or_default() += 1;
    }
    let duplicated: Vec<_> = per_address.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "duplicate objects: {duplicated:?}");
    per_address
}

#[tokio::test]
async fn dependencies_are_respected_and_the_parallelism_bound_holds() {
    let world = World::new();
    let (registry, stats) = world.provider(latency(40));
    let desired = wide_graph();
    let options = ExecutorOptions {
        parallelism: 4,
        ..ExecutorOptions::default()
    };
    let (_, report) = world.up(&desired, &registry, options).await;
    assert!(report.succeeded(), "{}", report.summary());
    assert_eq!(report.completed.len(), desired.resources.len());
    // Measured at the provider: never more than 4 calls at once, and the bound was reached.
    assert_eq!(stats.max_in_flight(), 4);
    assert!(report.max_in_flight <= 4);

    let calls = stats.calls();
    let call = |address: &Address| calls.iter().find(|c| &c.address == address).unwrap();
    for resource in &desired.resources {
        let this = call(&resource.address);
        for dependency in resource.all_dependencies() {
            assert!(
                call(&dependency).finished <= this.started,
                "{} started before its dependency {dependency} finished",
                resource.address
            );
        }
    }
    let state = world.state().await;
    assert_eq!(state.resources.len(), desired.resources.len());
    assert!(state.pending.is_empty());
    // References were resolved just before the call: each middle got root's id.
    let root_id = &state.resources[&Address::new("root")].id;
    assert_eq!(
        state.resources[&Address::new("middle[3]")].properties["parent"],
        json!(root_id)
    );
}

#[tokio::test]
async fn deletes_run_in_reverse_dependency_order() {
    let world = World::new();
    let (registry, _) = world.provider(latency(5));
    let desired = wide_graph();
    let (_, report) = world
        .up(&desired, &registry, ExecutorOptions::default())
        .await;
    assert!(report.succeeded(), "{}", report.summary());

    let (registry, stats) = world.provider(latency(20));
    let (plan, report) = world
        .up(&set(Vec::new()), &registry, ExecutorOptions::default())
        .await;
    assert!(report.succeeded(), "{}", report.summary());
    assert_eq!(plan.summary.delete, desired.resources.len());
    let calls = stats.calls();
    let call = |address: &Address| calls.iter().find(|c| &c.address == address).unwrap();
    for resource in &desired.resources {
        for dependency in resource.all_dependencies() {
            assert!(
                call(&resource.address).finished <= call(&dependency).started,
                "{dependency} was deleted before its dependent {}",
                resource.address
            );
        }
    }
    assert!(world.objects().is_empty());
    assert!(world.state().await.resources.is_empty());
}

#[tokio::test]
async fn a_failure_mid_apply_keeps_finished_work_and_the_rerun_creates_nothing_twice() {
    let world = World::new();
    let mut config = latency(20);
    config.fail_addresses.insert("middle[5]".into());
    let (registry, _) = world.provider(config);
    let desired = wide_graph();
    let (_, report) = world
        .up(
            &desired,
            &registry,
            ExecutorOptions {
                parallelism: 3,
                ..ExecutorOptions::default()
            },
        )
        .await;
    assert!(!report.succeeded());
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].address, Address::new("middle[5]"));
    assert!(
        report
            .not_started
            .iter()
            .any(|s| s.address == Address::new("leaf"))
    );

    // Every finished create is recorded, nothing is left pending, nothing exists unrecorded.
    let state = world.state().await;
    assert!(state.pending.is_empty());
    assert_eq!(state.resources.len(), report.completed.len());
    let objects = world.objects();
    assert_eq!(objects.len(), state.resources.len());
    for object in &objects {
        let address = Address::new(object.tags["stacksmith:address"].clone());
        assert_eq!(state.resources[&address].id, object.id);
    }
    let first_run: Vec<Address> = state.resources.keys().cloned().collect();

    let (registry, stats) = world.provider(latency(1));
    let (plan, report) = world
        .up(&desired, &registry, ExecutorOptions::default())
        .await;
    assert!(report.succeeded(), "{}", report.summary());
    assert_eq!(plan.summary.no_op, first_run.len());
    for call in stats.calls() {
        assert!(
            !first_run.contains(&call.address),
            "{} was created again",
            call.address
        );
    }
    let per_address = assert_no_duplicates(&world.objects());
    assert_eq!(per_address.len(), desired.resources.len());
}

#[tokio::test]
async fn throttling_backs_off_and_lowers_concurrency_instead_of_failing() {
    let world = World::new();
    let mut config = latency(5);
    config.throttle_first_calls = 6;
    let (registry, _) = world.provider(config);
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<TimedEvent>();
    let (_, report) = world
        .up(
            &wide_graph(),
            &registry,
            ExecutorOptions {
                events: Some(sender),
                ..ExecutorOptions::default()
            },
        )
        .await;
    assert!(report.succeeded(), "{}", report.summary());
    let mut limits = Vec::new();
    while let Ok(event) = receiver.try_recv() {
        if let ExecutionEvent::Throttled {
            concurrency_limit, ..
        } = event.event
        {
            limits.push(concurrency_limit);
        }
    }
    assert_eq!(limits.len(), 6, "each throttled call is retried once");
    assert!(
        limits.iter().any(|&l| l < 10),
        "the limit went down: {limits:?}"
    );
    assert_no_duplicates(&world.objects());
}

#[tokio::test]
async fn an_interrupt_starts_nothing_new_and_records_calls_in_flight() {
    let world = World::new();
    let (registry, _) = world.provider(latency(60));
    let interrupt = Interrupt::new();
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<TimedEvent>();
    let trigger = interrupt.clone();
    tokio::spawn(async move {
        // Interrupt as soon as the third call has started.
        let mut started = 0;
        while let Some(event) = receiver.recv().await {
            if matches!(event.event, ExecutionEvent::Started { .. }) {
                started += 1;
                if started == 3 {
                    trigger.trigger();
                }
            }
        }
    });
    let desired = wide_graph();
    let (_, report) = world
        .up(
            &desired,
            &registry,
            ExecutorOptions {
                parallelism: 2,
                events: Some(sender),
                interrupt,
                ..ExecutorOptions::default()
            },
        )
        .await;
    assert!(report.interrupted);
    assert!(!report.not_started.is_empty());
    assert!(report.completed.len() >= 2 && report.completed.len() < desired.resources.len());
    let state = world.state().await;
    assert!(state.pending.is_empty(), "in-flight calls were settled");
    assert_eq!(state.resources.len(), report.completed.len());
    assert_eq!(world.objects().len(), state.resources.len());
}

#[tokio::test]
async fn replacements_leave_exactly_one_object_per_address() {
    let world = World::new();
    let (registry, _) = world.provider(latency(2));
    let desired = set(vec![
        DesiredResource::new("network.vpc", "aws.ec2.vpc").with("cidr_block", json!("10.0.0.0/16")),
        DesiredResource::new("network.subnet[0]", "aws.ec2.subnet")
            .with("vpc_id", id_of("network.vpc"))
            .with("cidr_block", json!("10.0.1.0/24")),
        DesiredResource::new("network.route_table", "aws.ec2.route_table")
            .with("vpc_id", id_of("network.vpc")),
    ]);
    let (_, report) = world
        .up(&desired, &registry, ExecutorOptions::default())
        .await;
    assert!(report.succeeded(), "{}", report.summary());
    let old_vpc = world.state().await.resources[&Address::new("network.vpc")]
        .id
        .clone();

    let mut changed = desired.clone();
    changed.resources[0]
        .properties
        .insert("cidr_block".into(), json!("10.9.0.0/16"));
    let (plan, report) = world
        .up(&changed, &registry, ExecutorOptions::default())
        .await;
    assert!(report.succeeded(), "{}", report.summary());
    assert!(plan.actions.iter().all(|a| a.action == ActionKind::Replace));

    let state = world.state().await;
    assert!(state.deposed.is_empty());
    let new_vpc = &state.resources[&Address::new("network.vpc")].id;
    assert_ne!(new_vpc, &old_vpc);
    assert_eq!(
        state.resources[&Address::new("network.subnet[0]")].properties["vpc_id"],
        json!(new_vpc)
    );
    let per_address = assert_no_duplicates(&world.objects());
    assert_eq!(per_address.len(), 3);
}

#[tokio::test]
async fn secrets_are_encrypted_in_state_and_reused_on_update() {
    let world = World::new();
    let (registry, _) = world.provider(latency(1));
    let cipher = StateCipher::from_passphrase("test key");
    let desired = set(vec![
        DesiredResource::new("database.instance", "aws.rds.instance")
            .with("instance_class", json!("db.t4g.medium"))
            .with("master_password", generated_secret(24)),
    ]);
    let options = || ExecutorOptions {
        cipher: Some(cipher.clone()),
        ..ExecutorOptions::default()
    };
    let (_, report) = world.up(&desired, &registry, options()).await;
    assert!(report.succeeded(), "{}", report.summary());
    let object = &world.objects()[0];
    let password = object.properties["master_password"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(password.len(), 24);

    let state_text = std::fs::read_to_string(world.dir.join("state/t.json")).unwrap();
    assert!(
        !state_text.contains(&password),
        "the secret is in state in plain text"
    );
    let state = world.state().await;
    let sealed = &state.resources[&Address::new("database.instance")].properties["master_password"];
    assert_eq!(cipher.decrypt(sealed).unwrap(), password);

    // An in-place update sends the same secret again instead of generating a new one.
    let mut changed = desired.clone();
    changed.resources[0]
        .properties
        .insert("instance_class".into(), json!("db.r6g.large"));
    let (plan, report) = world.up(&changed, &registry, options()).await;
    assert!(report.succeeded(), "{}", report.summary());
    assert_eq!(plan.summary.update, 1);
    let object = &world.objects()[0];
    assert_eq!(object.properties["master_password"], json!(password));
    let rendered = provisioner::engine::render::render_plan(&plan, false);
    assert!(!rendered.contains(&password));
}

#[tokio::test]
async fn state_saves_are_atomic_and_serials_increase() {
    let world = World::new();
    let (registry, _) = world.provider(latency(1));
    let (_, report) = world
        .up(&wide_graph(), &registry, ExecutorOptions::default())
        .await;
    assert!(report.succeeded());
    let state = world.state().await;
    // At most two saves per provider call (pending written, then settled); group commit may
    // write several changes in one save.
    let calls = wide_graph().resources.len() as u64;
    assert!(
        state.serial >= 2 && state.serial <= 2 * calls,
        "serial {}",
        state.serial
    );
    let leftovers: Vec<_> = std::fs::read_dir(world.dir.join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[tokio::test]
async fn recovery_adopts_tagged_creates_and_settles_updates_and_deletes() {
    use provisioner::engine::provider::{CallContext, Provider};
    use provisioner::engine::recovery::resolve_pending;
    use provisioner::engine::resource::ownership_tags;
    use provisioner::state::{PendingKind, PendingOperation};

    let world = World::new();
    let (registry, _) = world.provider(latency(1));
    let desired = set(vec![
        DesiredResource::new("a", "test.thing").with("size", json!(1)),
        DesiredResource::new("b", "test.thing").with("size", json!(1)),
    ]);
    let (_, report) = world
        .up(&desired, &registry, ExecutorOptions::default())
        .await;
    assert!(report.succeeded());
    let state = world.state().await;
    let a_id = state.resources[&Address::new("a")].id.clone();
    let b_id = state.resources[&Address::new("b")].id.clone();

    // What a crash could leave: "c" created in the cloud but only pending in state; an update of
    // "a" that reached the cloud; a delete of "b" that reached the cloud.
    let fake = FakeProvider::new(&world.cloud(), FakeConfig::default()).unwrap();
    let context = |address: &str| CallContext {
        address: Address::new(address),
        resource_type: provisioner::engine::ResourceType::new("test.thing"),
        taken: Vec::new(),
    };
    let tags = ownership_tags("t", None, &Address::new("c"));
    let mut properties = indexmap::IndexMap::new();
    properties.insert("size".to_owned(), json!(3));
    let c = fake
        .create(&context("c"), &properties, &tags)
        .await
        .unwrap();
    fake.update(&context("a"), &a_id, &properties)
        .await
        .unwrap();
    fake.delete(&context("b"), &b_id).await.unwrap();
    let pending = |kind, address: &str, id: Option<&String>| PendingOperation {
        id: uuid::Uuid::new_v4().to_string(),
        kind,
        address: Address::new(address),
        resource_type: provisioner::engine::ResourceType::new("test.thing"),
        resource_id: id.cloned(),
        ownership_tags: if address == "c" {
            tags.clone()
        } else {
            Default::default()
        },
        properties: properties.clone(),
        depends_on: Vec::new(),
        started_at: chrono::Utc::now(),
    };
    let mut crashed = state.clone();
    crashed.pending = vec![
        pending(PendingKind::Create, "c", None),
        pending(PendingKind::Update, "a", Some(&a_id)),
        pending(PendingKind::Delete, "b", Some(&b_id)),
    ];
    crashed.serial += 1;
    world.backend().save(&crashed).await.unwrap();

    let journal = Journal::open(world.backend(), "t", None).await.unwrap();
    let recovered = resolve_pending(&journal, &registry, None).await.unwrap();
    assert_eq!(recovered.len(), 3);
    let state = world.state().await;
    assert!(state.pending.is_empty());
    assert_eq!(
        state.resources[&Address::new("c")].id,
        c.id,
        "adopted, not recreated"
    );
    assert_eq!(
        state.resources[&Address::new("a")].properties["size"],
        json!(3)
    );
    assert!(!state.resources.contains_key(&Address::new("b")));
}
