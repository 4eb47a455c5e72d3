//! The plugins built into this binary: (name, wasm, manifest).
pub const BUILTINS: &[(&str, &[u8], &str)] = &[];
