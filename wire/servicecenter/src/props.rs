//! [`Props`]: the string maps of the v4 records (service and instance `properties`,
//! `LBStrategy`, Eureka `metadata`), kept compact.
//!
//! A registry holds one such map per instance, most with a handful of entries (the syncer's
//! three origin markers, say). A `BTreeMap<String, String>` spends a node of eleven slots
//! (about 540 bytes) on a map of one entry; [`Props`] is a `Vec` of (key, value) sorted by
//! key, of exact capacity: 48 bytes per entry plus the text. Lookups are a binary search.
//! It reads and writes the same JSON as the `BTreeMap` did: an object, written in key order;
//! when a key repeats, the last value wins (Go's `encoding/json` into a map, and serde's
//! `BTreeMap`, do the same).

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string map sorted by key, with the `BTreeMap` methods the project uses (see the
/// module docs for why it is not a `BTreeMap`). Keys are unique.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Props(Vec<(String, String)>);

impl Props {
    /// An empty map (no allocation).
    pub const fn new() -> Props {
        Props(Vec::new())
    }

    fn find<Q>(&self, key: &Q) -> Result<usize, usize>
    where
        String: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.0.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    /// The value of `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&String>
    where
        String: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).ok().map(|at| &self.0[at].1)
    }

    /// The value of `key`, to change.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut String>
    where
        String: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).ok().map(|at| &mut self.0[at].1)
    }

    /// Whether `key` is here.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        String: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`; returns the value it replaced. The list grows by one slot
    /// (exact capacity: most maps are written once and then only read).
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        match self.find(key.as_str()) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, value)),
            Err(at) => {
                self.0.reserve_exact(1);
                self.0.insert(at, (key, value));
                None
            }
        }
    }

    /// Removes `key`; returns its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<String>
    where
        String: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let at = self.find(key).ok()?;
        Some(self.0.remove(at).1)
    }

    /// Keeps the entries for which `keep(key, value)` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&String, &mut String) -> bool) {
        self.0.retain_mut(|(k, v)| keep(k, v));
    }

    /// Removes every entry (and frees the list).
    pub fn clear(&mut self) {
        self.0 = Vec::new();
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// (key, value) in key order.
    pub fn iter(&self) -> Iter<'_> {
        Iter(self.0.iter())
    }

    /// The keys in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &String> + ExactSizeIterator {
        self.0.iter().map(|(k, _)| k)
    }

    /// The values in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &String> + ExactSizeIterator {
        self.0.iter().map(|(_, v)| v)
    }

    /// The entries as a sorted slice.
    pub fn as_slice(&self) -> &[(String, String)] {
        &self.0
    }

    /// Builds the map from pairs in any order (a repeated key: the last value wins), of
    /// exact capacity.
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
        out.shrink_to_fit();
        Props(out)
    }
}

impl fmt::Debug for Props {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<Q> std::ops::Index<&Q> for Props
where
    String: Borrow<Q>,
    Q: Ord + ?Sized,
{
    type Output = String;

    /// The value of `key`.
    ///
    /// # Panics
    /// When `key` is not here (as `BTreeMap`'s index does).
    fn index(&self, key: &Q) -> &String {
        match self.get(key) {
            Some(v) => v,
            None => panic!("no entry found for key"),
        }
    }
}

/// (key, value) of a [`Props`], in key order.
#[derive(Clone)]
pub struct Iter<'a>(std::slice::Iter<'a, (String, String)>);

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a String, &'a String);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(k, v)| (k, v))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(|(k, v)| (k, v))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Props {
    type Item = (&'a String, &'a String);
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
        self.0.into_iter()
    }
}

impl FromIterator<(String, String)> for Props {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Props {
        Props::from_pairs(iter.into_iter().collect())
    }
}

impl Extend<(String, String)> for Props {
    /// Inserts each pair (a key already here takes the new value). Pairs in key order, as
    /// a sorted map yields them, are appended without a search.
    fn extend<I: IntoIterator<Item = (String, String)>>(&mut self, iter: I) {
        for (k, v) in iter {
            match self.0.last() {
                Some((last, _)) if *last >= k => {
                    self.insert(k, v);
                }
                _ => {
                    self.0.reserve_exact(1);
                    self.0.push((k, v));
                }
            }
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
        // Already sorted and unique; `collect` from an exact-size iterator is exact.
        Props(map.into_iter().collect())
    }
}

impl From<Props> for BTreeMap<String, String> {
    fn from(props: Props) -> BTreeMap<String, String> {
        props.0.into_iter().collect()
    }
}

impl Serialize for Props {
    /// A JSON object in key order.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
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
        assert_eq!(p.iter().collect::<Vec<_>>(), m.iter().collect::<Vec<_>>());
        assert_eq!(p.get("m"), Some(&s("4")));
        assert_eq!(p["z"], "3");
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
        assert_eq!(q["y"], "3");
    }
}
