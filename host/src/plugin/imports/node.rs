//! `conclave:plugin/node`: who this member and the leader are, time, and the member's log.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::plugin::bindings::conclave::plugin::node::{Host, LogLevel};
use crate::plugin::state::CallState;

/// Longest log line a plugin may write; the rest is cut, so a plugin cannot flood the log lines.
const MAX_LOG_LINE: usize = 4096;

/// The origin of the monotonic clock plugins see.
static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

impl Host for CallState {
    fn member_id(&mut self) -> u64 {
        self.call.as_ref().map_or(0, |call| call.service.node().identity.member_id)
    }

    fn leader_id(&mut self) -> u64 {
        self.call.as_ref().and_then(|call| call.service.node().raft.metrics().borrow().current_leader).unwrap_or(0)
    }

    fn monotonic_ns(&mut self) -> u64 {
        u64::try_from(EPOCH.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn wall_time_ms(&mut self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn log(&mut self, level: LogLevel, message: String) {
        let plugin = self.call.as_ref().map_or("(metadata)", |call| &call.plugin);
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let cut = (0..=MAX_LOG_LINE).rev().find(|&i| message.is_char_boundary(i)).unwrap_or(0);
            message.truncate(cut);
        }
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }
}
