//! How far the log is durable: the writer publishes the last entry index it has synced, so that
//! what must not run ahead of the disk (applying an entry, telling followers it is committed)
//! can wait for it while raft goes on.

use std::io;

use tokio::sync::watch;

#[derive(Clone, Copy, Debug)]
struct Synced {
    /// Entries up to this index are synced (0: none).
    upto: u64,
    /// The writer failed: nothing more will be.
    failed: bool,
}

/// Waits for the log to be durable up to an index; cheap to clone.
#[derive(Clone)]
pub struct Durable(watch::Receiver<Synced>);

/// The writer's side of [`Durable`].
pub struct Syncs(watch::Sender<Synced>);

impl Syncs {
    /// Entries up to `upto` are on disk (the log as it starts, replayed from there).
    pub fn new(upto: u64) -> Self {
        Syncs(watch::Sender::new(Synced { upto, failed: false }))
    }

    pub fn durable(&self) -> Durable {
        Durable(self.0.subscribe())
    }

    /// The log is synced and ends with entry `upto` (lower than before after a truncation).
    pub fn synced(&self, upto: u64) {
        self.0.send_modify(|synced| synced.upto = upto);
    }

    pub fn failed(&self) {
        self.0.send_modify(|synced| synced.failed = true);
    }
}

impl Durable {
    /// A log durable as far as anyone asks (for a state machine tested on its own).
    #[cfg(test)]
    pub fn everything() -> Self {
        Syncs::new(u64::MAX).durable()
    }

    /// Returns once entries up to `index` are synced; an error if the log fails first.
    pub async fn reached(&mut self, index: u64) -> io::Result<()> {
        let synced = *self
            .0
            .wait_for(|synced| synced.upto >= index || synced.failed)
            .await
            .map_err(|_| io::Error::other("raft log writer stopped"))?;
        if synced.upto >= index {
            Ok(())
        } else {
            Err(io::Error::other(format!("raft log failed before entry {index} was durable")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_the_sync_and_reports_a_failure() {
        let syncs = Syncs::new(3);
        let mut durable = syncs.durable();
        durable.reached(3).await.unwrap();
        let waiting = tokio::spawn({
            let mut durable = durable.clone();
            async move { durable.reached(5).await }
        });
        syncs.synced(4);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        syncs.synced(5);
        waiting.await.unwrap().unwrap();

        syncs.failed();
        assert!(durable.reached(6).await.is_err());
        durable.reached(5).await.unwrap();
    }
}
