//! [`Stamp`]: the `timestamp` and `modTimestamp` fields of the v4 records, kept without an
//! allocation.
//!
//! service-center writes both as unix seconds in a JSON string (`"1764528000"`). A registry
//! holds four of them per service with one instance; as `String`s they cost 24 bytes each
//! plus a heap block of 32 for ten digits. A [`Stamp`] is 16 bytes and allocates only for
//! text that is not such a number, which it keeps as given: it reads and writes the same
//! JSON as a `String` did.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A timestamp as service-center writes it: unix seconds in decimal, as text. Any other
/// text (empty, a leading zero, a sign, more than `u64` holds, not digits) is kept as given.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Stamp(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    /// Digits without a leading zero (or `0`), as their value.
    Secs(u64),
    /// Any other text, as given (an empty box does not allocate).
    Text(Box<str>),
}

impl Default for Stamp {
    /// The empty text (no allocation).
    fn default() -> Stamp {
        Stamp(Repr::Text(Box::default()))
    }
}

impl Stamp {
    /// `secs` written in decimal.
    pub const fn from_secs(secs: u64) -> Stamp {
        Stamp(Repr::Secs(secs))
    }

    /// The stamp of `text`: its value when it is a canonical decimal `u64`, else the text.
    pub fn parse(text: &str) -> Stamp {
        let canonical = !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_digit())
            && (text == "0" || !text.starts_with('0'));
        match text.parse::<u64>() {
            Ok(secs) if canonical => Stamp(Repr::Secs(secs)),
            _ => Stamp(Repr::Text(text.into())),
        }
    }

    /// The seconds, when the text is a number of them.
    pub fn secs(&self) -> Option<u64> {
        match self.0 {
            Repr::Secs(secs) => Some(secs),
            Repr::Text(_) => None,
        }
    }

    /// Whether the text is empty (the field is then left out of JSON).
    pub fn is_empty(&self) -> bool {
        matches!(&self.0, Repr::Text(t) if t.is_empty())
    }
}

impl fmt::Display for Stamp {
    /// The text, as read or as service-center writes the seconds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Secs(secs) => write!(f, "{secs}"),
            Repr::Text(t) => f.write_str(t),
        }
    }
}

impl fmt::Debug for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string(), f)
    }
}

impl From<&str> for Stamp {
    fn from(text: &str) -> Stamp {
        Stamp::parse(text)
    }
}

impl From<String> for Stamp {
    fn from(text: String) -> Stamp {
        Stamp::parse(&text)
    }
}

impl PartialEq<str> for Stamp {
    fn eq(&self, other: &str) -> bool {
        match &self.0 {
            Repr::Secs(_) => Stamp::parse(other) == *self,
            Repr::Text(t) => **t == *other,
        }
    }
}

impl PartialEq<&str> for Stamp {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl Serialize for Stamp {
    /// A JSON string, as the text was read (or the seconds in decimal).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Repr::Secs(secs) => {
                // u64::MAX has 20 digits.
                let mut buf = [0u8; 20];
                let mut at = buf.len();
                let mut n = *secs;
                loop {
                    at -= 1;
                    buf[at] = b'0' + (n % 10) as u8;
                    n /= 10;
                    if n == 0 {
                        break;
                    }
                }
                let digits = std::str::from_utf8(&buf[at..]).map_err(serde::ser::Error::custom)?;
                serializer.serialize_str(digits)
            }
            Repr::Text(t) => serializer.serialize_str(t),
        }
    }
}

impl<'de> Deserialize<'de> for Stamp {
    /// What a `String` field reads (a JSON string), kept as [`Stamp::parse`] says.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Stamp, D::Error> {
        struct StampVisitor;

        impl serde::de::Visitor<'_> for StampVisitor {
            type Value = Stamp;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Stamp, E> {
                Ok(Stamp::parse(v))
            }

            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Stamp, E> {
                match std::str::from_utf8(v) {
                    Ok(s) => Ok(Stamp::parse(s)),
                    Err(_) => Err(E::invalid_value(serde::de::Unexpected::Bytes(v), &self)),
                }
            }
        }

        deserializer.deserialize_string(StampVisitor)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stamps_read_and_write_the_json_of_a_string() {
        for text in [
            "1764528000",
            "0",
            "",
            "01",
            "-1",
            "+1",
            " 1",
            "1.5",
            "abc",
            "18446744073709551615",
            "18446744073709551616",
        ] {
            let json = serde_json::to_string(text).unwrap();
            let stamp: Stamp = serde_json::from_str(&json).unwrap();
            assert_eq!(serde_json::to_string(&stamp).unwrap(), json, "{text:?}");
            assert_eq!(stamp.to_string(), text);
            assert_eq!(stamp, *text);
            assert_eq!(stamp.is_empty(), text.is_empty());
        }
        assert!(serde_json::from_str::<Stamp>("1").is_err());
        assert!(serde_json::from_str::<Stamp>("null").is_err());
        assert!(serde_json::from_str::<String>("null").is_err());
    }

    #[test]
    fn canonical_seconds_take_no_allocation_and_other_text_is_kept() {
        assert_eq!(Stamp::parse("1764528000").secs(), Some(1_764_528_000));
        assert_eq!(Stamp::parse("1764528000"), Stamp::from_secs(1_764_528_000));
        assert_eq!(Stamp::parse("0").secs(), Some(0));
        assert_eq!(Stamp::parse("007").secs(), None);
        assert_eq!(Stamp::parse("007").to_string(), "007");
        assert_ne!(Stamp::parse("007"), Stamp::from_secs(7));
        assert_eq!(Stamp::default(), Stamp::parse(""));
        assert_eq!(std::mem::size_of::<Stamp>(), 16);
    }
}
