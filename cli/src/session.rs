//! A lease held for as long as a command needs it, as etcdctl's `concurrency.Session`: granted
//! with a TTL, kept alive every third of it, revoked at the end.

use std::time::Duration;

use anyhow::{Result, anyhow};
use conclave_proto::etcdserverpb::lease_client::LeaseClient;
use conclave_proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::rpc::{status_error, unary};

pub struct Session {
    lease: i64,
    client: LeaseClient<Channel>,
    /// Ends (with why) only when the lease can no longer be kept alive.
    keeper: JoinHandle<anyhow::Error>,
}

impl Session {
    pub async fn grant(channel: Channel, ttl: i64, timeout: Duration) -> Result<Session> {
        let mut client = LeaseClient::new(channel);
        let granted = unary(timeout, client.lease_grant(LeaseGrantRequest { ttl, id: 0 })).await?;
        let period = Duration::from_secs(u64::try_from(granted.ttl / 3).unwrap_or(0).max(1));
        let keeper = tokio::spawn(keep_alive(client.clone(), granted.id, period));
        Ok(Session { lease: granted.id, client, keeper })
    }

    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// Wait until the lease is lost (its keep-alives fail or it expired).
    pub async fn lost(&mut self) -> anyhow::Error {
        match (&mut self.keeper).await {
            Ok(why) => why,
            Err(e) => anyhow!("lease keep-alive stopped: {e}"),
        }
    }

    /// Stop keeping the lease alive and revoke it, deleting its keys.
    pub async fn close(mut self, timeout: Duration) -> Result<()> {
        self.keeper.abort();
        unary(timeout, self.client.lease_revoke(LeaseRevokeRequest { id: self.lease })).await?;
        Ok(())
    }
}

async fn keep_alive(mut client: LeaseClient<Channel>, id: i64, period: Duration) -> anyhow::Error {
    let requests = futures::stream::unfold(tokio::time::interval(period), move |mut tick| async move {
        tick.tick().await;
        Some((LeaseKeepAliveRequest { id }, tick))
    });
    let mut answers = match client.lease_keep_alive(requests).await {
        Ok(answers) => answers.into_inner(),
        Err(status) => return status_error(status),
    };
    loop {
        match answers.message().await {
            Ok(Some(answer)) if answer.ttl > 0 => {}
            Ok(Some(_)) => return anyhow!("lease {id:x} expired"),
            Ok(None) => return anyhow!("lease {id:x}: the keep-alive stream ended"),
            Err(status) => return status_error(status),
        }
    }
}
