//! Stack files: loading, `extends`, `${env:...}` interpolation, instances, and validation.
//!
//! [`load`] turns `stacks/<name>.yaml` into a typed [`Stack`] or into every error the file has:
//!
//! 1. [`compose`] reads the file and the chain it `extends`, and merges them into one tree whose
//!    nodes remember their file, line and column ([`yaml`], [`source`]);
//! 2. `${env:...}` expressions are interpolated;
//! 3. [`schema`] checks the tree's shape against the JSON Schema generated from [`model`];
//! 4. the tree becomes the typed [`Stack`], and [`rules`] checks what spans several fields.
//!
//! Later steps run only when earlier ones found nothing, except that step 2 and 3 report together.

pub mod compose;
pub mod error;
pub mod formats;
pub mod model;
pub mod naming;
pub mod rules;
pub mod schema;
pub mod source;
pub mod yaml;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{StackError, StackErrors};
pub use model::Stack;
pub use naming::Names;

use source::SourceMap;

/// Which stack to load.
#[derive(Debug, Clone)]
pub enum StackSource {
    /// `--stack NAME`: `<dir>/<NAME>.yaml`.
    Named {
        /// The stacks directory (`--stacks-dir`).
        dir: PathBuf,
        /// The stack's name.
        name: String,
    },
    /// `--file PATH`.
    File(PathBuf),
}

/// A request to load a stack, optionally as an instance of a template.
#[derive(Debug, Clone)]
pub struct LoadRequest {
    /// The stack.
    pub source: StackSource,
    /// `--instance NAME`.
    pub instance: Option<String>,
}

/// A stack that can be deployed.
#[derive(Debug, Clone)]
pub struct LoadedStack {
    /// The validated stack, `extends` merged and variables interpolated.
    pub stack: Stack,
    /// The instance-qualified names of its resources.
    pub names: Names,
    /// The file it was loaded from, as shown to the user.
    pub display_name: String,
}

/// What a stack file turned out to be.
#[derive(Debug, Clone)]
pub enum Loaded {
    /// A complete stack.
    Deployable(Box<LoadedStack>),
    /// Shared defaults for other stacks (`abstract: true`): checked, not deployable.
    Abstract {
        /// The file, as shown to the user.
        display_name: String,
    },
}

impl Loaded {
    /// The deployable stack, or an error saying this file only holds defaults.
    pub fn into_deployable(self) -> Result<LoadedStack, StackErrors> {
        match self {
            Loaded::Deployable(stack) => Ok(*stack),
            Loaded::Abstract { display_name } => Err(StackErrors::without_sources(vec![StackError::new(
                "stack::abstract",
                None,
                format!("{display_name} is abstract (shared defaults for other stacks) and cannot be deployed"),
            )
            .help("deploy a stack that `extends` it instead")])),
        }
    }
}

/// Loads and validates a stack with the process environment.
pub fn load(request: &LoadRequest) -> Result<Loaded, StackErrors> {
    load_with_env(request, &|name| std::env::var(name).ok())
}

/// Loads and validates a stack, reading `${env:...}` through `env`.
pub fn load_with_env(
    request: &LoadRequest,
    env: compose::EnvLookup<'_>,
) -> Result<Loaded, StackErrors> {
    let (path, display_name) = resolve(&request.source)?;
    let mut sources = SourceMap::default();
    let composed = compose::compose(&path, display_name.clone(), &mut sources);
    let mut root = match composed {
        Ok(root) => root,
        Err(errors) => return Err(StackErrors::new(Arc::new(sources), errors)),
    };
    let mut errors = compose::interpolate(&mut root, &sources, env);
    let is_abstract = matches!(
        root.get("abstract").map(|n| &n.value),
        Some(yaml::Value::Bool(true))
    );
    errors.extend(schema::check(&root, &sources, is_abstract));
    if let Some(instance) = &request.instance {
        errors.extend(check_instance(&root, instance));
    }
    if !errors.is_empty() {
        return Err(StackErrors::new(Arc::new(sources), errors));
    }
    if is_abstract {
        if request.instance.is_some() {
            return Err(StackErrors::without_sources(vec![StackError::new(
                "stack::instance::abstract",
                None,
                format!("{display_name} is abstract: it has no instances"),
            )]));
        }
        return Ok(Loaded::Abstract { display_name });
    }
    let stack: Stack = match serde_json::from_value(root.to_json()) {
        Ok(stack) => stack,
        Err(e) => {
            // The schema check passed, so this is a gap between schema and model: report it
            // plainly rather than pretend the file is fine.
            let error = StackError::new(
                "stack::invalid",
                Some(root.location.sub(0, 0)),
                format!("the stack does not fit the model: {e}"),
            );
            return Err(StackErrors::new(Arc::new(sources), vec![error]));
        }
    };
    let errors = rules::check(&stack, &root, request.instance.as_deref());
    if !errors.is_empty() {
        return Err(StackErrors::new(Arc::new(sources), errors));
    }
    let names = Names::new(&stack, request.instance.as_deref());
    Ok(Loaded::Deployable(Box::new(LoadedStack {
        stack,
        names,
        display_name,
    })))
}

/// The file of a stack source, and its name as shown to the user.
fn resolve(source: &StackSource) -> Result<(PathBuf, String), StackErrors> {
    match source {
        StackSource::File(path) => {
            if path.is_file() {
                Ok((path.clone(), display(path)))
            } else {
                Err(StackErrors::without_sources(vec![StackError::new(
                    "stack::file::missing",
                    None,
                    format!("{} does not exist", display(path)),
                )]))
            }
        }
        StackSource::Named { dir, name } => {
            let path = dir.join(format!("{name}.yaml"));
            if path.is_file() {
                return Ok((path.clone(), display(&path)));
            }
            let known = available_stacks(dir);
            let help = match schema::nearest(name, &known) {
                Some(best) => format!(
                    "did you mean `--stack {best}`? Stacks in {}: {}",
                    display(dir),
                    known.join(", ")
                ),
                None if known.is_empty() => format!(
                    "{} holds no stack files; pass `--stacks-dir DIR` or `--file PATH`",
                    display(dir)
                ),
                None => format!("stacks in {}: {}", display(dir), known.join(", ")),
            };
            Err(StackErrors::without_sources(vec![
                StackError::new(
                    "stack::file::missing",
                    None,
                    format!(
                        "there is no stack `{name}`: {} does not exist",
                        display(&path)
                    ),
                )
                .help(help),
            ]))
        }
    }
}

/// Names of the stack files in a directory (`<name>.yaml`), sorted.
pub fn available_stacks(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            entry
                .file_name()
                .to_str()?
                .strip_suffix(".yaml")
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

fn display(path: &Path) -> String {
    let text = path.display().to_string();
    text.strip_prefix("./").map(str::to_owned).unwrap_or(text)
}

/// `--instance NAME` needs a template stack and a well-formed, short enough name.
fn check_instance(root: &yaml::Node, instance: &str) -> Vec<StackError> {
    let settings = root.get("instances");
    let allowed =
        settings.and_then(|s| s.get("allowed")).map(|n| &n.value) == Some(&yaml::Value::Bool(true));
    if !allowed {
        let location = root
            .entry("instances")
            .map(|e| e.key_location)
            .unwrap_or_else(|| root.location.sub(0, 0));
        return vec![StackError::new(
            "stack::instance::not_allowed",
            Some(location),
            format!("`--instance {instance}` was given, but this stack does not allow instances"),
        )
        .label("instances are not allowed")
        .help("add `instances: { allowed: true, ttl: 48h }` to make the stack a template, or drop `--instance`")];
    }
    let max = settings
        .and_then(|s| s.get("max_name_length"))
        .and_then(|n| {
            if let yaml::Value::Int(i) = n.value {
                usize::try_from(i).ok()
            } else {
                None
            }
        })
        .unwrap_or(12);
    let mut errors = Vec::new();
    let valid = (formats::find("stack-name")
        .expect("stack-name format exists")
        .check)(instance);
    if !valid {
        errors.push(
            StackError::new("stack::instance::name", None, format!("`{instance}` is not a valid instance name"))
                .help("use lowercase letters, digits and single hyphens, starting with a letter, e.g. `pr-123`"),
        );
    }
    if instance.len() > max {
        let location = settings
            .and_then(|s| s.entry("max_name_length"))
            .map(|e| e.key_location);
        errors.push(
            StackError::new("stack::instance::too_long", location, format!("the instance name `{instance}` is {} characters; this template allows at most {max}", instance.len()))
                .label("the limit")
                .help("use a shorter instance name, e.g. `pr-123`"),
        );
    }
    errors
}
