//! Multi-version key-value store with etcd's semantics: every write bumps the store revision,
//! every key keeps create/mod revision and version, deletes leave tombstones, and history stays
//! readable until compacted.
//!
//! Values are kept in sled by revision; an in-memory [`index::KeyIndex`] maps keys to revisions.
//! Writes only happen inside an [`ApplyBatch`] (the raft state machine applying log entries), so
//! the writes of a batch, the index and the revision counter move together; the writes reach sled
//! a little later, several batches at once ([`unflushed`]).

mod async_read;
pub mod export;
mod index;
mod range;
mod revision;
mod span;
mod store;
mod txn;
mod unflushed;
mod write;

pub use async_read::lacks_replaced_value;
pub use range::range;
pub use revision::Revision;
pub use span::{prefix_end, KeySpan};
pub use store::{event_bytes, ApplyBatch, HashKv, HistoryChunk, ReadView, Store, StoreError, View};
pub use txn::{is_read_only, txn, TxnTarget};
pub use write::Writer;
