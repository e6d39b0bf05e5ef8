//! The health probes over real loopback sockets: each test starts its own listener on 127.0.0.1
//! or ::1 (TCP, HTTP, HTTPS with the self-signed pair in `tests/data/health`) and checks the
//! verdict and the reason a probe gives. Timeouts here only bound a test that would otherwise
//! hang; no assertion is on how long anything took. The firewall mark is proven in a network
//! namespace of its own with a rule that routes by it: that test needs root, so it is
//! `#[ignore]`d and `make unit-root` runs it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lvs_operator::health::{Check, CheckKind, Engine, Failure, Health, Network, Via, probe_once};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

/// Long enough for any loaded machine to answer over loopback.
const GENEROUS: Duration = Duration::from_secs(10);

fn check(kind: CheckKind, target: SocketAddr) -> Check {
    Check {
        kind,
        target,
        via: None,
        source: None,
        interval: Duration::from_secs(1),
        timeout: GENEROUS,
        fall: 2,
        rise: 2,
    }
}

fn http(path: &str) -> CheckKind {
    CheckKind::Http { path: path.into() }
}

fn https(path: &str) -> CheckKind {
    CheckKind::Https { path: path.into() }
}

/// What a test server saw of one connection: who connected and the request it sent.
type Seen = (SocketAddr, String);

/// Reads one request (up to its blank line), sends `response`, closes.
async fn answer<S>(mut stream: S, response: &[u8]) -> String
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    // The probe may have gone once it had the status line.
    let _ = stream.write_all(response).await;
    let _ = stream.shutdown().await;
    String::from_utf8_lossy(&request).into_owned()
}

/// An HTTP (or, with `tls`, HTTPS) server on `bind` answering every request with `response`.
async fn server(
    bind: &str,
    tls: Option<TlsAcceptor>,
    response: &'static [u8],
) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let (tls, tx) = (tls.clone(), tx.clone());
            tokio::spawn(async move {
                let request = match tls {
                    None => answer(stream, response).await,
                    Some(tls) => match tls.accept(stream).await {
                        Ok(stream) => answer(stream, response).await,
                        Err(e) => format!("handshake failed: {e}"),
                    },
                };
                let _ = tx.send((peer, request));
            });
        }
    });
    (addr, rx)
}

fn self_signed() -> TlsAcceptor {
    let cert = CertificateDer::from_pem_slice(include_bytes!("data/health/cert.pem")).unwrap();
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("data/health/key.pem")).unwrap();
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// A port on 127.0.0.1 that was just free: bound, then let go.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

async fn reason(check: &Check) -> String {
    probe_once(&Network::new(), check)
        .await
        .expect_err("the probe should fail")
        .to_string()
}

#[tokio::test]
async fn a_listening_port_passes_the_tcp_check() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    assert_eq!(
        probe_once(&Network::new(), &check(CheckKind::Tcp, target)).await,
        Ok(())
    );
}

#[tokio::test]
async fn a_port_nothing_listens_on_is_refused() {
    let target = closed_port().await;
    assert_eq!(
        probe_once(&Network::new(), &check(CheckKind::Tcp, target)).await,
        Err(Failure::Refused)
    );
    assert_eq!(
        reason(&check(http("/"), target)).await,
        "connection refused"
    );
}

#[tokio::test]
async fn an_http_200_passes_and_the_request_is_a_bare_http_1_0_get() {
    let (target, mut seen) = server("127.0.0.1:0", None, b"HTTP/1.1 200 OK\r\n\r\nok").await;
    assert_eq!(
        probe_once(&Network::new(), &check(http("/healthz"), target)).await,
        Ok(())
    );
    let (_, request) = seen.recv().await.unwrap();
    assert_eq!(
        request,
        "GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: lvs-operator\r\nConnection: close\r\n\r\n"
    );
}

#[tokio::test]
async fn an_http_503_fails_with_its_status_as_reason() {
    let (target, _seen) = server(
        "127.0.0.1:0",
        None,
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(reason(&check(http("/"), target)).await, "HTTP 503");
}

#[tokio::test]
async fn an_http_302_passes() {
    let (target, _seen) = server(
        "127.0.0.1:0",
        None,
        b"HTTP/1.1 302 Found\r\nLocation: /login\r\n\r\n",
    )
    .await;
    assert_eq!(
        probe_once(&Network::new(), &check(http("/"), target)).await,
        Ok(())
    );
}

#[tokio::test]
async fn a_server_that_accepts_but_never_answers_fails_with_the_timeout_as_reason() {
    // The kernel completes the handshake into the backlog; nobody ever reads or writes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let silent = Check {
        timeout: Duration::from_millis(200),
        ..check(http("/"), target)
    };
    assert_eq!(reason(&silent).await, "timeout after 200ms");
    drop(listener);
}

#[tokio::test]
async fn a_server_that_closes_without_answering_is_named_so() {
    let (target, _seen) = server("127.0.0.1:0", None, b"").await;
    assert_eq!(
        reason(&check(http("/"), target)).await,
        "connection closed before a response"
    );
}

#[tokio::test]
async fn a_server_speaking_another_protocol_is_not_http() {
    let (target, _seen) = server("127.0.0.1:0", None, b"SSH-2.0-OpenSSH_9.2\r\n").await;
    assert_eq!(
        reason(&check(http("/"), target)).await,
        "not an HTTP response"
    );
}

#[tokio::test]
async fn a_path_that_would_add_headers_is_not_sent() {
    let (target, _seen) = server("127.0.0.1:0", None, b"HTTP/1.1 200 OK\r\n\r\n").await;
    assert_eq!(
        reason(&check(http("/\r\nX-Evil: 1"), target)).await,
        r#"invalid HTTP path "/\r\nX-Evil: 1""#
    );
}

#[tokio::test]
async fn https_passes_against_a_self_signed_server_without_verifying_it() {
    let (target, mut seen) = server(
        "127.0.0.1:0",
        Some(self_signed()),
        b"HTTP/1.1 204 No Content\r\n\r\n",
    )
    .await;
    assert_eq!(
        probe_once(&Network::new(), &check(https("/ready"), target)).await,
        Ok(())
    );
    let (_, request) = seen.recv().await.unwrap();
    assert!(request.starts_with("GET /ready HTTP/1.0\r\n"), "{request}");
}

#[tokio::test]
async fn an_https_503_fails_with_its_status_as_reason() {
    let (target, _seen) = server(
        "127.0.0.1:0",
        Some(self_signed()),
        b"HTTP/1.1 503 Service Unavailable\r\n\r\n",
    )
    .await;
    assert_eq!(reason(&check(https("/"), target)).await, "HTTP 503");
}

#[tokio::test]
async fn https_against_a_plain_http_server_fails_with_a_tls_reason() {
    // As an HTTP server does with bytes it cannot parse (the ClientHello), it answers 400.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
    });
    let reason = reason(&check(https("/"), target)).await;
    assert!(reason.starts_with("TLS: "), "{reason}");
}

#[tokio::test]
async fn over_ipv6_the_host_header_is_bracketed() {
    let (target, mut seen) =
        server("[::1]:0", Some(self_signed()), b"HTTP/1.0 200 OK\r\n\r\n").await;
    assert_eq!(
        probe_once(&Network::new(), &check(https("/"), target)).await,
        Ok(())
    );
    let (_, request) = seen.recv().await.unwrap();
    assert!(request.contains("\r\nHost: [::1]\r\n"), "{request}");
}

#[tokio::test]
async fn a_probe_through_the_vip_leaves_from_the_given_source() {
    // All of 127/8 is local on Linux: 127.0.0.2 is a second address to prove the bind.
    let (target, mut seen) = server("127.0.0.1:0", None, b"HTTP/1.0 200 OK\r\n\r\n").await;
    let via = Check {
        via: Some(Via {
            mark: 0,
            real_server: "127.0.0.1".parse().unwrap(),
        }),
        source: Some("127.0.0.2".parse().unwrap()),
        ..check(http("/"), target)
    };
    assert_eq!(probe_once(&Network::new(), &via).await, Ok(()));
    let (peer, _) = seen.recv().await.unwrap();
    assert_eq!(peer.ip().to_string(), "127.0.0.2");
}

#[tokio::test]
async fn a_source_address_this_host_does_not_hold_fails_the_probe_with_the_cause() {
    let target = closed_port().await;
    let via = Check {
        via: Some(Via {
            mark: 0,
            real_server: "127.0.0.1".parse().unwrap(),
        }),
        source: Some("192.0.2.1".parse().unwrap()),
        ..check(CheckKind::Tcp, target)
    };
    assert_eq!(
        reason(&via).await,
        "cannot bind to 192.0.2.1: cannot assign requested address"
    );
}

#[tokio::test]
async fn the_engine_ejects_a_refusing_server_and_keeps_a_listening_one() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    // Accepted connections are dropped at once, as a real server's would be once closed.
    tokio::spawn(async move {
        loop {
            let _ = listener.accept().await;
        }
    });
    let down = closed_port().await;
    let fast = |target| Check {
        interval: Duration::from_millis(20),
        ..check(CheckKind::Tcp, target)
    };

    let mut registry = prometheus_client::registry::Registry::default();
    let mut engine = Engine::new(&mut registry);
    engine.set([fast(up), fast(down)]);
    tokio::time::timeout(GENEROUS, engine.changed())
        .await
        .expect("the refusing server is ejected");

    let verdicts = engine.verdicts();
    assert_eq!(verdicts[&fast(up)].health, Health::Healthy);
    assert_eq!(verdicts[&fast(down)].health, Health::Unhealthy);
    assert_eq!(
        verdicts[&fast(down)].reason.as_deref(),
        Some("connection refused")
    );
}

/// A network namespace for one test, deleted on drop (`ip netns add` / `ip netns del`).
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (make unit-root runs it as root)"
        );
        let name = format!("lvs-health-{}-{tag}", std::process::id());
        let netns = Self(name);
        netns.ip(&["netns", "add", &netns.0]);
        netns
    }

    fn ip(&self, args: &[&str]) {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ip -n NAME args`.
    fn run(&self, args: &[&str]) {
        self.ip(&[&["-n", &self.0], args].concat());
    }

    /// Runs `f` on a thread inside the namespace, with a current-thread runtime of its own.
    fn enter<F: std::future::Future<Output = ()>>(&self, f: impl FnOnce() -> F + Send) {
        let path = format!("/var/run/netns/{}", self.0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&path).unwrap();
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(f());
            })
            .join()
            .unwrap()
        });
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

#[test]
#[ignore = "needs root and a network namespace"]
fn the_mark_of_a_probe_through_the_vip_steers_its_route() {
    // Policy routing by mark, as a director steers probes through the VIP to one real server;
    // here mark 7 meets a `prohibit` rule placed before the local table, so only a probe that
    // really carries the mark is turned away.
    let netns = Netns::new("mark");
    netns.run(&["link", "set", "lo", "up"]);
    netns.run(&["rule", "add", "pref", "100", "lookup", "local"]);
    netns.run(&["rule", "del", "pref", "0", "lookup", "local"]);
    netns.run(&["rule", "add", "pref", "10", "fwmark", "7", "prohibit"]);
    netns.enter(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let marked = |mark| Check {
            via: Some(Via {
                mark,
                real_server: format!("10.10.24.{mark}").parse().unwrap(),
            }),
            ..check(CheckKind::Tcp, target)
        };
        assert_eq!(reason(&marked(7)).await, "permission denied");
        assert_eq!(probe_once(&Network::new(), &marked(8)).await, Ok(()));
        assert_eq!(
            probe_once(&Network::new(), &check(CheckKind::Tcp, target)).await,
            Ok(())
        );
    });
}
