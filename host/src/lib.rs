//! Conclave's server: the etcd v3 API over a raft-replicated MVCC store.
//!
//! Requests flow one way: [`transport`] (listeners) → [`api`] (gRPC adapters) → [`service`]
//! (every request rule, for every caller) → [`node`] (propose through [`raft`], or a local read
//! after a linearizability check) → [`apply`] → [`mvcc`] (with the [`lease`] table) → [`watch`]
//! hub / response. Who a member is lives in [`identity`]; changes of who is in the cluster, in
//! [`membership`].

pub mod alarm;
pub mod apply;
pub mod api;
pub mod compactor;
pub mod config;
pub mod error;
pub mod heap;
pub mod identity;
pub mod lease;
pub mod logging;
pub mod membership;
pub mod metrics;
pub mod mvcc;
pub mod node;
pub mod planted;
pub mod plugin;
pub mod raft;
pub mod service;
pub mod transport;
pub mod watch;
