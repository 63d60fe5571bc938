//! Nodes scale (issue 16 item 5): a stack whose node groups may grow gets the Cluster Autoscaler,
//! with its IAM role trusted through the cluster's OIDC provider (IRSA), through the binary as the
//! README shows it: `render`, `up` against moto and the Kubernetes emulator, the role, its trust
//! policy and its permissions read back through IAM, the installed objects read back through
//! the Kubernetes API, a second `up` that changes nothing (no mutating AWS call, every object
//! unchanged), a clean `drift`, and `down`, which deletes the role.
//!
//! The stack is `tests/fixtures/aws/cluster-autoscaler.yaml` (no database, cache, baseline or
//! control plane), one instance per run; `eks_platform.rs` checks the autoscaler's NetworkPolicy
//! in the rendered `production` stack. Needs the servers of `cargo xtask test` (moto and the
//! Kubernetes emulator).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Api;
use kube::api::DeleteParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use provisioner::aws::CallLog;
use serde_json::Value;
use stacksmith_testkit::{describe, kubeconfig, rendered_objects, unique_name, workspace_root};

const TEST_BOUND: Duration = Duration::from_secs(280);

struct Run {
    dir: PathBuf,
    instance: String,
}

impl Run {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let instance = format!("ca{:x}{:x}", std::process::id() % 4096, nanos % 65536);
        let dir = std::env::temp_dir().join(unique_name("cluster-autoscaler"));
        std::fs::create_dir_all(dir.join("stacks")).unwrap();
        std::fs::copy(
            workspace_root().join("tests/fixtures/aws/cluster-autoscaler.yaml"),
            dir.join("stacks/autoscaled.yaml"),
        )
        .unwrap();
        // The shipped guardrails, but those about the baseline's namespaces (pod security and
        // default-deny policies), which this stack without a baseline or control plane has none
        // of. The node group guardrail stays: it passes because the autoscaler's role is planned.
        let policies = dir.join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        for entry in std::fs::read_dir(workspace_root().join("policies")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if name.starts_with("pod_security") || name.starts_with("network_policies") {
                continue;
            }
            std::fs::copy(&path, policies.join(&name)).unwrap();
        }
        Self { dir, instance }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut full = vec!["--stacks-dir", "stacks"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--stack", "autoscaled", "--instance", &self.instance]);
        let mut command = stacksmith_testkit::provisioner_against_moto(
            env!("CARGO_BIN_EXE_provisioner"),
            &stacksmith_testkit::aws_endpoint(),
            "cluster-autoscaler-test",
        );
        command
            .args(&full)
            .current_dir(&self.dir)
            .env("STACKSMITH_POLICIES_DIR", self.dir.join("policies"))
            .env("STACKSMITH_KUBECONFIG", kubeconfig());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> Output {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "{args:?} failed:\n{}",
            describe(&output)
        );
        output
    }

    /// Runs `args` with the AWS call log on: the output and the calls made.
    fn logged(&self, args: &[&str]) -> (Output, Vec<String>) {
        stacksmith_testkit::output_with_aws_calls(&mut self.command(args), &self.dir)
    }

    fn qualified(&self) -> String {
        format!("autoscaled-{}", self.instance)
    }

    fn cluster(&self) -> String {
        format!("stacksmith-autoscaled-{}", self.instance)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.run(&["down", "--yes"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn iam() -> aws_sdk_iam::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(stacksmith_testkit::aws_endpoint())
        .credentials_provider(aws_sdk_iam::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    aws_sdk_iam::Client::new(&config)
}

async fn kube_client() -> kube::Client {
    let file = Kubeconfig::read_from(kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among the rendered objects"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_growing_node_group_gets_the_cluster_autoscaler_with_its_irsa_role() {
    tokio::time::timeout(TEST_BOUND, scenario())
        .await
        .expect("the scenario finishes within its bound");
}

async fn scenario() {
    let run = Run::new();

    // render: what will be installed, before anything exists (the role ARN is a placeholder).
    let out = run.dir.join("rendered");
    let render = run.ok(&["render", "--out", out.to_str().unwrap()]);
    let file =
        std::fs::read_to_string(out.join("80-cluster-autoscaler.yaml")).unwrap_or_else(|e| {
            panic!(
                "no 80-cluster-autoscaler.yaml ({e}):\n{}",
                describe(&render)
            )
        });
    let objects = rendered_objects(&file);
    let deployment = find(&objects, "Deployment", "cluster-autoscaler");
    assert_eq!(deployment["metadata"]["namespace"], "kube-system");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["serviceAccountName"], "cluster-autoscaler");
    assert_eq!(pod["nodeSelector"]["role"], "system", "{pod}");
    assert_eq!(
        pod["tolerations"][0]["key"], "node-role.kubernetes.io/system",
        "{pod}"
    );
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"], "registry.k8s.io/autoscaling/cluster-autoscaler:v1.31.0",
        "the release of the cluster's minor version"
    );
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    let command: Vec<&str> = container["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let discovery = format!(
        "--node-group-auto-discovery=asg:tag=k8s.io/cluster-autoscaler/enabled,k8s.io/cluster-autoscaler/{}",
        run.cluster()
    );
    for flag in [
        "--cloud-provider=aws",
        discovery.as_str(),
        "--balance-similar-node-groups",
        "--skip-nodes-with-system-pods=false",
    ] {
        assert!(command.contains(&flag), "{flag} missing: {command:?}");
    }
    let account = find(&objects, "ServiceAccount", "cluster-autoscaler");
    assert!(
        account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
            .as_str()
            .unwrap()
            .starts_with("PLACEHOLDER"),
        "{account}"
    );
    for (kind, name) in [
        ("ClusterRole", "cluster-autoscaler"),
        ("ClusterRoleBinding", "cluster-autoscaler"),
        ("Role", "cluster-autoscaler"),
        ("RoleBinding", "cluster-autoscaler"),
    ] {
        find(&objects, kind, name);
    }
    // No baseline here, so no NetworkPolicy (eks_platform.rs checks production's).
    assert!(
        !objects.iter().any(|o| o["kind"] == "NetworkPolicy"),
        "no NetworkPolicy without default-deny"
    );

    // up: the role in IAM, the autoscaler in the cluster.
    let up = run.ok(&["up", "--yes"]);
    let iam = iam().await;
    let role_name = format!("{}-cluster-autoscaler", run.qualified());
    let role = iam
        .get_role()
        .role_name(&role_name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetRole {role_name}: {e:?}\n{}", describe(&up)));
    let role = role.role().unwrap();
    let trust: Value =
        provisioner::aws::iam::parse_document(role.assume_role_policy_document().unwrap()).unwrap();
    let statement = &trust["Statement"][0];
    assert_eq!(
        statement["Action"], "sts:AssumeRoleWithWebIdentity",
        "{trust}"
    );
    let provider_arn = statement["Principal"]["Federated"].as_str().unwrap();
    assert!(provider_arn.contains(":oidc-provider/"), "{trust}");
    let providers = iam.list_open_id_connect_providers().send().await.unwrap();
    assert!(
        providers
            .open_id_connect_provider_list()
            .iter()
            .any(|p| p.arn() == Some(provider_arn)),
        "the trusted provider exists: {provider_arn}"
    );
    let conditions = statement["Condition"]["StringEquals"].as_object().unwrap();
    let issuer = provider_arn.split(":oidc-provider/").nth(1).unwrap();
    assert_eq!(
        conditions[&format!("{issuer}:sub")],
        "system:serviceaccount:kube-system:cluster-autoscaler",
        "{trust}"
    );
    assert_eq!(
        conditions[&format!("{issuer}:aud")],
        "sts.amazonaws.com",
        "{trust}"
    );
    // Recovery finds the role by its ownership tags, like every other resource.
    let tags = iam
        .list_role_tags()
        .role_name(&role_name)
        .send()
        .await
        .unwrap();
    assert!(
        tags.tags()
            .iter()
            .any(|t| t.key() == "stacksmith:instance" && t.value() == run.instance),
        "{:?}",
        tags.tags()
    );
    let inline = iam
        .get_role_policy()
        .role_name(&role_name)
        .policy_name("cluster-autoscaler")
        .send()
        .await
        .unwrap();
    let permissions: Value =
        provisioner::aws::iam::parse_document(inline.policy_document()).unwrap();
    let statements = permissions["Statement"].as_array().unwrap();
    let scale = statements
        .iter()
        .find(|s| {
            s["Action"]
                .to_string()
                .contains("autoscaling:SetDesiredCapacity")
        })
        .expect("a statement that scales");
    assert!(
        scale["Action"]
            .to_string()
            .contains("TerminateInstanceInAutoScalingGroup")
    );
    let tag_conditions = &scale["Condition"]["StringEquals"];
    assert_eq!(
        tag_conditions["aws:ResourceTag/k8s.io/cluster-autoscaler/enabled"],
        "true"
    );
    assert_eq!(
        tag_conditions[format!(
            "aws:ResourceTag/k8s.io/cluster-autoscaler/{}",
            run.cluster()
        )],
        "owned",
        "scaling limited to this cluster's groups: {permissions}"
    );
    let describe_all = statements
        .iter()
        .find(|s| {
            s["Action"]
                .to_string()
                .contains("autoscaling:DescribeAutoScalingGroups")
        })
        .expect("a statement that reads");
    for action in [
        "ec2:DescribeLaunchTemplateVersions",
        "eks:DescribeNodegroup",
    ] {
        assert!(
            describe_all["Action"].to_string().contains(action),
            "{permissions}"
        );
    }

    let client = kube_client().await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "kube-system");
    let account = accounts.get("cluster-autoscaler").await.unwrap();
    assert_eq!(
        account
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("eks.amazonaws.com/role-arn"))
            .map(String::as_str),
        role.arn().into(),
        "the service account names the role it assumes"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "kube-system");
    let live = deployments.get("cluster-autoscaler").await.unwrap();
    let live_pod = live.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        live_pod.service_account_name.as_deref(),
        Some("cluster-autoscaler")
    );
    assert_eq!(
        live_pod.priority_class_name.as_deref(),
        Some("system-cluster-critical")
    );

    // A second up changes nothing, in AWS or in the cluster; drift is clean.
    let (second, calls) = run.logged(&["up", "--yes"]);
    assert!(second.status.success(), "second up:\n{}", describe(&second));
    let mutating: Vec<&String> = calls.iter().filter(|c| CallLog::is_mutating(c)).collect();
    assert!(
        mutating.is_empty(),
        "the second up changed something: {mutating:?}\n{}",
        describe(&second)
    );
    let stderr = text(&second.stderr);
    assert!(
        stderr.contains(" 0 created, 0 configured,"),
        "the second up changed in-cluster objects:\n{stderr}"
    );
    let drift = run.run(&["drift"]);
    assert_eq!(drift.status.code(), Some(0), "drift:\n{}", describe(&drift));

    // down deletes the role.
    run.ok(&["down", "--yes"]);
    let gone = iam.get_role().role_name(&role_name).send().await;
    assert!(
        gone.as_ref()
            .err()
            .and_then(|e| e.as_service_error())
            .is_some_and(|e| e.is_no_such_entity_exception()),
        "the role is gone after down: {gone:?}"
    );

    // The emulator outlives the cluster `down` deleted: remove what this run installed.
    let delete = DeleteParams::default();
    let _ = deployments.delete("cluster-autoscaler", &delete).await;
    let _ = accounts.delete("cluster-autoscaler", &delete).await;
    let _ = Api::<Role>::namespaced(client.clone(), "kube-system")
        .delete("cluster-autoscaler", &delete)
        .await;
    let _ = Api::<RoleBinding>::namespaced(client.clone(), "kube-system")
        .delete("cluster-autoscaler", &delete)
        .await;
    let _ = Api::<ClusterRole>::all(client.clone())
        .delete("cluster-autoscaler", &delete)
        .await;
    let _ = Api::<ClusterRoleBinding>::all(client)
        .delete("cluster-autoscaler", &delete)
        .await;
}
