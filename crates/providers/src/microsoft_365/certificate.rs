//! Certificate credentials for the app registration: a client assertion (RFC 7523 JWT,
//! RS256) signed with the certificate's private key, naming the certificate by its
//! SHA-1 thumbprint (`x5t`), as the Microsoft identity platform asks instead of a secret.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use sha1::Digest as _;

/// The demo app's certificate and key (the sandbox knows this certificate; a test fixture,
/// worthless anywhere else).
pub const DEMO_CERTIFICATE: &str = include_str!("demo_cert.pem");
pub const DEMO_PRIVATE_KEY: &str = include_str!("demo_key.pem");

/// The DER inside the first PEM block whose label ends with `label` (newlines optional:
/// a PEM pasted into a one-line field loses them).
pub fn pem_der(pem: &str, label: &str) -> Option<(String, Vec<u8>)> {
    let start = pem.find("-----BEGIN ")?;
    let rest = &pem[start + "-----BEGIN ".len()..];
    let end_label = rest.find("-----")?;
    let found = rest[..end_label].to_string();
    if !found.ends_with(label) {
        return None;
    }
    let body = &rest[end_label + 5..];
    let body_end = body.find("-----END ")?;
    let b64: String = body[..body_end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    Some((found, STANDARD.decode(b64).ok()?))
}

/// A certificate credential: the signing key and the certificate's thumbprint.
pub struct Certificate {
    key: RsaKeyPair,
    x5t: String,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("x5t", &self.x5t)
            .finish_non_exhaustive()
    }
}

impl Certificate {
    /// From the certificate and its private key as PEM text; the reason in words when
    /// either cannot be read.
    pub fn from_pem(certificate: &str, private_key: &str) -> Result<Self, String> {
        let (_, cert) = pem_der(certificate, "CERTIFICATE").ok_or(
            "the certificate is not PEM text (-----BEGIN CERTIFICATE----- … -----END CERTIFICATE-----)",
        )?;
        let (label, der) = pem_der(private_key, "PRIVATE KEY")
            .ok_or("the private key is not PEM text (-----BEGIN PRIVATE KEY----- …)")?;
        let key = match label.as_str() {
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
            other => {
                return Err(format!(
                    "a {other} cannot sign: use an unencrypted RSA key (PRIVATE KEY or RSA PRIVATE KEY)"
                ));
            }
        }
        .map_err(|e| format!("the private key could not be read as an RSA key ({e})"))?;
        Ok(Self {
            key,
            x5t: URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(&cert)),
        })
    }

    /// The certificate's thumbprint as Entra names it (`x5t`).
    pub fn thumbprint(&self) -> &str {
        &self.x5t
    }

    /// A client assertion for the token endpoint `audience`, valid for ten minutes.
    pub fn assertion(&self, client_id: &str, audience: &str) -> Result<String, String> {
        let rng = SystemRandom::new();
        let mut jti = [0u8; 16];
        rng.fill(&mut jti).map_err(|_| "no randomness")?;
        let now = chrono::Utc::now().timestamp();
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5t": self.x5t});
        let claims = serde_json::json!({
            "aud": audience, "iss": client_id, "sub": client_id,
            "jti": URL_SAFE_NO_PAD.encode(jti), "nbf": now, "iat": now, "exp": now + 600,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
            .map_err(|_| "the assertion could not be signed")?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// Checks an assertion against a known certificate's public key (the sandbox's side):
/// its claims (`(header, claims)`) when the RS256 signature holds.
pub fn verify(
    assertion: &str,
    public_key_der: &[u8],
) -> Option<(serde_json::Value, serde_json::Value)> {
    let mut parts = assertion.split('.');
    let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
    let sig = URL_SAFE_NO_PAD.decode(s).ok()?;
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public_key_der,
    )
    .verify(format!("{h}.{c}").as_bytes(), &sig)
    .ok()?;
    let header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
    let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).ok()?).ok()?;
    Some((header, claims))
}

/// The public key (DER) of a private key given as PEM.
pub fn public_key_der(private_key: &str) -> Option<Vec<u8>> {
    let (label, der) = pem_der(private_key, "PRIVATE KEY")?;
    let key = match label.as_str() {
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der).ok()?,
        _ => RsaKeyPair::from_der(&der).ok()?,
    };
    Some(key.public().as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assertion_signed_with_the_key_verifies_with_its_certificate_public_key() {
        let c = Certificate::from_pem(DEMO_CERTIFICATE, DEMO_PRIVATE_KEY).unwrap();
        let a = c
            .assertion("app-id", "https://login.example/t/oauth2/v2.0/token")
            .unwrap();
        let public = public_key_der(DEMO_PRIVATE_KEY).unwrap();
        let (h, claims) = verify(&a, &public).unwrap();
        assert_eq!(h["x5t"], c.thumbprint());
        assert_eq!(claims["iss"], "app-id");
        assert_eq!(claims["aud"], "https://login.example/t/oauth2/v2.0/token");
        let tampered = a.replacen('.', ".x", 1);
        assert!(verify(&tampered, &public).is_none());
        // A PEM pasted into a one-line field (newlines gone) still reads.
        let flat: String = DEMO_PRIVATE_KEY.lines().collect();
        assert!(Certificate::from_pem(&DEMO_CERTIFICATE.replace('\n', ""), &flat).is_ok());
        assert!(Certificate::from_pem("nonsense", DEMO_PRIVATE_KEY).is_err());
        assert!(
            Certificate::from_pem(
                DEMO_CERTIFICATE,
                "-----BEGIN PRIVATE KEY-----AAAA-----END PRIVATE KEY-----"
            )
            .is_err()
        );
    }
}
