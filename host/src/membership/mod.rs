//! Cluster membership, as etcd's Cluster API changes it: the leader checks and makes each change
//! ([`Reconfigurer`]); every member publishes its name and client URLs once it runs
//! ([`publish`]) and stops once it learns it was removed ([`watch_removal`]).

mod change;
mod lifecycle;

pub use change::Reconfigurer;
pub use lifecycle::{publish, watch_removal};
