//! Secrets at rest and in transit through the process.
//!
//! * Credential fields are sealed with XChaCha20-Poly1305 under a data key derived from
//!   the master key. Each value has a fresh random 24-byte nonce, and the associated
//!   data binds it to its tenant, integration and field, so a ciphertext copied to
//!   another row fails to open.
//! * Staff passwords are Argon2id PHC strings.
//! * Session ids and API tokens are random 256-bit values; only their SHA-256 is stored.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use hmac::Mac;
use sha2::{Digest, Sha256};

/// Sealed-blob format version. Layout: `[version][24-byte nonce][ciphertext ‖ 16-byte tag]`.
const BLOB_V1: u8 = 1;
const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("the master key must be 32 bytes, given as 64 hex characters or base64 ({0})")]
    BadMasterKey(String),
    #[error("could not read or create the master key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error(
        "a stored secret could not be decrypted: wrong master key, or the value was tampered with or moved"
    )]
    Tampered,
    #[error("a stored secret has an unknown format")]
    UnknownFormat,
    #[error("the system random number generator failed")]
    Random,
    #[error("password hashing failed")]
    Hash,
}

/// What a sealed value is bound to. Changing any part makes the value fail to open.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub tenant_id: i64,
    pub integration_id: i64,
    pub field: &'a str,
}

impl Binding<'_> {
    fn aad(&self) -> Vec<u8> {
        format!(
            "mspbridge/credential/v1|tenant={}|integration={}|field={}",
            self.tenant_id, self.integration_id, self.field
        )
        .into_bytes()
    }
}

/// Encrypts and decrypts credential values. Cheap to clone behind an `Arc`.
pub struct Vault {
    cipher: XChaCha20Poly1305,
    key_id: String,
    webhook_key: [u8; 32],
    state_key: [u8; 32],
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Builds a vault from the 32-byte master key. The data key is
    /// HMAC-SHA256(master, "mspbridge credential data key v1"), so the master key
    /// itself never encrypts data and other keys can be derived from it later.
    pub fn new(master: &[u8; 32]) -> Self {
        let data_key = derive(master, b"mspbridge credential data key v1");
        let key_id = hex(&derive(master, b"mspbridge key id")[..4]);
        // A 32-byte slice always has the right length for XChaCha20-Poly1305.
        let cipher = match XChaCha20Poly1305::new_from_slice(&data_key) {
            Ok(c) => c,
            Err(_) => unreachable_key_length(),
        };
        let webhook_key = derive(master, b"mspbridge webhook secret key v1");
        let state_key = derive(master, b"mspbridge signed state key v1");
        Self {
            cipher,
            key_id,
            webhook_key,
            state_key,
        }
    }

    /// The shared secret a vendor's webhooks for one integration authenticate with (Halo's
    /// Basic password, Syncro's URL token): HMAC of the tenant and integration under a key
    /// derived from the master key, so nothing extra is stored, another tenant's or
    /// integration's secret never matches, and a new master key replaces them all.
    pub fn webhook_secret(&self, tenant_id: i64, integration_id: i64) -> String {
        let label = format!("tenant={tenant_id}|integration={integration_id}");
        URL_SAFE_NO_PAD.encode(derive(&self.webhook_key, label.as_bytes()))
    }

    /// `payload` signed for `purpose`: `<payload>.<HMAC-SHA256 of purpose and payload,
    /// base64url>`, under a key derived from the master key. For values that travel
    /// through a browser and come back (an OAuth `state`): [`Vault::verify_signed`] gives
    /// the payload back only when nobody changed it and it was signed for that purpose.
    /// `payload` must not contain `.`.
    pub fn sign(&self, purpose: &str, payload: &str) -> String {
        let mac = derive(&self.state_key, format!("{purpose}|{payload}").as_bytes());
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(mac))
    }

    /// The payload of a value [`Vault::sign`] made for `purpose`, or `None` when the value
    /// is forged, changed, or was signed for another purpose (compared in constant time).
    pub fn verify_signed<'a>(&self, purpose: &str, signed: &'a str) -> Option<&'a str> {
        let (payload, mac) = signed.rsplit_once('.')?;
        let given = URL_SAFE_NO_PAD.decode(mac).ok()?;
        let want = derive(&self.state_key, format!("{purpose}|{payload}").as_bytes());
        constant_time_eq(&given, &want).then_some(payload)
    }

    /// A short public fingerprint of the master key, safe to log ("which key is this?").
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn seal(&self, binding: Binding<'_>, plaintext: &str) -> Result<Vec<u8>, VaultError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| VaultError::Random)?;
        let aad = binding.aad();
        let ct = self
            .cipher
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Tampered)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(BLOB_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub fn open(&self, binding: Binding<'_>, blob: &[u8]) -> Result<String, VaultError> {
        let (&version, rest) = blob.split_first().ok_or(VaultError::UnknownFormat)?;
        if version != BLOB_V1 || rest.len() < NONCE_LEN + 16 {
            return Err(VaultError::UnknownFormat);
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| VaultError::UnknownFormat)?;
        let aad = binding.aad();
        let pt = self
            .cipher
            .decrypt(&nonce.into(), Payload { msg: ct, aad: &aad })
            .map_err(|_| VaultError::Tampered)?;
        String::from_utf8(pt).map_err(|_| VaultError::Tampered)
    }
}

#[cold]
fn unreachable_key_length() -> ! {
    // XChaCha20-Poly1305 keys are 32 bytes and `derive` returns 32 bytes.
    std::process::abort()
}

fn derive(master: &[u8; 32], label: &[u8]) -> [u8; 32] {
    let mut mac = match <hmac::Hmac<Sha256> as hmac::KeyInit>::new_from_slice(master) {
        Ok(m) => m,
        Err(_) => unreachable_key_length(),
    };
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// Parses a master key given as 64 hex characters or as base64 of 32 bytes.
pub fn parse_master_key(text: &str) -> Result<[u8; 32], VaultError> {
    let t = text.trim();
    if t.len() == 64 && t.chars().all(|c| c.is_ascii_hexdigit()) {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&t[2 * i..2 * i + 2], 16)
                .map_err(|_| VaultError::BadMasterKey("invalid hex".into()))?;
        }
        return Ok(out);
    }
    let bytes = STANDARD
        .decode(t)
        .or_else(|_| URL_SAFE_NO_PAD.decode(t))
        .map_err(|_| VaultError::BadMasterKey("neither hex nor base64".into()))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| VaultError::BadMasterKey(format!("got {} bytes", b.len())))
}

/// Reads the master key file, or creates it with a fresh random key and mode 0600.
/// An existing file readable by group or others is refused.
pub fn load_or_create_key_file(path: &Path) -> Result<[u8; 32], VaultError> {
    let err = |reason: String| VaultError::KeyFile {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path)
                    .map_err(|e| err(e.to_string()))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(err(format!(
                        "permissions are {:o}; run chmod 600 on it (it must not be readable by group or others)",
                        mode & 0o777
                    )));
                }
            }
            parse_master_key(&text)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|_| VaultError::Random)?;
            write_new_private_file(path, format!("{}\n", STANDARD.encode(key)).as_bytes())
                .map_err(|e| err(e.to_string()))?;
            Ok(key)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

fn write_new_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

/// Hashes a staff password with Argon2id (PHC string). CPU-heavy: call from a blocking thread.
pub fn hash_password(password: &str) -> Result<String, VaultError> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|_| VaultError::Hash)
}

/// Verifies a password against a PHC string. Returns false for a malformed hash.
pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), phc)
        .is_ok()
}

/// A fresh random token `<prefix>_<43 url-safe chars>` and the hash to store.
pub fn new_token(prefix: &str) -> Result<(String, String), VaultError> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|_| VaultError::Random)?;
    let token = format!("{prefix}_{}", URL_SAFE_NO_PAD.encode(raw));
    let hash = hash_token(&token);
    Ok((token, hash))
}

/// SHA-256 of a token, hex. Tokens are high-entropy, so a fast hash is the right tool.
pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Constant-time comparison of two byte strings (for CSRF tokens and the like).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_values_come_back_only_unchanged_and_for_their_purpose() {
        let v = Vault::new(&[7u8; 32]);
        let s = v.sign("m365-consent", "abc-123");
        assert_eq!(v.verify_signed("m365-consent", &s), Some("abc-123"));
        assert_eq!(v.verify_signed("other", &s), None);
        let forged = s.replacen("abc", "abd", 1);
        assert_eq!(v.verify_signed("m365-consent", &forged), None);
        assert_eq!(v.verify_signed("m365-consent", "abc-123"), None);
        assert_eq!(
            Vault::new(&[8u8; 32]).verify_signed("m365-consent", &s),
            None
        );
    }

    fn vault() -> Vault {
        Vault::new(&[7u8; 32])
    }

    const B: Binding<'static> = Binding {
        tenant_id: 1,
        integration_id: 2,
        field: "private_key",
    };

    #[test]
    fn webhook_secrets_are_stable_and_per_integration_and_key() {
        let v = vault();
        let s = v.webhook_secret(1, 2);
        assert_eq!(s, v.webhook_secret(1, 2));
        assert_eq!(s.len(), 43);
        assert_ne!(s, v.webhook_secret(1, 3));
        assert_ne!(s, v.webhook_secret(2, 2));
        assert_ne!(s, Vault::new(&[8u8; 32]).webhook_secret(1, 2));
    }

    #[test]
    fn round_trip_and_fresh_nonce() {
        let v = vault();
        let a = v.seal(B, "s3cr3t-value").unwrap();
        let b = v.seal(B, "s3cr3t-value").unwrap();
        assert_ne!(a, b, "each seal uses a new nonce");
        assert_eq!(v.open(B, &a).unwrap(), "s3cr3t-value");
        assert!(
            !a.windows(12).any(|w| w == b"s3cr3t-value"),
            "ciphertext must not contain the plaintext"
        );
    }

    #[test]
    fn tampering_is_detected() {
        let v = vault();
        let blob = v.seal(B, "s3cr3t-value").unwrap();
        for i in 0..blob.len() {
            let mut t = blob.clone();
            t[i] ^= 0x01;
            assert!(v.open(B, &t).is_err(), "flipping byte {i} must be detected");
        }
        assert!(v.open(B, &blob[..blob.len() - 1]).is_err());
        assert!(v.open(B, &[]).is_err());
    }

    #[test]
    fn a_value_moved_to_another_row_does_not_open() {
        let v = vault();
        let blob = v.seal(B, "s3cr3t-value").unwrap();
        for other in [
            Binding { tenant_id: 9, ..B },
            Binding {
                integration_id: 9,
                ..B
            },
            Binding {
                field: "public_key",
                ..B
            },
        ] {
            assert!(matches!(v.open(other, &blob), Err(VaultError::Tampered)));
        }
    }

    #[test]
    fn another_master_key_cannot_open() {
        let blob = vault().seal(B, "x").unwrap();
        assert!(Vault::new(&[8u8; 32]).open(B, &blob).is_err());
        assert_ne!(vault().key_id(), Vault::new(&[8u8; 32]).key_id());
    }

    #[test]
    fn master_key_formats() {
        let hex_key = "07".repeat(32);
        assert_eq!(parse_master_key(&hex_key).unwrap(), [7u8; 32]);
        assert_eq!(
            parse_master_key(&STANDARD.encode([7u8; 32])).unwrap(),
            [7u8; 32]
        );
        assert!(matches!(
            parse_master_key("abc"),
            Err(VaultError::BadMasterKey(_))
        ));
        assert!(parse_master_key(&STANDARD.encode([1u8; 16])).is_err());
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("mspbridge-vault-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("master.key");
        let _ = std::fs::remove_file(&path);
        let k1 = load_or_create_key_file(&path).unwrap();
        let k2 = load_or_create_key_file(&path).unwrap();
        assert_eq!(k1, k2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                load_or_create_key_file(&path),
                Err(VaultError::KeyFile { .. })
            ));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn passwords_and_tokens() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("wrong horse battery", &h));
        assert!(!verify_password("x", "not a hash"));
        let (t, hash) = new_token("msb").unwrap();
        assert!(t.starts_with("msb_") && t.len() > 40);
        assert_eq!(hash_token(&t), hash);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
    }
}
