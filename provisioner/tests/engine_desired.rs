//! The resource set derived from every shipped stack: a valid, acyclic graph with unique, stable
//! addresses whose references all point at declared resources.

use provisioner::engine::graph::ResourceGraph;
use provisioner::engine::types::TypeCatalog;
use provisioner::engine::{Address, desired};
use provisioner::stack::{self, LoadRequest, Loaded, StackSource};

fn derive(name: &str, instance: Option<&str>) -> Option<provisioner::engine::DesiredSet> {
    let request = LoadRequest {
        source: StackSource::Named {
            dir: stacksmith_testkit::workspace_root().join("stacks"),
            name: name.to_owned(),
        },
        instance: instance.map(str::to_owned),
    };
    let env =
        |var: &str| (var == "STACKSMITH_STATE_URL").then(|| "postgres://x@127.0.0.1/x".to_owned());
    match stack::load_with_env(&request, &env) {
        Ok(Loaded::Deployable(loaded)) => Some(desired::derive(&loaded)),
        Ok(Loaded::Abstract { .. }) => None,
        Err(errors) => panic!("stacks/{name}.yaml does not load: {errors:?}"),
    }
}

#[test]
fn every_shipped_stack_derives_a_valid_graph() {
    let names = stack::available_stacks(&stacksmith_testkit::workspace_root().join("stacks"));
    assert!(names.iter().any(|n| n == "production"), "{names:?}");
    let catalog = TypeCatalog::builtin();
    let mut derived = 0;
    for name in &names {
        let Some(set) = derive(name, None) else {
            continue;
        };
        derived += 1;
        let graph = ResourceGraph::build(&set).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(graph.len(), set.resources.len());
        // Every derived type is one the catalog describes (so replacement rules apply).
        for resource in &set.resources {
            assert_ne!(
                catalog.spec(&resource.resource_type),
                TypeCatalog::fallback(&resource.resource_type),
                "{name}: {} has no type spec",
                resource.resource_type
            );
        }
        let critical = graph.critical_path(&|address: &Address| {
            catalog
                .spec(&set.get(address).unwrap().resource_type)
                .estimated_duration
        });
        assert!(critical.total.as_secs() >= 15 * 60, "{name}: {critical:?}");
    }
    assert!(derived >= 3, "derived {derived} stacks");
}

#[test]
fn derivation_is_stable_and_instances_qualify_names() {
    let first = derive("staging", None).unwrap();
    assert_eq!(
        derive("staging", None).unwrap(),
        first,
        "same stack, same resources"
    );
    let instance = derive("staging", Some("pr-7")).unwrap();
    let addresses = |set: &provisioner::engine::DesiredSet| {
        set.resources
            .iter()
            .map(|r| r.address.clone())
            .collect::<Vec<_>>()
    };
    // Addresses do not depend on the instance; names do.
    assert_eq!(addresses(&first), addresses(&instance));
    assert_eq!(instance.instance.as_deref(), Some("pr-7"));
    let cluster = instance
        .get(&Address::new("cluster.control_plane"))
        .unwrap();
    assert!(
        cluster.properties["name"]
            .as_str()
            .unwrap()
            .ends_with("-pr-7")
    );
}

#[test]
fn nat_modes_shape_the_network() {
    let production = derive("production", None).unwrap();
    let count = |set: &provisioner::engine::DesiredSet, prefix: &str| {
        set.resources
            .iter()
            .filter(|r| r.address.as_str().starts_with(prefix))
            .count()
    };
    let azs = count(&production, "network.subnet.private[");
    assert!(azs >= 2);
    assert_eq!(
        count(&production, "network.nat_gateway["),
        azs,
        "per-az NAT"
    );
    assert_eq!(count(&production, "network.route.private_nat["), azs);
    let dev = derive("dev", None).unwrap();
    assert_eq!(count(&dev, "network.nat_gateway["), 1, "single NAT");
    assert_eq!(
        count(&dev, "network.route.private_nat["),
        count(&dev, "network.subnet.private["),
        "every private route table routes through the single NAT"
    );
}

/// Issue 13 item 5 and issue 16 items 4 and 6: production's cluster is created with its service
/// CIDR, installs metrics-server (the API autoscales), and the VPC CNI enforces the baseline's
/// network policies.
#[test]
fn production_sets_the_service_cidr_and_the_addons_a_real_cluster_needs() {
    let set = derive("production", None).expect("deployable");
    let find = |address: &str| {
        set.resources
            .iter()
            .find(|r| r.address.to_string() == address)
            .unwrap_or_else(|| panic!("no {address}"))
    };
    assert_eq!(
        find("cluster.control_plane").properties["service_cidr"],
        serde_json::json!("172.20.0.0/16")
    );
    assert_eq!(
        find("cluster.addon.vpc-cni").properties["configuration"],
        serde_json::json!({"enableNetworkPolicy": "true"})
    );
    assert!(
        find("cluster.addon.metrics-server")
            .properties
            .get("configuration")
            .is_none()
    );
}
