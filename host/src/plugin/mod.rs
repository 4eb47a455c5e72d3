//! WebAssembly plugins: components for the `conclave:plugin/recipe` world, run inside the member
//! on the service layer with the key ranges and limits their manifest grants.
//!
//! - [`bindings`]: the host side of the WIT contract (generated).
//! - [`engine`]: the wasmtime engine, compiling and checking a component.
//! - [`compiled_cache`]: compiled components kept in the data dir across restarts.
//! - [`manifest`]: grants and limits, as deployed.
//! - [`state`] and [`imports`]: what an instance sees — its call, its grants, an empty WASI.
//! - [`call`]: running one call within its limits, and naming what failed.
//! - [`idle`]: instances kept between calls, for plugins that allow it.
//! - [`registry`]: the plugins this member serves, following the replicated state.

mod bindings;
mod builtin_list;
mod compiled_cache;
mod idle;
pub mod call;
pub mod engine;
mod imports;
pub mod manifest;
pub mod registry;
mod state;

pub use bindings::exports::conclave::plugin::plugin::MethodKind;
pub use manifest::Manifest;
pub use registry::{Loaded, Registry};
