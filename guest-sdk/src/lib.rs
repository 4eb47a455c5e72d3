//! The SDK for Conclave plugins: WebAssembly components (built for `wasm32-wasip2`) that the
//! server runs as clients inside itself, with the key prefixes their manifest grants.
//!
//! The contract is the WIT world `conclave:plugin/recipe` in `guest-sdk/wit/plugin.wit`; its
//! generated bindings are in [`bindings`], and this crate puts ordinary Rust on top: an
//! [`Error`] with a code, and one module per host interface ([`kv`], [`txn`], [`lease`],
//! [`watch`], [`node`], [`emit`]). A plugin crate depends on this crate only (not on
//! wit-bindgen), is a `cdylib`, implements [`Plugin`] and exports it with [`export_plugin!`]:
//!
//! ```no_run
//! use conclave_guest::{Error, Metadata, Plugin, Result, kv, watch::Watcher};
//! use std::time::Duration;
//!
//! struct Notes;
//!
//! impl Plugin for Notes {
//!     fn metadata() -> Metadata {
//!         Metadata::new("notes", "1").unary("write").unary("read").streaming("follow")
//!     }
//!
//!     fn handle(method: &str, payload: Vec<u8>) -> Result<Vec<u8>> {
//!         match method {
//!             // Store the payload; answer with the write's revision.
//!             "write" => Ok(kv::put("notes/last", payload)?.to_string().into_bytes()),
//!             "read" => match kv::get("notes/last")? {
//!                 Some(kv) => Ok(kv.value),
//!                 None => Err(Error::not_found("no note yet")),
//!             },
//!             // Send every new note until the caller goes away.
//!             "follow" => {
//!                 let mut watcher = Watcher::key("notes/last");
//!                 loop {
//!                     for event in watcher.next(Duration::from_secs(30))? {
//!                         match conclave_guest::emit(&event.kv.value) {
//!                             Err(e) if e.is_cancelled() => return Ok(Vec::new()),
//!                             other => other?,
//!                         }
//!                     }
//!                 }
//!             }
//!             _ => Err(Error::unknown_method(method)),
//!         }
//!     }
//! }
//!
//! conclave_guest::export_plugin!(Notes);
//! ```
//!
//! with `Cargo.toml`:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! conclave-guest = { path = "../guest-sdk" }
//!
//! [profile.release]
//! opt-level = "s"
//! lto = true
//! strip = true
//! codegen-units = 1
//! ```
//!
//! and built with `cargo build --release --target wasm32-wasip2`: the `.wasm` in
//! `target/wasm32-wasip2/release/` is already a component. It is deployed with a manifest
//! granting its prefixes, e.g. `{"read": ["notes/"], "write": ["notes/"]}`; a call outside them
//! fails with `permission-denied`. `guest-sdk/template/` is the same as a `conclavectl plugin new`
//! scaffold.
//!
//! Every host call blocks the plugin (not a server thread) until it has an answer. A panic
//! traps: that call fails and nothing else is touched. With the `json` feature, [`json`] parses
//! payloads into serde types.
//!
//! The SDK's own helpers also compile for the host target, so their unit tests run there; the
//! host imports themselves exist only in the component.

extern crate self as conclave_guest;

/// The bindings `wit-bindgen` generates for the `recipe` world. The typed helpers re-export
/// what a plugin needs; reach in here only for something they do not cover.
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "recipe",
        pub_export_macro: true,
        default_bindings_module: "conclave_guest::bindings",
        runtime_path: "conclave_guest::__wit_bindgen_rt",
    });
}

#[doc(hidden)]
pub use wit_bindgen::rt as __wit_bindgen_rt;

mod call;
pub mod errors;
pub mod export;
#[cfg(feature = "json")]
pub mod json;
pub mod kv;
pub mod lease;
pub mod node;
pub mod txn;
pub mod watch;

pub use call::emit;
pub use errors::{Error, ErrorCode, Result};
pub use export::{Metadata, MethodKind, Plugin};
pub use kv::{KeyValue, prefix_end};
pub use txn::{Compare, Op, OpResponse, Txn, TxnResponse};
