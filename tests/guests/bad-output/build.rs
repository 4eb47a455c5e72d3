//! `export!` is what normally embeds the world's exports in the module (a `component-type`
//! custom section the linker reads to make the component); this guest writes its exports by
//! hand, so it embeds the section itself, encoded here from the contract.

use std::path::PathBuf;

fn main() {
    let wit = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap()).join("../../../guest-sdk/wit");
    println!("cargo:rerun-if-changed={}", wit.display());
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve.push_dir(&wit).expect("the contract parses");
    let world = resolve.select_world(&[package], Some("recipe")).expect("the contract has the recipe world");
    let section = wit_component::metadata::encode(&resolve, world, wit_component::StringEncoding::UTF8, None)
        .expect("the recipe world encodes");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    std::fs::write(out.join("recipe-component-type.bin"), &section).unwrap();
    std::fs::write(out.join("recipe-component-type.len"), section.len().to_string()).unwrap();
}
