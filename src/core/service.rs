//! [`VirtualService`]: an LvsService once validated, in the types the data plane speaks.
//!
//! The API keeps what users write (strings, i32s, label selectors); `api::validate` checks it once
//! and produces this value, and nothing below the API parses an address or a port again. It holds
//! no Kubernetes type: where real servers come from in a cluster (a node selector, a Service) is
//! the controller's business, which hands the agents plain addresses.

use std::net::IpAddr;
use std::time::Duration;

use super::model::{ServiceConfig, ServiceKey};
use crate::ipvs::Protocol;

/// One LvsService, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualService {
    /// How users see the object in messages: `namespace/name`, or `name` in standalone files.
    pub id: String,
    pub vip: IpAddr,
    /// At least one, no two alike.
    pub ports: Vec<Port>,
    /// The IPVS settings every port gets: scheduler, its flags, persistence.
    pub config: ServiceConfig,
    /// `spec.backends`, when the spec lists its real servers (else the cluster resolves them).
    pub backends: Option<Vec<RealServer>>,
    /// `spec.directors.interface`: where a director puts the VIP.
    pub interface: Option<String>,
    /// How the directors check the real servers; `None` for `type: None`.
    pub health: Option<HealthSpec>,
}

impl VirtualService {
    /// The port whose check decides the real servers of `port`: the check's own port when it
    /// names one (then every port, UDP included, follows it), else `port` itself when it is TCP.
    /// `None`: not checked (a UDP port without a named check port, or no checks at all).
    pub fn checked_port(&self, port: Port) -> Option<u16> {
        let health = self.health.as_ref()?;
        match health.port {
            Some(p) => Some(p),
            None if port.protocol == Protocol::Tcp => Some(port.port),
            None => None,
        }
    }

    /// The IPVS services of this object, one per port.
    pub fn keys(&self) -> impl Iterator<Item = ServiceKey> + '_ {
        self.ports.iter().map(|p| ServiceKey {
            vip: self.vip,
            protocol: p.protocol,
            port: p.port,
        })
    }
}

/// One port of the virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    pub protocol: Protocol,
    pub port: u16,
}

/// A real server and its weight (0 takes no new connections).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RealServer {
    pub addr: IpAddr,
    pub weight: u32,
}

/// `spec.healthCheck`, validated: how the directors check each real server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    pub probe: Probe,
    /// Check this port instead of each service port.
    pub port: Option<u16>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures that eject a real server.
    pub fall: u32,
    /// Consecutive successes that re-admit it.
    pub rise: u32,
    /// Probe through the VIP, as clients reach the real server, rather than its own address.
    pub through_vip: bool,
    /// How long a re-admitted real server takes to reach its full weight.
    pub slow_start: Duration,
}

impl HealthSpec {
    /// What an object without `spec.healthCheck` gets: a TCP check of each TCP port through the
    /// VIP, every 2 s, 1 s timeout, 2 failures out and 2 successes back.
    pub fn default_tcp() -> Self {
        Self {
            probe: Probe::Tcp,
            port: None,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            fall: 2,
            rise: 2,
            through_vip: true,
            slow_start: Duration::ZERO,
        }
    }
}

/// What a health check does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Probe {
    /// A TCP connection is accepted.
    Tcp,
    /// `GET path` answers 2xx or 3xx.
    Http { path: String },
    /// The same over TLS (the certificate is not verified: real servers are checked by address).
    Https { path: String },
}
