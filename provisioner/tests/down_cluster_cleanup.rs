//! `provisioner down` deletes the cluster's Services of type LoadBalancer (through
//! `cluster.kubeconfig`) and waits for them before anything else is deleted, so the load
//! balancers AWS made for them cannot block the VPC: the real binary, the fake cloud provider and
//! a Kubernetes emulator of the test's own (`down` deletes every LoadBalancer Service of the
//! cluster it is given, so another test's `down` on a shared emulator would take this one's).

use std::path::PathBuf;
use std::process::Output;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use stacksmith_testkit::kubelet::emulator::{PrivateEmulator, emulator_python};
use stacksmith_testkit::{describe, fake_cloud_provisioner, unique_name, workspace_root};

struct Sandbox {
    dir: PathBuf,
    suffix: String,
    emulator: PrivateEmulator,
}

impl Sandbox {
    /// The demo stack with `cluster.kubeconfig` pointing at the emulator, with namespaces, a
    /// priority class and a stack name of its own (runs never meet).
    fn new() -> Self {
        let name = unique_name("down-lb").replace('_', "-").to_lowercase();
        let suffix = name[name.len() - 8..].to_owned();
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(dir.join("stacks")).unwrap();
        let emulator =
            PrivateEmulator::start_emulated(&emulator_python(), &dir.join("emulator")).unwrap();
        let demo = std::fs::read_to_string(
            workspace_root().join("tests/fixtures/engine/stacks/demo.yaml"),
        )
        .unwrap();
        let cut = demo.find("\nbaseline:").expect("demo.yaml has a baseline");
        std::fs::write(dir.join("stacks/demo.yaml"), &demo[..cut]).unwrap();
        let s = &suffix;
        // No Cluster Autoscaler: its objects have fixed names in `kube-system`, which concurrent
        // stacks on the one emulator would fight over (cluster_autoscaler.rs installs it).
        let stack = format!(
            "extends: demo.yaml\n\
             name: l{s}\n\
             cluster: {{ kubeconfig: {kubeconfig}, autoscaler: {{ enabled: false }} }}\n\
             baseline:\n  \
               namespaces: [sys-{s}, work-{s}]\n  \
               pod_security: {{ sys-{s}: restricted, work-{s}: baseline }}\n  \
               network_policies: default-deny\n  \
               priority_classes: {{ standard-{s}: 500 }}\n\
             controlplane:\n  \
               image: ghcr.io/acme/stacksmith-controlplane:1.0.0\n  \
               replicas: 1\n  \
               namespace: sys-{s}\n  \
               worker_namespace: work-{s}\n  \
               api_client_namespaces: []\n  \
               resources: {{ requests: {{ cpu: 100m, memory: 128Mi }}, limits: {{ cpu: 500m, memory: 512Mi }} }}\n  \
               rate_limit: {{ per_key_rps: 50, burst: 100, global_rps: 500 }}\n  \
               worker_pools:\n    \
                 default: {{ tier: standard-{s}, concurrency: 2, replicas: {{ min: 1, max: 3 }}, tasks_per_replica: 10 }}\n",
            kubeconfig = emulator.kubeconfig.display(),
        );
        std::fs::write(dir.join("stacks/cluster.yaml"), stack).unwrap();
        Self {
            dir,
            suffix,
            emulator,
        }
    }

    fn namespace(&self) -> String {
        format!("work-{}", self.suffix)
    }

    fn run(&self, args: &[&str]) -> Output {
        fake_cloud_provisioner(
            env!("CARGO_BIN_EXE_provisioner"),
            &self.dir,
            "down-lb-test-key",
        )
        .args(args)
        .output()
        .expect("the provisioner binary runs")
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn client(kubeconfig: &std::path::Path) -> kube::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let file = Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn service(name: &str, kind: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(kind.to_owned()),
            selector: Some([("app".to_owned(), name.to_owned())].into()),
            ports: Some(vec![ServicePort {
                port: 80,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[tokio::test]
async fn down_deletes_load_balancer_services_before_the_cluster() {
    let sandbox = Sandbox::new();
    let up = sandbox.run(&[
        "up",
        "--stack",
        "cluster",
        "--yes",
        "--rollout-timeout",
        "60s",
    ]);
    assert!(up.status.success(), "{}", describe(&up));

    let services: Api<Service> = Api::namespaced(
        client(&sandbox.emulator.kubeconfig).await,
        &sandbox.namespace(),
    );
    for (name, kind) in [("web", "LoadBalancer"), ("internal", "ClusterIP")] {
        services
            .create(&PostParams::default(), &service(name, kind))
            .await
            .unwrap();
    }

    let down = sandbox.run(&["down", "--stack", "cluster", "--yes"]);
    assert!(down.status.success(), "{}", describe(&down));
    let stderr = String::from_utf8_lossy(&down.stderr);
    let announced = stderr
        .find("Deleted the Services of type LoadBalancer")
        .unwrap_or_else(|| panic!("{}", describe(&down)));
    assert!(
        stderr[announced..]
            .lines()
            .next()
            .unwrap()
            .contains(&format!("{}/web", sandbox.namespace())),
        "{stderr}"
    );
    let first_delete = stderr.find("deleted ").expect("resources were deleted");
    assert!(
        announced < first_delete,
        "the Services went before any cloud resource: {stderr}"
    );
    let web = services.get("web").await;
    assert!(
        matches!(&web, Err(kube::Error::Api(e)) if e.code == 404),
        "the LoadBalancer Service is gone: {web:?}"
    );
    services
        .get("internal")
        .await
        .expect("other Services are left to the cluster's deletion");
    let _ = services.delete("internal", &Default::default()).await;
}
