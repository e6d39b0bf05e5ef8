//! A real server's check of its own Direct Routing setup, the three things that make it answer
//! clients through the VIP: the VIP on `lo`, ARP behaviour that leaves the VIP to the director,
//! and something listening on each service port on the VIP or on every address.
//!
//! The kernel applies the stricter of `conf/all` and the receiving interface's `arp_ignore` and
//! `arp_announce`, so each interface that could receive an ARP request is checked with the
//! maximum of the two. A failure is reported as the real server's `error`, in words that say what
//! is missing; the director's checks through the VIP then find the same thing from outside.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::model::{HostAddress, NodeState, Protocol};
use super::service::VirtualService;

pub use super::model::Listener;

/// What is wrong with this node as a real server of `service`, or `None` when nothing is.
pub fn verify(
    service: &VirtualService,
    observed: &NodeState,
    listeners: &BTreeSet<Listener>,
) -> Option<String> {
    SelfCheck::new(observed, listeners).verify(service)
}

/// The self-check of one node state, for many services: what is node-wide (the ARP behaviour
/// of every interface) is read once, not once per service (a node that serves a thousand VIPs
/// has a thousand addresses on `lo`).
pub struct SelfCheck<'a> {
    observed: &'a NodeState,
    listeners: &'a BTreeSet<Listener>,
    /// What lets an interface answer ARP for an IPv4 VIP on `lo`.
    arp: Option<String>,
}

impl<'a> SelfCheck<'a> {
    pub fn new(observed: &'a NodeState, listeners: &'a BTreeSet<Listener>) -> Self {
        Self {
            observed,
            listeners,
            arp: arp_problem(observed),
        }
    }

    /// What is wrong with this node as a real server of `service`, or `None` when nothing is.
    pub fn verify(&self, service: &VirtualService) -> Option<String> {
        let vip = service.vip;
        if !self
            .observed
            .addresses
            .contains(&HostAddress::vip("lo", vip))
        {
            return Some(format!("the VIP {vip} is not on lo"));
        }
        if vip.is_ipv4()
            && let Some(problem) = &self.arp
        {
            return Some(problem.clone());
        }
        let missing: Vec<String> = service
            .ports
            .iter()
            .filter(|p| p.protocol != Protocol::Sctp)
            .filter(|p| !listens(self.listeners, p.protocol, vip, p.port))
            .map(|p| format!("{}/{}", p.port, p.protocol))
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "nothing listens on {} on the VIP or on every address",
                missing.join(", ")
            )
        })
    }
}

/// The first interface (besides `lo`) that would answer ARP for a VIP on `lo`, in words.
fn arp_problem(observed: &NodeState) -> Option<String> {
    let interfaces: BTreeSet<&str> = observed
        .addresses
        .iter()
        .map(|a| a.ifname.as_str())
        .filter(|i| *i != "lo")
        .collect();
    for ifname in interfaces {
        for (name, least) in [("arp_ignore", 1), ("arp_announce", 2)] {
            let value = |i: &str| {
                observed
                    .sysctls
                    .get(&format!("net.ipv4.conf.{i}.{name}"))
                    .and_then(|v| v.parse::<u32>().ok())
                    .unwrap_or(0)
            };
            let effective = value("all").max(value(ifname));
            if effective < least {
                return Some(format!(
                    "{name} is {effective} on {ifname} (the higher of all and {ifname}); it must be at least {least}, or {ifname} answers ARP for the VIP"
                ));
            }
        }
    }
    None
}

/// Whether a socket of `protocol` listens on `vip:port` or on the wildcard of its family (an
/// IPv6 wildcard socket takes IPv4 too unless it is v6-only, which /proc/net does not show: it is
/// taken to).
fn listens(listeners: &BTreeSet<Listener>, protocol: Protocol, vip: IpAddr, port: u16) -> bool {
    let wildcards = [
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    ];
    listeners.iter().any(|(p, a)| {
        *p == protocol && a.port() == port && (a.ip() == vip || wildcards.contains(&a.ip()))
    })
}

/// The listening sockets in a `/proc/net/{tcp,udp}{,6}` table: TCP in state LISTEN (0A), UDP
/// bound sockets (state 07, unconnected). Lines that do not parse are skipped.
pub fn parse_proc_net(protocol: Protocol, table: &str) -> Vec<Listener> {
    let wanted_state = match protocol {
        Protocol::Tcp => "0A",
        Protocol::Udp => "07",
        Protocol::Sctp => return Vec::new(),
    };
    sockets(table, wanted_state)
        .map(|(addr, port)| (protocol, SocketAddr::new(addr, port)))
        .collect()
}

/// The local addresses of the established connections of a `/proc/net/tcp` or `tcp6` table.
pub fn parse_proc_net_established(table: &str) -> Vec<IpAddr> {
    sockets(table, "01").map(|(addr, _)| addr).collect()
}

/// The local address and port of each socket of a `/proc/net` table in state `state` (the
/// kernel's state number in hex: `0A` listening, `01` established, `07` an unconnected UDP
/// socket).
fn sockets<'a>(table: &'a str, state: &'a str) -> impl Iterator<Item = (IpAddr, u16)> + 'a {
    table.lines().skip(1).filter_map(move |line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1)?;
        let _remote = fields.next()?;
        (fields.next()? == state).then_some(())?;
        let (addr, port) = local.split_once(':')?;
        Some((proc_addr(addr)?, u16::from_str_radix(port, 16).ok()?))
    })
}

/// `/proc/net` addresses are the kernel's `__be32` words printed as host-order hex: 8 digits for
/// IPv4, four such words for IPv6.
fn proc_addr(hex: &str) -> Option<IpAddr> {
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(hex)?))),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(&hex[i * 8..i * 8 + 8])?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Port, Scheduler, ServiceConfig};

    fn web() -> VirtualService {
        let vip = "10.10.24.88".parse().unwrap();
        VirtualService {
            id: "web".into(),
            vip,
            ports: vec![Port {
                protocol: Protocol::Tcp,
                port: 80,
            }],
            config: ServiceConfig::new(Scheduler::Rr, vip),
            backends: None,
            interface: None,
            health: None,
        }
    }

    /// rs1 as the recipe leaves it: VIP on lo, ARP sysctls on lo and all, eth0 at the defaults.
    fn real_server() -> NodeState {
        let mut s = NodeState::default();
        s.addresses
            .insert(HostAddress::vip("lo", "10.10.24.88".parse().unwrap()));
        s.addresses.insert(HostAddress {
            ifname: "eth0".into(),
            addr: "10.10.24.21".parse().unwrap(),
            prefix_len: 24,
        });
        for (k, v) in [
            ("all.arp_ignore", "1"),
            ("all.arp_announce", "2"),
            ("eth0.arp_ignore", "0"),
            ("eth0.arp_announce", "0"),
        ] {
            s.sysctls.insert(format!("net.ipv4.conf.{k}"), v.into());
        }
        s
    }

    fn http_on(addr: &str) -> BTreeSet<Listener> {
        [(Protocol::Tcp, SocketAddr::new(addr.parse().unwrap(), 80))].into()
    }

    #[test]
    fn a_real_server_set_up_as_the_recipe_says_passes() {
        assert_eq!(verify(&web(), &real_server(), &http_on("0.0.0.0")), None);
        assert_eq!(verify(&web(), &real_server(), &http_on("::")), None);
        assert_eq!(
            verify(&web(), &real_server(), &http_on("10.10.24.88")),
            None
        );
    }

    #[test]
    fn each_missing_piece_is_named() {
        let mut no_vip = real_server();
        no_vip.addresses.retain(|a| a.ifname != "lo");
        assert_eq!(
            verify(&web(), &no_vip, &http_on("0.0.0.0")).as_deref(),
            Some("the VIP 10.10.24.88 is not on lo")
        );
        let mut loud = real_server();
        loud.sysctls
            .insert("net.ipv4.conf.all.arp_ignore".into(), "0".into());
        assert!(
            verify(&web(), &loud, &http_on("0.0.0.0"))
                .unwrap()
                .starts_with("arp_ignore is 0 on eth0")
        );
        assert_eq!(
            verify(&web(), &real_server(), &http_on("10.10.24.21")).as_deref(),
            Some("nothing listens on 80/TCP on the VIP or on every address"),
            "serving only on its own address is the classic DR mistake"
        );
    }

    #[test]
    fn an_interfaces_own_stricter_value_counts() {
        let mut s = real_server();
        s.sysctls
            .insert("net.ipv4.conf.all.arp_ignore".into(), "0".into());
        s.sysctls
            .insert("net.ipv4.conf.eth0.arp_ignore".into(), "1".into());
        assert_eq!(verify(&web(), &s, &http_on("0.0.0.0")), None);
    }

    #[test]
    fn proc_net_tables_give_the_listening_sockets() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n   1: 5818180A:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1\n   2: 1518180A:0050 0518180A:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1\n";
        let found = parse_proc_net(Protocol::Tcp, tcp);
        assert_eq!(
            found,
            vec![
                (Protocol::Tcp, "0.0.0.0:80".parse().unwrap()),
                (Protocol::Tcp, "10.24.24.88:8080".parse().unwrap()),
            ],
            "the established connection is not a listener"
        );
        assert_eq!(
            parse_proc_net_established(tcp),
            vec!["10.24.24.21".parse::<IpAddr>().unwrap()],
            "only the established connection, by its local address"
        );
        let tcp6 = "  sl  local_address                         remote_address                        st\n   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 0\n";
        assert_eq!(
            parse_proc_net(Protocol::Tcp, tcp6),
            vec![(Protocol::Tcp, "[::]:80".parse().unwrap())]
        );
    }
}
