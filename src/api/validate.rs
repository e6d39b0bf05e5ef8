//! The CRD's validation rules, enforced again in Rust, and the one place the spec is parsed.
//!
//! The API server enforces the schema and CEL rules of the CRD; the agent enforces these, because
//! in standalone mode nothing stands between a YAML file and the kernel. Messages repeat the CEL
//! rules' wording where the two can say the same thing. Every error names the object and the field.
//!
//! A valid object comes out as a [`VirtualService`]: addresses parsed, ports as `u16`, the IPVS
//! settings computed. Everything downstream reads that value and never the strings again.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use kube::ResourceExt;

use super::{LvsService, LvsServiceSpec, Scheduler};
use crate::core::{Port, RealServer, VirtualService};
use crate::ipvs::ServiceConfig;
use crate::ipvs::types::{SVC_F_PERSISTENT, SVC_F_SCHED1, SVC_F_SCHED2};

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, as the API server names it (`spec.ports[0].port`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// An object rejected as a whole, with every reason found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InvalidObject {
    /// `namespace/name`, or just `name` when the object has no namespace (standalone files).
    pub object: String,
    pub errors: Vec<FieldError>,
}

impl fmt::Display for InvalidObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {e}", self.object)?;
        }
        Ok(())
    }
}

/// How users see an object's identity in messages: `namespace/name` or `name`.
pub fn object_ref(obj: &LvsService) -> String {
    match obj.namespace() {
        Some(ns) => format!("{ns}/{}", obj.name_any()),
        None => obj.name_any(),
    }
}

/// Checks everything the CRD checks and returns the object as the data plane reads it.
pub fn validate(obj: &LvsService) -> Result<VirtualService, InvalidObject> {
    let mut errors = Vec::new();
    if obj.metadata.name.as_deref().unwrap_or("").is_empty() {
        errors.push(FieldError::new("metadata.name", "must be set"));
    }
    let vip = check_spec(obj, &mut errors);
    match vip {
        Some(vip) if errors.is_empty() => Ok(typed(obj, vip)),
        _ => Err(InvalidObject {
            object: object_ref(obj),
            errors,
        }),
    }
}

/// The typed value of a spec that passed every check (so no conversion here can fail).
fn typed(obj: &LvsService, vip: IpAddr) -> VirtualService {
    let spec = &obj.spec;
    VirtualService {
        id: object_ref(obj),
        vip,
        ports: spec
            .ports
            .iter()
            .map(|p| Port {
                protocol: p.protocol,
                port: u16::try_from(p.port).unwrap_or_default(),
            })
            .collect(),
        config: service_config(spec, vip),
        backends: spec.backends.as_ref().map(|backends| {
            backends
                .iter()
                .filter_map(|b| {
                    Some(RealServer {
                        addr: b.address.parse().ok()?,
                        weight: u32::try_from(b.weight).ok()?,
                    })
                })
                .collect()
        }),
        interface: spec.directors.as_ref().and_then(|d| d.interface.clone()),
    }
}

/// The IPVS settings of every port of an object, as ipvsadm would send them: the netmask is
/// always set (255.255.255.255 or /128 unless persistence groups clients), which is what the
/// kernel reports back, so an unchanged service compares equal.
fn service_config(spec: &LvsServiceSpec, vip: IpAddr) -> ServiceConfig {
    let mut config = ServiceConfig::new(spec.scheduler, vip);
    if let Some(p) = &spec.persistence {
        config.flags |= SVC_F_PERSISTENT;
        config.timeout = u32::try_from(p.timeout_seconds).unwrap_or(u32::MAX);
        if let Some(mask) = p.netmask.as_deref().and_then(|m| parse_netmask(vip, m)) {
            config.netmask = mask;
        }
    }
    if let Some(f) = &spec.scheduler_flags
        && matches!(spec.scheduler, Scheduler::Sh | Scheduler::Mh)
    {
        if f.fallback {
            config.flags |= SVC_F_SCHED1;
        }
        if f.port {
            config.flags |= SVC_F_SCHED2;
        }
    }
    config
}

/// Checks the spec, pushing every error found; returns the VIP when it parses.
fn check_spec(obj: &LvsService, errors: &mut Vec<FieldError>) -> Option<IpAddr> {
    let spec = &obj.spec;
    let vip = check_address("spec.vip", &spec.vip, "10.10.24.88 or 2001:db8::88", errors);

    if spec.ports.is_empty() {
        errors.push(FieldError::new("spec.ports", "must have at least 1 item"));
    }
    if spec.ports.len() > 64 {
        errors.push(FieldError::new("spec.ports", "must have at most 64 items"));
    }
    let mut seen = BTreeSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        if !(1..=65535).contains(&p.port) {
            errors.push(FieldError::new(
                format!("spec.ports[{i}].port"),
                format!("{} is out of range 1..65535", p.port),
            ));
        }
        if !seen.insert((p.port, p.protocol)) {
            errors.push(FieldError::new(
                format!("spec.ports[{i}]"),
                format!("duplicate port {}/{}", p.port, p.protocol),
            ));
        }
    }

    if spec.scheduler_flags.is_some() && !matches!(spec.scheduler, Scheduler::Sh | Scheduler::Mh) {
        errors.push(FieldError::new(
            "spec.schedulerFlags",
            "scheduler flags exist only for the sh and mh schedulers",
        ));
    }

    if let Some(p) = &spec.persistence {
        if !(1..=31_536_000).contains(&p.timeout_seconds) {
            errors.push(FieldError::new(
                "spec.persistence.timeoutSeconds",
                format!("{} is out of range 1..31536000", p.timeout_seconds),
            ));
        }
        if let (Some(mask), Some(vip)) = (&p.netmask, vip)
            && parse_netmask(vip, mask).is_none()
        {
            errors.push(FieldError::new(
                "spec.persistence.netmask",
                "for an IPv4 vip, netmask is a dotted mask such as 255.255.255.0; for an IPv6 vip, a prefix length 1..128",
            ));
        }
    }

    let sources = [
        spec.backends.is_some(),
        spec.backend_node_selector.is_some(),
        spec.backend_service.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        errors.push(FieldError::new(
            "spec",
            "exactly one of spec.backends, spec.backendNodeSelector or spec.backendService must be set",
        ));
    }

    if let Some(backends) = &spec.backends {
        if backends.is_empty() {
            errors.push(FieldError::new(
                "spec.backends",
                "must have at least 1 item",
            ));
        }
        if backends.len() > 1024 {
            errors.push(FieldError::new(
                "spec.backends",
                "must have at most 1024 items",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, b) in backends.iter().enumerate() {
            let field = format!("spec.backends[{i}].address");
            if let Some(addr) = check_address(&field, &b.address, "10.10.24.21", errors) {
                if let Some(vip) = vip
                    && vip.is_ipv4() != addr.is_ipv4()
                {
                    errors.push(FieldError::new(
                        format!("spec.backends[{i}]"),
                        "every backend address must be of the same address family as spec.vip",
                    ));
                }
                if !seen.insert(addr) {
                    errors.push(FieldError::new(
                        format!("spec.backends[{i}]"),
                        format!("duplicate backend address {addr}"),
                    ));
                }
            }
            if !(0..=65535).contains(&b.weight) {
                errors.push(FieldError::new(
                    format!("spec.backends[{i}].weight"),
                    format!("{} is out of range 0..65535", b.weight),
                ));
            }
        }
    }

    if let Some(svc) = &spec.backend_service
        && !is_dns1035_label(&svc.name)
    {
        errors.push(FieldError::new(
            "spec.backendService.name",
            "must be a DNS-1035 label, such as web",
        ));
    }

    if let Some(ifname) = spec.directors.as_ref().and_then(|d| d.interface.as_deref())
        && !is_interface_name(ifname)
    {
        errors.push(FieldError::new(
            "spec.directors.interface",
            "must be a network interface name of 1 to 15 characters, such as eth0",
        ));
    }
    vip
}

/// Parses an address the way the CRD's CEL rule accepts it: unicast, in canonical form.
fn check_address(
    field: &str,
    text: &str,
    example: &str,
    errors: &mut Vec<FieldError>,
) -> Option<IpAddr> {
    let parsed = text.parse::<IpAddr>().ok();
    match parsed {
        Some(addr) if addr.to_string() == text && is_global_unicast(addr) => Some(addr),
        _ => {
            errors.push(FieldError::new(
                field,
                format!(
                    "{text:?} must be a unicast IPv4 or IPv6 address in canonical form, such as {example}"
                ),
            ));
            None
        }
    }
}

/// Go's `net.IP.IsGlobalUnicast`, which the API server's CEL `ip().isGlobalUnicast()` uses:
/// private ranges count as global; loopback, link-local, multicast and unspecified do not.
pub fn is_global_unicast(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_multicast()
                || a.is_broadcast())
        }
        IpAddr::V6(a) => {
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || a.is_unicast_link_local())
        }
    }
}

/// The persistence netmask (`IPVS_SVC_ATTR_NETMASK`): for IPv4 the mask as a number
/// (255.255.255.0 is 0xffffff00; the netlink layer sends it in network byte order, as ipvsadm
/// does), for IPv6 the prefix length. `None` when invalid.
pub fn parse_netmask(vip: IpAddr, text: &str) -> Option<u32> {
    match vip {
        IpAddr::V4(_) => text.parse::<std::net::Ipv4Addr>().ok().map(u32::from),
        IpAddr::V6(_) => match text.parse::<u32>() {
            Ok(plen) if (1..=128).contains(&plen) && !text.starts_with('0') => Some(plen),
            _ => None,
        },
    }
}

fn is_dns1035_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

fn is_interface_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_.:@-".contains(&c))
}
