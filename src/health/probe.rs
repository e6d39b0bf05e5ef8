//! One probe of one check over the network: connect (marked and bound when it goes through the
//! VIP), then for HTTP(S) one `GET` and its status line. The engine runs it every interval,
//! bounded by the check's timeout ([`probe_once`]); a failure becomes a short [`Failure`] that the
//! verdict, the log line and the status carry.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

use super::{Check, CheckKind, tls};

/// How a check is carried out. [`Network`] is the real one; tests (and the agent's tests) put a
/// scripted one in its place.
pub trait Probe: Send + Sync + 'static {
    /// One attempt; the engine bounds it by the check's timeout, so it may wait forever.
    fn probe(&self, check: &Check) -> impl Future<Output = Result<(), Failure>> + Send;
}

/// Why a probe failed, worded as short as the log line and the status want it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    Refused,
    NoRoute,
    NetworkUnreachable,
    Reset,
    /// No answer within the check's timeout.
    Timeout(Duration),
    /// The connection closed before a status line came.
    Closed,
    /// The first line is not `HTTP/x.y NNN ...`.
    NotHttp,
    /// A status outside 2xx and 3xx.
    Http(u16),
    Tls(String),
    /// The probe could not be set up here (mark, bind, path): a director-side problem, named so.
    Setup(String),
    /// Anything else, as the OS words it.
    Io(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused => f.write_str("connection refused"),
            Failure::NoRoute => f.write_str("no route to host"),
            Failure::NetworkUnreachable => f.write_str("network unreachable"),
            Failure::Reset => f.write_str("connection reset"),
            Failure::Timeout(d) => write!(f, "timeout after {}", humantime::format_duration(*d)),
            Failure::Closed => f.write_str("connection closed before a response"),
            Failure::NotHttp => f.write_str("not an HTTP response"),
            Failure::Http(code) => write!(f, "HTTP {code}"),
            Failure::Tls(e) => write!(f, "TLS: {e}"),
            Failure::Setup(e) | Failure::Io(e) => f.write_str(e),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Failure::Refused,
            io::ErrorKind::HostUnreachable => Failure::NoRoute,
            io::ErrorKind::NetworkUnreachable => Failure::NetworkUnreachable,
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => Failure::Reset,
            io::ErrorKind::UnexpectedEof => Failure::Closed,
            _ => match e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                Some(tls) => Failure::Tls(tls.to_string()),
                None => Failure::Io(os_message(&e)),
            },
        }
    }
}

impl Failure {
    /// A failed handshake, whatever broke it, is a TLS failure: `TLS: connection reset`.
    fn handshake(e: io::Error) -> Self {
        match Failure::from(e) {
            tls @ Failure::Tls(_) => tls,
            other => Failure::Tls(other.to_string()),
        }
    }
}

/// `Connection refused (os error 111)` without the number, lower-cased as the others.
fn os_message(e: &io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// One probe bounded by the check's timeout: what the engine runs every interval.
pub async fn probe_once<P: Probe>(probe: &P, check: &Check) -> Result<(), Failure> {
    match tokio::time::timeout(check.timeout, probe.probe(check)).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Timeout(check.timeout)),
    }
}

/// Probes over real sockets.
#[derive(Clone)]
pub struct Network {
    tls: TlsConnector,
}

impl Network {
    pub fn new() -> Self {
        Self {
            tls: tls::connector(),
        }
    }
}

impl Default for Network {
    fn default() -> Self {
        Self::new()
    }
}

impl Probe for Network {
    async fn probe(&self, check: &Check) -> Result<(), Failure> {
        let stream = connect(check).await?;
        match &check.kind {
            // The handshake is the check; dropping the stream closes it.
            CheckKind::Tcp => Ok(()),
            CheckKind::Http { path } => get(stream, check.target.ip(), path).await,
            CheckKind::Https { path } => {
                let name = tls::server_name(check.target.ip());
                let stream = self
                    .tls
                    .connect(name, stream)
                    .await
                    .map_err(Failure::handshake)?;
                get(stream, check.target.ip(), path).await
            }
        }
    }
}

/// The socket of one probe. Through the VIP, the mark lets the director's policy routing send
/// it to one real server, and the bound source is where that server's reply must come back.
async fn connect(check: &Check) -> Result<TcpStream, Failure> {
    let socket = match check.target {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }?;
    if let Some(via) = check.via.filter(|v| v.mark != 0) {
        setsockopt(&socket, sockopt::Mark, &via.mark)
            .map_err(|e| Failure::Setup(format!("cannot set SO_MARK {}: {e}", via.mark)))?;
    }
    if let Some(source) = check.source {
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| Failure::Setup(format!("cannot bind to {source}: {}", os_message(&e))))?;
    }
    Ok(socket.connect(check.target).await?)
}

/// Longest status line read; a real one is ~20 bytes, so this only stops a server that streams.
const STATUS_LINE_MAX: usize = 1024;

/// `GET path HTTP/1.0` and the status of the answer. HTTP/1.0 with `Connection: close` so no
/// server keeps the connection open for more; only the status line is read, the body never.
async fn get<S>(mut stream: S, host: IpAddr, path: &str) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // A path with a space or a line break would smuggle headers into the request.
    if path.bytes().any(|b| b == b' ' || b.is_ascii_control()) {
        return Err(Failure::Setup(format!("invalid HTTP path {path:?}")));
    }
    let path = if path.is_empty() { "/" } else { path };
    // The one allocation of a probe besides the socket.
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {}\r\nUser-Agent: lvs-operator\r\nConnection: close\r\n\r\n",
        Host(host)
    );
    stream.write_all(request.as_bytes()).await?;
    // TLS holds written data until flushed.
    stream.flush().await?;

    let mut buf = [0u8; STATUS_LINE_MAX];
    let mut len = 0;
    while len < buf.len() && !buf[..len].contains(&b'\n') {
        match stream.read(&mut buf[len..]).await? {
            0 => break,
            n => len += n,
        }
    }
    match status(&buf[..len])? {
        200..=399 => Ok(()),
        code => Err(Failure::Http(code)),
    }
}

/// An address as the `Host` header wants it: IPv6 in brackets.
struct Host(IpAddr);

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(ip) => write!(f, "{ip}"),
            IpAddr::V6(ip) => write!(f, "[{ip}]"),
        }
    }
}

/// The code of a status line, `HTTP/1.1 503 Service Unavailable` -> 503.
fn status(response: &[u8]) -> Result<u16, Failure> {
    if response.is_empty() {
        return Err(Failure::Closed);
    }
    let line = response.split(|&b| b == b'\n').next().unwrap_or(response);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line.split(|&b| b == b' ');
    let version = words.next().unwrap_or_default();
    let code = words.next().unwrap_or_default();
    if !version.starts_with(b"HTTP/") || code.len() != 3 {
        return Err(Failure::NotHttp);
    }
    std::str::from_utf8(code)
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or(Failure::NotHttp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_code_is_read_from_the_status_line() {
        assert_eq!(status(b"HTTP/1.1 503 Service Unavailable\r\n"), Ok(503));
        assert_eq!(status(b"HTTP/1.0 200 OK\r\nContent-Length: 0"), Ok(200));
        assert_eq!(status(b"HTTP/1.1 204\r\n"), Ok(204));
    }

    #[test]
    fn a_response_cut_after_the_code_still_counts() {
        assert_eq!(status(b"HTTP/1.1 302 Fo"), Ok(302));
    }

    #[test]
    fn what_is_not_a_status_line_is_named_so() {
        assert_eq!(status(b""), Err(Failure::Closed));
        assert_eq!(status(b"SSH-2.0-OpenSSH_9.2\r\n"), Err(Failure::NotHttp));
        assert_eq!(status(b"HTTP/1.1 20"), Err(Failure::NotHttp));
        assert_eq!(status(b"HTTP/1.1 abc OK\r\n"), Err(Failure::NotHttp));
    }

    #[test]
    fn failures_read_as_short_reasons() {
        let reasons = [
            Failure::from(io::Error::from(io::ErrorKind::ConnectionRefused)),
            Failure::from(io::Error::from_raw_os_error(nix::libc::EHOSTUNREACH)),
            Failure::from(io::Error::from(io::ErrorKind::ConnectionReset)),
            Failure::Timeout(Duration::from_secs(1)),
            Failure::Timeout(Duration::from_millis(500)),
            Failure::Http(503),
            Failure::from(io::Error::new(
                io::ErrorKind::InvalidData,
                rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure),
            )),
            Failure::handshake(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Failure::from(io::Error::from_raw_os_error(nix::libc::EADDRNOTAVAIL)),
        ]
        .map(|f| f.to_string());
        assert_eq!(
            reasons,
            [
                "connection refused",
                "no route to host",
                "connection reset",
                "timeout after 1s",
                "timeout after 500ms",
                "HTTP 503",
                "TLS: received fatal alert: HandshakeFailure",
                "TLS: connection closed before a response",
                "cannot assign requested address",
            ]
        );
    }
}
