//! Gossip encryption (`--encrypt`): every UDP datagram is sealed with XChaCha20-Poly1305
//! (RustCrypto's `chacha20poly1305`) under a key shared by the whole pool.
//!
//! Wire format of a sealed datagram: a fresh random 24-byte nonce, then the ciphertext with
//! its 16-byte tag (40 bytes of overhead). XChaCha's 192-bit nonce makes random nonces safe
//! however many datagrams are sent. A datagram that does not open (wrong key, no key, junk) is
//! dropped before foca sees it, so a member without the right key cannot join.
//!
//! The key is 32 bytes given in base64 (`head -c 32 /dev/urandom | base64`), as serf's and
//! memberlist's `-encrypt` keys are.

use std::fmt;

use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Length of the key, bytes.
pub const KEY_BYTES: usize = 32;

/// Length of the nonce that starts every sealed datagram, bytes.
pub const NONCE_BYTES: usize = 24;

/// A gossip key that is not 32 bytes of base64.
#[derive(Debug, thiserror::Error)]
#[error("the gossip key must be {KEY_BYTES} bytes in base64 (e.g. `head -c 32 /dev/urandom | base64`): {reason}")]
pub struct KeyError {
    reason: String,
}

/// The shared gossip key. Its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct GossipKey([u8; KEY_BYTES]);

impl GossipKey {
    /// Parses a base64 key of [`KEY_BYTES`] bytes (standard alphabet, padding optional).
    ///
    /// # Errors
    /// [`KeyError`] for text that is not base64 or not 32 bytes long.
    pub fn from_base64(text: &str) -> Result<GossipKey, KeyError> {
        let text = text.trim();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .map_err(|e| KeyError {
                reason: e.to_string(),
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

/// Seals and opens datagrams under one [`GossipKey`].
pub(crate) struct Cipher {
    aead: XChaCha20Poly1305,
}

impl Cipher {
    pub(crate) fn new(key: &GossipKey) -> Cipher {
        Cipher {
            aead: XChaCha20Poly1305::new(&key.0.into()),
        }
    }

    /// `nonce || ciphertext || tag`; `None` only if the AEAD refuses (it does not for
    /// datagram sizes).
    pub(crate) fn seal(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self.aead.encrypt(&nonce, plain).ok()?;
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Some(out)
    }

    /// The plaintext of a sealed datagram; `None` when it was not sealed under this key.
    pub(crate) fn open(&self, data: &[u8]) -> Option<Vec<u8>> {
        if data.len() < NONCE_BYTES {
            return None;
        }
        let (nonce, sealed) = data.split_at(NONCE_BYTES);
        self.aead.decrypt(XNonce::from_slice(nonce), sealed).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_datagram_opens_with_the_same_key_only() {
        let key = GossipKey::from_bytes([7; KEY_BYTES]);
        let other = GossipKey::from_bytes([8; KEY_BYTES]);
        let sealed = Cipher::new(&key).seal(b"ping").expect("seal");
        assert_eq!(sealed.len(), NONCE_BYTES + 4 + 16);
        assert_eq!(
            Cipher::new(&key).open(&sealed).as_deref(),
            Some(&b"ping"[..])
        );
        assert!(Cipher::new(&other).open(&sealed).is_none());
        assert!(Cipher::new(&key).open(b"ping").is_none());
    }

    #[test]
    fn two_seals_of_one_datagram_differ() {
        let cipher = Cipher::new(&GossipKey::from_bytes([1; KEY_BYTES]));
        assert_ne!(cipher.seal(b"x"), cipher.seal(b"x"));
    }

    #[test]
    fn keys_are_32_bytes_of_base64() {
        let text = base64::engine::general_purpose::STANDARD.encode([3u8; 32]);
        assert_eq!(
            GossipKey::from_base64(&text).expect("valid"),
            GossipKey::from_bytes([3; 32])
        );
        assert!(GossipKey::from_base64("c2hvcnQ=").is_err());
        assert!(GossipKey::from_base64("not base64!").is_err());
        assert_eq!(
            format!("{:?}", GossipKey::from_bytes([3; 32])),
            "GossipKey(<redacted>)"
        );
    }
}
