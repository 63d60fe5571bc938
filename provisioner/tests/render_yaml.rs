//! `render` writes block YAML (issue 14, item 7): one document per object, keys in a stable
//! order, no JSON flow mappings, and every file parses back to exactly the rendered objects.
//! Rendering twice writes the same bytes.

use std::process::Command;

use provisioner::kubernetes;
use provisioner::stack::{LoadRequest, StackSource};
use serde_json::Value;

#[test]
fn render_writes_block_yaml_that_parses_back_to_the_objects() {
    let root = stacksmith_testkit::workspace_root();
    let dir = std::env::temp_dir().join(stacksmith_testkit::unique_name("render-yaml"));
    let render = |out: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_provisioner"))
            .args(["--stacks-dir"])
            .arg(root.join("stacks"))
            .args(["render", "--stack", "local", "--out"])
            .arg(dir.join(out))
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            stacksmith_testkit::describe(&output)
        );
    };
    render("first");
    render("second");

    let loaded = provisioner::stack::load(&LoadRequest {
        source: StackSource::File(root.join("stacks/local.yaml")),
        instance: None,
    })
    .and_then(|l| l.into_deployable())
    .unwrap_or_else(|e| panic!("{e:?}"));
    let files = kubernetes::render(&loaded, None).unwrap();
    assert!(!files.is_empty());
    for file in &files {
        let first = std::fs::read_to_string(dir.join("first").join(&file.file_name)).unwrap();
        let second = std::fs::read_to_string(dir.join("second").join(&file.file_name)).unwrap();
        assert_eq!(first, second, "{}: rendering twice differs", file.file_name);
        assert!(
            !first.contains("\"apiVersion\":") && !first.lines().any(|l| l.starts_with('{')),
            "{} is JSON, not block YAML:\n{first}",
            file.file_name
        );
        let documents = first.matches("---\n").count();
        assert_eq!(documents, file.objects.len(), "{}", file.file_name);
        for (document, object) in first.split("---\n").skip(1).zip(&file.objects) {
            assert!(document.starts_with("apiVersion: "), "{document}");
            let parsed: Value = serde_saphyr::from_str(document)
                .unwrap_or_else(|e| panic!("{}: {e}\n{document}", file.file_name));
            assert_eq!(parsed, object.object, "{}", file.file_name);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
