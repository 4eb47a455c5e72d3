//! The key interval an etcd request names with `key` and `range_end`.

use std::ops::Bound;

/// The bounds of a range over byte-string keys, as `BTreeMap::range` takes them.
pub type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// etcd's reading of `(key, range_end)`: an empty `range_end` means the single key, `"\0"`
/// means every key from `key` on, anything else the half-open interval `[key, range_end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpan {
    pub start: Vec<u8>,
    /// `None` for a single key; `Some(None)` for an unbounded end.
    pub end: Option<Option<Vec<u8>>>,
}

impl KeySpan {
    pub fn new(key: &[u8], range_end: &[u8]) -> Self {
        let end = match range_end {
            [] => None,
            [0] => Some(None),
            end => Some(Some(end.to_vec())),
        };
        KeySpan { start: key.to_vec(), end }
    }

    pub fn single(key: &[u8]) -> Self {
        KeySpan { start: key.to_vec(), end: None }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match &self.end {
            None => key == self.start.as_slice(),
            Some(None) => key >= self.start.as_slice(),
            Some(Some(end)) => key >= self.start.as_slice() && key < end.as_slice(),
        }
    }

    /// Whether two spans share at least one key.
    pub fn intersects(&self, other: &KeySpan) -> bool {
        match (&self.end, &other.end) {
            (None, _) => other.contains(&self.start),
            (_, None) => self.contains(&other.start),
            _ => {
                let starts_before_other_ends = match &other.end {
                    Some(Some(end)) => self.start < *end,
                    _ => true,
                };
                let other_starts_before_self_ends = match &self.end {
                    Some(Some(end)) => other.start < *end,
                    _ => true,
                };
                starts_before_other_ends && other_starts_before_self_ends
            }
        }
    }

    /// Bounds for a `BTreeMap::range` over the keys of this span; `None` when the span is empty
    /// (an end at or before the start), which `BTreeMap::range` would reject with a panic.
    pub fn bounds(&self) -> Option<KeyBounds<'_>> {
        let start = Bound::Included(self.start.as_slice());
        match &self.end {
            None => Some((start, Bound::Included(self.start.as_slice()))),
            Some(None) => Some((start, Bound::Unbounded)),
            Some(Some(end)) if end.as_slice() > self.start.as_slice() => {
                Some((start, Bound::Excluded(end.as_slice())))
            }
            Some(Some(_)) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_range_end_like_etcd() {
        assert!(KeySpan::new(b"a", b"").contains(b"a"));
        assert!(!KeySpan::new(b"a", b"").contains(b"ab"));
        assert!(KeySpan::new(b"a", b"\0").contains(b"zzz"));
        assert!(KeySpan::new(b"a", b"b").contains(b"azz"));
        assert!(!KeySpan::new(b"a", b"b").contains(b"b"));
        assert!(KeySpan::new(b"b", b"a").bounds().is_none());
    }

    #[test]
    fn intersection() {
        let ab = KeySpan::new(b"a", b"b");
        assert!(ab.intersects(&KeySpan::single(b"a")));
        assert!(!ab.intersects(&KeySpan::single(b"b")));
        assert!(ab.intersects(&KeySpan::new(b"aa", b"\0")));
        assert!(!ab.intersects(&KeySpan::new(b"b", b"c")));
        assert!(KeySpan::new(b"\0", b"\0").intersects(&KeySpan::single(b"x")));
    }
}
