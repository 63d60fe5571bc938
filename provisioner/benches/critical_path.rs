//! Apply wall time against the critical path.
//!
//! Derives the resources of `tests/fixtures/engine/stacks/demo.yaml`, gives every resource type a
//! fake-provider latency of its real-world estimate scaled down 1:300 (EKS cluster 15 min -> 3 s,
//! cache 40 min -> 8 s, NAT 2 min -> 0.4 s, ...), applies the plan with the default parallelism
//! against local-file state, and compares the wall time with the critical path computed from the
//! same latencies. Fails when the apply takes more than 10% longer than the critical path.
//!
//! Run: `cargo bench --workspace --bench critical_path` (add `--profile dev` to reuse the test
//! build: the latencies are sleeps, so optimisation does not change the result).

use std::sync::Arc;
use std::time::{Duration, Instant};

use provisioner::engine::executor::{self, ExecutorOptions};
use provisioner::engine::fake::{FakeConfig, FakeProvider};
use provisioner::engine::graph::ResourceGraph;
use provisioner::engine::planner::{self, PlanInput};
use provisioner::engine::provider::ProviderRegistry;
use provisioner::engine::secrets::StateCipher;
use provisioner::engine::types::TypeCatalog;
use provisioner::engine::{Address, desired};
use provisioner::stack::{self, LoadRequest, StackSource};
use provisioner::state::StateBackend;
use provisioner::state::journal::Journal;
use provisioner::state::local::LocalBackend;

const SCALE: u32 = 300;

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let request = LoadRequest {
        source: StackSource::File(root.join("tests/fixtures/engine/stacks/demo.yaml")),
        instance: None,
    };
    let loaded = match stack::load(&request).and_then(|l| l.into_deployable()) {
        Ok(loaded) => loaded,
        Err(errors) => panic!("the bench stack does not load: {errors:?}"),
    };
    let desired = desired::derive(&loaded);
    let catalog = TypeCatalog::builtin();
    let latency_of = |address: &Address| {
        let resource = desired.get(address).expect("graph nodes are desired");
        catalog.spec(&resource.resource_type).estimated_duration / SCALE
    };
    let graph = ResourceGraph::build(&desired).expect("the stack's graph is acyclic");
    let critical = graph.critical_path(&latency_of);

    let work = std::env::temp_dir().join(format!("stacksmith-bench-{}", uuid::Uuid::new_v4()));
    let mut config = FakeConfig::default();
    for resource in &desired.resources {
        let latency = catalog.spec(&resource.resource_type).estimated_duration / SCALE;
        config
            .latency_by_type
            .insert(resource.resource_type.to_string(), latency);
    }
    let fake = Arc::new(FakeProvider::new(&work.join("cloud"), config).expect("fake cloud dir"));
    let stats = fake.stats();
    let mut registry = ProviderRegistry::new();
    registry.register_fallback(fake);

    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let (wall, report) = runtime.block_on(async {
        let backend: Arc<dyn StateBackend> =
            Arc::new(LocalBackend::new(&work.join("state"), "demo"));
        let journal = Arc::new(
            Journal::open(backend, "demo", None)
                .await
                .expect("state opens"),
        );
        let plan = planner::plan(&PlanInput {
            desired: &desired,
            state: None,
            live: None,
            catalog: &registry.catalog(),
        })
        .expect("plan");
        let options = ExecutorOptions {
            cipher: Some(StateCipher::from_passphrase("bench")),
            ..ExecutorOptions::default()
        };
        let started = Instant::now();
        let report = executor::apply(&plan, journal, &registry, options)
            .await
            .expect("apply starts");
        (started.elapsed(), report)
    });
    let _ = std::fs::remove_dir_all(&work);
    assert!(report.succeeded(), "{}", report.summary());

    let ratio = wall.as_secs_f64() / critical.total.as_secs_f64();
    println!("resources:           {}", desired.resources.len());
    println!("parallelism:         {}", executor::DEFAULT_PARALLELISM);
    println!(
        "critical path:       {:.3}s ({} resources: {})",
        critical.total.as_secs_f64(),
        critical.path.len(),
        critical
            .path
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(" -> ")
    );
    println!("apply wall time:     {:.3}s", wall.as_secs_f64());
    println!("wall / critical:     {ratio:.3}");
    println!("max provider calls in flight: {}", stats.max_in_flight());
    if ratio > 1.10 {
        eprintln!("FAIL: the apply took more than 10% longer than the critical path");
        std::process::exit(1);
    }
    let _unused: Duration = Duration::ZERO;
}
