//! Secrets at rest in the state store: sealed with AES-256-GCM under a key every coordinator of
//! an installation shares (`--secrets-key-file`), so a run restored after a restart or a
//! failover still has them, and etcd (or the data directory) never holds them in clear.
//! Without a key they are not stored at all, and a restored run runs without them.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// The key secrets are sealed with.
pub struct SecretsKey {
    key: LessSafeKey,
    random: SystemRandom,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(..)")
    }
}

impl SecretsKey {
    /// A key from its text: 64 hex digits (32 bytes), surrounding whitespace ignored.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bytes = hex::decode(text.trim())
            .map_err(|_| "a secrets key is 64 hex digits (`openssl rand -hex 32`)".to_string())?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| "a secrets key is 32 bytes: 64 hex digits".to_string())?;
        Ok(Self {
            key: LessSafeKey::new(key),
            random: SystemRandom::new(),
        })
    }

    /// `plain` sealed: a fresh random nonce, then the ciphertext and its tag.
    pub fn seal(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        let mut sealed = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut sealed,
            )
            .ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Some(out)
    }

    /// What [`Self::seal`] sealed, or `None` if it was sealed under another key or altered.
    pub fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut body)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn sealed_secrets_open_only_under_their_key_and_unaltered() {
        let key = SecretsKey::parse(KEY).expect("a key");
        let sealed = key.seal(b"hunter2").expect("sealed");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(key.open(&sealed).as_deref(), Some(&b"hunter2"[..]));
        let other = SecretsKey::parse(&KEY.replace("00", "ff")).expect("another key");
        assert_eq!(other.open(&sealed), None);
        let mut altered = sealed.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert_eq!(key.open(&altered), None);
        assert!(SecretsKey::parse("not hex").is_err());
        assert!(SecretsKey::parse("abcd").is_err());
    }
}
