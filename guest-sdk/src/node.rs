//! The member the plugin runs on, time, and the member's log.

use crate::bindings::conclave::plugin::node as wit;

pub use wit::LogLevel;

/// This member's id.
pub fn member_id() -> u64 {
    wit::member_id()
}

/// The leader's id as this member knows it; 0 when there is none.
pub fn leader_id() -> u64 {
    wit::leader_id()
}

/// A monotonic clock in nanoseconds (only differences mean anything).
pub fn monotonic_ns() -> u64 {
    wit::monotonic_ns()
}

/// Wall time: milliseconds since the Unix epoch.
pub fn wall_time_ms() -> u64 {
    wit::wall_time_ms()
}

/// Writing to the member's log, tagged with the plugin's name. The macros
/// [`info!`](crate::info) and friends format first.
pub mod log {
    use super::{LogLevel, wit};

    pub fn log(level: LogLevel, message: &str) {
        wit::log(level, message)
    }

    pub fn trace(message: &str) {
        log(LogLevel::Trace, message)
    }

    pub fn debug(message: &str) {
        log(LogLevel::Debug, message)
    }

    pub fn info(message: &str) {
        log(LogLevel::Info, message)
    }

    pub fn warn(message: &str) {
        log(LogLevel::Warn, message)
    }

    pub fn error(message: &str) {
        log(LogLevel::Error, message)
    }
}

/// `trace!("fmt", args…)`: format and write to the member's log at trace level.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => { $crate::node::log::trace(&::std::format!($($arg)*)) };
}

/// `debug!("fmt", args…)`: format and write to the member's log at debug level.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::node::log::debug(&::std::format!($($arg)*)) };
}

/// `info!("fmt", args…)`: format and write to the member's log at info level.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::node::log::info(&::std::format!($($arg)*)) };
}

/// `warn!("fmt", args…)`: format and write to the member's log at warn level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::node::log::warn(&::std::format!($($arg)*)) };
}

/// `error!("fmt", args…)`: format and write to the member's log at error level.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::node::log::error(&::std::format!($($arg)*)) };
}
