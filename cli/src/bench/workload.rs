//! The keys a client uses and the request it sends with each.

use conclave_proto::etcdserverpb::kv_client::KvClient;
use conclave_proto::etcdserverpb::request_op::Request as Op;
use conclave_proto::etcdserverpb::{PutRequest, RangeRequest, RequestOp, TxnRequest};
use tonic::Status;
use tonic::transport::Channel;

use super::Workload;

/// Keys of `size` bytes among `space` distinct ones: in turn, or at random (a small xorshift,
/// seeded per client, is enough to spread keys).
pub struct Keys {
    size: usize,
    space: u64,
    sequential: bool,
    state: u64,
}

impl Keys {
    pub fn new(size: usize, space: u64, sequential: bool, client: u64) -> Self {
        Keys { size, space, sequential, state: client.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1 }
    }

    pub fn next(&mut self) -> Vec<u8> {
        let index = if self.sequential {
            self.state = self.state.wrapping_add(1);
            self.state % self.space
        } else {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            self.state % self.space
        };
        // The index in decimal, zero-padded (or cut) to the key size, as etcd's tool pads.
        let digits = format!("{index:0width$}", width = self.size.max(1));
        digits.as_bytes()[digits.len().saturating_sub(self.size.max(1))..].to_vec()
    }
}

/// What one request of a workload is.
pub struct Request {
    workload: Workload,
    value: Vec<u8>,
    serializable: bool,
}

impl Request {
    pub fn new(workload: Workload, value_size: usize, serializable: bool) -> Self {
        Request { workload, value: vec![b'x'; value_size], serializable }
    }

    pub async fn send(&self, channel: &Channel, key: Vec<u8>) -> Result<(), Status> {
        let mut kv = KvClient::new(channel.clone()).max_decoding_message_size(usize::MAX);
        match self.workload {
            Workload::Put => kv.put(PutRequest { key, value: self.value.clone(), ..Default::default() }).await.map(drop),
            Workload::Range => {
                kv.range(RangeRequest { key, serializable: self.serializable, ..Default::default() }).await.map(drop)
            }
            Workload::TxnPut => {
                let put = Op::RequestPut(PutRequest { key, value: self.value.clone(), ..Default::default() });
                let txn = TxnRequest { success: vec![RequestOp { request: Some(put) }], ..Default::default() };
                kv.txn(txn).await.map(drop)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_size_and_stay_in_the_space() {
        let mut keys = Keys::new(6, 10, true, 0);
        let firsts: Vec<_> = (0..3).map(|_| String::from_utf8(keys.next()).unwrap()).collect();
        assert_eq!(firsts, ["000002", "000003", "000004"]);
        let mut random = Keys::new(3, 50, false, 7);
        for _ in 0..1000 {
            let key = random.next();
            assert_eq!(key.len(), 3);
            assert!(std::str::from_utf8(&key).unwrap().parse::<u64>().unwrap() < 50);
        }
    }
}
