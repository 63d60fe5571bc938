//! `cargo xtask image`: builds the control plane image (the workspace `Dockerfile`), pushes it to
//! a registry the cluster's nodes can pull from, and records its digest, so a stack pins
//! `controlplane.image` to exactly what was built (`REPOSITORY@sha256:...`, pulled once per node
//! with `IfNotPresent`).
//!
//! For an ECR repository (`<account>.dkr.ecr.<region>.amazonaws.com/<name>`), docker logs in with
//! `aws ecr get-login-password` first; the node role of every stack may pull from ECR
//! (`AmazonEC2ContainerRegistryReadOnly`). `--dry-run` prints the commands instead of running
//! them (this is also what runs where there is no docker engine, such as CI without one).

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

pub const USAGE: &str = "  image --repository REPO [--tag TAG] [--dry-run]
                   build the control plane image from the Dockerfile, push it to REPO (an ECR
                   repository URI, or any registry the nodes can pull from) and record its digest
                   in .stacksmith/images/controlplane.json; prints the `controlplane.image`
                   value to pin in the stack file (REPO@sha256:...). The tag defaults to the
                   commit (`git rev-parse --short=12 HEAD`, `-dirty` with local changes);
                   --dry-run prints the commands instead. STACKSMITH_IMAGE_REPOSITORY sets REPO.";

/// Where the last pushed image is recorded, relative to the workspace root.
pub const RECORD: &str = ".stacksmith/images/controlplane.json";

#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    pub repository: String,
    pub tag: Option<String>,
    pub dry_run: bool,
}

pub fn parse(args: &[String], env_repository: Option<String>) -> Result<Options, String> {
    let mut repository = env_repository.filter(|r| !r.is_empty());
    let mut tag = None;
    let mut dry_run = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--repository" => repository = Some(value(&mut args, "--repository")?),
            "--tag" => tag = Some(value(&mut args, "--tag")?),
            "--dry-run" => dry_run = true,
            other => return Err(format!("image: unknown argument `{other}`\n{USAGE}")),
        }
    }
    let repository = repository.ok_or_else(|| {
        format!("image: no repository (--repository REPO or STACKSMITH_IMAGE_REPOSITORY)\n{USAGE}")
    })?;
    check_repository(&repository)?;
    if let Some(tag) = &tag {
        check_tag(tag)?;
    }
    Ok(Options {
        repository,
        tag,
        dry_run,
    })
}

fn value<'a>(args: &mut impl Iterator<Item = &'a String>, flag: &str) -> Result<String, String> {
    args.next()
        .cloned()
        .ok_or_else(|| format!("image: {flag} needs a value"))
}

/// A repository reference without tag or digest: `host[:port]/path`, lowercase path.
fn check_repository(repository: &str) -> Result<(), String> {
    let path = repository
        .split_once('/')
        .map(|(_, p)| p)
        .unwrap_or_default();
    let valid = !path.is_empty()
        && !repository.contains('@')
        && !path.contains(':')
        && path
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "image: `{repository}` is not a repository (host/name, lowercase, no tag or digest), \
             e.g. 123456789012.dkr.ecr.us-west-2.amazonaws.com/stacksmith-controlplane"
        ))
    }
}

/// A docker tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`, never `latest` (the guardrails refuse it).
fn check_tag(tag: &str) -> Result<(), String> {
    let mut chars = tag.chars();
    let valid = tag.len() <= 128
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && tag != "latest";
    if valid {
        Ok(())
    } else {
        Err(format!(
            "image: `{tag}` is not a usable tag (letters, digits, `_`, `.`, `-`; not `latest`)"
        ))
    }
}

/// The ECR registry host and region of an ECR repository URI.
pub fn ecr_registry(repository: &str) -> Option<(&str, &str)> {
    let host = repository.split('/').next()?;
    let rest = host.split_once(".dkr.ecr.")?.1;
    let region = rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"))?;
    Some((host, region))
}

/// One step: the program, its arguments, and what it is for.
#[derive(Debug, PartialEq, Eq)]
pub struct Step {
    pub program: &'static str,
    pub args: Vec<String>,
    /// A shell pipeline to show instead of `program args` (the ECR login).
    pub shown: Option<String>,
}

impl Step {
    fn new(program: &'static str, args: &[&str]) -> Self {
        Self {
            program,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            shown: None,
        }
    }

    pub fn display(&self) -> String {
        self.shown
            .clone()
            .unwrap_or_else(|| format!("{} {}", self.program, self.args.join(" ")))
    }
}

/// The commands that build, log in (ECR), push and read back the digest of `repository:tag`.
pub fn steps(repository: &str, tag: &str) -> Vec<Step> {
    let image = format!("{repository}:{tag}");
    let mut steps = vec![Step::new("docker", &["build", "--pull", "-t", &image, "."])];
    if let Some((host, region)) = ecr_registry(repository) {
        steps.push(Step {
            program: "sh",
            args: vec![
                "-c".to_owned(),
                format!(
                    "aws ecr get-login-password --region {region} | docker login --username AWS \
                     --password-stdin {host}"
                ),
            ],
            shown: Some(format!(
                "aws ecr get-login-password --region {region} | docker login --username AWS \
                 --password-stdin {host}"
            )),
        });
    }
    steps.push(Step::new("docker", &["push", &image]));
    steps.push(Step::new(
        "docker",
        &["inspect", "--format", "{{json .RepoDigests}}", &image],
    ));
    steps
}

/// The digest of `repository` among `docker inspect`'s RepoDigests (a JSON list of
/// `repo@sha256:...`).
pub fn digest_for(repository: &str, repo_digests: &str) -> Option<String> {
    repo_digests
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|item| item.trim().trim_matches('"'))
        .find_map(|item| {
            let (repo, digest) = item.split_once('@')?;
            (repo == repository
                && digest.strip_prefix("sha256:").is_some_and(|hex| {
                    hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())
                }))
            .then(|| digest.to_owned())
        })
}

/// The record written to [`RECORD`].
pub fn record(repository: &str, tag: &str, digest: &str) -> String {
    format!(
        "{{\n  \"repository\": \"{repository}\",\n  \"tag\": \"{tag}\",\n  \"digest\": \"{digest}\",\n  \"image\": \"{repository}@{digest}\"\n}}\n"
    )
}

fn default_tag(root: &Path) -> Result<String, String> {
    let output = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("image: git: {e} (pass --tag)"))?;
    if !output.status.success() {
        return Err("image: not a git checkout (pass --tag)".to_owned());
    }
    let commit = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(root)
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    Ok(if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    })
}

pub fn run(args: &[String]) -> Result<ExitCode, String> {
    let root = super::root();
    let options = parse(args, std::env::var("STACKSMITH_IMAGE_REPOSITORY").ok())?;
    let tag = match &options.tag {
        Some(tag) => tag.clone(),
        None => default_tag(&root)?,
    };
    let steps = steps(&options.repository, &tag);
    if options.dry_run {
        println!(
            "# cargo xtask image --dry-run: what would run in {}",
            root.display()
        );
        for step in &steps {
            println!("{}", step.display());
        }
        println!(
            "# then {RECORD} records the digest, and the stack pins \
             `controlplane.image: {}@sha256:<digest>`",
            options.repository
        );
        return Ok(ExitCode::SUCCESS);
    }
    let docker = Command::new("docker")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !docker.is_ok_and(|s| s.success()) {
        return Err(
            "image: no docker engine answers `docker version` here; `--dry-run` prints the \
             commands to run where one does"
                .to_owned(),
        );
    }
    let (inspect, run_first) = steps.split_last().expect("steps end with the inspect");
    for step in run_first {
        eprintln!("xtask: {}", step.display());
        let status = Command::new(step.program)
            .args(&step.args)
            .current_dir(&root)
            .status()
            .map_err(|e| format!("image: {}: {e}", step.program))?;
        if !status.success() {
            return Err(format!("image: `{}` failed ({status})", step.display()));
        }
    }
    let output = Command::new(inspect.program)
        .args(&inspect.args)
        .current_dir(&root)
        .output()
        .map_err(|e| format!("image: docker inspect: {e}"))?;
    let digests = String::from_utf8_lossy(&output.stdout);
    let digest = digest_for(&options.repository, &digests).ok_or_else(|| {
        format!(
            "image: pushed, but docker reports no digest of {} (RepoDigests: {})",
            options.repository,
            digests.trim()
        )
    })?;
    let path = root.join(RECORD);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("image: {}: {e}", dir.display()))?;
    }
    std::fs::write(&path, record(&options.repository, &tag, &digest))
        .map_err(|e| format!("image: {}: {e}", path.display()))?;
    println!("controlplane.image: {}@{digest}", options.repository);
    eprintln!("xtask: recorded in {}", path.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ECR: &str = "123456789012.dkr.ecr.us-west-2.amazonaws.com/stacksmith-controlplane";

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn arguments_and_the_environment_name_the_repository() {
        let parsed = parse(
            &args(&["--tag", "v1.2.3", "--dry-run"]),
            Some(ECR.to_owned()),
        )
        .unwrap();
        assert_eq!(
            parsed,
            Options {
                repository: ECR.to_owned(),
                tag: Some("v1.2.3".to_owned()),
                dry_run: true
            }
        );
        assert!(parse(&[], None).unwrap_err().contains("no repository"));
        assert!(parse(&args(&["--repository", "ghcr.io/acme/x:1.0"]), None).is_err());
        assert!(parse(&args(&["--repository", "ghcr.io/Acme/x"]), None).is_err());
        assert!(parse(&args(&["--repository", ECR, "--tag", "latest"]), None).is_err());
        assert!(parse(&args(&["--repository", ECR, "--bogus"]), None).is_err());
        assert!(
            parse(
                &args(&["--repository", "registry.local:5000/stacksmith"]),
                None
            )
            .is_ok()
        );
    }

    #[test]
    fn ecr_repositories_log_in_before_the_push() {
        assert_eq!(
            ecr_registry(ECR),
            Some(("123456789012.dkr.ecr.us-west-2.amazonaws.com", "us-west-2"))
        );
        let shown: Vec<String> = steps(ECR, "abc123").iter().map(Step::display).collect();
        assert_eq!(
            shown,
            [
                format!("docker build --pull -t {ECR}:abc123 ."),
                "aws ecr get-login-password --region us-west-2 | docker login --username AWS \
                 --password-stdin 123456789012.dkr.ecr.us-west-2.amazonaws.com"
                    .to_owned(),
                format!("docker push {ECR}:abc123"),
                format!("docker inspect --format {{{{json .RepoDigests}}}} {ECR}:abc123"),
            ]
        );
        // Another registry: no ECR login.
        assert_eq!(steps("registry.local:5000/stacksmith", "t").len(), 3);
    }

    #[test]
    fn the_digest_of_the_pushed_repository_is_recorded() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let listed = format!(
            r#"["other.example/x@sha256:{}","{ECR}@{digest}"]"#,
            "cd".repeat(32)
        );
        assert_eq!(digest_for(ECR, &listed), Some(digest.clone()));
        assert_eq!(digest_for(ECR, "[]"), None);
        assert_eq!(digest_for(ECR, &format!(r#"["{ECR}@sha256:short"]"#)), None);
        let record = record(ECR, "abc123", &digest);
        assert!(record.contains(&format!("\"image\": \"{ECR}@{digest}\"")));
    }
}
