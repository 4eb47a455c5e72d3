//! The plugin tests' guests (`tests/guests`, a workspace of its own): built for wasm32-wasip2 the
//! first time a test asks for one, once per test process and set of build-time variables.

#[path = "../../guest-sdk/build-support/wasm_workspace.rs"]
mod wasm_workspace;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, bail};

/// Release directories already built, by the variables they were built with.
static BUILT: Mutex<BTreeMap<Vec<(String, String)>, PathBuf>> = Mutex::new(BTreeMap::new());

/// The component of the guest crate `crate_name` (e.g. "misbehave", "bad-output", "other-world").
pub fn guest_wasm(crate_name: &str) -> anyhow::Result<PathBuf> {
    guest_wasm_with_env(crate_name, &[])
}

/// The same, built with `env` set (e.g. `[("MISBEHAVE_VERSION", "2")]`) into a target directory
/// of its own, so each set of variables gives its own bytes and none rebuilds another.
pub fn guest_wasm_with_env(crate_name: &str, env: &[(&str, &str)]) -> anyhow::Result<PathBuf> {
    let mut key: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    key.sort();
    let release = {
        let mut built = BUILT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match built.get(&key) {
            Some(release) => release.clone(),
            None => {
                let release = build(&key)?;
                built.insert(key, release.clone());
                release
            }
        }
    };
    let wasm = release.join(format!("{}.wasm", crate_name.replace('-', "_")));
    if !wasm.is_file() {
        bail!("{} is not a guest of tests/guests", crate_name);
    }
    Ok(wasm)
}

/// Builds the guest workspace at `manifest` (e.g. a crate made by `conclavectl plugin new`) for
/// wasm32-wasip2 the way the fixtures are built, into the shared target directory `target_name`
/// (under the workspace's target dir, so dependencies stay built between runs); the directory
/// holding its `.wasm` files.
pub fn build_workspace(manifest: &Path, target_name: &str) -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("tests/ is inside the workspace")?;
    wasm_workspace::build(manifest, &wasm_workspace::target_dir(root, target_name), &[]).map_err(anyhow::Error::msg)
}

fn build(env: &[(String, String)]) -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("tests/ is inside the workspace")?;
    let name = std::iter::once("wasm-guests".to_string())
        .chain(env.iter().map(|(k, v)| format!("{k}-{v}")))
        .collect::<Vec<_>>()
        .join("-");
    let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let manifest = root.join("tests/guests/Cargo.toml");
    wasm_workspace::build(&manifest, &wasm_workspace::target_dir(root, &name), &env).map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()[..8].to_vec()
    }

    #[test]
    fn every_guest_is_a_component_and_the_version_override_changes_the_bytes() {
        const COMPONENT: [u8; 8] = [0, b'a', b's', b'm', 0x0d, 0, 0x01, 0];
        for name in ["misbehave", "bad-output", "other-world"] {
            assert_eq!(header(&guest_wasm(name).unwrap()), COMPONENT, "{name}");
        }
        let v1 = std::fs::read(guest_wasm("misbehave").unwrap()).unwrap();
        let v2 = std::fs::read(guest_wasm_with_env("misbehave", &[("MISBEHAVE_VERSION", "2")]).unwrap()).unwrap();
        assert_ne!(v1, v2);
        assert!(guest_wasm("no-such-guest").is_err());
    }
}
