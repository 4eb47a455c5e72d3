//! The built-in plugins compiled in by build.rs: `(name, wasm component, manifest JSON)` each.
pub const BUILTINS: &[(&str, &[u8], &str)] = include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));
