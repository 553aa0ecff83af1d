//! [`Props`]: the string maps of the v4 records (service and instance `properties`,
//! `LBStrategy`, Eureka `metadata`), kept compact.
//!
//! A registry holds one such map per instance, most with a handful of entries (the syncer's
//! origin markers, say). A `BTreeMap<String, String>` spends a node of eleven slots (about
//! 540 bytes) on a map of one entry, and even a sorted `Vec` of `String` pairs costs one
//! heap block per key and per value (a 32-byte block for every short text, plus malloc's
//! header) besides the list. [`Props`] keeps the whole map in two blocks: the text of every
//! key and value, run together in key order, and where each ends. Lookups are a binary
//! search; a change rebuilds the map (maps are written once and then read).
//! It reads and writes the same JSON as the `BTreeMap` did: an object, written in key order;
//! when a key repeats, the last value wins (Go's `encoding/json` into a map, and serde's
//! `BTreeMap`, do the same).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string map sorted by key, with the `BTreeMap` methods the project uses (see the
/// module docs for why it is not a `BTreeMap`). Keys are unique. Reads hand out `&str`.
///
/// The text of one map is at most `u32::MAX` bytes (a request body is far smaller); a
/// longer map keeps its first entries that fit.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Props {
    /// Every key and value, in key order: key 0, value 0, key 1, ...
    text: Box<str>,
    /// Where each key and each value ends in `text` (2 per entry).
    ends: Box<[u32]>,
}

impl Props {
    /// An empty map (no allocation).
    pub fn new() -> Props {
        Props::default()
    }

    fn at(&self, i: usize) -> usize {
        self.ends.get(i).map_or(0, |&e| e as usize)
    }

    /// The key of entry `i` (empty when out of range).
    fn key(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.at(2 * i - 1) };
        self.text.get(start..self.at(2 * i)).unwrap_or("")
    }

    /// The value of entry `i` (empty when out of range).
    fn value(&self, i: usize) -> &str {
        self.text
            .get(self.at(2 * i)..self.at(2 * i + 1))
            .unwrap_or("")
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key(mid).cmp(key) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.find(key).ok().map(|at| self.value(at))
    }

    /// Whether `key` is here.
    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`; returns the value it replaced. Rebuilds the map.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        let old = self.get(&key).map(str::to_owned);
        let mut pairs = self.to_pairs();
        match pairs.binary_search_by(|(k, _)| k.as_str().cmp(&key)) {
            Ok(at) => pairs[at].1 = value,
            Err(at) => pairs.insert(at, (key, value)),
        }
        *self = Props::from_sorted(&pairs);
        old
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let at = self.find(key).ok()?;
        let mut pairs = self.to_pairs();
        let (_, old) = pairs.remove(at);
        *self = Props::from_sorted(&pairs);
        Some(old)
    }

    /// Keeps the entries for which `keep(key, value)` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        let kept: Vec<(&str, &str)> = self.iter().filter(|(k, v)| keep(k, v)).collect();
        if kept.len() != self.len() {
            *self = Props::from_sorted(&kept);
        }
    }

    /// Removes every entry (and frees the map).
    pub fn clear(&mut self) {
        *self = Props::default();
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.ends.len() / 2
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// (key, value) in key order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            props: self,
            front: 0,
            back: self.len(),
        }
    }

    /// The keys in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator {
        self.iter().map(|(k, _)| k)
    }

    /// The values in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator {
        self.iter().map(|(_, v)| v)
    }

    fn to_pairs(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// The map of `pairs`, already sorted by key and unique, in two exact allocations.
    fn from_sorted<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Props {
        let len: usize = pairs
            .iter()
            .map(|(k, v)| k.as_ref().len() + v.as_ref().len())
            .sum();
        let mut text = String::with_capacity(len.min(u32::MAX as usize));
        let mut ends = Vec::with_capacity(2 * pairs.len());
        for (k, v) in pairs {
            let (k, v) = (k.as_ref(), v.as_ref());
            if text.len() + k.len() + v.len() > u32::MAX as usize {
                break;
            }
            text.push_str(k);
            ends.push(text.len() as u32);
            text.push_str(v);
            ends.push(text.len() as u32);
        }
        Props {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }

    /// Builds the map from pairs in any order (a repeated key: the last value wins).
    fn from_pairs(mut pairs: Vec<(String, String)>) -> Props {
        // Stable: equal keys stay in arrival order, so keeping the last keeps the last value.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(String, String)> = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => out.push((k, v)),
            }
        }
        Props::from_sorted(&out)
    }
}

impl PartialOrd for Props {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Entry by entry, (key, value) in key order (the order of a list of pairs).
impl Ord for Props {
    fn cmp(&self, other: &Self) -> Ordering {
        self.iter().cmp(other.iter())
    }
}

impl fmt::Debug for Props {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl std::ops::Index<&str> for Props {
    type Output = str;

    /// The value of `key`.
    ///
    /// # Panics
    /// When `key` is not here (as `BTreeMap`'s index does).
    fn index(&self, key: &str) -> &str {
        match self.get(key) {
            Some(v) => v,
            None => panic!("no entry found for key"),
        }
    }
}

/// (key, value) of a [`Props`], in key order.
#[derive(Clone)]
pub struct Iter<'a> {
    props: &'a Props,
    /// The next entry from the front.
    front: usize,
    /// One past the next entry from the back.
    back: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        if self.front >= self.back {
            return None;
        }
        let i = self.front;
        self.front += 1;
        Some((self.props.key(i), self.props.value(i)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.back.saturating_sub(self.front);
        (n, Some(n))
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.front >= self.back {
            return None;
        }
        self.back -= 1;
        let i = self.back;
        Some((self.props.key(i), self.props.value(i)))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Props {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl IntoIterator for Props {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;

    /// (key, value) in key order.
    fn into_iter(self) -> Self::IntoIter {
        self.to_pairs().into_iter()
    }
}

impl FromIterator<(String, String)> for Props {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Props {
        Props::from_pairs(iter.into_iter().collect())
    }
}

impl Extend<(String, String)> for Props {
    /// Inserts each pair (a key already here takes the new value); rebuilds the map once.
    fn extend<I: IntoIterator<Item = (String, String)>>(&mut self, iter: I) {
        let mut pairs = self.to_pairs();
        let before = pairs.len();
        pairs.extend(iter);
        if pairs.len() != before {
            *self = Props::from_pairs(pairs);
        }
    }
}

impl<const N: usize> From<[(String, String); N]> for Props {
    fn from(pairs: [(String, String); N]) -> Props {
        Props::from_pairs(pairs.into())
    }
}

impl From<BTreeMap<String, String>> for Props {
    fn from(map: BTreeMap<String, String>) -> Props {
        // Already sorted and unique.
        let pairs: Vec<(&String, &String)> = map.iter().collect();
        Props::from_sorted(&pairs)
    }
}

impl From<Props> for BTreeMap<String, String> {
    fn from(props: Props) -> BTreeMap<String, String> {
        props
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

impl Serialize for Props {
    /// A JSON object in key order.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Props {
    /// A JSON object of strings; a repeated key keeps its last value.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Props, D::Error> {
        struct PropsVisitor;

        impl<'de> Visitor<'de> for PropsVisitor {
            type Value = Props;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Props, A::Error> {
                // The hint is the sender's word: cap what it may make us reserve.
                let mut pairs = Vec::with_capacity(access.size_hint().unwrap_or(0).min(64));
                while let Some(pair) = access.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(Props::from_pairs(pairs))
            }
        }

        deserializer.deserialize_map(PropsVisitor)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn s(v: &str) -> String {
        v.to_owned()
    }

    #[test]
    fn props_read_and_write_the_json_of_a_btreemap() {
        let text = r#"{"b":"2","a":"1","c":"3","a":"4"}"#;
        let props: Props = serde_json::from_str(text).unwrap();
        let map: BTreeMap<String, String> = serde_json::from_str(text).unwrap();
        assert_eq!(
            serde_json::to_string(&props).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
        assert_eq!(
            serde_json::to_string(&props).unwrap(),
            r#"{"a":"4","b":"2","c":"3"}"#
        );
        assert_eq!(BTreeMap::from(props.clone()), map);
        assert_eq!(Props::from(map), props);
        assert!(serde_json::from_str::<Props>(r#"{"a":1}"#).is_err());
        assert!(serde_json::from_str::<Props>("[]").is_err());
        assert_eq!(serde_json::from_str::<Props>("{}").unwrap(), Props::new());
    }

    #[test]
    fn props_stay_sorted_and_unique_like_a_btreemap() {
        let mut p = Props::new();
        let mut m = BTreeMap::new();
        for (k, v) in [("m", "1"), ("a", "2"), ("z", "3"), ("m", "4"), ("b", "5")] {
            assert_eq!(p.insert(s(k), s(v)), m.insert(s(k), s(v)));
        }
        assert_eq!(
            p.iter().collect::<Vec<_>>(),
            m.iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>()
        );
        assert_eq!(p.iter().next_back(), Some(("z", "3")));
        assert_eq!(p.get("m"), Some("4"));
        assert_eq!(&p["z"], "3");
        assert!(p.contains_key("a") && !p.contains_key("c"));
        assert_eq!(p.remove("a"), m.remove("a"));
        assert_eq!(p.remove("a"), None);
        p.retain(|k, _| k != "b");
        m.retain(|k, _| k != "b");
        assert_eq!(
            p.clone().into_iter().collect::<Vec<_>>(),
            m.clone().into_iter().collect::<Vec<_>>()
        );
        p.extend([(s("c"), s("6")), (s("m"), s("7"))]);
        m.extend([(s("c"), s("6")), (s("m"), s("7"))]);
        assert_eq!(BTreeMap::from(p.clone()), m);
        assert_eq!(p.len(), 3);
        let q: Props = [(s("y"), s("1")), (s("x"), s("2")), (s("y"), s("3"))].into();
        assert_eq!(q.keys().collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!(&q["y"], "3");
    }

    #[test]
    fn props_keep_every_text_in_two_blocks_and_order_like_a_list_of_pairs() {
        let p: Props = [(s(""), s("")), (s("k"), s("")), (s("é"), s("ü"))].into();
        assert_eq!(p.len(), 3);
        assert_eq!(p.get(""), Some(""));
        assert_eq!(p.get("k"), Some(""));
        assert_eq!(p.get("é"), Some("ü"));
        assert_eq!(p.get("x"), None);
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"":"","k":"","é":"ü"}"#
        );
        let a: Props = [(s("a"), s("1"))].into();
        let b: Props = [(s("a"), s("2"))].into();
        let c: Props = [(s("a"), s("1")), (s("b"), s("0"))].into();
        assert!(a < b && a < c && c < b && Props::new() < a);
        let mut d = c.clone();
        assert_eq!(d.insert(s("a"), s("9")), Some(s("1")));
        assert_eq!(d.remove("b"), Some(s("0")));
        assert_eq!(d, [(s("a"), s("9"))].into());
        d.clear();
        assert!(d.is_empty() && d == Props::new());
    }
}
