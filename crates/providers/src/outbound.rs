//! Outbound HTTP to vendors. User-supplied hosts are validated before any request:
//! by default only public addresses over https are reachable, so a tenant admin cannot
//! point a connector at the server's own network (SSRF). Loopback over plain http is
//! allowed only when the policy says so (the demo and tests, whose sandboxes run on
//! 127.0.0.1).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Once};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    /// Allow loopback and private addresses, and plain http to loopback.
    pub allow_private: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutboundError {
    #[error(
        "{0} is a private, loopback or link-local address; mspbridge only connects to public vendor hosts"
    )]
    PrivateAddress(String),
}

impl OutboundPolicy {
    /// The scheme to use for `host` (`host` or `host:port`).
    pub fn scheme_for(&self, host: &str) -> &'static str {
        if self.allow_private && is_loopback_host(host) {
            "http"
        } else {
            "https"
        }
    }

    /// Rejects IP-literal hosts the policy forbids. Host names are checked again at
    /// connection time by the resolver, after DNS, so rebinding cannot bypass it.
    pub fn check_host(&self, host: &str) -> Result<(), OutboundError> {
        if self.allow_private {
            return Ok(());
        }
        let bare = strip_port(host);
        if bare.eq_ignore_ascii_case("localhost") {
            return Err(OutboundError::PrivateAddress(host.to_string()));
        }
        let literal = bare
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>();
        if literal.is_ok_and(is_forbidden) {
            return Err(OutboundError::PrivateAddress(host.to_string()));
        }
        Ok(())
    }

    /// A reqwest client for vendor calls: rustls, no redirects (a redirect could
    /// leave the validated host), timeouts, and the filtering resolver.
    pub fn client(&self, timeout: Duration) -> reqwest::Client {
        install_crypto_provider();
        let builder = reqwest::Client::builder()
            .user_agent(concat!("mspbridge/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .timeout(timeout)
            .dns_resolver(Arc::new(FilteringResolver { policy: *self }));
        match builder.build() {
            Ok(c) => c,
            Err(e) => {
                // Only a broken TLS setup makes the builder fail; fall back to defaults.
                tracing::error!(error = %e, "could not build the vendor HTTP client; using defaults");
                reqwest::Client::new()
            }
        }
    }
}

/// Installs rustls's ring provider once per process; every reqwest client needs it.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split(']')
            .next()
            .map(|h| h.trim_start_matches('['))
            .unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

fn is_loopback_host(host: &str) -> bool {
    let bare = strip_port(host);
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// Loopback, private, link-local, CGNAT, unspecified, multicast, broadcast and
/// unique-local addresses are never vendor hosts.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (o[0] == 100 && (o[1] & 0xC0) == 64)
                || o[0] == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_forbidden(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

struct FilteringResolver {
    policy: OutboundPolicy,
}

impl Resolve for FilteringResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| policy.allow_private || !is_forbidden(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(OutboundError::PrivateAddress(host))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_refused_by_default() {
        let p = OutboundPolicy::default();
        for host in [
            "127.0.0.1:8080",
            "localhost",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.169.254",
            "[::1]:443",
            "100.64.0.1",
            "0.0.0.0",
        ] {
            assert!(p.check_host(host).is_err(), "{host}");
        }
        assert!(p.check_host("na.myconnectwise.net").is_ok());
        assert!(p.check_host("8.8.8.8").is_ok());
        assert_eq!(p.scheme_for("127.0.0.1:9000"), "https");
    }

    #[test]
    fn demo_policy_allows_loopback_over_http() {
        let p = OutboundPolicy {
            allow_private: true,
        };
        assert!(p.check_host("127.0.0.1:9000").is_ok());
        assert_eq!(p.scheme_for("127.0.0.1:9000"), "http");
        assert_eq!(p.scheme_for("na.myconnectwise.net"), "https");
    }

    #[test]
    fn ipv6_mapped_and_unique_local() {
        assert!(is_forbidden("::ffff:10.0.0.1".parse().unwrap()));
        assert!(is_forbidden("fd00::1".parse().unwrap()));
        assert!(is_forbidden("fe80::1".parse().unwrap()));
        assert!(!is_forbidden("2606:4700::1111".parse().unwrap()));
    }
}
