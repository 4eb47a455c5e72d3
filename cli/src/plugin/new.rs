//! `plugin new NAME`: a plugin crate from the guest SDK's template, ready to build for
//! wasm32-wasip2 and deploy.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

macro_rules! template {
    ($file:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-sdk/template/", $file))
    };
}

/// Each file of the crate and the template it is made from.
const FILES: [(&str, &str); 3] = [
    ("Cargo.toml", template!("Cargo.toml.tmpl")),
    ("src/lib.rs", template!("src/lib.rs.tmpl")),
    ("manifest.json", template!("manifest.json.tmpl")),
];

/// Where the guest SDK sat when conclavectl was built: right for a source checkout.
const BUILT_SDK_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-sdk");

#[derive(Args, Debug)]
pub struct NewArgs {
    /// The plugin's crate name: lowercase letters, digits, '-' and '_', starting with a letter.
    name: String,
    /// The directory to create [default: ./NAME].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The guest SDK the crate depends on [default: the one conclavectl was built beside].
    #[arg(long)]
    sdk_path: Option<PathBuf>,
}

pub fn run(args: &NewArgs, out: &mut impl Write) -> Result<()> {
    check_name(&args.name)?;
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    check_free(&dir)?;
    let sdk = absolute(args.sdk_path.as_deref().unwrap_or(Path::new(BUILT_SDK_PATH)))?;
    let sdk = sdk.to_str().with_context(|| format!("guest SDK path {} is not UTF-8", sdk.display()))?;

    for (file, template) in FILES {
        let path = dir.join(file);
        let parent = path.parent().expect("a file inside the crate");
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let text = template.replace("{{name}}", &args.name).replace("{{sdk_path}}", sdk);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }

    let name = &args.name;
    // Cargo names the library's file with underscores.
    let wasm = format!("target/wasm32-wasip2/release/{}.wasm", name.replace('-', "_"));
    writeln!(out, "Created plugin {name} in {}", dir.display())?;
    writeln!(out, "Next:")?;
    writeln!(out, "  cd {} && cargo build --release --target wasm32-wasip2", dir.display())?;
    writeln!(out, "  conclavectl plugin deploy {name} {wasm} --manifest manifest.json")?;
    Ok(())
}

/// The rule cargo would enforce later, checked now so no half-made crate is left behind.
fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !starts_with_letter || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') {
        bail!("invalid plugin name {name:?}: use lowercase letters, digits, '-' and '_', starting with a letter");
    }
    Ok(())
}

/// A new or empty directory only: scaffolding never overwrites.
fn check_free(dir: &Path) -> Result<()> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!("{} already exists and is not empty", dir.display());
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

/// Canonical when the path exists, so the generated Cargo.toml works from any directory.
fn absolute(path: &Path) -> Result<PathBuf> {
    match path.canonicalize() {
        Ok(path) => Ok(path),
        Err(_) => std::path::absolute(path).with_context(|| format!("resolving {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(name: &str, dir: &Path) -> NewArgs {
        NewArgs { name: name.into(), dir: Some(dir.to_path_buf()), sdk_path: Some("/opt/sdk".into()) }
    }

    #[test]
    fn crate_names() {
        for good in ["counter", "rate-limit", "kv_2"] {
            assert!(check_name(good).is_ok(), "{good} refused");
        }
        for bad in ["", "Counter", "2fa", "-x", "_x", "a.b", "a b", "café"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            check_name("Counter").unwrap_err().to_string(),
            "invalid plugin name \"Counter\": use lowercase letters, digits, '-' and '_', starting with a letter"
        );
    }

    #[test]
    fn scaffolds_every_template_with_placeholders_filled() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("rate-limit");
        let mut out = Vec::new();
        run(&args("rate-limit", &dir), &mut out).unwrap();
        for (file, _) in FILES {
            let text = fs::read_to_string(dir.join(file)).unwrap();
            assert!(!text.contains("{{"), "{file} keeps a placeholder: {text}");
        }
        assert!(fs::read_to_string(dir.join("Cargo.toml")).unwrap().contains("/opt/sdk"));
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("plugin deploy rate-limit target/wasm32-wasip2/release/rate_limit.wasm --manifest manifest.json"), "{out}");
    }

    #[test]
    fn an_empty_directory_is_fine_a_full_one_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        run(&args("counter", tmp.path()), &mut Vec::new()).unwrap();
        let err = run(&args("counter", tmp.path()), &mut Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), format!("{} already exists and is not empty", tmp.path().display()));
    }
}
