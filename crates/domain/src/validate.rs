//! Parsing of untrusted input into values the rest of the system can rely on.
//! Every error names the field and says how to fix it.

use std::collections::BTreeMap;

use crate::catalogue::{CredentialField, FieldFormat, ProviderDescriptor};
use crate::{FieldError, SecretString, ValidationError};

/// A credential value after validation. Secret fields stay wrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialValue {
    Plain(String),
    Secret(SecretString),
}

impl CredentialValue {
    pub fn expose(&self) -> &str {
        match self {
            CredentialValue::Plain(s) => s,
            CredentialValue::Secret(s) => s.expose(),
        }
    }
}

/// Validated credentials of one integration: field name → value. Only known fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials(pub BTreeMap<String, CredentialValue>);

impl Credentials {
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .get(field)
            .map(CredentialValue::expose)
            .filter(|v| !v.is_empty())
    }
}

/// The mask shown for a stored secret. Submitting it back unchanged keeps the stored value.
pub const SECRET_MASK: &str = "••••••••";

/// What to do with a submitted secret field when updating stored credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmittedSecret {
    /// The mask (or nothing) was submitted: keep the stored value.
    Keep,
    New(SecretString),
}

/// Validates raw form/API input for `provider` against its catalogue fields.
///
/// `keep_secrets` is true when updating an existing connection: a secret field that
/// comes back as the mask (or empty) is reported as [`SubmittedSecret::Keep`] in the
/// second return value instead of being an error.
pub fn validate_credentials(
    provider: &ProviderDescriptor,
    input: &BTreeMap<String, String>,
    keep_secrets: bool,
) -> Result<(Credentials, Vec<String>), ValidationError> {
    let mut errors = Vec::new();
    for name in input.keys() {
        if provider.field(name).is_none() {
            let known: Vec<_> = provider.fields.iter().map(|f| f.name).collect();
            errors.push(FieldError::new(
                format!("credentials.{name}"),
                format!(
                    "{} has no field '{name}'; expected one of: {}",
                    provider.name,
                    known.join(", ")
                ),
            ));
        }
    }
    let mut values = BTreeMap::new();
    let mut kept = Vec::new();
    for field in provider.fields {
        let raw = input.get(field.name).map(|s| s.trim()).unwrap_or("");
        if field.secret && keep_secrets && (raw.is_empty() || raw == SECRET_MASK) {
            kept.push(field.name.to_string());
            continue;
        }
        if raw == SECRET_MASK {
            errors.push(FieldError::new(
                format!("credentials.{}", field.name),
                format!(
                    "{} is required: type the value itself, not the mask",
                    field.label
                ),
            ));
            continue;
        }
        if raw.is_empty() {
            if field.required {
                errors.push(FieldError::new(
                    format!("credentials.{}", field.name),
                    format!("{} is required", field.label),
                ));
            }
            continue;
        }
        match check_format(field, raw) {
            Ok(v) => {
                let value = if field.secret {
                    CredentialValue::Secret(SecretString::new(v))
                } else {
                    CredentialValue::Plain(v)
                };
                values.insert(field.name.to_string(), value);
            }
            Err(msg) => errors.push(FieldError::new(format!("credentials.{}", field.name), msg)),
        }
    }
    provider_rules(provider, &values, &kept, &mut errors);
    if errors.is_empty() {
        Ok((Credentials(values), kept))
    } else {
        Err(ValidationError(errors))
    }
}

/// Rules one provider's fields follow beyond their format.
fn provider_rules(
    provider: &ProviderDescriptor,
    values: &BTreeMap<String, CredentialValue>,
    kept: &[String],
    errors: &mut Vec<FieldError>,
) {
    if provider.kind == crate::catalogue::ProviderKind::Microsoft365 {
        for (field, m) in m365_credential(values, kept) {
            errors.push(FieldError::new(format!("credentials.{field}"), m));
        }
    }
    if provider.kind == crate::catalogue::ProviderKind::DattoRmm
        && let Some(url) = values.get("api_url")
        && let Err(m) = datto_api_url(url.expose())
    {
        errors.push(FieldError::new("credentials.api_url", m));
    }
    if provider.kind == crate::catalogue::ProviderKind::Stripe {
        if let Some(key) = values.get("secret_key")
            && let Err(m) = stripe_key(key.expose())
        {
            errors.push(FieldError::new("credentials.secret_key", m));
        }
        if let Some(w) = values.get("webhook_secret")
            && let Some(bad) = w
                .expose()
                .split(|c: char| c.is_whitespace() || c == ',')
                .find(|s| !s.is_empty() && !s.starts_with("whsec_"))
        {
            errors.push(FieldError::new(
                "credentials.webhook_secret",
                format!(
                    "must be Stripe's signing secret (whsec_…), not '{}…'",
                    bad.chars().take(6).collect::<String>()
                ),
            ));
        }
    }
    if provider.kind == crate::catalogue::ProviderKind::ConnectwiseAsio
        && let (Some(env), Some(id)) = (values.get("environment"), values.get("client_id"))
        && let Err(m) = asio_client_id(env.expose(), id.expose())
    {
        errors.push(FieldError::new("credentials.client_id", m));
    }
}

/// An `https://` address with a valid host (no user info), trailing slashes removed.
pub fn parse_https_url(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.len() > 2048 {
        return Err("is too long (at most 2048 characters)".into());
    }
    let rest = raw
        .strip_prefix("https://")
        .ok_or_else(|| "must start with https://".to_string())?;
    let host = rest.split('/').next().unwrap_or("");
    parse_host(host).map_err(|m| format!("has an invalid host: {m}"))?;
    Ok(raw.trim_end_matches('/').to_string())
}

/// A Stripe key the portal can use: a restricted (`rk_`) or secret (`sk_`) key, test or
/// live; never a publishable key.
pub fn stripe_key(key: &str) -> Result<(), String> {
    let k = key.trim();
    if k.starts_with("pk_") {
        return Err(
            "is a publishable key (pk_…): use a restricted key (rk_…) or a secret key (sk_…)"
                .into(),
        );
    }
    let known = ["rk_live_", "rk_test_", "sk_live_", "sk_test_"];
    if !known.iter().any(|p| k.starts_with(p)) || k.len() < 12 {
        return Err("must be a Stripe restricted key (rk_live_… / rk_test_…) or secret key (sk_live_… / sk_test_…)".into());
    }
    Ok(())
}

/// Microsoft 365 authenticates with a client secret or a certificate: a secret, or a
/// certificate (PEM) with its private key (PEM). What is missing or malformed, by field.
pub fn m365_credential(
    values: &BTreeMap<String, CredentialValue>,
    kept: &[String],
) -> Vec<(&'static str, String)> {
    let has = |f: &str| values.contains_key(f) || kept.iter().any(|k| k == f);
    let mut out = Vec::new();
    if let Some(cert) = values.get("certificate")
        && !(cert.expose().contains("-----BEGIN CERTIFICATE-----")
            && cert.expose().contains("-----END CERTIFICATE-----"))
    {
        out.push((
            "certificate",
            "Certificate must be the PEM text, from -----BEGIN CERTIFICATE----- to -----END CERTIFICATE-----".to_string(),
        ));
    }
    if let Some(key) = values.get("private_key")
        && !key.expose().contains("PRIVATE KEY-----")
    {
        out.push((
            "private_key",
            "Private key must be the PEM text, from -----BEGIN PRIVATE KEY----- (or RSA PRIVATE KEY) to its END line".to_string(),
        ));
    }
    match (has("client_secret"), has("certificate"), has("private_key")) {
        (_, true, false) => out.push((
            "private_key",
            "Private key is required with a certificate: the key the certificate was made with".to_string(),
        )),
        (_, false, true) if values.contains_key("private_key") => out.push((
            "certificate",
            "Certificate is required with a private key: the certificate uploaded to the app registration".to_string(),
        )),
        (false, false, _) => out.push((
            "client_secret",
            "Client secret is required, unless you use a certificate (then give the certificate and its private key)".to_string(),
        )),
        _ => {}
    }
    out
}

/// A ConnectWise Asio client ID starts with its environment's prefix (0e30 NA, 0e31 EU,
/// 0e32 AU): a mismatch names both.
pub fn asio_client_id(environment: &str, client_id: &str) -> Result<(), String> {
    use crate::catalogue::asio_client_id_prefix;
    let Some(want) = asio_client_id_prefix(environment) else {
        return Ok(());
    };
    let id = client_id.trim().to_ascii_lowercase();
    if id.starts_with(want) {
        return Ok(());
    }
    let named = crate::catalogue::ASIO_ENVIRONMENTS
        .iter()
        .find(|e| asio_client_id_prefix(e).is_some_and(|p| id.starts_with(p)));
    Err(match named {
        Some(other) => format!(
            "Client ID starts with {} ({}), but the environment is {} (its client IDs start with {want})",
            asio_client_id_prefix(other).unwrap_or_default(),
            other.to_uppercase(),
            environment.to_uppercase()
        ),
        None => format!(
            "Client ID must start with {want} for the {} environment (0e30 NA, 0e31 EU, 0e32 AU)",
            environment.to_uppercase()
        ),
    })
}

/// A Datto RMM API URL: `https://<platform>-api.centrastage.net` (a trailing `/api` as the
/// Swagger page shows it is accepted).
pub fn datto_api_url(url: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "API URL must be the address shown next to the generated keys, like https://merlot-api.centrastage.net, not '{url}'"
        )
    };
    let rest = url.strip_prefix("https://").ok_or_else(bad)?;
    let rest = rest.trim_end_matches('/');
    let host = rest
        .strip_suffix("/api")
        .unwrap_or(rest)
        .to_ascii_lowercase();
    let platform = host.strip_suffix("-api.centrastage.net").ok_or_else(bad)?;
    if is_dns_label(platform) && !platform.contains('.') {
        Ok(())
    } else {
        Err(bad())
    }
}

fn check_format(field: &CredentialField, raw: &str) -> Result<String, String> {
    if field.format == FieldFormat::Pem {
        // Lines are PEM's own; any other control character is not.
        if raw
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
        {
            return Err(format!("{} must be PEM text", field.label));
        }
        if raw.len() > 16 * 1024 {
            return Err(format!(
                "{} must be at most 16 KiB of PEM text",
                field.label
            ));
        }
        return Ok(raw.to_string());
    }
    if raw.chars().any(char::is_control) {
        return Err(format!(
            "{} must be on one line without control characters",
            field.label
        ));
    }
    if raw.len() > 2048 {
        return Err(format!(
            "{} is too long (at most 2048 characters)",
            field.label
        ));
    }
    match field.format {
        FieldFormat::Text | FieldFormat::Pem => Ok(raw.to_string()),
        FieldFormat::Host => parse_host(raw).map_err(|m| format!("{}: {m}", field.label)),
        FieldFormat::HttpsUrl => parse_https_url(raw).map_err(|m| format!("{} {m}", field.label)),
        FieldFormat::Guid => {
            if is_guid(raw) {
                Ok(raw.to_ascii_lowercase())
            } else {
                Err(format!(
                    "{} must be a GUID like 8c0e1a52-4c1b-4f60-9d5a-2a9f4f1f0b11",
                    field.label
                ))
            }
        }
        FieldFormat::Subdomain => {
            let s = raw.to_ascii_lowercase();
            if s.contains('.') || s.contains('/') {
                return Err(format!(
                    "{}: enter only the subdomain (the 'acme' of acme.syncromsp.com)",
                    field.label
                ));
            }
            if is_dns_label(&s) {
                Ok(s)
            } else {
                Err(format!(
                    "{} may only contain letters, digits and '-'",
                    field.label
                ))
            }
        }
        FieldFormat::Email => parse_email(raw).map_err(|m| format!("{}: {m}", field.label)),
        FieldFormat::Choice(values) => {
            if values.contains(&raw) {
                Ok(raw.to_string())
            } else {
                Err(format!(
                    "{} must be one of: {}",
                    field.label,
                    values.join(", ")
                ))
            }
        }
    }
}

/// Parses a host (optionally `host:port`): no scheme, no path, no credentials.
pub fn parse_host(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if let Some(idx) = raw.find("://") {
        let scheme = &raw[..idx];
        return Err(format!(
            "enter the host only, without '{scheme}://' (for example na.myconnectwise.net)"
        ));
    }
    if raw.contains('/') || raw.contains('?') || raw.contains('#') {
        return Err(
            "enter the host only, without a path (for example na.myconnectwise.net)".into(),
        );
    }
    if raw.contains('@') {
        return Err("enter the host only, without a user name".into());
    }
    let (host, port) = match raw.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (raw, None),
    };
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => {}
            _ => return Err(format!("'{p}' is not a valid port")),
        }
    }
    let host = host.to_ascii_lowercase();
    if host.is_empty() || host.len() > 253 || !host.split('.').all(is_dns_label) {
        return Err(format!("'{raw}' is not a valid host name"));
    }
    Ok(match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_guid(s: &str) -> bool {
    let parts: Vec<_> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    parts.len() == 5
        && parts
            .iter()
            .zip(lens)
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Light email check: one `@`, a non-empty local part, a dotted domain. Lower-cased.
pub fn parse_email(raw: &str) -> Result<String, String> {
    let s = raw.trim().to_lowercase();
    let Some((local, domain)) = s.split_once('@') else {
        return Err(format!("'{raw}' is not an email address"));
    };
    if local.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || s.chars().any(|c| c.is_whitespace() || c.is_control())
        || s.len() > 254
    {
        return Err(format!("'{raw}' is not an email address"));
    }
    Ok(s)
}

/// A display name (tenant, company, integration nickname): trimmed, 1..=200 characters, one line.
pub fn parse_name(field: &str, raw: &str) -> Result<String, FieldError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if s.chars().count() > 200 {
        return Err(FieldError::new(field, "must be at most 200 characters"));
    }
    if s.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must be on one line without control characters",
        ));
    }
    Ok(s.to_string())
}

/// Staff passwords: at least 12 characters.
pub fn check_password(field: &str, pw: &str) -> Result<(), FieldError> {
    if pw.chars().count() < 12 {
        return Err(FieldError::new(field, "must be at least 12 characters"));
    }
    if pw.len() > 1024 {
        return Err(FieldError::new(field, "must be at most 1024 bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::ProviderKind;

    fn cw(pairs: &[(&str, &str)]) -> Result<(Credentials, Vec<String>), ValidationError> {
        let input = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        validate_credentials(ProviderKind::ConnectwiseManage.descriptor(), &input, false)
    }

    fn first_error(r: Result<(Credentials, Vec<String>), ValidationError>) -> FieldError {
        match r {
            Err(e) => e.0[0].clone(),
            Ok(_) => panic!("expected a validation error"),
        }
    }

    const GOOD: &[(&str, &str)] = &[
        ("site", "na.myconnectwise.net"),
        ("company_id", "acme"),
        ("public_key", "pub"),
        ("private_key", "priv"),
    ];

    #[test]
    fn good_connectwise_credentials_pass_and_secret_is_wrapped() {
        let (c, kept) = cw(GOOD).unwrap();
        assert!(kept.is_empty());
        assert!(matches!(
            c.0.get("private_key"),
            Some(CredentialValue::Secret(_))
        ));
        assert_eq!(c.get("site"), Some("na.myconnectwise.net"));
        assert!(!format!("{c:?}").contains("priv\""));
    }

    #[test]
    fn site_with_scheme_is_rejected_with_a_message_that_says_so() {
        let mut v = GOOD.to_vec();
        v[0] = ("site", "https://na.myconnectwise.net");
        let e = first_error(cw(&v));
        assert_eq!(e.field, "credentials.site");
        assert!(e.message.contains("without 'https://'"), "{}", e.message);
    }

    #[test]
    fn site_with_path_is_rejected() {
        let mut v = GOOD.to_vec();
        v[0] = ("site", "na.myconnectwise.net/v4_6_release/apis/3.0");
        let e = first_error(cw(&v));
        assert_eq!(e.field, "credentials.site");
        assert!(e.message.contains("without a path"), "{}", e.message);
    }

    #[test]
    fn missing_required_fields_are_each_named() {
        let e = cw(&[("site", "na.myconnectwise.net")]).unwrap_err();
        let fields: Vec<_> = e.0.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "credentials.company_id",
                "credentials.public_key",
                "credentials.private_key"
            ]
        );
    }

    #[test]
    fn unknown_field_and_bad_guid_are_rejected() {
        let mut v = GOOD.to_vec();
        v.push(("client_id", "not-a-guid"));
        v.push(("colour", "blue"));
        let e = cw(&v).unwrap_err();
        let fields: Vec<_> = e.0.iter().map(|f| f.field.as_str()).collect();
        assert!(fields.contains(&"credentials.colour"));
        assert!(fields.contains(&"credentials.client_id"));
    }

    #[test]
    fn mask_is_kept_on_update_and_refused_on_create() {
        let mut v = GOOD.to_vec();
        v[3] = ("private_key", SECRET_MASK);
        let e = first_error(cw(&v));
        assert_eq!(e.field, "credentials.private_key");
        let input = v
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (c, kept) =
            validate_credentials(ProviderKind::ConnectwiseManage.descriptor(), &input, true)
                .unwrap();
        assert_eq!(kept, ["private_key"]);
        assert!(c.get("private_key").is_none());
    }

    fn datto(pairs: &[(&str, &str)]) -> Result<(Credentials, Vec<String>), ValidationError> {
        let input = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        validate_credentials(ProviderKind::DattoRmm.descriptor(), &input, false)
    }

    #[test]
    fn datto_takes_a_platform_and_an_optional_centrastage_api_url() {
        let keys = [("api_key", "K"), ("api_secret", "S+/=")];
        let mut ok = keys.to_vec();
        ok.push(("platform", "merlot"));
        assert!(datto(&ok).is_ok());
        ok.push(("api_url", "https://zinfandel-api.centrastage.net/"));
        let (c, _) = datto(&ok).unwrap();
        assert_eq!(
            c.get("api_url"),
            Some("https://zinfandel-api.centrastage.net")
        );
        let mut api = ok.clone();
        api.pop();
        api.push(("api_url", "https://zinfandel-api.centrastage.net/api"));
        assert!(datto(&api).is_ok());
        for bad in [
            "https://evil.example.com",
            "https://merlot-api.centrastage.net.evil.example",
            "https://centrastage.net",
            "https://a.b-api.centrastage.net",
        ] {
            let mut v = keys.to_vec();
            v.push(("platform", "merlot"));
            v.push(("api_url", bad));
            let e = first_error(datto(&v));
            assert_eq!(e.field, "credentials.api_url", "{bad}");
            assert!(e.message.contains("centrastage.net"), "{}", e.message);
        }
        let mut v = keys.to_vec();
        v.push(("platform", "cabernet"));
        let e = first_error(datto(&v));
        assert_eq!(e.field, "credentials.platform");
        assert!(e.message.contains("pinotage"), "{}", e.message);
    }

    #[test]
    fn hosts() {
        assert_eq!(
            parse_host("CW.Example.com:8443").unwrap(),
            "cw.example.com:8443"
        );
        assert!(parse_host("cw.example.com:0").is_err());
        assert!(parse_host("cw example.com").is_err());
        assert!(parse_host("user@cw.example.com").is_err());
        assert!(parse_host("").is_err());
    }

    #[test]
    fn emails_and_names() {
        assert_eq!(parse_email(" Ann@Example.COM ").unwrap(), "ann@example.com");
        assert!(parse_email("ann").is_err());
        assert!(parse_email("ann@localhost").is_err());
        assert!(parse_name("name", "  ").is_err());
        assert_eq!(parse_name("name", " Acme ").unwrap(), "Acme");
    }

    #[test]
    fn an_asio_client_id_must_carry_its_environments_prefix() {
        assert!(asio_client_id("na", "0e30abc").is_ok());
        assert!(asio_client_id("au", "0E32abc").is_ok());
        let e = asio_client_id("au", "0e31abc").unwrap_err();
        assert!(e.contains("EU") && e.contains("AU"), "{e}");
        assert!(asio_client_id("eu", "abc").unwrap_err().contains("0e31"));
    }
}
