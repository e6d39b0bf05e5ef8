//! The who-has probe against real Linux neighbours, on a LAN of namespaces.
//!
//! Each test builds a switch (a bridge in a namespace of its own) and plugs
//! stations into it over veth pairs: the director that probes, peers that
//! hold the VIP on their LAN interface, a real server that holds it on `lo`
//! behind `arp_ignore`. The answers come from the peers' kernels, so what is
//! tested is what the probe relies on: who Linux answers for, and that the
//! probe hears exactly those. Root only, like [`super::kernel_tests`], whose
//! namespace helper this reuses.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::netdev::kernel_tests::Netns;
use crate::netdev::probe::{Answer, answers};
use crate::netdev::{Addresses, announce, sender_for};

/// How long each probe listens. Answers on a namespace LAN come within a
/// millisecond (printed by each test); this is generous for a loaded CI box.
const WAIT: Duration = Duration::from_millis(500);

/// A switch: a bridge with multicast snooping off (so solicited-node
/// multicast reaches every port without an MLD querier) and STP off.
struct Lan {
    switch: Netns,
    tag: String,
}

impl Lan {
    fn new(tag: &str) -> Self {
        let switch = Netns::new(&format!("{tag}-sw"));
        switch.ip(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
            "stp_state",
            "0",
        ]);
        switch.ip(&["link", "set", "br0", "up"]);
        Self {
            switch,
            tag: tag.to_string(),
        }
    }

    /// A new station `name` plugged into the switch as its `lan0`, up, with
    /// `addrs` on it (IPv6 ones without DAD), once the switch forwards its
    /// frames and its link-local address is usable. Returns it and its MAC.
    fn station(&self, name: &str, addrs: &[&str]) -> (Netns, String) {
        let ns = Netns::new(&format!("{}-{name}", self.tag));
        let port = format!("p-{name}");
        self.switch.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", "lan0", "netns", &ns.0,
        ]);
        self.switch
            .ip(&["link", "set", &port, "master", "br0", "up"]);
        // Before the link comes up, so its link-local address is never tentative.
        sysctl(&ns, "net.ipv6.conf.lan0.accept_dad", "0");
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&["link", "set", "lan0", "up"]);
        for addr in addrs {
            add_addr(&ns, addr, "lan0");
        }
        wait_until(&format!("{port} forwarding"), || {
            self.switch
                .ip(&["-d", "link", "show", "dev", &port])
                .contains("state forwarding")
        });
        wait_until(&format!("link-local on {name}"), || {
            ns.ip(&["-6", "addr", "show", "dev", "lan0", "scope", "link"])
                .contains("inet6 fe80::")
        });
        let mac = ns
            .ip(&["-br", "link", "show", "dev", "lan0"])
            .split_whitespace()
            .nth(2)
            .expect("ip -br link shows the MAC")
            .to_string();
        (ns, mac)
    }

    /// Turns on hairpin mode on `name`'s port: the switch sends that
    /// station's own frames back to it, as a reflective relay (VEPA) or a
    /// switching loop would, so its own announcements come back in.
    fn reflect(&self, name: &str) {
        let port = format!("p-{name}");
        self.switch.ip(&[
            "link",
            "set",
            "dev",
            &port,
            "type",
            "bridge_slave",
            "hairpin",
            "on",
        ]);
    }
}

/// `ip addr add ADDR dev IFNAME`, with `nodad` for IPv6.
fn add_addr(ns: &Netns, addr: &str, ifname: &str) {
    if addr.contains(':') {
        ns.ip(&["addr", "add", addr, "dev", ifname, "nodad"]);
    } else {
        ns.ip(&["addr", "add", addr, "dev", ifname]);
    }
}

/// `sysctl -w KEY=VALUE` inside `ns`.
fn sysctl(ns: &Netns, key: &str, value: &str) {
    let status = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "sysctl",
            "-qw",
            &format!("{key}={value}"),
        ])
        .status()
        .expect("run sysctl");
    assert!(status.success(), "sysctl {key}={value} in {}", ns.0);
}

/// A real server as the LVS-DR recipe makes one: the VIP on `lo`, ARP for it
/// silenced (`core::REAL_SERVER_SYSCTLS`).
fn make_real_server(ns: &Netns, vip: &str) {
    add_addr(ns, vip, "lo");
    for (key, value) in crate::core::REAL_SERVER_SYSCTLS {
        sysctl(ns, key, value);
    }
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ready() {
        assert!(Instant::now() < deadline, "never ready: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mac_str(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// What a probe from `director`'s `lan0` saw: the sender [`sender_for`]
/// chose (unless `sender` is given) and the answers.
fn probe(director: &Netns, vip: &str, sender: Option<&str>) -> (IpAddr, Vec<Answer>) {
    let vip: IpAddr = vip.parse().unwrap();
    director.run(async || {
        let addrs = Addresses::connect().unwrap();
        let link = addrs.link("lan0").await.unwrap();
        let sender = match sender {
            Some(s) => s.parse().unwrap(),
            None => {
                let list = addrs.list().await.unwrap();
                sender_for(vip, link.ifindex, &list).expect("a sender address")
            }
        };
        let got = answers(&link, vip, sender, WAIT).await.unwrap();
        (sender, got)
    })
}

/// The MACs of `answers`, printing how long each took.
fn holders(what: &str, answers: &[Answer]) -> BTreeSet<String> {
    for a in answers {
        eprintln!("{what}: {} answered after {:?}", mac_str(a.mac), a.after);
        assert!(a.after < WAIT);
    }
    answers.iter().map(|a| mac_str(a.mac)).collect()
}

fn set(macs: &[&str]) -> BTreeSet<String> {
    macs.iter().map(|m| m.to_string()).collect()
}

#[test]
#[ignore = "needs root and network namespaces"]
fn probe_finds_the_peer_holding_the_vip_on_its_lan_interface() {
    let lan = Lan::new("pa");
    let (director, _) = lan.station("dir", &["10.10.24.10/24"]);
    let (_peer, peer_mac) = lan.station("peer", &["10.10.24.20/24", "10.10.24.88/32"]);
    let (rs, _) = lan.station("rs", &["10.10.24.30/24"]);
    make_real_server(&rs, "10.10.24.88/32");

    let (sender, got) = probe(&director, "10.10.24.88", None);
    assert_eq!(sender, "10.10.24.10".parse::<IpAddr>().unwrap());
    assert_eq!(holders("ipv4 one holder", &got), set(&[&peer_mac]));

    // An RFC 5227 probe (sender 0.0.0.0) is answered the same way.
    let (_, got) = probe(&director, "10.10.24.88", Some("0.0.0.0"));
    assert_eq!(holders("ipv4 arp probe", &got), set(&[&peer_mac]));

    // Nobody holds this one.
    let (_, got) = probe(&director, "10.10.24.99", None);
    assert_eq!(holders("ipv4 nobody", &got), set(&[]));
}

#[test]
#[ignore = "needs root and network namespaces"]
fn probe_hears_nothing_from_a_real_server_with_the_vip_on_lo() {
    let lan = Lan::new("pb");
    let (director, _) = lan.station("dir", &["10.10.24.10/24"]);
    let (rs, rs_mac) = lan.station("rs", &["10.10.24.30/24"]);
    make_real_server(&rs, "10.10.24.88/32");

    let (_, got) = probe(&director, "10.10.24.88", None);
    assert_eq!(holders("ipv4 real server", &got), set(&[]));

    // The silence is arp_ignore's doing, not a deaf probe: without it Linux
    // answers for the VIP on lo from its LAN interface (the ARP problem of
    // LVS-DR), and the probe hears it.
    for key in ["all", "lo"] {
        sysctl(&rs, &format!("net.ipv4.conf.{key}.arp_ignore"), "0");
    }
    let (_, got) = probe(&director, "10.10.24.88", None);
    assert_eq!(
        holders("ipv4 misconfigured real server", &got),
        set(&[&rs_mac])
    );
}

#[test]
#[ignore = "needs root and network namespaces"]
fn probe_finds_both_of_two_holders_but_never_the_director_itself() {
    let lan = Lan::new("pc");
    // The active director: it holds the VIP itself and keeps announcing it
    // while it probes.
    let (director, director_mac) = lan.station("dir", &["10.10.24.10/24", "10.10.24.88/32"]);
    let (_p1, p1_mac) = lan.station("p1", &["10.10.24.21/24", "10.10.24.88/32"]);
    let (_p2, p2_mac) = lan.station("p2", &["10.10.24.22/24", "10.10.24.88/32"]);
    // Its own gratuitous ARPs come back to it, claiming the VIP for its MAC.
    lan.reflect("dir");

    let vip: IpAddr = "10.10.24.88".parse().unwrap();
    let got = director.run(async || {
        let addrs = Addresses::connect().unwrap();
        let link = addrs.link("lan0").await.unwrap();
        let list = addrs.list().await.unwrap();
        let sender = sender_for(vip, link.ifindex, &list).unwrap();
        assert_eq!(sender, "10.10.24.10".parse::<IpAddr>().unwrap());
        let announcing = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            // Kept while it probes: the repeats go out from their own task.
            announce(&addrs, "lan0", vip, 3, Duration::from_millis(50))
                .await
                .unwrap()
        };
        let (got, _repeats) = tokio::join!(answers(&link, vip, sender, WAIT), announcing);
        got.unwrap()
    });
    let got = holders("ipv4 two holders", &got);
    assert!(!got.contains(&director_mac), "{got:?}");
    assert_eq!(got, set(&[&p1_mac, &p2_mac]));
}

#[test]
#[ignore = "needs root and network namespaces"]
fn probe_finds_the_ipv6_holders_but_not_the_real_server() {
    let lan = Lan::new("pd");
    // The active director holds the VIP too.
    let (director, director_mac) = lan.station("dir", &["fd00:24::10/64", "fd00:24::88/128"]);
    let (_p1, p1_mac) = lan.station("p1", &["fd00:24::21/64", "fd00:24::88/128"]);
    let (p2, p2_mac) = lan.station("p2", &["fd00:24::22/64"]);
    let (rs, _) = lan.station("rs", &["fd00:24::30/64"]);
    // IPv6 has no arp_ignore: the kernel only answers for addresses on the
    // interface a solicitation came in on, so the VIP on lo stays silent.
    add_addr(&rs, "fd00:24::88/128", "lo");
    // The director's own solicitation comes back to it and its kernel
    // answers it, an advertisement of the VIP for the director's MAC.
    lan.reflect("dir");

    let (sender, got) = probe(&director, "fd00:24::88", None);
    match sender {
        IpAddr::V6(s) => assert!(s.is_unicast_link_local(), "{s}"),
        IpAddr::V4(s) => panic!("{s}"),
    }
    assert_eq!(holders("ipv6 one holder", &got), set(&[&p1_mac]));

    add_addr(&p2, "fd00:24::88/128", "lan0");
    let (_, got) = probe(&director, "fd00:24::88", None);
    let got = holders("ipv6 two holders", &got);
    assert!(!got.contains(&director_mac), "{got:?}");
    assert_eq!(got, set(&[&p1_mac, &p2_mac]));

    // A global address works as the sender too.
    let (_, got) = probe(&director, "fd00:24::88", Some("fd00:24::10"));
    assert_eq!(
        holders("ipv6 global sender", &got),
        set(&[&p1_mac, &p2_mac])
    );
}
