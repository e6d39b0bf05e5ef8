//! Round trips against the real kernel, inside throwaway network namespaces.
//!
//! Each test creates its own namespaces (`ip netns add lvs-test-PID-...`),
//! moves one thread into one of them with `setns(2)` and drives the module
//! from that thread, then checks the result with `ip -o addr` / `ip neigh` /
//! the namespace's `/proc/sys`. The host's own interfaces and sysctls are
//! never touched: every thread that talks to the kernel first proves it is in
//! the test namespace. They need root where `ip netns` works, so they are
//! `#[ignore]`d and `make unit` runs them with `--ignored` as root: a test
//! that cannot run fails there, it never passes by skipping.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};

use crate::netdev::{AddrEntry, Addresses, NetdevError, Sysctls, announce};

/// The pure core's choice of interface, fed from a real dump.
fn interface_for(vip: IpAddr, entries: &[AddrEntry]) -> Option<String> {
    let set = entries
        .iter()
        .map(|e| crate::core::HostAddress {
            ifname: e.ifname.clone(),
            addr: e.addr,
            prefix_len: e.prefix_len,
        })
        .collect();
    crate::core::interface_for(vip, &set)
}

/// Runs `ip ARGS`, panicking with its stderr on failure; returns stdout.
pub(super) fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace deleted on drop (`ip netns add` / `ip netns del`).
pub(super) struct Netns(pub(super) String);

impl Netns {
    /// Creates `lvs-test-PID-TAG`.
    pub(super) fn new(tag: &str) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "kernel tests need root (make unit runs them as root)"
        );
        let name = format!("lvs-test-{}-{tag}", std::process::id());
        ip(&["netns", "add", &name]);
        Self(name)
    }

    /// `ip -n NAME ARGS`.
    pub(super) fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.0.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `ip netns exec NAME cat PATH`, trimmed: reads the namespace's procfs.
    fn cat(&self, path: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "cat", path])
            .output()
            .expect("run ip netns exec");
        assert!(out.status.success(), "cat {path} in {}", self.0);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }

    /// Runs `f` on a fresh thread moved into this namespace, with a
    /// current-thread tokio runtime so every task stays on that thread.
    pub(super) fn run<T: Send>(&self, f: impl AsyncFnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter_this_thread();
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime")
                    .block_on(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn enter_this_thread(&self) {
        let file = File::open(self.path()).expect("open netns");
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
        // Proof before touching anything: this thread's namespace is the
        // test's, by device and inode of the nsfs file.
        let ours = std::fs::metadata("/proc/thread-self/ns/net").expect("stat own netns");
        let want = std::fs::metadata(self.path()).expect("stat test netns");
        assert_eq!(
            (ours.dev(), ours.ino()),
            (want.dev(), want.ino()),
            "setns did not take"
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// `(ifname, addr, prefix_len)` of every line of `ip -o addr show`, e.g.
/// `2: d0    inet 10.10.24.10/24 brd 10.10.24.255 scope global d0\ ...`.
fn ip_o_addr(ns: &Netns) -> BTreeSet<(String, IpAddr, u8)> {
    ns.ip(&["-o", "addr", "show"])
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace().skip(1);
            let ifname = words.next()?.to_string();
            let (addr, prefix) = words.nth(1)?.split_once('/')?;
            Some((ifname, addr.parse().ok()?, prefix.parse().ok()?))
        })
        .collect()
}

fn as_set(entries: &[AddrEntry]) -> BTreeSet<(String, IpAddr, u8)> {
    entries
        .iter()
        .map(|e| (e.ifname.clone(), e.addr, e.prefix_len))
        .collect()
}

/// Waits up to 3 s for `ip neigh show ADDR dev IF` in `ns` to hold `lladdr`.
fn wait_for_neigh(ns: &Netns, addr: &str, ifname: &str, lladdr: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let line = ns.ip(&["neigh", "show", addr, "dev", ifname]);
        if line.contains(&format!("lladdr {lladdr} ")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "neighbour {addr} on {ifname} never learnt {lladdr}: {line:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A director (`d0`, 10.10.24.10/24) and a peer (`d0p`, 10.10.24.20/24) in namespaces of their
/// own, joined by a veth pair rather than a dummy: the peer end shows whether announcements
/// really left and parsed (and the dummy driver is not built into every kernel).
fn director_and_peer(tag: &str) -> (Netns, Netns) {
    let director = Netns::new(tag);
    let peer = Netns::new(&format!("{tag}peer"));
    director.ip(&[
        "link", "add", "d0", "type", "veth", "peer", "name", "d0p", "netns", &peer.0,
    ]);
    director.ip(&["link", "set", "d0", "up"]);
    director.ip(&["addr", "add", "10.10.24.10/24", "dev", "d0"]);
    peer.ip(&["link", "set", "d0p", "up"]);
    peer.ip(&["addr", "add", "10.10.24.20/24", "dev", "d0p"]);
    (director, peer)
}

#[test]
#[ignore = "needs root and a network namespace"]
fn kernel_addresses_and_announcements_in_netns() {
    let (director, peer) = director_and_peer("dir");
    director.ip(&["addr", "add", "fd00:24::10/64", "dev", "d0", "nodad"]);
    peer.ip(&["addr", "add", "fd00:24::20/64", "dev", "d0p", "nodad"]);
    // Stale entries with a wrong MAC: an announcement must override them.
    // (Without an entry, both protocols ignore unsolicited news by default.)
    for vip in ["10.10.24.88", "fd00:24::88"] {
        peer.ip(&[
            "neigh",
            "add",
            vip,
            "lladdr",
            "02:00:00:00:00:01",
            "dev",
            "d0p",
            "nud",
            "stale",
        ]);
    }

    let v4 = addr("10.10.24.88");
    let v6 = addr("fd00:24::88");
    let mac = director.run(async || {
        let addrs = Addresses::connect().unwrap();

        let before = addrs.list().await.unwrap();
        assert_eq!(as_set(&before), ip_o_addr(&director));
        assert!(
            before
                .iter()
                .any(|e| e.ifname == "d0" && e.addr == addr("10.10.24.10") && e.prefix_len == 24)
        );
        assert_eq!(interface_for(v4, &before).as_deref(), Some("d0"));
        assert_eq!(interface_for(v6, &before).as_deref(), Some("d0"));
        assert_eq!(interface_for(addr("10.99.0.1"), &before), None);

        // Twice each: the second add must be an idempotent success.
        for _ in 0..2 {
            addrs.add("d0", v4, 32).await.unwrap();
            addrs.add("d0", v6, 128).await.unwrap();
            addrs.add("lo", v4, 32).await.unwrap();
        }
        let shown = director.ip(&["-o", "-4", "addr", "show", "dev", "d0"]);
        assert!(
            shown.contains("inet 10.10.24.88/32 brd 10.10.24.88 "),
            "{shown}"
        );
        let shown = director.ip(&["-o", "-6", "addr", "show", "dev", "d0"]);
        let line = shown
            .lines()
            .find(|l| l.contains("fd00:24::88/128"))
            .expect(&shown);
        assert!(
            line.contains("nodad") && !line.contains("tentative"),
            "{line}"
        );
        let shown = director.ip(&["-o", "-4", "addr", "show", "dev", "lo"]);
        assert!(shown.contains("inet 10.10.24.88/32 "), "{shown}");

        let during = addrs.list().await.unwrap();
        assert_eq!(as_set(&during), ip_o_addr(&director));
        assert_eq!(interface_for(v4, &during).as_deref(), Some("d0"));
        assert_eq!(interface_for(v6, &during).as_deref(), Some("d0"));

        let _v4_repeats = announce(&addrs, "d0", v4, 2, Duration::from_millis(10))
            .await
            .unwrap();
        let _v6_repeats = announce(&addrs, "d0", v6, 1, Duration::ZERO).await.unwrap();
        let err = announce(&addrs, "lo", v4, 1, Duration::ZERO)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no Ethernet address"), "{err}");

        let err = addrs.add("nosuch0", v4, 32).await.unwrap_err();
        assert!(
            matches!(err, NetdevError::InterfaceNotFound { .. }),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "interface nosuch0 not found");
        let err = announce(&addrs, "nosuch0", v4, 1, Duration::ZERO)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "interface nosuch0 not found");

        // Twice each: the second delete must be an idempotent success.
        for _ in 0..2 {
            addrs.del("d0", v4, 32).await.unwrap();
            addrs.del("d0", v6, 128).await.unwrap();
            addrs.del("lo", v4, 32).await.unwrap();
        }
        let after = addrs.list().await.unwrap();
        assert_eq!(as_set(&after), ip_o_addr(&director));
        assert_eq!(as_set(&after), as_set(&before));

        let mac = addrs.link("d0").await.unwrap().mac.expect("veth has a MAC");
        mac.map(|b| format!("{b:02x}")).join(":")
    });

    wait_for_neigh(&peer, "10.10.24.88", "d0p", &mac);
    wait_for_neigh(&peer, "fd00:24::88", "d0p", &mac);
}

/// Whether `ip neigh show ADDR dev IF` in `ns` holds `lladdr` within `within`, waiting on the
/// runtime (so the announcement's own task goes on sending meanwhile).
async fn neigh_becomes(
    ns: &Netns,
    addr: &str,
    ifname: &str,
    lladdr: &str,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if ns
            .ip(&["neigh", "show", addr, "dev", ifname])
            .contains(&format!("lladdr {lladdr} "))
        {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
#[ignore = "needs root and a network namespace"]
fn announcement_repeats_follow_after_it_returns_and_stop_once_dropped() {
    let (director, peer) = director_and_peer("rep");
    // The peer's entry for the VIP, made wrong again after each announcement it learnt from:
    // only a later announcement can put our MAC back.
    let wrong = "02:00:00:00:00:01";
    let forget = || {
        peer.ip(&[
            "neigh",
            "replace",
            "10.10.24.88",
            "lladdr",
            wrong,
            "dev",
            "d0p",
            "nud",
            "stale",
        ]);
    };
    forget();
    let vip = addr("10.10.24.88");
    let interval = Duration::from_millis(500);
    director.run(async || {
        let addrs = Addresses::connect().unwrap();
        addrs.add("d0", vip, 32).await.unwrap();
        let mac = addrs.link("d0").await.unwrap().mac.expect("veth has a MAC");
        let mac = mac.map(|b| format!("{b:02x}")).join(":");
        let learnt = async |within| neigh_becomes(&peer, "10.10.24.88", "d0p", &mac, within).await;

        // Kept: the first of three has left when announce returns, the others follow.
        let repeats = announce(&addrs, "d0", vip, 3, interval).await.unwrap();
        assert!(learnt(interval / 2).await, "the first announcement");
        forget();
        assert!(
            learnt(interval * 3).await,
            "a repeat after announce returned"
        );
        drop(repeats);

        // Dropped (the VIP let go): nothing more goes out.
        let repeats = announce(&addrs, "d0", vip, 3, interval).await.unwrap();
        assert!(learnt(interval / 2).await, "the first announcement");
        drop(repeats);
        forget();
        assert!(
            !learnt(interval * 3).await,
            "a repeat went out after its Repeats were dropped"
        );
    });
}

#[test]
#[ignore = "needs root and a network namespace"]
fn kernel_real_server_sysctls_in_netns() {
    let ns = Netns::new("rs");
    let keys = |root: &str| -> Vec<String> {
        let s = Sysctls::new(root);
        [
            ("lo", "arp_ignore"),
            ("all", "arp_ignore"),
            ("lo", "arp_announce"),
            ("all", "arp_announce"),
        ]
        .iter()
        .map(|(i, n)| s.get(i, n).unwrap())
        .collect()
    };
    // Read on this (host namespace) thread: the host values must not move.
    let host_before = keys(Sysctls::PROC_SYS);

    let after_first = ns.run(async || {
        let s = Sysctls::system();
        for (dotted, value) in crate::core::REAL_SERVER_SYSCTLS {
            let (ifname, name) = crate::netdev::sysctl::split_conf_name(dotted).unwrap();
            s.set(ifname, name, value).unwrap();
        }
        keys(Sysctls::PROC_SYS)
    });
    assert_eq!(after_first, ["1", "1", "2", "2"]);
    assert_eq!(ns.cat("/proc/sys/net/ipv4/conf/lo/arp_ignore"), "1");
    assert_eq!(ns.cat("/proc/sys/net/ipv4/conf/all/arp_ignore"), "1");
    assert_eq!(ns.cat("/proc/sys/net/ipv4/conf/lo/arp_announce"), "2");
    assert_eq!(ns.cat("/proc/sys/net/ipv4/conf/all/arp_announce"), "2");
    assert_eq!(keys(Sysctls::PROC_SYS), host_before, "host sysctls changed");
}
