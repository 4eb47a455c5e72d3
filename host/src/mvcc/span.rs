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

    /// Every key starting with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        KeySpan::new(prefix, &prefix_end(prefix))
    }

    /// The prefix whose keys this span holds, for a span of a non-empty prefix (short of
    /// 0xff bytes: their spans have no end).
    pub fn as_prefix(&self) -> Option<&[u8]> {
        match &self.end {
            Some(Some(end)) if !self.start.is_empty() && *end == prefix_end(&self.start) => Some(&self.start),
            _ => None,
        }
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

/// etcd's range end for "every key starting with `prefix`".
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
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
    fn prefixes_become_etcd_spans() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
        assert_eq!(KeySpan::prefix(b"a/").as_prefix(), Some(&b"a/"[..]));
        assert_eq!(KeySpan::prefix(b"a\xff").as_prefix(), Some(&b"a\xff"[..]));
        assert_eq!(KeySpan::new(b"a/", b"a1").as_prefix(), None);
        assert_eq!(KeySpan::prefix(b"\xff").as_prefix(), None, "no end");
        assert_eq!(KeySpan::prefix(b"").as_prefix(), None);
        assert_eq!(KeySpan::single(b"a").as_prefix(), None);
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
