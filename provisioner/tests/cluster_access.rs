//! How the binary reaches a stack's cluster, with the fake provider (no servers needed):
//! `token` prints an EKS token as an ExecCredential, `kubeconfig` writes the deployment's
//! endpoint and CA with an exec user running `token`, `up` says clearly that it did not install
//! the in-cluster objects when no cluster can be reached, and `render --include-secrets` of a
//! stack that is not deployed writes placeholders, never printed. In process: the EKS route
//! sends a token for the cluster, signed with the given credentials, to the endpoint from state.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use stacksmith_testkit::{describe, fake_cloud_provisioner, unique_name, workspace_root};

const DEMO_STACK: &str = "tests/fixtures/engine/stacks/demo.yaml";

struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    /// `stacks/demo.yaml` (a baseline, no control plane) and `stacks/platform.yaml` (the demo
    /// stack with a control plane).
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique_name("cluster-access"));
        std::fs::create_dir_all(dir.join("stacks")).unwrap();
        std::fs::copy(
            workspace_root().join(DEMO_STACK),
            dir.join("stacks/demo.yaml"),
        )
        .unwrap();
        std::fs::write(
            dir.join("stacks/platform.yaml"),
            "extends: demo.yaml\n\
             name: platform\n\
             baseline:\n  \
               namespaces: [system, workers]\n  \
               pod_security: { system: restricted, workers: baseline }\n  \
               priority_classes: { standard: 500 }\n\
             controlplane:\n  \
               image: ghcr.io/acme/stacksmith-controlplane:1.0.0\n  \
               replicas: 1\n  \
               namespace: system\n  \
               worker_namespace: workers\n  \
               worker_pools:\n    \
                 default: { tier: standard, concurrency: 1, replicas: { min: 1, max: 2 } }\n",
        )
        .unwrap();
        Self { dir }
    }

    /// The binary with the fake provider and fixed AWS credentials from the environment only.
    fn run(&self, args: &[&str]) -> Output {
        fake_cloud_provisioner(
            env!("CARGO_BIN_EXE_provisioner"),
            &self.dir,
            "cluster-access-test-key",
        )
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "AKIDCLUSTERACCESS")
        .env("AWS_SECRET_ACCESS_KEY", "cluster-access-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", self.dir.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            self.dir.join("no-aws-credentials"),
        )
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("the provisioner binary runs")
    }

    /// The EKS cluster's outputs in the local state.
    fn cluster_outputs(&self) -> Value {
        let state: Value = serde_json::from_str(
            &std::fs::read_to_string(self.dir.join(".stacksmith/state/demo.json")).unwrap(),
        )
        .unwrap();
        let resources = state["resources"].clone();
        let record = match &resources {
            Value::Object(map) => map.get("cluster.control_plane").cloned(),
            Value::Array(list) => list
                .iter()
                .find(|r| r["address"] == "cluster.control_plane")
                .cloned(),
            _ => None,
        };
        record.expect("the cluster is in state")["outputs"].clone()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn base64url_decode(text: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes() {
        let value = alphabet
            .iter()
            .position(|a| *a == byte)
            .unwrap_or_else(|| panic!("{:?} is not base64url", byte as char))
            as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    out
}

#[test]
fn token_prints_an_exec_credential_with_a_presigned_sts_url() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&["token", "--stack", "demo"]);
    assert!(output.status.success(), "{}", describe(&output));
    let credential: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(credential["kind"], "ExecCredential");
    assert_eq!(
        credential["apiVersion"],
        "client.authentication.k8s.io/v1beta1"
    );
    let expires = credential["status"]["expirationTimestamp"]
        .as_str()
        .expect("an expiry");
    let expires = chrono::DateTime::parse_from_rfc3339(expires).expect("RFC 3339");
    let minutes = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_minutes();
    assert!((12..=14).contains(&minutes), "short-lived: {minutes} min");

    let token = credential["status"]["token"].as_str().expect("a token");
    let encoded = token.strip_prefix("k8s-aws-v1.").expect("the EKS prefix");
    assert!(!encoded.contains('='), "no padding");
    let url = String::from_utf8(base64url_decode(encoded)).unwrap();
    assert!(
        url.starts_with(
            "https://sts.us-west-2.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&"
        ),
        "{url}"
    );
    assert!(url.contains("X-Amz-Expires=60"), "{url}");
    assert!(
        url.contains("X-Amz-Credential=AKIDCLUSTERACCESS%2F"),
        "signed with the environment's credentials: {url}"
    );
    assert!(url.contains("%2Fus-west-2%2Fsts%2Faws4_request"), "{url}");
    assert!(
        url.contains("X-Amz-SignedHeaders=host%3Bx-k8s-aws-id"),
        "{url}"
    );
    assert!(!describe(&output).contains("cluster-access-secret"));
}

#[test]
fn token_without_credentials_fails_and_says_why() {
    let sandbox = Sandbox::new();
    let output = Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(["token", "--stack", "demo"])
        .current_dir(&sandbox.dir)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", sandbox.dir.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            sandbox.dir.join("no-aws-credentials"),
        )
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(output.stdout.is_empty(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot make a token for EKS cluster stacksmith-demo"),
        "{stderr}"
    );
}

#[test]
fn kubeconfig_names_the_endpoint_and_ca_from_state_and_runs_token() {
    let sandbox = Sandbox::new();
    let early = sandbox.run(&["kubeconfig", "--stack", "demo"]);
    assert_eq!(early.status.code(), Some(1), "{}", describe(&early));
    assert!(
        String::from_utf8_lossy(&early.stderr).contains("nothing is deployed"),
        "{}",
        describe(&early)
    );

    // With the fake cloud there is no cluster API: `up` says the objects were not installed and
    // how to install them, and still succeeds (the cloud side converged).
    let up = sandbox.run(&["up", "--stack", "demo", "--yes"]);
    assert!(up.status.success(), "{}", describe(&up));
    let stderr = String::from_utf8_lossy(&up.stderr);
    assert!(
        stderr
            .contains("note: the in-cluster objects (baseline, control plane) were not installed")
            && stderr.contains("set `cluster.kubeconfig`")
            && stderr.contains("--include-secrets"),
        "{stderr}"
    );

    // `up --json` ends with a `cluster` event saying the same.
    let again = sandbox.run(&["up", "--stack", "demo", "--yes", "--json"]);
    assert!(again.status.success(), "{}", describe(&again));
    let stdout = String::from_utf8_lossy(&again.stdout).into_owned();
    let last: Value = serde_json::from_str(stdout.lines().last().expect("events")).unwrap();
    assert_eq!(last["event"], "cluster", "{stdout}");
    assert_eq!(last["installed"], false);
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .contains("fake provider's cluster has no API server"),
        "{last}"
    );

    let path = sandbox.dir.join("kube/config");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let written = sandbox.run(&[
        "kubeconfig",
        "--stack",
        "demo",
        "--out",
        path.to_str().unwrap(),
    ]);
    assert!(written.status.success(), "{}", describe(&written));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "readable by its owner only");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("JSON (and YAML)");

    let outputs = sandbox.cluster_outputs();
    let endpoint = outputs["endpoint"].as_str().unwrap();
    let cluster = &config["clusters"][0]["cluster"];
    assert_eq!(cluster["server"], format!("https://{endpoint}").as_str());
    assert_eq!(
        cluster["certificate-authority-data"],
        outputs["certificate_authority"]
    );
    assert_eq!(config["current-context"], "stacksmith-demo");
    let exec = &config["users"][0]["user"]["exec"];
    assert_eq!(exec["apiVersion"], "client.authentication.k8s.io/v1beta1");
    assert_eq!(exec["command"], env!("CARGO_BIN_EXE_provisioner"));
    let args: Vec<&str> = exec["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(&args[2..], ["token", "--stack", "demo"]);
    assert_eq!(args[0], "--stacks-dir");
    assert!(PathBuf::from(args[1]).is_absolute(), "{args:?}");

    // The exec user works from any directory: run it the way kubectl would.
    let exec_output = Command::new(exec["command"].as_str().unwrap())
        .args(&args)
        .current_dir(std::env::temp_dir())
        .env("AWS_ACCESS_KEY_ID", "AKIDCLUSTERACCESS")
        .env("AWS_SECRET_ACCESS_KEY", "cluster-access-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", sandbox.dir.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            sandbox.dir.join("no-aws-credentials"),
        )
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    assert!(exec_output.status.success(), "{}", describe(&exec_output));
    let credential: Value = serde_json::from_slice(&exec_output.stdout).unwrap();
    assert!(
        credential["status"]["token"]
            .as_str()
            .unwrap()
            .starts_with("k8s-aws-v1.")
    );

    // Without --out it goes to stdout.
    let printed = sandbox.run(&["kubeconfig", "--stack", "demo"]);
    assert!(printed.status.success(), "{}", describe(&printed));
    let printed: Value = serde_json::from_slice(&printed.stdout).unwrap();
    assert_eq!(printed, config);
}

#[test]
fn render_include_secrets_of_an_undeployed_stack_writes_placeholders_privately() {
    let sandbox = Sandbox::new();
    let out = sandbox.dir.join("manifests");
    let without = sandbox.run(&[
        "render",
        "--stack",
        "platform",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(without.status.success(), "{}", describe(&without));
    assert!(
        !out.join("51-secrets.yaml").exists(),
        "no Secrets by default"
    );

    let with = sandbox.run(&[
        "render",
        "--stack",
        "platform",
        "--include-secrets",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(with.status.success(), "{}", describe(&with));
    assert!(
        String::from_utf8_lossy(&with.stderr).contains("the Secrets hold placeholders"),
        "{}",
        describe(&with)
    );
    let file = out.join("51-secrets.yaml");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&file).unwrap();
    let secrets: Vec<Value> = stacksmith_testkit::rendered_objects(&text);
    assert_eq!(secrets.len(), 2, "{text}");
    for secret in &secrets {
        assert_eq!(secret["kind"], "Secret");
        for (key, value) in secret["stringData"].as_object().unwrap() {
            assert!(
                value.as_str().unwrap().starts_with("PLACEHOLDER: "),
                "{key}: {value}"
            );
        }
    }
    assert!(
        !describe(&with).contains("PLACEHOLDER"),
        "values are never printed"
    );
}

/// A self-signed CA certificate (its key was thrown away), base64 like EKS's `certificateAuthority`.
const TEST_CA: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJrRENDQVRlZ0F3SUJBZ0lVV1NYZGxUaThKcTh5TVFMNWpxbWhRRjMyOE5nd0NnWUlLb1pJemowRUF3SXcKSFRFYk1Ca0dBMVVFQXd3U2MzUmhZMnR6YldsMGFDMTBaWE4wTFdOaE1DQVhEVEkyTVRJd01USXdNakV6T0ZvWQpEekl4TWpZeE1UQTNNakF5TVRNNFdqQWRNUnN3R1FZRFZRUUREQkp6ZEdGamEzTnRhWFJvTFhSbGMzUXRZMkV3CldUQVRCZ2NxaGtqT1BRSUJCZ2dxaGtqT1BRTUJCd05DQUFTWENka29ydWN0azlUb01iSkZoZ0kxLy8wOEFCUkoKMUY4N3FnWUl2Wk9tYko3U3o0YVFrelpDdzYrNzE5UW1FeVpiVmVYbUpUMTdjc2U4Qk5RdjJXL1dvMU13VVRBZApCZ05WSFE0RUZnUVVKakhLOTZTNHVoanA3QXJUQ3p0UG13YzJQK3d3SHdZRFZSMGpCQmd3Rm9BVUpqSEs5NlM0CnVoanA3QXJUQ3p0UG13YzJQK3d3RHdZRFZSMFRBUUgvQkFVd0F3RUIvekFLQmdncWhrak9QUVFEQWdOSEFEQkUKQWg4Z3dGRFdRaXUwR0h0WUdISTBzNDd5MGdRbUFqZVNhMkZLWVBLQlp6MkRBaUVBLzRSNUc1Z3VIVjVpMElsYwpkcm8rOVNTTjJoYlhoQkcyem5HZExHYkhac289Ci0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K";

/// Accepts one request, answers it with `/version`'s document, and returns the request's head.
async fn answer_once(listener: tokio::net::TcpListener) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut socket, _) = listener.accept().await.unwrap();
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = socket.read(&mut buffer).await.unwrap();
        assert!(read > 0, "the client closed the connection");
        head.extend_from_slice(&buffer[..read]);
    }
    let body = r#"{"major":"1","minor":"31","gitVersion":"v1.31.0","gitCommit":"","gitTreeState":"","buildDate":"","goVersion":"","compiler":"","platform":"linux/amd64"}"#;
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await.unwrap();
    String::from_utf8(head).unwrap()
}

/// Answers every request with 401 Unauthorized, as EKS does for an identity without access.
async fn refuse_everything(listener: tokio::net::TcpListener) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let mut buffer = [0u8; 4096];
        let _ = socket.read(&mut buffer).await;
        let body = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#;
        let response = format!(
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = socket.write_all(response.as_bytes()).await;
    }
}

#[tokio::test]
async fn a_cluster_that_refuses_the_token_is_reported_as_such() {
    use provisioner::aws::AwsTarget;
    use provisioner::kubernetes::access::{self, ClusterRoute, EksCluster};
    use provisioner::kubernetes::apply::Applier;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(refuse_everything(listener));
    let route = ClusterRoute::Eks(EksCluster {
        name: "stacksmith-demo".into(),
        endpoint,
        certificate_authority: TEST_CA.into(),
    });
    let aws = AwsTarget {
        region: "us-west-2".into(),
        static_credentials: Some(("AKIDEKSROUTE".into(), "eks-route-secret".into())),
        ..AwsTarget::default()
    };
    let applier = Applier::new(access::connect(&route, &aws).await.expect("a client"));
    let error = applier
        .inventory("stacksmith-demo")
        .await
        .expect_err("401 everywhere");
    let message = error.to_string();
    assert!(
        message.starts_with("cannot connect to the cluster: the cluster refused the credentials"),
        "{message}"
    );
    assert!(message.contains("access entry"), "{message}");
    server.abort();
}

#[tokio::test]
async fn the_eks_route_sends_a_token_for_the_cluster_to_its_endpoint() {
    use provisioner::aws::AwsTarget;
    use provisioner::kubernetes::access::{self, ClusterRoute, EksCluster};
    use provisioner::kubernetes::eks_auth;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(answer_once(listener));
    let route = ClusterRoute::Eks(EksCluster {
        name: "stacksmith-demo".into(),
        endpoint,
        certificate_authority: TEST_CA.into(),
    });
    let aws = AwsTarget {
        region: "us-west-2".into(),
        static_credentials: Some(("AKIDEKSROUTE".into(), "eks-route-secret".into())),
        ..AwsTarget::default()
    };
    let client = access::connect(&route, &aws).await.expect("a client");
    let version = client
        .apiserver_version()
        .await
        .expect("the server answers");
    assert_eq!(version.minor, "31");

    let head = server.await.unwrap();
    let authorization = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("authorization")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no Authorization header in:\n{head}"));
    let token = authorization
        .strip_prefix("Bearer ")
        .expect("a bearer token");
    let url = eks_auth::url_of(token).expect("an EKS token");
    assert!(
        url.starts_with("https://sts.us-west-2.amazonaws.com/?Action=GetCallerIdentity"),
        "{url}"
    );
    assert!(url.contains("X-Amz-Credential=AKIDEKSROUTE%2F"), "{url}");
    assert!(
        !head.contains("eks-route-secret"),
        "the secret key never travels"
    );
}
