//! Health checks of real servers: one prober task per distinct [`Check`], a fall/rise verdict
//! per check, and the metrics and log lines of each transition.
//!
//! The agent on the director says which checks it wants ([`Engine::set`]), waits for a verdict
//! to change ([`Engine::changed`]) and reads them all ([`Engine::verdicts`]) to set the weights
//! it programs into IPVS. Many IPVS destinations share one check (the same real server behind
//! several services and ports), so the check itself is the key: 100,000 destinations over
//! 1,000 real servers run 1,000 probers. `threshold` is the pure state machine, `probe` the
//! network side (TCP, HTTP, HTTPS, optionally through the VIP with a firewall mark), `engine`
//! the tasks that join them, `metrics` what `/metrics` shows of it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

mod board;
mod engine;
#[cfg(test)]
mod engine_tests;
mod metrics;
mod probe;
mod threshold;
mod tls;

pub use engine::Engine;
pub use probe::{Failure, Network, Probe, probe_once};
pub use threshold::{Tracker, Transition};

/// What to check; also the dedup key: one prober per distinct `Check`, however many IPVS
/// services and ports share it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Check {
    pub kind: CheckKind,
    /// Where to connect: the real server, or the VIP when `via` is set.
    pub target: SocketAddr,
    /// Probe through the VIP: the real server is reached as clients reach it.
    pub via: Option<Via>,
    /// The address to bind before connecting (port 0): the director's own, so replies come back
    /// to it. Never left to the kernel: with an IPv6 VIP/128 on the interface, source address
    /// selection (longest matching prefix) would pick the VIP, and the real server, which holds
    /// the VIP too, would answer itself.
    pub source: Option<IpAddr>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures that eject (`failureThreshold`).
    pub fall: u32,
    /// Consecutive successes that re-admit (`successThreshold`).
    pub rise: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CheckKind {
    /// The TCP handshake completes.
    Tcp,
    /// `GET path` answers 2xx or 3xx.
    Http { path: String },
    /// The same over TLS, without verifying the certificate (see `tls`).
    Https { path: String },
}

impl CheckKind {
    /// The `kind` label of the metrics.
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http { .. } => "http",
            CheckKind::Https { .. } => "https",
        }
    }
}

/// How a probe through the VIP is steered to one real server: the socket's firewall mark
/// (`SO_MARK`) makes IPVS's firewall-mark service of that real server take the probe, addressed to
/// the VIP, to it by Direct Routing, as a client's packet would go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Via {
    /// `SO_MARK` of the probe socket; 0 leaves it unmarked.
    pub mark: u32,
    /// The real server the mark leads to, which the log lines and metrics name.
    pub real_server: IpAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Health {
    Healthy,
    Unhealthy,
}

/// The state of one check and since when it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub health: Health,
    /// When the check started (for the first Healthy) or its last transition.
    pub since: Instant,
    /// Why it is Unhealthy: `connection refused`, `timeout after 1s`, `HTTP 503`, ...
    pub reason: Option<String>,
}

impl Check {
    /// The real server this check judges: the target, or the one the mark leads to through the
    /// VIP.
    pub fn real_server(&self) -> SocketAddr {
        match &self.via {
            Some(via) => SocketAddr::new(via.real_server, self.target.port()),
            None => self.target,
        }
    }
}

/// What the log lines name: `10.10.24.22:80`, `http 10.10.24.22:80/healthz`,
/// `10.10.24.22:80 through the VIP 10.10.24.88 (mark 7, from 10.10.24.10)`.
impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let server = self.real_server();
        match &self.kind {
            CheckKind::Tcp => write!(f, "{server}")?,
            CheckKind::Http { path } | CheckKind::Https { path } => {
                write!(f, "{} {server}{path}", self.kind.name())?
            }
        }
        if let Some(via) = &self.via {
            write!(
                f,
                " through the VIP {} (mark {}",
                self.target.ip(),
                via.mark
            )?;
            if let Some(source) = self.source {
                write!(f, ", from {source}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}
