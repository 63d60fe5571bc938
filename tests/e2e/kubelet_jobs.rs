//! The test kubelet runs Jobs as the Job controller and a node's kubelet do, against an emulator
//! of the test's own: `completions`, `backoffLimit`, `activeDeadlineSeconds`,
//! `ttlSecondsAfterFinished`, the Job's status (`startTime`, `completionTime`, the `Complete` or
//! `Failed` condition with its reason), its pods as Pod objects (owned by the Job, on the
//! kubelet's Node, phase and exit codes) and their logs through the API (`pods/{name}/log`, which
//! the emulator asks the Node's kubelet endpoint for). Needs root (`cargo xtask test`).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stacksmith_testkit::kubelet::emulator::{PrivateEmulator, emulator_python};
use stacksmith_testkit::kubelet::{Image, Kubelet, KubeletConfig};
use stacksmith_testkit::unique_name;

const STACK: &str = "kubelet-jobs";

struct Api {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(base: &str) -> Self {
        Api {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            http: reqwest::Client::new(),
            base: base.to_owned(),
        }
    }

    /// (status, body as text)
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
        self.runtime.block_on(async {
            let mut request = self
                .http
                .request(method.parse().unwrap(), format!("{}{path}", self.base))
                .bearer_auth("admin");
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        })
    }

    fn get(&self, path: &str) -> Option<Value> {
        let (status, text) = self.call("GET", path, None);
        (status == 200).then(|| serde_json::from_str(&text).unwrap())
    }

    /// Waits (bounded) until `done` holds for the object at `path` (None: it is gone).
    fn wait(&self, what: &str, path: &str, done: impl Fn(Option<&Value>) -> bool) -> Option<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let object = self.get(path);
            if done(object.as_ref()) {
                return object;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not after 60 s: {object:#?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn pods_of(&self, job: &str) -> Vec<Value> {
        self.get(&format!(
            "/api/v1/namespaces/default/pods?labelSelector=job-name%3D{job}"
        ))
        .unwrap()["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

fn job(name: &str, script: &str, spec: Value) -> Value {
    let mut job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"stacksmith.dev/stack": STACK}},
        "spec": {
            "template": {
                "metadata": {"labels": {"stacksmith.dev/stack": STACK, "app": name}},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": false,
                    "containers": [{
                        "name": "main",
                        "image": "docker.io/library/debian:12",
                        "command": ["sh", "-c", script],
                    }],
                },
            },
        },
    });
    for (key, value) in spec.as_object().unwrap() {
        job["spec"][key] = value.clone();
    }
    job
}

fn condition(job: Option<&Value>) -> Option<(String, String)> {
    let condition = job?["status"]["conditions"].as_array()?.first()?.clone();
    Some((
        condition["type"].as_str()?.to_owned(),
        condition["reason"].as_str().unwrap_or_default().to_owned(),
    ))
}

#[test]
fn jobs_run_to_their_completions_backoff_limit_deadline_and_ttl_with_pods_and_logs_in_the_api() {
    let dir = std::env::temp_dir().join(unique_name("kubelet-jobs"));
    let emulator = PrivateEmulator::start(&emulator_python(), &dir.join("emulator")).unwrap();
    let kubelet = Kubelet::start(KubeletConfig {
        api_url: emulator.url.clone(),
        stack: STACK.into(),
        scratch: dir.join("kubelet"),
        images: vec![Image::debian()],
        postgres_url: None,
        redis_url: None,
        verbose: true,
    })
    .unwrap();
    let api = Api::new(&emulator.url);
    let jobs = "/apis/batch/v1/namespaces/default/jobs";
    for body in [
        job(
            "twice",
            "echo \"done by $(hostname)\"",
            json!({"completions": 2}),
        ),
        job("fails", "echo failing; exit 3", json!({"backoffLimit": 1})),
        job(
            "too-long",
            "trap 'exit 143' TERM; sleep 120 & wait",
            json!({"activeDeadlineSeconds": 2, "backoffLimit": 5}),
        ),
        job("brief", "true", json!({"ttlSecondsAfterFinished": 1})),
    ] {
        let (status, text) = api.call("POST", jobs, Some(body));
        assert_eq!(status, 201, "{text}");
    }

    // The Node, Ready, with its kubelet endpoint.
    let node = api
        .get(&format!("/api/v1/nodes/{}", kubelet.node()))
        .expect("the kubelet's Node");
    assert_eq!(node["status"]["conditions"][0]["status"], "True");

    // completions: 2 pods succeeded, one after the other; then Complete with a completionTime.
    let twice = api
        .wait("twice completes", &format!("{jobs}/twice"), |j| {
            condition(j).is_some_and(|c| c.0 == "Complete")
        })
        .unwrap();
    assert_eq!(twice["status"]["succeeded"], 2, "{twice:#}");
    assert!(twice["status"]["startTime"].is_string(), "{twice:#}");
    assert!(twice["status"]["completionTime"].is_string(), "{twice:#}");
    let pods = api.pods_of("twice");
    assert_eq!(pods.len(), 2, "{pods:#?}");
    for pod in &pods {
        let name = pod["metadata"]["name"].as_str().unwrap();
        assert_eq!(pod["status"]["phase"], "Succeeded", "{pod:#}");
        assert_eq!(pod["spec"]["nodeName"], kubelet.node());
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Job");
        assert_eq!(
            pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            0
        );
        // The log, through the API (the emulator asks the Node's kubelet).
        let (status, log) = api.call(
            "GET",
            &format!("/api/v1/namespaces/default/pods/{name}/log?container=main"),
            None,
        );
        assert_eq!(
            (status, log.trim()),
            (200, format!("done by {name}").as_str())
        );
    }

    // backoffLimit 1: two pods fail, then the Job is Failed (BackoffLimitExceeded), no third.
    let fails = api
        .wait("fails fails", &format!("{jobs}/fails"), |j| {
            condition(j).is_some_and(|c| c.0 == "Failed")
        })
        .unwrap();
    assert_eq!(
        condition(Some(&fails)).unwrap().1,
        "BackoffLimitExceeded",
        "{fails:#}"
    );
    assert_eq!(fails["status"]["failed"], 2, "{fails:#}");
    std::thread::sleep(Duration::from_secs(1));
    let pods = api.pods_of("fails");
    assert_eq!(pods.len(), 2, "{pods:#?}");
    assert!(pods.iter().all(|p| p["status"]["phase"] == "Failed"
        && p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3));
    let (_, log) = api.call(
        "GET",
        &format!(
            "/api/v1/namespaces/default/pods/{}/log",
            pods[0]["metadata"]["name"].as_str().unwrap()
        ),
        None,
    );
    assert_eq!(log.trim(), "failing");

    // activeDeadlineSeconds: the running pod is stopped, the Job Failed (DeadlineExceeded).
    let too_long = api
        .wait("too-long fails", &format!("{jobs}/too-long"), |j| {
            condition(j).is_some_and(|c| c.0 == "Failed")
        })
        .unwrap();
    assert_eq!(condition(Some(&too_long)).unwrap().1, "DeadlineExceeded");
    assert_eq!(too_long["status"]["failed"], 1, "{too_long:#}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !api.pods_of("too-long").is_empty() {
        assert!(Instant::now() < deadline, "the stopped pod stays");
        std::thread::sleep(Duration::from_millis(200));
    }

    // ttlSecondsAfterFinished: the finished Job is deleted, its pods with it.
    api.wait("brief deleted", &format!("{jobs}/brief"), |j| j.is_none());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !api.pods_of("brief").is_empty() {
        assert!(Instant::now() < deadline, "the pods of a deleted Job stay");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A deleted Job's pods go (background propagation).
    let (status, _) = api.call("DELETE", &format!("{jobs}/twice"), None);
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !api.pods_of("twice").is_empty() {
        assert!(Instant::now() < deadline, "the pods of a deleted Job stay");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(kubelet);
    assert!(
        api.get("/api/v1/nodes").unwrap()["items"]
            .as_array()
            .unwrap()
            .is_empty(),
        "a stopped kubelet removes its Node"
    );
    drop(emulator);
    let _ = std::fs::remove_dir_all(&dir);
}
