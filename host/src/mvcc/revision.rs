//! Store revisions: a main revision per committed write, a sub revision per change inside it.

/// A point in the store's history: `main` bumps once per write request (a whole txn shares one),
/// `sub` numbers the individual changes inside that request.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Default, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    pub const ENCODED_LEN: usize = 16;

    pub fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }

    /// Big-endian encoding, so byte order equals revision order in sled.
    pub fn to_bytes(self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[..8].copy_from_slice(&self.main.to_be_bytes());
        out[8..].copy_from_slice(&self.sub.to_be_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::ENCODED_LEN {
            return None;
        }
        let main = i64::from_be_bytes(bytes[..8].try_into().ok()?);
        let sub = i64::from_be_bytes(bytes[8..].try_into().ok()?);
        Some(Revision { main, sub })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_keeps_order() {
        let a = Revision::new(5, 1);
        let b = Revision::new(300, 0);
        assert_eq!(Revision::from_bytes(&a.to_bytes()), Some(a));
        assert!(a.to_bytes() < b.to_bytes());
        assert_eq!(Revision::from_bytes(&[1, 2, 3]), None);
    }
}
