//! Secrets in state: generated values are encrypted with ChaCha20-Poly1305 before they reach
//! state and are never printed. The key comes from `STACKSMITH_STATE_KEY` (any string; its SHA-256
//! is the key) or else from a per-deployment key file created with mode 0600 next to the state
//! (see `provisioner/docs/state.md`).

use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::Rng;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const ENCRYPTED_MARKER: &str = "$encrypted";
pub const STATE_KEY_VAR: &str = "STACKSMITH_STATE_KEY";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read or create the state key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the state key file {0} does not hold 64 hex characters")]
    MalformedKeyFile(PathBuf),
    #[error("a secret in state cannot be decrypted: wrong STACKSMITH_STATE_KEY or key file")]
    Decrypt,
    #[error("a secret in state is malformed")]
    Malformed,
}

/// Whether a stored value is secret ciphertext.
pub fn is_encrypted(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|map| map.len() == 1 && map.contains_key(ENCRYPTED_MARKER))
}

/// Encrypts and decrypts the secret values of one deployment.
#[derive(Clone)]
pub struct StateCipher {
    cipher: ChaCha20Poly1305,
    /// Key material for [`StateCipher::derive_secret`], separate from the encryption key.
    derivation_key: [u8; 32],
}

impl std::fmt::Debug for StateCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateCipher(..)")
    }
}

impl StateCipher {
    pub fn from_passphrase(passphrase: &str) -> Self {
        let digest = Sha256::digest(passphrase.as_bytes());
        Self::from_key(digest.into())
    }

    pub fn from_key(key: [u8; 32]) -> Self {
        let mut derivation = Sha256::new();
        derivation.update(b"stacksmith secret derivation v1\0");
        derivation.update(key);
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
            derivation_key: derivation.finalize().into(),
        }
    }

    /// `STACKSMITH_STATE_KEY` when set, otherwise the key file at `key_file` (created with a
    /// random key and mode 0600 when missing).
    pub fn from_environment_or_file(key_file: &Path) -> Result<Self, SecretError> {
        match std::env::var(STATE_KEY_VAR) {
            Ok(passphrase) if !passphrase.is_empty() => Ok(Self::from_passphrase(&passphrase)),
            _ => Self::from_key_file(key_file),
        }
    }

    pub fn from_key_file(path: &Path) -> Result<Self, SecretError> {
        let io = |source| SecretError::KeyFile {
            path: path.to_owned(),
            source,
        };
        if !path.exists() {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            let key: [u8; 32] = rand::rng().random();
            write_private_file(path, hex::encode(key).as_bytes()).map_err(io)?;
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let bytes =
            hex::decode(text.trim()).map_err(|_| SecretError::MalformedKeyFile(path.to_owned()))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| SecretError::MalformedKeyFile(path.to_owned()))?;
        Ok(Self::from_key(key))
    }

    /// `{"$encrypted": "v1:<nonce hex>:<ciphertext hex>"}`.
    pub fn encrypt(&self, plaintext: &str) -> Value {
        let nonce_bytes: [u8; 12] = rand::rng().random();
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce_bytes), plaintext.as_bytes())
            .expect("ChaCha20-Poly1305 encryption does not fail for in-memory buffers");
        serde_json::json!({
            ENCRYPTED_MARKER: format!("v1:{}:{}", hex::encode(nonce_bytes), hex::encode(ciphertext))
        })
    }

    pub fn decrypt(&self, value: &Value) -> Result<String, SecretError> {
        let text = value
            .get(ENCRYPTED_MARKER)
            .and_then(Value::as_str)
            .ok_or(SecretError::Malformed)?;
        let mut parts = text.splitn(3, ':');
        let (Some("v1"), Some(nonce), Some(ciphertext)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(SecretError::Malformed);
        };
        let nonce = hex::decode(nonce).map_err(|_| SecretError::Malformed)?;
        let ciphertext = hex::decode(ciphertext).map_err(|_| SecretError::Malformed)?;
        if nonce.len() != 12 {
            return Err(SecretError::Malformed);
        }
        let plaintext = self
            .cipher
            .decrypt(Nonce::from_slice(&nonce), ciphertext.as_slice())
            .map_err(|_| SecretError::Decrypt)?;
        String::from_utf8(plaintext).map_err(|_| SecretError::Malformed)
    }
}

impl StateCipher {
    /// A secret that is the same on every run of this deployment and stored nowhere: 43
    /// characters derived from the state key and `label` (e.g. the control plane's bootstrap admin
    /// key). Whoever holds the state key can derive it again; nobody else can.
    pub fn derive_secret(&self, label: &str) -> String {
        let mut digest = Sha256::new();
        digest.update(self.derivation_key);
        digest.update(label.as_bytes());
        let bytes: [u8; 32] = digest.finalize().into();
        // base64url without padding, written out to avoid a dependency for 32 bytes.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut bits: u32 = 0;
        let mut count = 0;
        let mut out = String::with_capacity(43);
        for byte in bytes {
            bits = (bits << 8) | u32::from(byte);
            count += 8;
            while count >= 6 {
                count -= 6;
                out.push(ALPHABET[((bits >> count) & 63) as usize] as char);
            }
        }
        if count > 0 {
            out.push(ALPHABET[((bits << (6 - count)) & 63) as usize] as char);
        }
        out
    }
}

/// A random secret of `length` characters from an unambiguous alphabet.
pub fn generate_secret(length: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..length.max(1))
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_the_wrong_key() {
        let cipher = StateCipher::from_passphrase("correct horse");
        let sealed = cipher.encrypt("hunter2-password");
        assert!(is_encrypted(&sealed));
        assert!(!sealed.to_string().contains("hunter2"));
        assert_eq!(cipher.decrypt(&sealed).unwrap(), "hunter2-password");
        let other = StateCipher::from_passphrase("battery staple");
        assert!(matches!(other.decrypt(&sealed), Err(SecretError::Decrypt)));
    }

    #[test]
    fn derived_secrets_are_stable_per_key_and_label_and_distinct_otherwise() {
        let cipher = StateCipher::from_passphrase("correct horse");
        let admin = cipher.derive_secret("admin-key:local");
        assert_eq!(admin.len(), 43);
        assert!(
            admin
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(
            StateCipher::from_passphrase("correct horse").derive_secret("admin-key:local"),
            admin
        );
        assert_ne!(cipher.derive_secret("worker-key:local"), admin);
        assert_ne!(
            StateCipher::from_passphrase("battery staple").derive_secret("admin-key:local"),
            admin
        );
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("stacksmith-key-{}", uuid::Uuid::new_v4()));
        let path = dir.join("demo.key");
        let first = StateCipher::from_key_file(&path).unwrap();
        let sealed = first.encrypt("s3cret");
        let second = StateCipher::from_key_file(&path).unwrap();
        assert_eq!(second.decrypt(&sealed).unwrap(), "s3cret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
