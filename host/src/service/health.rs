//! What `/health`, `/livez` and `/readyz` check, as etcd does: no active alarm, a leader, and a
//! read that goes through (linearizable unless the prober asks for a serializable one).

use std::time::Duration;

use conclave_proto::etcdserverpb::{AlarmType, RangeRequest};

use super::{Caller, Service};

/// How long a probe's read may take before the member counts as unhealthy.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One check of `/livez` or `/readyz` (etcd 3.5's names).
#[derive(Clone, Copy, Debug)]
pub enum Check {
    DataCorruption,
    SerializableRead,
    LinearizableRead,
}

impl Check {
    pub fn name(self) -> &'static str {
        match self {
            Check::DataCorruption => "data_corruption",
            Check::SerializableRead => "serializable_read",
            Check::LinearizableRead => "linearizable_read",
        }
    }
}

impl Service {
    /// `/health`: `Err` carries etcd's reason.
    pub async fn health(&self, serializable: bool) -> Result<(), String> {
        if let Some(alarm) = self.node.alarms.list().first() {
            let name = AlarmType::try_from(alarm.alarm).map_or("UNKNOWN", |t| t.as_str_name());
            return Err(format!("ALARM {name}"));
        }
        if self.node.recognised_leader().is_none() {
            return Err("RAFT NO LEADER".to_string());
        }
        self.probe_read(serializable).await
    }

    /// One `/livez` or `/readyz` check.
    pub async fn check(&self, check: Check) -> Result<(), String> {
        match check {
            Check::DataCorruption => match self.node.alarms.list().iter().any(|a| a.alarm == AlarmType::Corrupt as i32) {
                true => Err("alarm activated: CORRUPT".to_string()),
                false => Ok(()),
            },
            Check::SerializableRead => self.probe_read(true).await,
            Check::LinearizableRead => self.probe_read(false).await,
        }
    }

    async fn probe_read(&self, serializable: bool) -> Result<(), String> {
        let read = RangeRequest { key: b"health".to_vec(), serializable, ..Default::default() };
        match tokio::time::timeout(READ_TIMEOUT, self.range(&Caller::client(), read)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("RANGE ERROR:{e}")),
            Err(_) => Err("RANGE ERROR:context deadline exceeded".to_string()),
        }
    }
}
