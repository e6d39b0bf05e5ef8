//! Property tests of the codec: every request we can build emits bytes that parse back to it, and
//! the reply parser reads the kernel's layout of a service, destination or sync daemon (the same
//! attributes a request carries) back to the same values. `make test` runs a bounded number of cases;
//! `make fuzz` runs many more (`PROPTEST_CASES`). The byte-exact layouts themselves are pinned by
//! `message_tests`; the parsers' behaviour on arbitrary bytes by `tests/fuzz_parsers.rs`.

use std::net::IpAddr;

use proptest::prelude::*;

use crate::ipvs::message::{Reply, Request};
use crate::ipvs::types::*;
use crate::ipvs::wire::split_messages;

const FAMILY: u16 = 0x23;

fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ]
}

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![
        Just(Protocol::Tcp),
        Just(Protocol::Udp),
        Just(Protocol::Sctp)
    ]
}

fn key() -> impl Strategy<Value = ServiceKey> {
    (addr(), protocol(), any::<u16>()).prop_map(|(vip, protocol, port)| ServiceKey {
        vip,
        protocol,
        port,
    })
}

/// Either identity: an address service or a firewall-mark service (marks are never 0).
fn virtual_key() -> impl Strategy<Value = Virtual> {
    prop_oneof![
        key().prop_map(Virtual::Service),
        (1..=u32::MAX, prop_oneof![Just(AF_INET), Just(AF_INET6)])
            .prop_map(|(mark, family)| Virtual::Mark(MarkKey { mark, family })),
    ]
}

/// An address of the virtual service's family, for its config's netmask kind.
fn family_addr(k: &Virtual) -> IpAddr {
    match k {
        Virtual::Service(k) => k.vip,
        Virtual::Mark(k) if k.family == AF_INET6 => std::net::Ipv6Addr::UNSPECIFIED.into(),
        Virtual::Mark(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
    }
}

/// A config the kernel could hold for `vip`: a known scheduler, flags without HASHED, a netmask
/// of the family's kind.
fn config(vip: IpAddr) -> impl Strategy<Value = ServiceConfig> {
    let netmask = if vip.is_ipv4() {
        any::<u32>().boxed()
    } else {
        (1u32..=128).boxed()
    };
    (
        proptest::sample::select(Scheduler::ALL.to_vec()),
        any::<u32>(),
        any::<u32>(),
        netmask,
    )
        .prop_map(|(scheduler, flags, timeout, netmask)| ServiceConfig {
            scheduler,
            flags: flags & !SVC_F_HASHED,
            timeout,
            netmask,
        })
}

fn dest_key() -> impl Strategy<Value = DestKey> {
    (addr(), any::<u16>()).prop_map(|(addr, port)| DestKey { addr, port })
}

fn dest() -> impl Strategy<Value = Dest> {
    let forward = proptest::sample::select(vec![
        Forward::Masq,
        Forward::Local,
        Forward::Tunnel,
        Forward::DirectRoute,
        Forward::Bypass,
    ]);
    (any::<u32>(), forward, any::<u32>(), any::<u32>()).prop_map(|(weight, forward, u, l)| Dest {
        weight,
        forward,
        upper_threshold: u,
        lower_threshold: l,
    })
}

fn sync_role() -> impl Strategy<Value = SyncRole> {
    prop_oneof![Just(SyncRole::Master), Just(SyncRole::Backup)]
}

/// A daemon the kernel could be asked for: an interface name of 1 to 15 bytes without NUL (the
/// kernel's limit), any sync id, each optional setting present or not.
fn sync_daemon() -> impl Strategy<Value = SyncDaemon> {
    (
        sync_role(),
        "[a-z][a-z0-9.@_-]{0,14}",
        any::<u8>(),
        proptest::option::of(any::<u16>()),
        proptest::option::of(addr()),
        proptest::option::of(any::<u16>()),
        proptest::option::of(any::<u8>()),
    )
        .prop_map(
            |(role, interface, sync_id, max_len, group, port, ttl)| SyncDaemon {
                role,
                interface,
                sync_id,
                max_len,
                group,
                port,
                ttl,
            },
        )
}

/// Every request the client sends.
fn request() -> impl Strategy<Value = Request> {
    let with_config = || virtual_key().prop_flat_map(|k| (Just(k), config(family_addr(&k))));
    prop_oneof![
        with_config().prop_map(|(k, c)| Request::NewService(k, c)),
        with_config().prop_map(|(k, c)| Request::SetService(k, c)),
        virtual_key().prop_map(Request::DelService),
        (virtual_key(), dest_key(), dest()).prop_map(|(k, d, s)| Request::NewDest(k, d, s)),
        (virtual_key(), dest_key(), dest()).prop_map(|(k, d, s)| Request::SetDest(k, d, s)),
        (virtual_key(), dest_key()).prop_map(|(k, d)| Request::DelDest(k, d)),
        Just(Request::GetServices),
        virtual_key().prop_map(Request::GetDests),
        Just(Request::GetInfo),
        sync_daemon().prop_map(Request::NewDaemon),
        sync_role().prop_map(Request::DelDaemon),
        Just(Request::GetDaemons),
    ]
}

fn payload(bytes: &[u8]) -> Vec<u8> {
    let msgs = split_messages(bytes).unwrap();
    assert_eq!(msgs.len(), 1);
    msgs[0].payload.to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2000)
    ))]

    #[test]
    fn every_request_parses_back_to_itself(req in request(), seq in any::<u32>()) {
        let bytes = req.emit(FAMILY, seq);
        prop_assert_eq!(Request::parse(&bytes).unwrap(), (req, seq));
    }

    #[test]
    fn the_reply_parser_reads_a_service_as_it_was_written(
        (k, c) in virtual_key().prop_flat_map(|k| (Just(k), config(family_addr(&k))))
    ) {
        let bytes = Request::NewService(k, c.clone()).emit(FAMILY, 1);
        let expected = match k {
            Virtual::Service(key) => ServiceEntry::Service { key, config: c, counters: Counters::default() },
            Virtual::Mark(key) => ServiceEntry::Mark { key, config: c },
        };
        prop_assert_eq!(Reply::parse(&payload(&bytes), 0).unwrap(), Reply::Service(expected));
    }

    #[test]
    fn the_reply_parser_reads_a_destination_as_it_was_written(
        k in key(), d in dest_key(), s in dest()
    ) {
        let bytes = Request::NewDest(k.into(), d, s).emit(FAMILY, 1);
        prop_assert_eq!(
            Reply::parse(&payload(&bytes), k.family()).unwrap(),
            Reply::Dest(DestEntry { key: d, dest: s, stats: DestStats::default() })
        );
    }

    #[test]
    fn the_reply_parser_reads_a_daemon_as_it_was_written(d in sync_daemon()) {
        // A NEW_DAEMON request carries the attributes of a GET_DAEMON dump part, in its order.
        let bytes = Request::NewDaemon(d.clone()).emit(FAMILY, 1);
        prop_assert_eq!(Reply::parse(&payload(&bytes), 0).unwrap(), Reply::Daemon(d));
    }
}
