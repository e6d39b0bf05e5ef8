//! [`VirtualService`]: an LvsService once validated, in the types the data plane speaks.
//!
//! The API keeps what users write (strings, i32s, label selectors); `api::validate` checks it once
//! and produces this value, and nothing below the API parses an address or a port again. It holds
//! no Kubernetes type: where real servers come from in a cluster (a node selector, a Service) is
//! the controller's business, which hands the agents plain addresses.

use std::net::IpAddr;

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
}

impl VirtualService {
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
