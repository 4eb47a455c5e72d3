//! Builds the built-in plugins (the `plugins/` workspace) for wasm32-wasip2 and writes
//! `$OUT_DIR/builtin_plugins.rs`: an array of `(name, wasm bytes, manifest JSON)`, one per crate
//! directory of `plugins/` with a `manifest.json`, named after the directory.

#[path = "../guest-sdk/build-support/wasm_workspace.rs"]
mod wasm_workspace;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let host = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = host.parent().expect("host/ is inside the workspace");
    let plugins = root.join("plugins");
    let sdk = root.join("guest-sdk");

    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    for path in [
        plugins.join("Cargo.toml"),
        plugins.join("Cargo.lock"),
        sdk.join("Cargo.toml"),
        sdk.join("src"),
        sdk.join("wit"),
        sdk.join("build-support"),
    ] {
        rerun_if_changed(&path);
    }
    let crates = plugin_crates(&plugins);
    for (dir, _) in &crates {
        for file in ["Cargo.toml", "manifest.json", "src"] {
            rerun_if_changed(&dir.join(file));
        }
    }

    let target_dir = wasm_workspace::target_dir(root, "wasm-plugins");
    let release =
        wasm_workspace::build(&plugins.join("Cargo.toml"), &target_dir, &[]).unwrap_or_else(|e| panic!("{e}"));

    let mut list = String::from("&[\n");
    for (dir, crate_name) in &crates {
        let name = dir.file_name().expect("a crate directory has a name").to_string_lossy();
        let wasm = release.join(format!("{}.wasm", crate_name.replace('-', "_")));
        assert!(wasm.is_file(), "{} was not built", wasm.display());
        let manifest = dir.join("manifest.json");
        writeln!(
            list,
            "    ({name:?}, include_bytes!({:?}) as &[u8], include_str!({:?})),",
            wasm.display().to_string(),
            manifest.display().to_string()
        )
        .expect("writing to a String");
    }
    list.push(']');
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("builtin_plugins.rs");
    fs::write(&out, list).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}

fn rerun_if_changed(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}

/// The crate directories of `plugins/` that have a manifest, in name order, with their crate names.
fn plugin_crates(plugins: &Path) -> Vec<(PathBuf, String)> {
    let entries = fs::read_dir(plugins).unwrap_or_else(|e| panic!("cannot list {}: {e}", plugins.display()));
    let mut crates: Vec<_> = entries
        .map(|entry| entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", plugins.display())).path())
        .filter(|dir| dir.join("manifest.json").is_file() && dir.join("Cargo.toml").is_file())
        .map(|dir| {
            let name = package_name(&dir.join("Cargo.toml"));
            (dir, name)
        })
        .collect();
    crates.sort();
    crates
}

/// `name` of the `[package]` table: enough TOML for the crate manifests this workspace writes.
fn package_name(cargo_toml: &Path) -> String {
    let text = fs::read_to_string(cargo_toml).unwrap_or_else(|e| panic!("cannot read {}: {e}", cargo_toml.display()));
    let mut in_package = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if let Some(value) = line.strip_prefix("name").map(str::trim_start).and_then(|l| l.strip_prefix('='))
            && in_package
        {
            return value.trim().trim_matches('"').to_string();
        }
    }
    panic!("{} has no [package] name", cargo_toml.display())
}
