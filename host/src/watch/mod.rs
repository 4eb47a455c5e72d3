//! Watches: the hub that fans committed events out to watch streams, and the per-stream worker
//! that matches them to its watchers, replays history, and catches up when it falls behind.
//!
//! Writers never wait for watchers: the hub offers each batch of events to every stream without
//! blocking, and a stream whose queue is full is dropped from live delivery. Its worker then
//! replays what it missed from the store's history and subscribes again, so a slow watcher
//! costs itself time, never anyone else, and never loses an event. When a snapshot replaces the
//! store, the hub ends every live feed the same way, so each stream catches up from the new store
//! (or cancels, as compacted, the watchers whose history the snapshot no longer holds).

mod context;
mod hub;
mod stream;
#[cfg(test)]
mod tests;

pub use context::{Authorize, HeaderFn, WatchContext};
pub use hub::Hub;
pub use stream::{run_stream, StreamSettings};
