//! Byte-level round-trip tests of every request we send and every reply we
//! parse. Expected bytes are written by hand from the kernel layout with
//! small helpers that use literal attribute numbers from `ip_vs.h` (not the
//! crate's enums), so the emitter is checked against the header, not itself.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::ipvs::KernelError;
use crate::ipvs::handle::match_acks;
use crate::ipvs::message::{Reply, Request, emit_resolve_family, parse_family_reply};
use crate::ipvs::types::*;
use crate::ipvs::wire::split_messages;

/// An arbitrary dynamic family id, as the controller would hand out.
const FAM: u16 = 0x23;
const REQ: u16 = 0x0001;
const MULTI: u16 = 0x0002;
const ACK: u16 = 0x0004;
const DUMP: u16 = 0x0300;

// --- hand-written kernel layout helpers ---------------------------------

/// `struct nlattr` + payload + padding to 4.
fn nla(ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(payload);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}
fn nest(ty: u16, children: &[Vec<u8>]) -> Vec<u8> {
    nla(ty, &children.concat())
}
fn u16a(ty: u16, v: u16) -> Vec<u8> {
    nla(ty, &v.to_ne_bytes())
}
fn be16a(ty: u16, v: u16) -> Vec<u8> {
    nla(ty, &v.to_be_bytes())
}
fn u32a(ty: u16, v: u32) -> Vec<u8> {
    nla(ty, &v.to_ne_bytes())
}
fn u64a(ty: u16, v: u64) -> Vec<u8> {
    nla(ty, &v.to_ne_bytes())
}
fn stra(ty: u16, s: &str) -> Vec<u8> {
    nla(ty, &[s.as_bytes(), &[0]].concat())
}
/// `union nf_inet_addr`: always 16 bytes.
fn addra(ty: u16, a: &str) -> Vec<u8> {
    let mut b = [0u8; 16];
    match a.parse::<IpAddr>().unwrap() {
        IpAddr::V4(v4) => b[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => b = v6.octets(),
    }
    nla(ty, &b)
}
/// `struct ip_vs_flags { flags, mask }`.
fn flagsa(flags: u32, mask: u32) -> Vec<u8> {
    nla(7, &[flags.to_ne_bytes(), mask.to_ne_bytes()].concat())
}
/// `nlmsghdr` + `genlmsghdr` (version 1) + attributes.
fn msg(ty: u16, flags: u16, seq: u32, pid: u32, cmd: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
    let body = [vec![cmd, 1, 0, 0], attrs.concat()].concat();
    let mut v = Vec::new();
    v.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&pid.to_ne_bytes());
    v.extend_from_slice(&body);
    v
}
/// `NLMSG_ERROR` carrying `-errno` and the echoed request header.
fn nlmsgerr(seq: u32, errno: i32) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&36u32.to_ne_bytes());
    v.extend_from_slice(&2u16.to_ne_bytes());
    v.extend_from_slice(&0u16.to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&4242u32.to_ne_bytes());
    v.extend_from_slice(&(-errno).to_ne_bytes());
    v.extend_from_slice(&[0u8; 16]); // echoed nlmsghdr, irrelevant here
    v
}

// IPVS_SVC_ATTR_* / IPVS_DEST_ATTR_* numbers, straight from ip_vs.h.
const SVC_AF: u16 = 1;
const SVC_PROTOCOL: u16 = 2;
const SVC_ADDR: u16 = 3;
const SVC_PORT: u16 = 4;
const SVC_FWMARK: u16 = 5;
const SVC_SCHED: u16 = 6;
const SVC_TIMEOUT: u16 = 8;
const SVC_NETMASK: u16 = 9;
const SVC_STATS: u16 = 10;
const SVC_PE_NAME: u16 = 11;
const SVC_STATS64: u16 = 12;
const DEST_ADDR: u16 = 1;
const DEST_PORT: u16 = 2;
const DEST_FWD: u16 = 3;
const DEST_WEIGHT: u16 = 4;
const DEST_U_THRESH: u16 = 5;
const DEST_L_THRESH: u16 = 6;
const DEST_ACTIVE: u16 = 7;
const DEST_INACT: u16 = 8;
const DEST_PERSIST: u16 = 9;
const DEST_STATS: u16 = 10;
const DEST_ADDR_FAMILY: u16 = 11;
const DEST_STATS64: u16 = 12;
const DEST_TUN_TYPE: u16 = 13;
const DEST_TUN_PORT: u16 = 14;
const DEST_TUN_FLAGS: u16 = 15;
// IPVS_CMD_ATTR_DAEMON and the IPVS_DAEMON_ATTR_* inside it.
const CMD_DAEMON: u16 = 3;
const DAEMON_STATE: u16 = 1;
const DAEMON_IFN: u16 = 2;
const DAEMON_SYNC_ID: u16 = 3;
const DAEMON_MAXLEN: u16 = 4;
const DAEMON_GROUP: u16 = 5;
const DAEMON_GROUP6: u16 = 6;
const DAEMON_PORT: u16 = 7;
const DAEMON_TTL: u16 = 8;
// IPVS_CMD_NEW_DAEMON / DEL_DAEMON / GET_DAEMON.
const NEW_DAEMON: u8 = 9;
const DEL_DAEMON: u8 = 10;
const GET_DAEMON: u8 = 11;
// IP_VS_STATE_MASTER / IP_VS_STATE_BACKUP.
const MASTER: u32 = 1;
const BACKUP: u32 = 2;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn key(addr: &str, protocol: Protocol, port: u16) -> ServiceKey {
    ServiceKey {
        vip: ip(addr),
        protocol,
        port,
    }
}

/// The reference service, `-t 10.10.24.88:80 -s rr`.
fn vip() -> ServiceKey {
    key("10.10.24.88", Protocol::Tcp, 80)
}

fn rr() -> ServiceConfig {
    ServiceConfig::new(Scheduler::Rr, ip("10.10.24.88"))
}

fn dest(addr: &str, port: u16) -> DestKey {
    DestKey {
        addr: ip(addr),
        port,
    }
}

fn svc_identity(af: u16, proto: u16, addr: &str, port: u16) -> Vec<Vec<u8>> {
    vec![
        u16a(SVC_AF, af),
        u16a(SVC_PROTOCOL, proto),
        addra(SVC_ADDR, addr),
        be16a(SVC_PORT, port),
    ]
}

/// Asserts `emit == bytes` and `parse(bytes) == request`.
fn assert_request(req: Request, seq: u32, expected: &[u8]) {
    assert_eq!(req.emit(FAM, seq), expected, "emitted bytes for {req:?}");
    assert_eq!(Request::parse(expected).unwrap(), (req, seq));
}

fn parse_one_reply(bytes: &[u8], dest_family: u16) -> Reply {
    let msgs = split_messages(bytes).unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].ty, FAM);
    Reply::parse(msgs[0].payload, dest_family).unwrap()
}

// --- requests -------------------------------------------------------------

#[test]
#[cfg(target_endian = "little")]
fn new_service_for_tcp_vip_emits_kernel_layout() {
    // `ipvsadm -A -t 10.10.24.88:80 -s rr`, written out byte by byte.
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        0x68, 0, 0, 0,  0x23, 0,  0x05, 0,  1, 0, 0, 0,  0, 0, 0, 0, // nlmsghdr: len 104, REQUEST|ACK, seq 1
        1, 1, 0, 0,                                // genlmsghdr: NEW_SERVICE, version 1
        84, 0, 1, 0,                               // IPVS_CMD_ATTR_SERVICE, 84 bytes
        6, 0, 1, 0,  2, 0, 0, 0,                   // AF = AF_INET
        6, 0, 2, 0,  6, 0, 0, 0,                   // PROTOCOL = TCP
        20, 0, 3, 0, 10, 10, 24, 88, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // ADDR (16 bytes)
        6, 0, 4, 0,  0, 80, 0, 0,                  // PORT = 80, big-endian
        7, 0, 6, 0,  b'r', b'r', 0, 0,             // SCHED_NAME "rr\0" + pad
        12, 0, 7, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, // FLAGS {0, mask ~0}
        8, 0, 8, 0,  0, 0, 0, 0,                   // TIMEOUT 0
        8, 0, 9, 0,  0xff, 0xff, 0xff, 0xff,       // NETMASK 255.255.255.255
    ];
    assert_request(Request::NewService(vip().into(), rr()), 1, &expected);
}

#[test]
fn new_service_for_persistent_ipv6_udp_vip_emits_kernel_layout() {
    let k = key("2001:db8::88", Protocol::Udp, 53);
    let c = ServiceConfig {
        scheduler: Scheduler::Sh,
        flags: SVC_F_PERSISTENT | SVC_F_SCHED1 | SVC_F_SCHED2,
        timeout: 300,
        netmask: 64,
    };
    let mut attrs = svc_identity(10, 17, "2001:db8::88", 53);
    attrs.extend([
        stra(SVC_SCHED, "sh"),
        flagsa(0x19, u32::MAX),
        u32a(SVC_TIMEOUT, 300),
        // IPv6 netmask is a prefix length the kernel reads in host order.
        u32a(SVC_NETMASK, 64),
    ]);
    let expected = msg(FAM, REQ | ACK, 9, 0, 1, &[nest(1, &attrs)]);
    assert_request(Request::NewService(k.into(), c), 9, &expected);
}

#[test]
fn set_service_for_sctp_vip_emits_kernel_layout() {
    let k = key("10.0.0.1", Protocol::Sctp, 3868);
    let c = ServiceConfig {
        scheduler: Scheduler::Wlc,
        flags: SVC_F_PERSISTENT,
        timeout: 60,
        netmask: 0xFFFF_FF00,
    };
    let mut attrs = svc_identity(2, 132, "10.0.0.1", 3868);
    attrs.extend([
        stra(SVC_SCHED, "wlc"),
        flagsa(SVC_F_PERSISTENT, u32::MAX),
        u32a(SVC_TIMEOUT, 60),
        // IPv4 netmask is a __be32 mask: 255.255.255.0 on the wire.
        nla(SVC_NETMASK, &[255, 255, 255, 0]),
    ]);
    let expected = msg(FAM, REQ | ACK, 2, 0, 2, &[nest(1, &attrs)]);
    assert_request(Request::SetService(k.into(), c), 2, &expected);
}

#[test]
fn del_service_sends_only_the_service_identity() {
    let expected = msg(
        FAM,
        REQ | ACK,
        3,
        0,
        3,
        &[nest(1, &svc_identity(2, 6, "10.10.24.88", 80))],
    );
    assert_request(Request::DelService(vip().into()), 3, &expected);

    let v6 = key("2001:db8::1", Protocol::Udp, 5353);
    let expected = msg(
        FAM,
        REQ | ACK,
        4,
        0,
        3,
        &[nest(1, &svc_identity(10, 17, "2001:db8::1", 5353))],
    );
    assert_request(Request::DelService(v6.into()), 4, &expected);
}

#[test]
fn new_dest_for_direct_route_server_emits_kernel_layout() {
    let expected = msg(
        FAM,
        REQ | ACK,
        5,
        0,
        5,
        &[
            nest(1, &svc_identity(2, 6, "10.10.24.88", 80)),
            nest(
                2,
                &[
                    addra(DEST_ADDR, "10.10.24.21"),
                    be16a(DEST_PORT, 80),
                    u32a(DEST_FWD, 3), // IP_VS_CONN_F_DROUTE
                    u32a(DEST_WEIGHT, 1),
                    u32a(DEST_U_THRESH, 0),
                    u32a(DEST_L_THRESH, 0),
                    u16a(DEST_ADDR_FAMILY, 2),
                ],
            ),
        ],
    );
    assert_request(
        Request::NewDest(vip().into(), dest("10.10.24.21", 80), Dest::direct_route(1)),
        5,
        &expected,
    );
}

#[test]
fn set_dest_with_thresholds_for_ipv6_service_emits_kernel_layout() {
    let s = key("2001:db8::88", Protocol::Tcp, 443);
    let d = Dest {
        weight: 0,
        forward: Forward::Masq,
        upper_threshold: 1000,
        lower_threshold: 100,
    };
    let expected = msg(
        FAM,
        REQ | ACK,
        6,
        0,
        6,
        &[
            nest(1, &svc_identity(10, 6, "2001:db8::88", 443)),
            nest(
                2,
                &[
                    addra(DEST_ADDR, "2001:db8::21"),
                    be16a(DEST_PORT, 8443),
                    u32a(DEST_FWD, 0),
                    u32a(DEST_WEIGHT, 0),
                    u32a(DEST_U_THRESH, 1000),
                    u32a(DEST_L_THRESH, 100),
                    u16a(DEST_ADDR_FAMILY, 10),
                ],
            ),
        ],
    );
    assert_request(
        Request::SetDest(s.into(), dest("2001:db8::21", 8443), d),
        6,
        &expected,
    );
}

#[test]
fn del_dest_sends_service_and_dest_identity() {
    let s = key("10.10.24.88", Protocol::Udp, 53);
    let expected = msg(
        FAM,
        REQ | ACK,
        7,
        0,
        7,
        &[
            nest(1, &svc_identity(2, 17, "10.10.24.88", 53)),
            nest(
                2,
                &[
                    addra(DEST_ADDR, "10.10.24.22"),
                    be16a(DEST_PORT, 53),
                    u16a(DEST_ADDR_FAMILY, 2),
                ],
            ),
        ],
    );
    assert_request(
        Request::DelDest(s.into(), dest("10.10.24.22", 53)),
        7,
        &expected,
    );
}

#[test]
fn get_service_dump_request_has_dump_flags_and_no_attributes() {
    let expected = msg(FAM, REQ | DUMP, 8, 0, 4, &[]);
    assert_eq!(expected.len(), 20);
    assert_request(Request::GetServices, 8, &expected);
}

#[test]
fn get_dest_dump_request_nests_the_service_identity() {
    let s = key("2001:db8::88", Protocol::Sctp, 80);
    let expected = msg(
        FAM,
        REQ | DUMP,
        10,
        0,
        8,
        &[nest(1, &svc_identity(10, 132, "2001:db8::88", 80))],
    );
    assert_request(Request::GetDests(s.into()), 10, &expected);
}

#[test]
fn get_info_request_is_a_bare_request() {
    let expected = msg(FAM, REQ, 11, 0, 15, &[]);
    assert_request(Request::GetInfo, 11, &expected);
}

#[test]
#[cfg(target_endian = "little")]
fn start_daemon_for_a_master_emits_kernel_layout() {
    // `ipvsadm --start-daemon master --mcast-interface eth0 --syncid 7`, byte by byte.
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        0x34, 0, 0, 0,  0x23, 0,  0x05, 0,  1, 0, 0, 0,  0, 0, 0, 0, // nlmsghdr: len 52, REQUEST|ACK, seq 1
        9, 1, 0, 0,                                // genlmsghdr: NEW_DAEMON, version 1
        32, 0, 3, 0,                               // IPVS_CMD_ATTR_DAEMON, 32 bytes
        8, 0, 1, 0,  1, 0, 0, 0,                   // STATE = IP_VS_STATE_MASTER
        9, 0, 2, 0,  b'e', b't', b'h', b'0', 0, 0, 0, 0, // MCAST_IFN "eth0\0" + pad
        8, 0, 3, 0,  7, 0, 0, 0,                   // SYNC_ID = 7 (u32)
    ];
    let d = SyncDaemon::new(SyncRole::Master, "eth0", 7);
    assert_request(Request::NewDaemon(d), 1, &expected);
}

#[test]
#[cfg(target_endian = "little")]
fn start_daemon_with_every_setting_sends_the_port_in_host_order_and_the_group_in_network_order() {
    // `ipvsadm --start-daemon backup --mcast-interface eth1 --syncid 9 --sync-maxlen 1400
    //  --mcast-group 239.1.2.3 --mcast-port 9000 --mcast-ttl 2`: unlike a service port, the kernel
    // reads the sync port with nla_get_u16 (9000 = 0x2328 goes as 0x28 0x23 here); the group is
    // an in_addr (nla_get_in_addr), so 239.1.2.3 goes as 239 1 2 3.
    let expected = msg(
        FAM,
        REQ | ACK,
        2,
        0,
        NEW_DAEMON,
        &[nest(
            CMD_DAEMON,
            &[
                u32a(DAEMON_STATE, BACKUP),
                stra(DAEMON_IFN, "eth1"),
                u32a(DAEMON_SYNC_ID, 9),
                u16a(DAEMON_MAXLEN, 1400),
                nla(DAEMON_PORT, &[0x28, 0x23]),
                nla(DAEMON_TTL, &[2]),
                nla(DAEMON_GROUP, &[239, 1, 2, 3]),
            ],
        )],
    );
    let d = SyncDaemon {
        max_len: Some(1400),
        group: Some(ip("239.1.2.3")),
        port: Some(9000),
        ttl: Some(2),
        ..SyncDaemon::new(SyncRole::Backup, "eth1", 9)
    };
    assert_request(Request::NewDaemon(d), 2, &expected);
}

#[test]
fn start_daemon_with_an_ipv6_group_sends_it_as_group6() {
    let expected = msg(
        FAM,
        REQ | ACK,
        3,
        0,
        NEW_DAEMON,
        &[nest(
            CMD_DAEMON,
            &[
                u32a(DAEMON_STATE, MASTER),
                stra(DAEMON_IFN, "bond0.100"),
                u32a(DAEMON_SYNC_ID, 255),
                nla(
                    DAEMON_GROUP6,
                    &"ff15::81".parse::<std::net::Ipv6Addr>().unwrap().octets(),
                ),
            ],
        )],
    );
    let d = SyncDaemon {
        group: Some(ip("ff15::81")),
        ..SyncDaemon::new(SyncRole::Master, "bond0.100", 255)
    };
    assert_request(Request::NewDaemon(d), 3, &expected);
}

#[test]
fn stop_daemon_sends_only_the_role() {
    let expected = msg(
        FAM,
        REQ | ACK,
        4,
        0,
        DEL_DAEMON,
        &[nest(CMD_DAEMON, &[u32a(DAEMON_STATE, BACKUP)])],
    );
    assert_request(Request::DelDaemon(SyncRole::Backup), 4, &expected);
}

#[test]
fn get_daemon_is_a_dump_request_without_attributes() {
    // The kernel has no doit for GET_DAEMON: without NLM_F_DUMP it answers EOPNOTSUPP.
    let expected = msg(FAM, REQ | DUMP, 5, 0, GET_DAEMON, &[]);
    assert_request(Request::GetDaemons, 5, &expected);
}

#[test]
fn family_resolution_asks_the_controller_for_ipvs_and_reads_its_id() {
    // GENL_ID_CTRL = 0x10, CTRL_CMD_GETFAMILY = 3, CTRL_ATTR_FAMILY_NAME = 2.
    let expected = msg(0x10, REQ, 12, 0, 3, &[stra(2, "IPVS")]);
    assert_eq!(emit_resolve_family("IPVS", 12), expected);

    // CTRL_CMD_NEWFAMILY = 1 with CTRL_ATTR_FAMILY_ID = 1 (plus others ignored).
    let reply = msg(
        0x10,
        0,
        12,
        4242,
        1,
        &[stra(2, "IPVS"), u16a(1, FAM), u32a(3, 1)],
    );
    let msgs = split_messages(&reply).unwrap();
    assert_eq!(parse_family_reply(msgs[0].payload).unwrap(), FAM);
}

#[test]
fn batched_requests_are_concatenated_with_their_own_sequence_numbers() {
    let d = Dest::direct_route(1);
    let requests = [
        Request::NewService(vip().into(), rr()),
        Request::NewDest(vip().into(), dest("10.10.24.21", 80), d),
    ];
    let mut buf = Vec::new();
    for (seq, r) in (100..).zip(&requests) {
        buf = r.emit_into(buf, FAM, seq);
    }
    let expected = [requests[0].emit(FAM, 100), requests[1].emit(FAM, 101)].concat();
    assert_eq!(buf, expected);
    let seqs: Vec<u32> = split_messages(&buf)
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(seqs, [100, 101]);
}

// --- replies --------------------------------------------------------------

fn stats32(conns: u32, inpkts: u32, inbytes: u64) -> Vec<Vec<u8>> {
    vec![
        u32a(1, conns),
        u32a(2, inpkts),
        u32a(3, 0),
        u64a(4, inbytes),
        u64a(5, 0),
        u32a(6, 1),
        u32a(7, 2),
        u32a(8, 0),
        u32a(9, 3),
        u32a(10, 0),
    ]
}

fn stats64(conns: u64, inpkts: u64, inbytes: u64) -> Vec<Vec<u8>> {
    [conns, inpkts, 0, inbytes, 0, 1, 2, 0, 3, 0]
        .iter()
        .zip(1u16..)
        .map(|(v, ty)| u64a(ty, *v))
        .collect()
}

#[test]
fn service_dump_reply_for_tcp_vip_parses_with_stats64_and_without_hashed_flag() {
    // As ip_vs_genl_fill_service writes it, inside an NLM_F_MULTI part.
    let mut attrs = svc_identity(2, 6, "10.10.24.88", 80);
    attrs.extend([
        stra(SVC_SCHED, "rr"),
        flagsa(SVC_F_HASHED, u32::MAX),
        u32a(SVC_TIMEOUT, 0),
        nla(SVC_NETMASK, &[255, 255, 255, 255]),
        // 32-bit counters have wrapped; the 64-bit ones are authoritative.
        nest(SVC_STATS, &stats32(7, 1, 5)),
        nest(SVC_STATS64, &stats64(7, 1 << 33, 1 << 40)),
    ]);
    let bytes = msg(FAM, MULTI, 20, 4242, 1, &[nest(1, &attrs)]);
    let expected = ServiceEntry::Service {
        key: vip(),
        config: rr(),
        counters: Counters {
            connections: 7,
            in_packets: 1 << 33,
            out_packets: 0,
            in_bytes: 1 << 40,
            out_bytes: 0,
        },
    };
    assert_eq!(parse_one_reply(&bytes, 0), Reply::Service(expected));
}

#[test]
fn service_dump_reply_for_ipv6_udp_with_pe_name_and_32bit_stats_parses() {
    let mut attrs = svc_identity(10, 17, "2001:db8::53", 53);
    attrs.extend([
        stra(SVC_SCHED, "mh"),
        stra(SVC_PE_NAME, "sip"),
        flagsa(SVC_F_HASHED | SVC_F_PERSISTENT | SVC_F_SCHED2, u32::MAX),
        u32a(SVC_TIMEOUT, 120),
        u32a(SVC_NETMASK, 96),
        nest(SVC_STATS, &stats32(3, 4, 500)),
    ]);
    let bytes = msg(FAM, MULTI, 21, 4242, 1, &[nest(1, &attrs)]);
    let expected = ServiceEntry::Service {
        key: key("2001:db8::53", Protocol::Udp, 53),
        config: ServiceConfig {
            scheduler: Scheduler::Mh,
            flags: SVC_F_PERSISTENT | SVC_F_SCHED2,
            timeout: 120,
            netmask: 96,
        },
        counters: Counters {
            connections: 3,
            in_packets: 4,
            out_packets: 0,
            in_bytes: 500,
            out_bytes: 0,
        },
    };
    assert_eq!(parse_one_reply(&bytes, 0), Reply::Service(expected));
}

#[test]
fn service_dump_reply_for_fwmark_service_names_it_by_mark() {
    let attrs = vec![
        u16a(SVC_AF, 2),
        u32a(SVC_FWMARK, 42),
        stra(SVC_SCHED, "wlc"),
        flagsa(SVC_F_HASHED, u32::MAX),
        u32a(SVC_TIMEOUT, 0),
        nla(SVC_NETMASK, &[255, 255, 255, 255]),
    ];
    let bytes = msg(FAM, MULTI, 22, 4242, 1, &[nest(1, &attrs)]);
    let Reply::Service(ServiceEntry::Mark { key, config }) = parse_one_reply(&bytes, 0) else {
        panic!("a fwmark service is a mark entry");
    };
    assert_eq!(
        key,
        MarkKey {
            mark: 42,
            family: AF_INET
        }
    );
    assert_eq!(key.to_string(), "FWM 42");
    assert_eq!(config.scheduler, Scheduler::Wlc);
}

#[test]
fn fwmark_requests_name_the_service_by_family_and_mark_alone() {
    // `ipvsadm -A -f 7 -s rr` and `ipvsadm -a -f 7 -r 10.10.24.21 -g -w 1`, as ipvsadm sends them.
    let key = MarkKey {
        mark: 7,
        family: AF_INET,
    };
    let config = ServiceConfig::new(Scheduler::Rr, ip("0.0.0.0"));
    let expected = msg(
        FAM,
        REQ | ACK,
        1,
        0,
        1,
        &[nest(
            1,
            &[
                u16a(SVC_AF, 2),
                u32a(SVC_FWMARK, 7),
                stra(SVC_SCHED, "rr"),
                flagsa(0, u32::MAX),
                u32a(SVC_TIMEOUT, 0),
                nla(SVC_NETMASK, &[255, 255, 255, 255]),
            ],
        )],
    );
    assert_request(Request::NewService(key.into(), config), 1, &expected);
    let expected = msg(
        FAM,
        REQ | ACK,
        2,
        0,
        5,
        &[
            nest(1, &[u16a(SVC_AF, 2), u32a(SVC_FWMARK, 7)]),
            nest(
                2,
                &[
                    addra(DEST_ADDR, "10.10.24.21"),
                    be16a(DEST_PORT, 0),
                    u32a(DEST_FWD, 3),
                    u32a(DEST_WEIGHT, 1),
                    u32a(DEST_U_THRESH, 0),
                    u32a(DEST_L_THRESH, 0),
                    u16a(DEST_ADDR_FAMILY, 2),
                ],
            ),
        ],
    );
    let dest = DestKey {
        addr: ip("10.10.24.21"),
        port: 0,
    };
    assert_request(
        Request::NewDest(key.into(), dest, Dest::direct_route(1)),
        2,
        &expected,
    );
}

#[test]
fn service_dump_datagram_with_two_parts_and_done_splits_into_messages() {
    let tcp = msg(
        FAM,
        MULTI,
        23,
        4242,
        1,
        &[nest(
            1,
            &[
                svc_identity(2, 6, "10.10.24.88", 80),
                vec![
                    stra(SVC_SCHED, "rr"),
                    flagsa(2, u32::MAX),
                    u32a(SVC_TIMEOUT, 0),
                    nla(SVC_NETMASK, &[255; 4]),
                ],
            ]
            .concat(),
        )],
    );
    let mut done = Vec::new();
    done.extend_from_slice(&20u32.to_ne_bytes());
    done.extend_from_slice(&3u16.to_ne_bytes()); // NLMSG_DONE
    done.extend_from_slice(&MULTI.to_ne_bytes());
    done.extend_from_slice(&23u32.to_ne_bytes());
    done.extend_from_slice(&4242u32.to_ne_bytes());
    done.extend_from_slice(&0i32.to_ne_bytes());
    let datagram = [tcp.clone(), tcp, done].concat();
    let msgs = split_messages(&datagram).unwrap();
    assert_eq!(msgs.iter().map(|m| m.ty).collect::<Vec<_>>(), [FAM, FAM, 3]);
    for m in &msgs[..2] {
        let Reply::Service(ServiceEntry::Service { key, config, .. }) =
            Reply::parse(m.payload, 0).unwrap()
        else {
            panic!("not a service");
        };
        assert_eq!((key, config), (vip(), rr()));
    }
}

#[test]
fn dest_dump_reply_for_direct_route_server_parses_counters() {
    // As ip_vs_genl_fill_dest writes it (kernel >= 5.3, with tunnel attrs).
    let attrs = vec![
        addra(DEST_ADDR, "10.10.24.21"),
        be16a(DEST_PORT, 80),
        u32a(DEST_FWD, 3),
        u32a(DEST_WEIGHT, 1),
        nla(DEST_TUN_TYPE, &[0]),
        be16a(DEST_TUN_PORT, 0),
        u16a(DEST_TUN_FLAGS, 0),
        u32a(DEST_U_THRESH, 0),
        u32a(DEST_L_THRESH, 0),
        u32a(DEST_ACTIVE, 5),
        u32a(DEST_INACT, 6),
        u32a(DEST_PERSIST, 7),
        u16a(DEST_ADDR_FAMILY, 2),
        nest(DEST_STATS, &stats32(1, 2, 3)),
        nest(DEST_STATS64, &stats64(11, 12, 13)),
    ];
    // Dump parts use IPVS_CMD_NEW_DEST (5) as their command.
    let bytes = msg(FAM, MULTI, 30, 4242, 5, &[nest(2, &attrs)]);
    let expected = DestEntry {
        key: dest("10.10.24.21", 80),
        dest: Dest::direct_route(1),
        stats: DestStats {
            active_conns: 5,
            inactive_conns: 6,
            persist_conns: 7,
            traffic: Counters {
                connections: 11,
                in_packets: 12,
                out_packets: 0,
                in_bytes: 13,
                out_bytes: 0,
            },
        },
    };
    assert_eq!(parse_one_reply(&bytes, 2), Reply::Dest(expected));
}

#[test]
fn dest_dump_reply_without_addr_family_uses_the_service_family() {
    // Kernels before 4.3 send no IPVS_DEST_ATTR_ADDR_FAMILY.
    let attrs = vec![
        addra(DEST_ADDR, "2001:db8::21"),
        be16a(DEST_PORT, 443),
        u32a(DEST_FWD, 2),
        u32a(DEST_WEIGHT, 3),
        u32a(DEST_U_THRESH, 10),
        u32a(DEST_L_THRESH, 5),
        u32a(DEST_ACTIVE, 0),
        u32a(DEST_INACT, 0),
        u32a(DEST_PERSIST, 0),
    ];
    let bytes = msg(FAM, MULTI, 31, 4242, 5, &[nest(2, &attrs)]);
    let expected = DestEntry {
        key: dest("2001:db8::21", 443),
        dest: Dest {
            weight: 3,
            forward: Forward::Tunnel,
            upper_threshold: 10,
            lower_threshold: 5,
        },
        stats: DestStats::default(),
    };
    assert_eq!(parse_one_reply(&bytes, AF_INET6), Reply::Dest(expected));
}

#[test]
fn info_reply_parses_version_and_table_size() {
    // GET_INFO is answered with IPVS_CMD_SET_INFO (14), top-level attributes.
    let bytes = msg(FAM, 0, 40, 4242, 14, &[u32a(1, 0x010201), u32a(2, 4096)]);
    assert_eq!(
        parse_one_reply(&bytes, 0),
        Reply::Info(Info {
            version: 0x010201,
            conn_table_size: 4096
        })
    );
}

/// One part of a `GET_DAEMON` dump as `ip_vs_genl_dump_daemon` writes it (kernel >= 4.3):
/// `NEW_DAEMON`, `NLM_F_MULTI`, every setting with the values the kernel chose.
fn daemon_part(state: u32, ifname: &str, sync_id: u32, extra: &[Vec<u8>]) -> Vec<u8> {
    let attrs = [
        vec![
            u32a(DAEMON_STATE, state),
            stra(DAEMON_IFN, ifname),
            u32a(DAEMON_SYNC_ID, sync_id),
        ],
        extra.to_vec(),
    ]
    .concat();
    msg(
        FAM,
        MULTI,
        50,
        4242,
        NEW_DAEMON,
        &[nest(CMD_DAEMON, &attrs)],
    )
}

#[test]
fn daemon_dump_with_master_and_backup_parses_the_settings_the_kernel_chose() {
    // `ipvsadm --start-daemon master --mcast-interface eth0 --syncid 1` (defaults filled in by
    // start_sync_thread) and a backup with its own group, port and TTL, then NLMSG_DONE.
    let master = daemon_part(
        MASTER,
        "eth0",
        1,
        &[
            u16a(DAEMON_MAXLEN, 1472),
            u16a(DAEMON_PORT, 8848),
            nla(DAEMON_TTL, &[1]),
            nla(DAEMON_GROUP, &[224, 0, 0, 81]),
        ],
    );
    let backup = daemon_part(
        BACKUP,
        "eth0",
        0,
        &[
            u16a(DAEMON_MAXLEN, 1472),
            u16a(DAEMON_PORT, 9000),
            nla(DAEMON_TTL, &[3]),
            nla(
                DAEMON_GROUP6,
                &"ff02::81".parse::<std::net::Ipv6Addr>().unwrap().octets(),
            ),
        ],
    );
    let mut done = Vec::new();
    done.extend_from_slice(&20u32.to_ne_bytes());
    done.extend_from_slice(&3u16.to_ne_bytes()); // NLMSG_DONE
    done.extend_from_slice(&MULTI.to_ne_bytes());
    done.extend_from_slice(&50u32.to_ne_bytes());
    done.extend_from_slice(&4242u32.to_ne_bytes());
    done.extend_from_slice(&0i32.to_ne_bytes());
    let datagram = [master, backup, done].concat();
    let msgs = split_messages(&datagram).unwrap();
    assert_eq!(msgs.iter().map(|m| m.ty).collect::<Vec<_>>(), [FAM, FAM, 3]);
    let parsed: Vec<Reply> = msgs[..2]
        .iter()
        .map(|m| Reply::parse(m.payload, 0).unwrap())
        .collect();
    assert_eq!(
        parsed,
        [
            Reply::Daemon(SyncDaemon {
                max_len: Some(1472),
                group: Some(ip("224.0.0.81")),
                port: Some(DEFAULT_SYNC_PORT),
                ttl: Some(1),
                ..SyncDaemon::new(SyncRole::Master, "eth0", 1)
            }),
            Reply::Daemon(SyncDaemon {
                max_len: Some(1472),
                group: Some(ip("ff02::81")),
                port: Some(9000),
                ttl: Some(3),
                ..SyncDaemon::new(SyncRole::Backup, "eth0", 0)
            }),
        ]
    );
}

#[test]
fn daemon_dump_of_a_kernel_before_4_3_leaves_the_newer_settings_unknown() {
    let bytes = daemon_part(BACKUP, "eth1", 42, &[]);
    assert_eq!(
        parse_one_reply(&bytes, 0),
        Reply::Daemon(SyncDaemon::new(SyncRole::Backup, "eth1", 42))
    );
}

#[test]
fn daemon_dump_parts_that_do_not_fit_the_types_are_refused() {
    let refused = |bytes: Vec<u8>| {
        let msgs = split_messages(&bytes).unwrap();
        Reply::parse(msgs[0].payload, 0).unwrap_err().to_string()
    };
    // A port of 4 bytes is not the u16 the kernel writes: never read half of it.
    let e = refused(daemon_part(MASTER, "eth0", 1, &[u32a(DAEMON_PORT, 8848)]));
    assert!(e.contains("has 4 bytes, a u16 has 2"), "{e}");
    let e = refused(daemon_part(MASTER, "eth0", 300, &[]));
    assert!(e.contains("sync id 300"), "{e}");
    let e = refused(daemon_part(3, "eth0", 1, &[]));
    assert!(e.contains("unknown sync daemon state 3"), "{e}");
    let e = refused(daemon_part(
        MASTER,
        "eth0",
        1,
        &[nla(DAEMON_GROUP, &[224, 0, 0, 81, 0, 0, 0, 0])],
    ));
    assert!(e.contains("has 8 bytes, a in_addr has 4"), "{e}");
}

#[test]
fn daemon_errors_say_which_daemon_and_what_the_errno_means_for_it() {
    let start = Request::NewDaemon(SyncDaemon::new(SyncRole::Master, "eth0", 7));
    assert_eq!(
        start.error(start.kernel_error(17)).to_string(),
        "start master sync daemon on eth0 (syncid 7): \
         one already runs in this network namespace (EEXIST); stop it first"
    );
    assert_eq!(start.kernel_error(19), KernelError::NoSuchInterface);
    assert_eq!(start.kernel_error(22), KernelError::DaemonRejected);
    assert_eq!(start.kernel_error(22).errno(), Some(22));
    let stop = Request::DelDaemon(SyncRole::Backup);
    assert_eq!(
        stop.error(stop.kernel_error(3)).to_string(),
        "stop backup sync daemon: none runs in this network namespace (ESRCH)"
    );
    assert_eq!(
        stop.error(stop.kernel_error(3)).kernel(),
        Some(&KernelError::NoDaemon)
    );
    let list = Request::GetDaemons;
    assert_eq!(
        list.error(list.kernel_error(1)).to_string(),
        format!("list sync daemons: {}", KernelError::PermissionDenied)
    );
}

#[test]
fn acks_are_attributed_by_sequence_number_not_position() {
    let mut pending: HashMap<u32, usize> = [(100, 0), (101, 1), (102, 2)].into_iter().collect();
    // Out of order, plus a stale ack of an abandoned exchange (seq 7).
    let datagram = [
        nlmsgerr(102, 0),
        nlmsgerr(7, 0),
        nlmsgerr(100, 17),
        nlmsgerr(101, 3),
    ]
    .concat();
    let mut acks = match_acks(&datagram, &mut pending).unwrap();
    acks.sort();
    assert_eq!(acks, [(0, 17), (1, 3), (2, 0)]);
    assert!(pending.is_empty());
}

#[test]
fn errors_from_a_batch_name_the_object_and_translate_the_errno() {
    let r = Request::NewDest(vip().into(), dest("10.10.24.21", 80), Dest::direct_route(1));
    let e = r.error(r.kernel_error(3));
    assert_eq!(
        e.to_string(),
        "add destination 10.10.24.21:80 to TCP 10.10.24.88:80: no such service (ESRCH)"
    );
    let r = Request::DelDest(vip().into(), dest("10.10.24.21", 80));
    assert_eq!(r.kernel_error(2), KernelError::NoSuchDest);
    let mh = ServiceConfig {
        scheduler: Scheduler::Mh,
        ..rr()
    };
    let r = Request::NewService(vip().into(), mh);
    assert_eq!(
        r.error(r.kernel_error(2)).to_string(),
        "add service TCP 10.10.24.88:80: scheduler module ip_vs_mh is not available (modprobe ip_vs_mh)"
    );
    let r = Request::NewService(vip().into(), rr());
    assert_eq!(
        r.error(r.kernel_error(17)).kernel(),
        Some(&KernelError::Exists)
    );
    assert!(
        r.kernel_error(1).to_string().contains("CAP_NET_ADMIN"),
        "EPERM explains the capability"
    );
}
