//! Integration-test harness for Conclave: start real server processes (Conclave or the
//! reference etcd) on loopback ephemeral ports, drive them with real clients, and compare
//! their answers after normalising what legitimately differs between two servers.
//!
//! Environment: `CONCLAVE_BIN`, `CONCLAVECTL_BIN`, `ETCD_BIN`, `ETCDCTL_BIN` override the binaries (default:
//! `target/<profile>/conclave`, `etcd` and `etcdctl` on `PATH`); `CONCLAVE_TEST_SUBJECT=etcd`
//! runs the comparison suites etcd-vs-etcd, a self-check of the harness and the sessions.

pub mod catch_up;
pub mod certs;
pub mod clients;
pub mod conclavectl;
pub mod cluster;
pub mod curl;
pub mod errors;
pub mod etcdctl;
pub mod guests;
pub mod latency;
pub mod node;
pub mod normalize;
pub mod plugins;
pub mod recipes;
pub mod reliability;
pub mod small_disk;
pub mod session;
pub mod table;
pub mod watch;
pub mod writes;

pub use catch_up::{POLL, PROGRESS_TIMEOUT, assert_all_readable, assert_caught_up, connect, value, wait_until_caught_up};
pub use clients::{on_etcd_then_subject, same_on_etcd_and_subject};
pub use cluster::{Cluster, same_on_etcd_and_subject_clusters};
pub use errors::{err, status};
pub use etcdctl::{CtlOutput, etcdctl};
pub use node::{Kind, Node, Schemes, conclavectl_bin, free_port};
pub use normalize::{Normalizer, shape};
pub use session::{LEASE, Step, assert_same_as_etcd, ctl, ctl_lines, ctl_stdin, ctls, formats, transcript};
pub use table::Table;
pub use writes::{Acks, Load, WRITE_TIMEOUT, put, put_concurrently, put_keys, txn};
