//! Gossip encryption (`--encrypt`, `--keyring-file`): every UDP datagram is sealed with
//! XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`) under a key of the pool's
//! [`Keyring`], and carries its sender's clock so that a recorded datagram cannot be played
//! again.
//!
//! # Wire format
//!
//! ```text
//! nonce (24 bytes, random) || AEAD( sent_at_ms (8 bytes, big-endian) || foca datagram ) || tag (16 bytes)
//! ```
//!
//! `sent_at_ms` is the sender's wall clock in milliseconds since the Unix epoch; it is inside
//! the authenticated plaintext, so it cannot be altered without the key. The overhead is
//! 48 bytes per datagram (foca writes at most 1,400, so a sealed datagram stays under a
//! 1,500-byte MTU). XChaCha's 192-bit nonce makes random nonces safe however many datagrams
//! are sent. (Changed before 1.0: the first format had no `sent_at_ms`; members of the two
//! formats do not open each other's datagrams.)
//!
//! # Keyring
//!
//! A [`Keyring`] is an ordered list of keys: the first seals, any of them opens. That is how
//! keys are rotated without a moment where two members disagree: install the new key
//! everywhere as a second key, make it first everywhere, then remove the old one (see
//! docs/cluster.md). `--encrypt KEY` is a keyring of one key.
//!
//! # Replay protection
//!
//! A datagram is opened (authenticated) first; then it is refused when
//! - its `sent_at_ms` is more than [`REPLAY_WINDOW`] away from the receiver's clock, in
//!   either direction: **members' clocks must agree within [`REPLAY_WINDOW`]** (NTP does
//!   this easily); datagrams from a member whose clock is further off are dropped as stale;
//! - it was already received: the receiver remembers `(sent_at_ms, nonce)` of every datagram
//!   it accepted inside the window, at most [`REPLAY_CACHE_CAPACITY`] of them. A remembered
//!   datagram is forgotten once it falls out of the window, and from then on everything sent
//!   at or before it is refused (so a clock stepping back cannot let it in again). When the
//!   cache is full, its oldest entry is forgotten the same way: under such load the window
//!   narrows from its old end, and a replay is never let through.
//!
//! A datagram recorded on its way to one member and replayed to another is refused by foca
//! itself: every foca message names its addressee (identity and generation; an announce, its
//! address), and foca ignores what is not addressed to it.
//!
//! Keys are 32 bytes given in base64 (`syncer keygen`), as serf's and memberlist's
//! `-encrypt` keys are. Keys never appear in `Debug` output, logs, or error messages.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Length of a key, bytes.
pub const KEY_BYTES: usize = 32;

/// Length of the nonce that starts every sealed datagram, bytes.
pub const NONCE_BYTES: usize = 24;

/// Length of the sender's clock at the start of the sealed plaintext, bytes.
pub const SENT_AT_BYTES: usize = 8;

/// Length of the authentication tag at the end of a sealed datagram, bytes.
pub const TAG_BYTES: usize = 16;

/// Bytes a sealed datagram has beyond the foca datagram inside it.
pub const OVERHEAD_BYTES: usize = NONCE_BYTES + SENT_AT_BYTES + TAG_BYTES;

/// Most keys a [`Keyring`] holds. Every key is tried on a datagram that does not open, so the
/// bound caps the work a stranger's junk costs; a rotation needs two.
pub const MAX_KEYRING_KEYS: usize = 16;

/// [`REPLAY_WINDOW`] in milliseconds.
pub const REPLAY_WINDOW_MS: u64 = 30_000;

/// How far a datagram's `sent_at_ms` may be from the receiver's clock, either way. Members'
/// clocks must agree within it.
pub const REPLAY_WINDOW: Duration = Duration::from_millis(REPLAY_WINDOW_MS);

/// Most datagrams the replay cache remembers (each 32 bytes plus the B-tree's overhead:
/// about 3 MB when full). A member receives some tens of datagrams a second with a 1 s
/// probe period, about a thousand inside the window; past the capacity, the window narrows
/// (see the module doc).
pub const REPLAY_CACHE_CAPACITY: usize = 65_536;

/// A gossip key that is not 32 bytes of base64. The message never quotes the key.
#[derive(Debug, thiserror::Error)]
#[error("a gossip key must be {KEY_BYTES} bytes in base64 (e.g. from `syncer keygen`): {reason}")]
pub struct KeyError {
    reason: String,
}

/// One gossip key. Its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct GossipKey([u8; KEY_BYTES]);

impl GossipKey {
    /// Parses a base64 key of [`KEY_BYTES`] bytes (standard alphabet, padding optional).
    ///
    /// # Errors
    /// [`KeyError`] for text that is not base64 or not 32 bytes long; it says where the text
    /// is wrong, never what it holds.
    pub fn from_base64(text: &str) -> Result<GossipKey, KeyError> {
        use base64::DecodeError;
        let text = text.trim();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .map_err(|e| KeyError {
                // base64's own messages quote the offending character: a piece of the key.
                reason: match e {
                    DecodeError::InvalidByte(at, _) => {
                        format!("not base64 (a bad character at offset {at})")
                    }
                    DecodeError::InvalidLastSymbol(at, _) => {
                        format!("not base64 (a bad last character at offset {at})")
                    }
                    DecodeError::InvalidLength(_) => "not base64 (a bad length)".to_owned(),
                    DecodeError::InvalidPadding => "not base64 (bad padding)".to_owned(),
                },
            })?;
        let key: [u8; KEY_BYTES] = bytes.as_slice().try_into().map_err(|_| KeyError {
            reason: format!("got {} bytes", bytes.len()),
        })?;
        Ok(GossipKey(key))
    }

    /// The key as raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> GossipKey {
        GossipKey(bytes)
    }
}

impl fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GossipKey(<redacted>)")
    }
}

/// A new random key (from the OS's generator) in base64, as `syncer keygen` prints it.
pub fn generate_base64() -> String {
    let key = XChaCha20Poly1305::generate_key(&mut OsRng);
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// The pool's keys, in order: the first seals what this member sends, any of them opens what
/// it receives. Never empty, at most [`MAX_KEYRING_KEYS`]. Its `Debug` output shows only the
/// number of keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<GossipKey>,
}

impl Keyring {
    /// A keyring of `keys`, the first sealing; `None` when there are none or more than
    /// [`MAX_KEYRING_KEYS`].
    pub fn new(keys: Vec<GossipKey>) -> Option<Keyring> {
        (!keys.is_empty() && keys.len() <= MAX_KEYRING_KEYS).then_some(Keyring { keys })
    }

    /// The keyring of one key (`--encrypt`).
    pub fn single(key: GossipKey) -> Keyring {
        Keyring { keys: vec![key] }
    }

    /// How many keys it holds (at least 1).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always `false`: a keyring holds at least one key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `other` seals with the same key as this one.
    pub fn same_primary(&self, other: &Keyring) -> bool {
        self.keys.first() == other.keys.first()
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyring({} keys, <redacted>)", self.keys.len())
    }
}

/// Why a received datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Too short, or no key of the keyring opens it (another key, no key, forged, junk).
    Undecryptable,
    /// Sent more than [`REPLAY_WINDOW`] away from our clock; `skew_ms` is its `sent_at_ms`
    /// minus our clock (negative: from the past).
    OutsideWindow {
        /// Sender's clock minus ours, milliseconds.
        skew_ms: i64,
    },
    /// Received before (same `sent_at_ms` and nonce) inside the window.
    Replayed,
    /// Inside the window, but at or before a datagram the replay cache forgot (it was full,
    /// or our clock stepped back): it may be a replay, so it is refused.
    Forgotten,
}

/// The `(sent_at_ms, nonce)` of the datagrams accepted inside the window.
#[derive(Debug)]
struct ReplayCache {
    /// Ordered by time, so what leaves the window is at the front.
    seen: BTreeSet<(u64, [u8; NONCE_BYTES])>,
    /// Datagrams sent before this (ms since the epoch) are refused: one past the newest
    /// `sent_at_ms` the cache forgot. Never goes back.
    floor_ms: u64,
    /// Most entries in `seen`.
    capacity: usize,
}

impl ReplayCache {
    fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            seen: BTreeSet::new(),
            floor_ms: 0,
            capacity: capacity.max(1),
        }
    }

    /// Records a datagram that passed the window check at `now_ms`.
    fn admit(
        &mut self,
        sent_at_ms: u64,
        nonce: [u8; NONCE_BYTES],
        now_ms: u64,
    ) -> Result<(), Refused> {
        let horizon = now_ms.saturating_sub(REPLAY_WINDOW_MS);
        while let Some(&(oldest, _)) = self.seen.first() {
            if oldest >= horizon {
                break;
            }
            self.forget_oldest();
        }
        if sent_at_ms < self.floor_ms {
            return Err(Refused::Forgotten);
        }
        if !self.seen.insert((sent_at_ms, nonce)) {
            return Err(Refused::Replayed);
        }
        if self.seen.len() > self.capacity {
            self.forget_oldest();
        }
        Ok(())
    }

    fn forget_oldest(&mut self) {
        if let Some((oldest, _)) = self.seen.pop_first() {
            self.floor_ms = self.floor_ms.max(oldest.saturating_add(1));
        }
    }
}

/// Seals and opens datagrams under a [`Keyring`], and refuses replays (see the module doc).
pub(crate) struct Cipher {
    /// The keys, to tell what a new keyring changes.
    keyring: Keyring,
    /// One AEAD per key of the keyring, in its order: the first seals.
    keys: Vec<XChaCha20Poly1305>,
    /// Kept across keyring changes: a replay is a replay whichever key sealed it.
    replays: ReplayCache,
}

impl Cipher {
    pub(crate) fn new(keyring: &Keyring) -> Cipher {
        Cipher::with_capacity(keyring, REPLAY_CACHE_CAPACITY)
    }

    fn with_capacity(keyring: &Keyring, capacity: usize) -> Cipher {
        Cipher {
            keyring: keyring.clone(),
            keys: aeads(keyring),
            replays: ReplayCache::new(capacity),
        }
    }

    /// Seals with the first key of `keyring` and opens with any of its keys from now on; the
    /// replay cache stays. Returns whether the sealing key changed.
    pub(crate) fn set_keyring(&mut self, keyring: &Keyring) -> bool {
        let primary_changed = !self.keyring.same_primary(keyring);
        self.keyring = keyring.clone();
        self.keys = aeads(keyring);
        primary_changed
    }

    /// `nonce || AEAD(sent_at_ms || plain) || tag` under the first key, stamped `now_ms`
    /// (ms since the Unix epoch); `None` only if the AEAD refuses (it does not for datagram
    /// sizes).
    pub(crate) fn seal(&self, plain: &[u8], now_ms: u64) -> Option<Vec<u8>> {
        let aead = self.keys.first()?;
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut stamped = Vec::with_capacity(SENT_AT_BYTES + plain.len());
        stamped.extend_from_slice(&now_ms.to_be_bytes());
        stamped.extend_from_slice(plain);
        let sealed = aead.encrypt(&nonce, stamped.as_slice()).ok()?;
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Some(out)
    }

    /// The foca datagram inside a sealed one received at `now_ms` (ms since the Unix epoch).
    ///
    /// # Errors
    /// [`Refused`]: it does not open with any key, it was sent outside [`REPLAY_WINDOW`], or
    /// it is (or may be) a replay.
    pub(crate) fn open(&mut self, data: &[u8], now_ms: u64) -> Result<Vec<u8>, Refused> {
        if data.len() < OVERHEAD_BYTES {
            return Err(Refused::Undecryptable);
        }
        let (nonce, sealed) = data.split_at(NONCE_BYTES);
        let nonce = XNonce::from_slice(nonce);
        let mut stamped = self
            .keys
            .iter()
            .find_map(|aead| aead.decrypt(nonce, sealed).ok())
            .ok_or(Refused::Undecryptable)?;
        let (sent_at, _) = stamped
            .split_first_chunk::<SENT_AT_BYTES>()
            .ok_or(Refused::Undecryptable)?;
        let sent_at_ms = u64::from_be_bytes(*sent_at);
        if sent_at_ms.abs_diff(now_ms) > REPLAY_WINDOW_MS {
            let skew = i128::from(sent_at_ms) - i128::from(now_ms);
            return Err(Refused::OutsideWindow {
                skew_ms: i64::try_from(skew).unwrap_or(if skew < 0 { i64::MIN } else { i64::MAX }),
            });
        }
        self.replays.admit(sent_at_ms, (*nonce).into(), now_ms)?;
        stamped.drain(..SENT_AT_BYTES);
        Ok(stamped)
    }
}

fn aeads(keyring: &Keyring) -> Vec<XChaCha20Poly1305> {
    keyring
        .keys
        .iter()
        .map(|key| XChaCha20Poly1305::new(&key.0.into()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Some fixed wall-clock time, ms since the epoch.
    const NOW: u64 = 1_800_000_000_000;

    fn key(byte: u8) -> GossipKey {
        GossipKey::from_bytes([byte; KEY_BYTES])
    }

    fn ring(bytes: &[u8]) -> Keyring {
        Keyring::new(bytes.iter().map(|b| key(*b)).collect()).expect("1 to 16 keys")
    }

    #[test]
    fn a_sealed_datagram_opens_with_the_same_key_only() {
        let sealed = Cipher::new(&ring(&[7])).seal(b"ping", NOW).expect("seal");
        assert_eq!(sealed.len(), OVERHEAD_BYTES + 4);
        assert_eq!(
            Cipher::new(&ring(&[7])).open(&sealed, NOW).as_deref(),
            Ok(&b"ping"[..])
        );
        assert_eq!(
            Cipher::new(&ring(&[8])).open(&sealed, NOW),
            Err(Refused::Undecryptable)
        );
        assert_eq!(
            Cipher::new(&ring(&[7])).open(b"ping", NOW),
            Err(Refused::Undecryptable)
        );
        assert_eq!(
            Cipher::new(&ring(&[7])).open(&[0; 100], NOW),
            Err(Refused::Undecryptable)
        );
    }

    #[test]
    fn a_tampered_datagram_does_not_open() {
        let mut sealed = Cipher::new(&ring(&[7])).seal(b"ping", NOW).expect("seal");
        // The clock is the first byte after the nonce: moving it forward breaks the tag.
        sealed[NONCE_BYTES] ^= 1;
        assert_eq!(
            Cipher::new(&ring(&[7])).open(&sealed, NOW),
            Err(Refused::Undecryptable)
        );
    }

    #[test]
    fn two_seals_of_one_datagram_differ() {
        let cipher = Cipher::new(&ring(&[1]));
        assert_ne!(cipher.seal(b"x", NOW), cipher.seal(b"x", NOW));
    }

    #[test]
    fn the_first_key_seals_and_any_key_opens() {
        let old_new = Cipher::new(&ring(&[1, 2]));
        let sealed = old_new.seal(b"hello", NOW).expect("seal");
        // Sealed with the first key (1): a member holding only 1 opens it, one holding only
        // 2 does not.
        assert!(Cipher::new(&ring(&[1])).open(&sealed, NOW).is_ok());
        assert_eq!(
            Cipher::new(&ring(&[2])).open(&sealed, NOW),
            Err(Refused::Undecryptable)
        );
        // Any key of the receiver's keyring opens, whatever its position.
        let from_new = Cipher::new(&ring(&[2])).seal(b"hi", NOW).expect("seal");
        let mut receiver = Cipher::new(&ring(&[1, 3, 2]));
        assert_eq!(receiver.open(&from_new, NOW).as_deref(), Ok(&b"hi"[..]));
        assert!(receiver.open(&sealed, NOW).is_ok());
    }

    #[test]
    fn a_removed_key_no_longer_opens() {
        let from_old = Cipher::new(&ring(&[1])).seal(b"a", NOW).expect("seal");
        let mut receiver = Cipher::new(&ring(&[2, 1]));
        assert!(receiver.open(&from_old, NOW).is_ok());
        assert!(!receiver.set_keyring(&ring(&[2])), "2 still seals");
        let again = Cipher::new(&ring(&[1])).seal(b"b", NOW).expect("seal");
        assert_eq!(receiver.open(&again, NOW), Err(Refused::Undecryptable));
        // And what the receiver sends now is sealed with the new first key.
        let sent = receiver.seal(b"c", NOW).expect("seal");
        assert!(Cipher::new(&ring(&[2])).open(&sent, NOW).is_ok());
        assert_eq!(
            Cipher::new(&ring(&[1])).open(&sent, NOW),
            Err(Refused::Undecryptable)
        );
    }

    #[test]
    fn a_replayed_datagram_is_dropped() {
        let sender = Cipher::new(&ring(&[1]));
        let mut receiver = Cipher::new(&ring(&[1]));
        let sealed = sender.seal(b"leave", NOW).expect("seal");
        assert!(receiver.open(&sealed, NOW).is_ok());
        assert_eq!(receiver.open(&sealed, NOW + 10), Err(Refused::Replayed));
        assert_eq!(
            receiver.open(&sealed, NOW + REPLAY_WINDOW_MS),
            Err(Refused::Replayed)
        );
        // Still a replay after a key rotation on the receiver.
        assert!(receiver.set_keyring(&ring(&[2, 1])));
        assert_eq!(receiver.open(&sealed, NOW + 20), Err(Refused::Replayed));
        // Once out of the window it is refused as stale.
        assert!(matches!(
            receiver.open(&sealed, NOW + REPLAY_WINDOW_MS + 1),
            Err(Refused::OutsideWindow { skew_ms }) if skew_ms == -(REPLAY_WINDOW_MS as i64) - 1
        ));
        // Another datagram sent in the same millisecond is no replay.
        let twin = sender.seal(b"leave", NOW).expect("seal");
        assert!(receiver.open(&twin, NOW + 30).is_ok());
    }

    #[test]
    fn a_datagram_older_than_the_window_is_dropped() {
        let sender = Cipher::new(&ring(&[1]));
        let mut receiver = Cipher::new(&ring(&[1]));
        let old = sender
            .seal(b"ping", NOW - REPLAY_WINDOW_MS - 1)
            .expect("seal");
        assert_eq!(
            receiver.open(&old, NOW),
            Err(Refused::OutsideWindow {
                skew_ms: -(REPLAY_WINDOW_MS as i64) - 1
            })
        );
        let just_inside = sender.seal(b"ping", NOW - REPLAY_WINDOW_MS).expect("seal");
        assert!(receiver.open(&just_inside, NOW).is_ok());
    }

    #[test]
    fn a_datagram_from_the_far_future_is_dropped() {
        let sender = Cipher::new(&ring(&[1]));
        let mut receiver = Cipher::new(&ring(&[1]));
        let ahead = sender.seal(b"ping", NOW + 3_600_000).expect("seal");
        assert_eq!(
            receiver.open(&ahead, NOW),
            Err(Refused::OutsideWindow { skew_ms: 3_600_000 })
        );
        let from_u64_max = sender.seal(b"ping", u64::MAX).expect("seal");
        assert!(matches!(
            receiver.open(&from_u64_max, NOW),
            Err(Refused::OutsideWindow { skew_ms }) if skew_ms > 0
        ));
        let slightly_ahead = sender.seal(b"ping", NOW + REPLAY_WINDOW_MS).expect("seal");
        assert!(receiver.open(&slightly_ahead, NOW).is_ok());
    }

    #[test]
    fn a_datagram_forgotten_by_the_cache_cannot_come_back_when_the_clock_steps_back() {
        let sender = Cipher::new(&ring(&[1]));
        let mut receiver = Cipher::new(&ring(&[1]));
        let first = sender.seal(b"a", NOW).expect("seal");
        assert!(receiver.open(&first, NOW).is_ok());
        // Later, the cache forgets it (out of the window)...
        let later = sender.seal(b"b", NOW + REPLAY_WINDOW_MS + 5).expect("seal");
        assert!(receiver.open(&later, NOW + REPLAY_WINDOW_MS + 5).is_ok());
        assert_eq!(receiver.replays.seen.len(), 1);
        // ...then the receiver's clock steps back: the forgotten datagram is still refused.
        assert_eq!(receiver.open(&first, NOW + 1), Err(Refused::Forgotten));
    }

    #[test]
    fn the_replay_cache_stays_bounded_and_never_lets_a_replay_through() {
        const CAPACITY: usize = 8;
        let sender = Cipher::new(&ring(&[1]));
        let mut receiver = Cipher::with_capacity(&ring(&[1]), CAPACITY);
        let sealed: Vec<Vec<u8>> = (0..100)
            .map(|i| sender.seal(b"gossip", NOW + i).expect("seal"))
            .collect();
        for (i, datagram) in sealed.iter().enumerate() {
            assert!(receiver.open(datagram, NOW + 100).is_ok(), "datagram {i}");
            assert!(receiver.replays.seen.len() <= CAPACITY);
        }
        assert_eq!(receiver.replays.seen.len(), CAPACITY);
        // Every one of them, remembered or forgotten, is refused a second time.
        for datagram in &sealed {
            assert!(matches!(
                receiver.open(datagram, NOW + 100),
                Err(Refused::Replayed | Refused::Forgotten)
            ));
        }
        // Fresh datagrams still pass.
        let fresh = sender.seal(b"gossip", NOW + 101).expect("seal");
        assert!(receiver.open(&fresh, NOW + 101).is_ok());
        assert_eq!(receiver.replays.seen.len(), CAPACITY);
    }

    #[test]
    fn keyrings_hold_one_to_sixteen_keys_and_never_show_them() {
        assert!(Keyring::new(Vec::new()).is_none());
        assert!(Keyring::new(vec![key(1); MAX_KEYRING_KEYS]).is_some());
        assert!(Keyring::new(vec![key(1); MAX_KEYRING_KEYS + 1]).is_none());
        let keyring = ring(&[1, 2]);
        assert_eq!(keyring.len(), 2);
        assert_eq!(format!("{keyring:?}"), "Keyring(2 keys, <redacted>)");
        assert!(keyring.same_primary(&ring(&[1])));
        assert!(!keyring.same_primary(&ring(&[2, 1])));
    }

    #[test]
    fn keys_are_32_bytes_of_base64() {
        let text = base64::engine::general_purpose::STANDARD.encode([3u8; 32]);
        assert_eq!(
            GossipKey::from_base64(&text).expect("valid"),
            GossipKey::from_bytes([3; 32])
        );
        assert!(GossipKey::from_base64(text.trim_end_matches('=')).is_ok());
        assert!(GossipKey::from_base64("c2hvcnQ=").is_err());
        assert!(GossipKey::from_base64("not base64!").is_err());
        assert_eq!(
            format!("{:?}", GossipKey::from_bytes([3; 32])),
            "GossipKey(<redacted>)"
        );
    }

    #[test]
    fn a_bad_key_is_not_quoted_in_its_error() {
        // A secret-looking key with one bad character: neither it nor the character shows.
        let text = "Zm9vYmFyYmF6cXV4!mFyYmF6cXV4Zm9vYmFyYmF6cXU=";
        let message = GossipKey::from_base64(text).expect_err("bad").to_string();
        assert!(message.contains("offset 16"), "{message}");
        assert!(!message.contains("Zm9v"), "{message}");
        assert!(!message.contains('!'), "{message}");
        assert!(!message.contains("33"), "the byte value of '!': {message}");
    }

    #[test]
    fn generated_keys_are_valid_and_differ() {
        let one = generate_base64();
        assert!(GossipKey::from_base64(&one).is_ok());
        assert_ne!(one, generate_base64());
    }
}
