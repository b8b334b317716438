#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The server against slow and idle clients (issue 17, item 10): half-sent headers and
//! idle connections are closed after the header timeout, a body must arrive whole within
//! the body timeout, connections beyond the limit wait instead of exhausting the process,
//! and `/healthz` keeps answering throughout. Loopback only, with short limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mspbridge_providers::{ProviderConfig, Providers};
use mspbridge_vault::Vault;
use mspbridge_web::{AppState, ServerLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

struct Server {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _db: mspbridge_store::test_support::TestDb,
}

async fn start(limits: ServerLimits) -> Server {
    let db = mspbridge_store::test_support::sqlite().await.unwrap();
    let state = AppState::new(
        db.store.clone(),
        Arc::new(Vault::new(&[9u8; 32])),
        Providers::new(ProviderConfig::default()),
        false,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(mspbridge_web::serve_with(
        listener,
        state,
        limits,
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        addr,
        stop: Some(stop),
        task,
        _db: db,
    }
}

/// `GET /healthz` on a new connection: the status line's code and how long it took.
async fn healthz(addr: std::net::SocketAddr) -> (u16, Duration) {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("/healthz answers")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, start.elapsed())
}

/// Connections that send half a request's headers and then nothing.
async fn half_open(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: te")
            .await
            .unwrap();
        conns.push(s);
    }
    conns
}

/// Whether the server closes `s` within `within`: what it sent before closing.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut out = Vec::new();
    match tokio::time::timeout(within, s.read_to_end(&mut out)).await {
        Ok(_) => Some(String::from_utf8_lossy(&out).to_string()),
        Err(_) => None,
    }
}

const SHORT: ServerLimits = ServerLimits {
    header_read_timeout: Duration::from_secs(1),
    body_read_timeout: Duration::from_secs(1),
    max_connections: 512,
};

#[tokio::test]
async fn idle_and_half_sent_connections_are_closed_and_healthz_keeps_answering() {
    let server = start(SHORT).await;
    let mut idle = half_open(server.addr, 300).await;
    // And some that never send a byte.
    for _ in 0..20 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let (code, took) = healthz(server.addr).await;
    assert_eq!(code, 200);
    assert!(took < Duration::from_secs(2), "/healthz took {took:?}");

    // Each is closed once the header timeout has passed (1 s here).
    let started = Instant::now();
    for (i, s) in idle.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(5)).await.is_some(),
            "idle connection {i} still open after {:?}",
            started.elapsed()
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let (code, _) = healthz(server.addr).await;
    assert_eq!(code, 200);
    stop(server).await;
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_one() {
    let server = start(ServerLimits {
        max_connections: 20,
        ..SHORT
    })
    .await;
    let _idle = half_open(server.addr, 20).await;
    // Every slot is held: /healthz is served once the header timeout frees them, not
    // before, and not never.
    let (code, took) = healthz(server.addr).await;
    assert_eq!(code, 200);
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "/healthz took {took:?}"
    );
    stop(server).await;
}

#[tokio::test]
async fn a_body_must_arrive_whole_within_the_body_timeout() {
    let server = start(SHORT).await;
    // A body that stops halfway.
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled
        .write_all(b"POST /webhooks/halo/1 HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"na")
        .await
        .unwrap();
    // A body trickled a byte at a time, never pausing long: the deadline is for the
    // whole body.
    let mut trickle = TcpStream::connect(server.addr).await.unwrap();
    trickle
        .write_all(b"POST /webhooks/halo/1 HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while started.elapsed() < Duration::from_secs(5) {
        if trickle.write_all(b" ").await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(200), trickle.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(4));
    let answer = closed_within(&mut stalled, Duration::from_secs(5))
        .await
        .expect("the stalled body's connection is closed");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    stop(server).await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_returns_with_idle_connections_open() {
    let server = start(ServerLimits {
        header_read_timeout: Duration::from_secs(60),
        ..SHORT
    })
    .await;
    // A keep-alive connection left idle after its request.
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let addr = server.addr;
    stop(server).await;
    assert!(
        closed_within(&mut kept, Duration::from_secs(2))
            .await
            .is_some(),
        "the idle connection is closed on shutdown"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

/// Signals shutdown; the server must return promptly.
async fn stop(mut server: Server) {
    let _ = server.stop.take().unwrap().send(());
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .expect("the server stops within 5 s")
        .unwrap()
        .unwrap();
}
