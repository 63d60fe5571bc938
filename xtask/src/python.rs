//! Python venvs holding moto and the other PyPI tools of `tests/requirements/*.txt`.
//!
//! They live outside the clone (`$STACKSMITH_CACHE_DIR/venvs`, default
//! `~/.cache/stacksmith/venvs`) so CI and fresh clones reuse them, and each is refreshed whenever
//! its requirements file changes.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{self, apt_install, on_path};

/// Where the venv and the servers' scratch folders live.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STACKSMITH_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache").join("stacksmith"),
        None => crate::target_dir().join("stacksmith-cache"),
    }
}

/// The python of one tool group's venv (`<cache>/venvs/<group>/bin/python`), for programs that
/// run inside it such as `tests/emulators/kube_emulator.py` (call after [`ensure_venvs`]).
pub fn venv_python(group: &str) -> PathBuf {
    cache_dir()
        .join("venvs")
        .join(group)
        .join("bin")
        .join("python")
}

/// Makes sure every tool group of `tests/requirements/` has an up-to-date venv, links their tools
/// into one folder, and returns that folder (`STACKSMITH_TEST_VENV_BIN`).
///
/// Each `tests/requirements/<group>.txt` gets its own venv (`<cache>/venvs/<group>`), because
/// some tools pin versions that others cannot live with (checkov's `packaging`). A venv is
/// reinstalled when its requirements file changes.
pub fn ensure_venvs() -> Result<PathBuf, String> {
    let requirements_dir = crate::root().join("tests").join("requirements");
    let mut groups: Vec<PathBuf> = std::fs::read_dir(&requirements_dir)
        .map_err(|e| format!("cannot read {}: {e}", requirements_dir.display()))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "txt"))
        .collect();
    groups.sort();
    let links = cache_dir().join("bin");
    let _ = std::fs::remove_dir_all(&links);
    std::fs::create_dir_all(&links)
        .map_err(|e| format!("cannot create {}: {e}", links.display()))?;
    for requirements_path in groups {
        let group = requirements_path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("tools")
            .to_owned();
        let bin = ensure_venv(&group, &requirements_path)?;
        link_tools(&bin, &links)?;
    }
    Ok(links)
}

/// Makes sure the venv `<cache>/venvs/<group>` holds `requirements_path` (reinstalled when the
/// file changes) and returns its `bin` folder.
pub fn ensure_venv(group: &str, requirements_path: &Path) -> Result<PathBuf, String> {
    let requirements = std::fs::read_to_string(requirements_path)
        .map_err(|e| format!("cannot read {}: {e}", requirements_path.display()))?;
    let venv = cache_dir().join("venvs").join(group);
    let bin = venv.join("bin");
    let stamp = venv.join(".stacksmith-requirements");
    let installed =
        std::fs::read_to_string(&stamp).is_ok_and(|installed| installed == requirements);
    if installed && bin.join("python").exists() {
        return Ok(bin);
    }
    let python = find_python()?;
    if !bin.join("python").exists() {
        create_venv(&python, &venv)?;
    }
    process::run(
        &format!(
            "installing the `{group}` test tools into {} (once per change; may take a minute)",
            venv.display()
        ),
        Command::new(bin.join("python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--requirement",
            ])
            .arg(requirements_path),
    )?;
    std::fs::write(&stamp, requirements)
        .map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    Ok(bin)
}

/// Links a venv's console scripts (not its python or pip) into `links`.
fn link_tools(bin: &Path, links: &Path) -> Result<(), String> {
    let entries =
        std::fs::read_dir(bin).map_err(|e| format!("cannot read {}: {e}", bin.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let internal = ["python", "pip", "activate", "Activate", "deactivate"]
            .iter()
            .any(|p| name.starts_with(p));
        if internal || entry.path().is_dir() {
            continue;
        }
        let link = links.join(&*name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(entry.path(), &link)
            .map_err(|e| format!("cannot link {}: {e}", link.display()))?;
    }
    Ok(())
}

fn find_python() -> Result<String, String> {
    for candidate in ["python3", "python"] {
        if process::succeeds(Command::new(candidate).arg("--version")) {
            return Ok(candidate.to_owned());
        }
    }
    apt_install(&["python3", "python3-venv", "python3-pip"])
        .map_err(|e| format!("Python 3 is needed for the emulators: {e}"))?;
    Ok("python3".to_owned())
}

fn create_venv(python: &str, venv: &Path) -> Result<(), String> {
    let create = |python: &str| {
        process::run(
            &format!("creating a Python venv at {}", venv.display()),
            Command::new(python).args(["-m", "venv"]).arg(venv),
        )
    };
    if create(python).is_ok() {
        return Ok(());
    }
    // Debian splits venv support out of python3.
    if on_path("apt-get") {
        let _ = std::fs::remove_dir_all(venv);
        apt_install(&["python3-venv"])?;
        return create(python);
    }
    Err(format!(
        "cannot create a venv with {python}: install its venv module"
    ))
}
