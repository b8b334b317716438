//! Outbound HTTP to vendors. User-supplied hosts are validated before any request:
//! by default only public addresses over https are reachable, so a tenant admin cannot
//! point a connector at the server's own network (SSRF). Loopback over plain http is
//! allowed only when the policy says so (the demo and tests, whose sandboxes run on
//! 127.0.0.1).
//!
//! The guard works at two depths. `check_host` reads a configured host as the HTTP client
//! will (the URL parser turns `2130706433`, `0x7f000001`, `0177.0.0.1` or `127.1` into
//! 127.0.0.1, and `a@127.0.0.1` into 127.0.0.1), so an admin is told at once. And every
//! connection any vendor client opens is checked after it is made, against the peer
//! address it actually reached (`PeerGuard`, a layer on reqwest's connector), before a
//! byte of the request is sent: a host name is filtered again after DNS by the resolver,
//! and an IP-literal URL from anywhere (a vendor's next-page link, a callback's key URL)
//! cannot send a request to a private address either.

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
    #[error("'{0}' is not a valid host name")]
    InvalidHost(String),
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
        let Some(normal) = normalised_host(host) else {
            return Err(OutboundError::InvalidHost(host.to_string()));
        };
        let name = normal.trim_end_matches('.');
        let literal = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>();
        if name.eq_ignore_ascii_case("localhost")
            || name.to_ascii_lowercase().ends_with(".localhost")
            || literal.is_ok_and(is_forbidden)
        {
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
            .connector_layer(PeerGuardLayer { policy: *self })
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

/// `host` (`host`, `host:port`) as the HTTP client reads it in a URL: numeric IPv4 forms
/// normalised to dotted quads, IPv6 compressed, user information dropped. `None` when it
/// is not a URL's host at all.
fn normalised_host(host: &str) -> Option<String> {
    let url = reqwest::Url::parse(&format!("http://{host}/")).ok()?;
    url.host_str().map(str::to_string)
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
    let bare = normalised_host(host).unwrap_or_else(|| strip_port(host).to_string());
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .trim_start_matches('[')
            .trim_end_matches(']')
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
            let seg = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
            };
            // IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) addresses reach the
            // IPv4 address they carry; 6to4 (2002:aabb:ccdd::) routes to it.
            if seg[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified() {
                return is_forbidden(IpAddr::V4(embedded(seg[6], seg[7])));
            }
            if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_forbidden(IpAddr::V4(embedded(seg[6], seg[7])));
            }
            if seg[0] == 0x2002 && is_forbidden(IpAddr::V4(embedded(seg[1], seg[2]))) {
                return true;
            }
            let first = seg[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
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

/// Checks the peer address of every connection a vendor client opens, whatever URL led
/// there: the last word of the SSRF guard.
#[derive(Clone, Copy)]
struct PeerGuardLayer {
    policy: OutboundPolicy,
}

impl<S> tower::Layer<S> for PeerGuardLayer {
    type Service = PeerGuard<S>;
    fn layer(&self, inner: S) -> PeerGuard<S> {
        PeerGuard {
            inner,
            policy: self.policy,
        }
    }
}

#[derive(Clone)]
struct PeerGuard<S> {
    inner: S,
    policy: OutboundPolicy,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, R> tower::Service<R> for PeerGuard<S>
where
    S: tower::Service<R>,
    S::Response: hyper_util::client::legacy::connect::Connection + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let connecting = self.inner.call(req);
        let policy = self.policy;
        Box::pin(async move {
            let conn = connecting.await.map_err(Into::into)?;
            if policy.allow_private {
                return Ok(conn);
            }
            let mut extensions = http::Extensions::new();
            hyper_util::client::legacy::connect::Connection::connected(&conn)
                .get_extras(&mut extensions);
            let peer = extensions
                .get::<hyper_util::client::legacy::connect::HttpInfo>()
                .map(|i| i.remote_addr());
            match peer {
                Some(addr) if !is_forbidden(addr.ip()) => Ok(conn),
                Some(addr) => {
                    Err(Box::new(OutboundError::PrivateAddress(addr.ip().to_string())) as BoxError)
                }
                None => Err(Box::new(OutboundError::PrivateAddress(
                    "a connection whose peer address is unknown".to_string(),
                )) as BoxError),
            }
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

    /// Every spelling of a private address the URL parser accepts is refused, as the
    /// HTTP client would read it (outside testing found these reaching 127.0.0.1).
    #[test]
    fn numeric_and_odd_spellings_of_private_addresses_are_refused() {
        let p = OutboundPolicy::default();
        for host in [
            "2130706433",
            "2130706433:9001",
            "0x7f000001",
            "0x7f000001:9001",
            "0177.0.0.1",
            "017700000001",
            "127.1",
            "127.0.1",
            "0",
            "0:9001",
            "0x7f.0.0.1",
            "127.0.0.1.",
            "LOCALHOST",
            "localhost.",
            "api.localhost",
            "user@127.0.0.1",
            "evil.example@127.0.0.1:9001",
            "[::1]",
            "[0:0:0:0:0:0:0:1]",
            "[::]",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "[::ffff:10.0.0.1]:443",
            "[::127.0.0.1]",
            "[64:ff9b::a00:1]",
            "[2002:7f00:1::]",
            "[fe80::1]",
            "[fc00::1]",
            "[fec0::1]",
            "169.254.169.254",
            "0xa9fea9fe",
            "3232235521",
        ] {
            assert!(
                matches!(p.check_host(host), Err(OutboundError::PrivateAddress(_))),
                "{host}"
            );
        }
        for host in [
            "8.8.8.8",
            "134744072",
            "na.myconnectwise.net",
            "[2606:4700::1111]",
        ] {
            assert!(p.check_host(host).is_ok(), "{host}");
        }
        assert!(matches!(
            p.check_host("bad host"),
            Err(OutboundError::InvalidHost(_))
        ));
    }

    /// A request whose URL names a private address in any form never connects there: the
    /// peer check refuses the connection itself, whatever built the URL.
    #[tokio::test]
    async fn a_connection_to_a_private_peer_is_refused_whatever_the_url_says() {
        install_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Bytes of requests that reached the listener (a refused connection sends none).
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        counter.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        });
        let guarded = OutboundPolicy::default().client(Duration::from_secs(2));
        for host in [
            "127.0.0.1",
            "2130706433",
            "0x7f000001",
            "0177.0.0.1",
            "017700000001",
            "127.1",
            "127.0.1",
            "localhost",
            "[::ffff:127.0.0.1]",
        ] {
            let url = format!("http://{host}:{port}/x");
            let e = guarded.get(&url).send().await.unwrap_err();
            assert!(
                crate::http::describe(&e).contains("private, loopback or link-local"),
                "{url}: {e:?}"
            );
        }
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "no request reached the listener"
        );
        // The policy that allows private hosts (the demo's) sends its request.
        let open = OutboundPolicy {
            allow_private: true,
        }
        .client(Duration::from_millis(300));
        let _ = open.get(format!("http://127.0.0.1:{port}/x")).send().await;
        assert!(accepted.load(std::sync::atomic::Ordering::SeqCst) > 0);
    }

    #[test]
    fn ipv6_mapped_and_unique_local() {
        assert!(is_forbidden("::ffff:10.0.0.1".parse().unwrap()));
        assert!(is_forbidden("fd00::1".parse().unwrap()));
        assert!(is_forbidden("fe80::1".parse().unwrap()));
        assert!(!is_forbidden("2606:4700::1111".parse().unwrap()));
    }
}
