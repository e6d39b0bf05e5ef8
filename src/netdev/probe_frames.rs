//! Wire formats of the who-has probe, as pure functions over bytes.
//!
//! A director asks the LAN who answers for a VIP, so that a second holder (an
//! address added by hand elsewhere, a partitioned director that kept it) is
//! seen. The question is an ARP request (IPv4) or a neighbour solicitation to
//! the VIP's solicited-node group (IPv6); the evidence is any frame in which
//! a station claims the VIP as its own: an ARP reply or request with the VIP
//! as sender (a gratuitous ARP is one), or a neighbour advertisement whose
//! target is the VIP. `probe` sends and listens; the shared Ethernet, ARP and
//! ICMPv6 pieces come from `frames`. The classic BPF program that lets the
//! kernel drop everything else before it reaches the socket is here too,
//! because it must agree with the parsers byte for byte.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::netdev::frames::{
    ARPHRD_ETHER, ARPOP_REPLY, ARPOP_REQUEST, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6,
    ICMPV6_NEIGHBOR_ADVERT, ICMPV6_NEIGHBOR_SOLICIT, IPPROTO_ICMPV6, ND_OPT_SOURCE_LL_ADDR,
    ND_OPT_TARGET_LL_ADDR, arp_request, icmpv6_checksum, icmpv6_frame, multicast_mac,
};

/// Length of a neighbour solicitation frame: Ethernet 14 + IPv6 40 + NS 24 +
/// source link-layer address option 8.
pub const NEIGHBOR_SOLICIT_LEN: usize = 86;

/// Shortest frame [`arp_holder`] reads: Ethernet 14 + ARP 28 (real frames are
/// padded to 60; the padding is ignored).
pub const ARP_MIN_LEN: usize = 42;

/// Shortest frame [`na_holder`] reads: Ethernet 14 + IPv6 40 + NA 24, no option.
pub const NA_MIN_LEN: usize = 78;

/// Offset of the ARP sender protocol address in an Ethernet frame.
const ARP_SPA: usize = 14 + 14;
/// Offset of the ICMPv6 message in an Ethernet frame without IPv6 extension headers.
const ICMPV6: usize = 14 + 40;
/// Solicited flag of a neighbour advertisement (RFC 4861 4.4).
const NA_FLAG_SOLICITED: u8 = 0x40;

/// The question "who has `vip`?" from an interface with address `mac`, asked
/// as `sender`: [`arp_request`] for IPv4, [`neighbor_solicit`] for IPv6.
/// `None` when `sender` and `vip` are of different families.
pub fn who_has_request(mac: [u8; 6], sender: IpAddr, vip: IpAddr) -> Option<Vec<u8>> {
    match (sender, vip) {
        (IpAddr::V4(s), IpAddr::V4(v)) => Some(arp_request(mac, s, v).to_vec()),
        (IpAddr::V6(s), IpAddr::V6(v)) => Some(neighbor_solicit(mac, s, v).to_vec()),
        _ => None,
    }
}

/// The solicited-node multicast group of `addr`, ff02::1:ffXX:XXXX with its
/// last 24 bits (RFC 4291 2.7.1). Every node joins the group of each of its
/// addresses on the interface that holds it, so a solicitation sent there
/// reaches exactly the candidate holders.
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// A neighbour solicitation for `vip` from `sender` (RFC 4861 4.3), like
/// `ndisc6 VIP IF`: to the VIP's solicited-node group and its 33:33:ff:..
/// MAC, hop limit 255, with a source link-layer address option carrying
/// `mac` so the holder can answer without resolving us first.
///
/// `sender` must be a unicast address of the sending interface (its
/// link-local address is the natural choice). The unspecified address would
/// turn this into a duplicate address detection probe, which must carry no
/// source link-layer option and is answered differently.
pub fn neighbor_solicit(
    mac: [u8; 6],
    sender: Ipv6Addr,
    vip: Ipv6Addr,
) -> [u8; NEIGHBOR_SOLICIT_LEN] {
    let mut f = [0u8; NEIGHBOR_SOLICIT_LEN];
    let group = solicited_node(vip);
    let icmp = &mut f[ICMPV6..];
    icmp[0] = ICMPV6_NEIGHBOR_SOLICIT;
    // icmp[1] code 0; icmp[2..4] checksum, filled in by `icmpv6_frame`;
    // icmp[4..8] reserved, zero.
    icmp[8..24].copy_from_slice(&vip.octets()); // target address
    icmp[24] = ND_OPT_SOURCE_LL_ADDR;
    icmp[25] = 1; // option length in units of 8 bytes
    icmp[26..32].copy_from_slice(&mac);
    icmpv6_frame(&mut f, multicast_mac(group), mac, sender, group);
    f
}

/// The MAC of the station `frame` shows holding `vip`, if it shows one:
/// [`arp_holder`] for IPv4, [`na_holder`] for IPv6.
pub fn holder(frame: &[u8], vip: IpAddr) -> Option<[u8; 6]> {
    match vip {
        IpAddr::V4(v4) => arp_holder(frame, v4),
        IpAddr::V6(v6) => na_holder(frame, v6),
    }
}

/// The sender hardware address of an Ethernet/IPv4 ARP frame (RFC 826) whose
/// sender protocol address is `vip`: a reply to our request, a gratuitous
/// ARP, or a request the holder makes for its own traffic.
///
/// A request *for* the VIP (a router resolving it, an RFC 5227 probe with
/// sender 0.0.0.0) names no holder and gives `None`, as do frames shorter
/// than [`ARP_MIN_LEN`], other hardware or protocol types, other operations
/// and a multicast or zero sender MAC.
pub fn arp_holder(frame: &[u8], vip: Ipv4Addr) -> Option<[u8; 6]> {
    let arp = frame.get(14..ARP_MIN_LEN)?;
    let well_formed = be16(frame, 12) == ETH_P_ARP
        && be16(arp, 0) == ARPHRD_ETHER
        && be16(arp, 2) == ETH_P_IP
        && arp[4] == 6
        && arp[5] == 4
        && matches!(be16(arp, 6), ARPOP_REQUEST | ARPOP_REPLY);
    if !well_formed || arp[14..18] != vip.octets() {
        return None;
    }
    unicast_mac(&arp[8..14])
}

/// The link-layer address of a neighbour advertisement whose target is `vip`:
/// its target link-layer address option, else the Ethernet source.
///
/// The checks are those RFC 4861 7.1.2 asks of a receiver: IPv6 with ICMPv6
/// as next header (extension headers are not followed), hop limit 255, code
/// 0, a correct checksum, an ICMPv6 length of 24 or more within the frame,
/// no option of length zero, and no solicited flag on a multicast
/// destination. Anything else, including any truncation, gives `None`.
pub fn na_holder(frame: &[u8], vip: Ipv6Addr) -> Option<[u8; 6]> {
    let ip = frame.get(14..ICMPV6)?;
    if be16(frame, 12) != ETH_P_IPV6 || ip[0] >> 4 != 6 || ip[6] != IPPROTO_ICMPV6 || ip[7] != 255 {
        return None;
    }
    let payload_len = usize::from(be16(ip, 4));
    let icmp = frame.get(ICMPV6..ICMPV6 + payload_len)?;
    if icmp.len() < NA_MIN_LEN - ICMPV6 || icmp[0] != ICMPV6_NEIGHBOR_ADVERT || icmp[1] != 0 {
        return None;
    }
    let src = ipv6_at(ip, 8);
    let dst = ipv6_at(ip, 24);
    // Summed with its own checksum in place, a correct message folds to
    // 0xffff, which `icmpv6_checksum` returns complemented: zero.
    if icmpv6_checksum(src, dst, icmp) != 0 {
        return None;
    }
    if dst.is_multicast() && icmp[4] & NA_FLAG_SOLICITED != 0 {
        return None;
    }
    if icmp[8..24] != vip.octets() {
        return None;
    }
    let mut tlla = None;
    let mut options = &icmp[24..];
    while !options.is_empty() {
        let len = usize::from(*options.get(1)?) * 8;
        if len == 0 || len > options.len() {
            return None;
        }
        // Length 1 is the Ethernet form (RFC 2464 6); others are not ours.
        if options[0] == ND_OPT_TARGET_LL_ADDR && len == 8 {
            tlla = Some(&options[2..8]);
        }
        options = &options[len..];
    }
    unicast_mac(tlla.unwrap_or(&frame[6..12]))
}

/// One classic BPF instruction, laid out as the kernel's `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    /// Opcode, e.g. `BPF_LD | BPF_H | BPF_ABS`.
    pub code: u16,
    /// Jump offset when a comparison holds.
    pub jt: u8,
    /// Jump offset when it does not.
    pub jf: u8,
    /// The constant operand.
    pub k: u32,
}

pub(crate) const BPF_LD: u16 = 0x00;
pub(crate) const BPF_JMP: u16 = 0x05;
pub(crate) const BPF_RET: u16 = 0x06;
pub(crate) const BPF_W: u16 = 0x00;
pub(crate) const BPF_H: u16 = 0x08;
pub(crate) const BPF_B: u16 = 0x10;
pub(crate) const BPF_ABS: u16 = 0x20;
pub(crate) const BPF_JEQ: u16 = 0x10;
pub(crate) const BPF_K: u16 = 0x00;

/// A classic BPF program for an `AF_PACKET` socket that keeps only frames
/// which could name a holder of `vip`: ARP with the VIP as sender protocol
/// address, or ICMPv6 neighbour advertisements (no extension header) with
/// the VIP as target. Like `tcpdump -dd 'arp[14:4] = VIP'`.
///
/// It is a coarse pre-filter, never stricter than [`holder`]: the parsers
/// still check everything. It spares the socket the rest of the LAN's IPv6
/// traffic while the probe waits, so a burst cannot overflow its queue and
/// push out the answer.
pub fn holder_filter(vip: IpAddr) -> Vec<BpfInsn> {
    let mut checks: Vec<(u16, u32, u32)> = Vec::new();
    match vip {
        IpAddr::V4(v4) => {
            checks.push((BPF_H, 12, u32::from(ETH_P_ARP)));
            checks.push((BPF_W, ARP_SPA as u32, u32::from(v4)));
        }
        IpAddr::V6(v6) => {
            checks.push((BPF_H, 12, u32::from(ETH_P_IPV6)));
            checks.push((BPF_B, 14 + 6, u32::from(IPPROTO_ICMPV6)));
            checks.push((BPF_B, ICMPV6 as u32, u32::from(ICMPV6_NEIGHBOR_ADVERT)));
            for (i, word) in v6.octets().chunks(4).enumerate() {
                let word = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
                checks.push((BPF_W, (ICMPV6 + 8 + 4 * i) as u32, word));
            }
        }
    }
    // Each check loads a field and jumps to the final "drop" on mismatch;
    // passing all of them falls through to "accept".
    let n = checks.len();
    let mut prog = Vec::with_capacity(2 * n + 2);
    for (i, (size, offset, value)) in checks.into_iter().enumerate() {
        prog.push(insn(BPF_LD | size | BPF_ABS, 0, 0, offset));
        let to_drop = u8::try_from(2 * (n - i) - 1).expect("a short program");
        prog.push(insn(BPF_JMP | BPF_JEQ | BPF_K, 0, to_drop, value));
    }
    prog.push(insn(BPF_RET | BPF_K, 0, 0, u32::MAX)); // accept the whole frame
    prog.push(insn(BPF_RET | BPF_K, 0, 0, 0)); // drop
    prog
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> BpfInsn {
    BpfInsn { code, jt, jf, k }
}

/// The big-endian u16 at `at`; callers have checked the length.
fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// The IPv6 address at `at`; callers have checked the length.
fn ipv6_at(bytes: &[u8], at: usize) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&bytes[at..at + 16]);
    Ipv6Addr::from(o)
}

/// `bytes` as a MAC a station can hold: not zero, not group (multicast or
/// broadcast, low bit of the first byte set).
fn unicast_mac(bytes: &[u8]) -> Option<[u8; 6]> {
    let mac = <[u8; 6]>::try_from(bytes).ok()?;
    (mac != [0; 6] && mac[0] & 1 == 0).then_some(mac)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::netdev::frames::{gratuitous_arp, unsolicited_na};

    /// Ours, as in `frames`' tests.
    const MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
    /// A peer holding the VIP.
    const PEER: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x20];

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn arp_request_asks_who_has_the_vip_tell_our_address() {
        let f = arp_request(MAC, v4("10.10.24.10"), v4("10.10.24.88"));
        #[rustfmt::skip]
        let want: [u8; 42] = [
            // Ethernet: broadcast destination, our source, EtherType ARP
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x02, 0x42, 0xac, 0x11, 0x00, 0x02,
            0x08, 0x06,
            // ARP (RFC 826): hrd Ethernet, pro IPv4, hln 6, pln 4, op request
            0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01,
            // sha = our MAC, spa = our interface address
            0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 10, 10, 24, 10,
            // tha unknown (zero), tpa = VIP
            0, 0, 0, 0, 0, 0, 10, 10, 24, 88,
        ];
        assert_eq!(f, want);
        assert_eq!(
            who_has_request(
                MAC,
                "10.10.24.10".parse().unwrap(),
                "10.10.24.88".parse().unwrap()
            ),
            Some(want.to_vec())
        );
    }

    #[test]
    fn gratuitous_arp_is_an_arp_request_from_the_vip_to_itself() {
        let vip = v4("10.10.24.88");
        assert_eq!(gratuitous_arp(MAC, vip), arp_request(MAC, vip, vip));
    }

    #[test]
    fn solicited_node_group_keeps_the_last_24_bits() {
        assert_eq!(solicited_node(v6("fd00:24::88")), v6("ff02::1:ff00:88"));
        assert_eq!(
            solicited_node(v6("2001:db8::4567:89ab:cdef")),
            v6("ff02::1:ffab:cdef")
        );
    }

    #[test]
    fn neighbor_solicit_goes_to_the_solicited_node_group_with_our_mac() {
        let sender = v6("fe80::42:acff:fe11:2");
        let vip = v6("fd00:24::88");
        let f = neighbor_solicit(MAC, sender, vip);
        #[rustfmt::skip]
        let mut want: Vec<u8> = vec![
            // Ethernet: 33:33:ff:00:00:88 (ff02::1:ff00:88), our source, IPv6
            0x33, 0x33, 0xff, 0x00, 0x00, 0x88,
            0x02, 0x42, 0xac, 0x11, 0x00, 0x02,
            0x86, 0xdd,
            // IPv6: version 6, payload 32, next header ICMPv6, hop limit 255
            0x60, 0, 0, 0, 0x00, 0x20, 58, 255,
            // source fe80::42:acff:fe11:2
            0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x00, 0x42, 0xac, 0xff, 0xfe, 0x11, 0x00, 0x02,
            // destination ff02::1:ff00:88
            0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, 0x00, 0x00, 0x88,
            // ICMPv6 NS (RFC 4861 4.3): type 135, code 0, checksum, reserved
            135, 0, 0x23, 0x3e, 0, 0, 0, 0,
        ];
        want.extend_from_slice(&vip.octets()); // target = VIP
        // Source link-layer address option: type 1, length 1 (8 bytes), MAC
        want.extend_from_slice(&[1, 1, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        // 0x233e computed independently (Python, RFC 8200 pseudo-header).
        assert_eq!(f.to_vec(), want);
        assert_eq!(
            who_has_request(MAC, IpAddr::V6(sender), IpAddr::V6(vip)),
            Some(want)
        );
    }

    #[test]
    fn who_has_request_refuses_mixed_families() {
        let v4 = "10.10.24.10".parse().unwrap();
        let v6 = "fd00:24::88".parse().unwrap();
        assert_eq!(who_has_request(MAC, v4, v6), None);
        assert_eq!(who_has_request(MAC, v6, v4), None);
    }

    /// The reply a holder sends to `arp_request(MAC, 10.10.24.10, 10.10.24.88)`,
    /// laid out by hand from RFC 826, padded to 60 bytes as a NIC delivers it.
    #[rustfmt::skip]
    const ARP_REPLY: [u8; 60] = [
        // Ethernet: to us, from the peer, ARP
        0x02, 0x42, 0xac, 0x11, 0x00, 0x02,
        0x02, 0x00, 0x00, 0x00, 0x00, 0x20,
        0x08, 0x06,
        // hrd 1, pro 0x0800, hln 6, pln 4, op 2 (reply)
        0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x02,
        // sha = peer, spa = VIP
        0x02, 0x00, 0x00, 0x00, 0x00, 0x20, 10, 10, 24, 88,
        // tha = us, tpa = our address
        0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 10, 10, 24, 10,
        // padding
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn arp_reply_from_the_vip_names_the_holder() {
        let vip = v4("10.10.24.88");
        assert_eq!(arp_holder(&ARP_REPLY, vip), Some(PEER));
        assert_eq!(arp_holder(&ARP_REPLY[..42], vip), Some(PEER));
        assert_eq!(holder(&ARP_REPLY, IpAddr::V4(vip)), Some(PEER));
        assert_eq!(arp_holder(&ARP_REPLY, v4("10.10.24.89")), None);
        assert_eq!(holder(&ARP_REPLY, "fd00:24::88".parse().unwrap()), None);
    }

    #[test]
    fn gratuitous_arp_and_requests_from_the_vip_name_the_holder() {
        let vip = v4("10.10.24.88");
        assert_eq!(arp_holder(&gratuitous_arp(PEER, vip), vip), Some(PEER));
        // The holder resolving its gateway with the VIP as sender.
        let asking = arp_request(PEER, vip, v4("10.10.24.1"));
        assert_eq!(arp_holder(&asking, vip), Some(PEER));
    }

    #[test]
    fn requests_for_the_vip_name_no_holder() {
        let vip = v4("10.10.24.88");
        // Our own question, a router's, and an RFC 5227 probe.
        assert_eq!(
            arp_holder(&arp_request(MAC, v4("10.10.24.10"), vip), vip),
            None
        );
        assert_eq!(
            arp_holder(&arp_request(PEER, v4("10.10.24.1"), vip), vip),
            None
        );
        assert_eq!(
            arp_holder(&arp_request(PEER, Ipv4Addr::UNSPECIFIED, vip), vip),
            None
        );
    }

    #[test]
    fn malformed_arp_names_no_holder() {
        let vip = v4("10.10.24.88");
        let damaged = |at: usize, value: u8| {
            let mut f = ARP_REPLY;
            f[at] = value;
            arp_holder(&f, vip)
        };
        assert_eq!(damaged(13, 0x00), None, "EtherType");
        assert_eq!(damaged(15, 6), None, "hardware type IEEE 802");
        assert_eq!(damaged(16, 0x86), None, "protocol type");
        assert_eq!(damaged(18, 8), None, "hardware address length");
        assert_eq!(damaged(19, 16), None, "protocol address length");
        assert_eq!(damaged(21, 3), None, "RARP request");
        assert_eq!(damaged(22, 0x03), None, "multicast sender MAC");
        let mut zero = ARP_REPLY;
        zero[22..28].fill(0);
        assert_eq!(arp_holder(&zero, vip), None, "zero sender MAC");
        for len in 0..ARP_MIN_LEN {
            assert_eq!(arp_holder(&ARP_REPLY[..len], vip), None, "cut at {len}");
        }
    }

    /// The solicited advertisement a holder sends to our [`neighbor_solicit`],
    /// laid out by hand from RFC 4861 4.4, with or without the target
    /// link-layer address option.
    fn solicited_na(with_option: bool) -> Vec<u8> {
        #[rustfmt::skip]
        let mut f = vec![
            // Ethernet: to us, from the peer, IPv6
            0x02, 0x42, 0xac, 0x11, 0x00, 0x02,
            0x02, 0x00, 0x00, 0x00, 0x00, 0x20,
            0x86, 0xdd,
            // IPv6: payload 32 (24 without option), ICMPv6, hop limit 255
            0x60, 0, 0, 0, 0x00, if with_option { 32 } else { 24 }, 58, 255,
            // source fd00:24::88 (the VIP)
            0xfd, 0x00, 0x00, 0x24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x88,
            // destination fe80::42:acff:fe11:2 (our sender address)
            0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x00, 0x42, 0xac, 0xff, 0xfe, 0x11, 0x00, 0x02,
            // ICMPv6 NA: type 136, code 0, checksum, flags S|O
            136, 0, 0, 0, 0x60, 0, 0, 0,
            // target fd00:24::88
            0xfd, 0x00, 0x00, 0x24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x88,
        ];
        // Checksums computed independently (Python, RFC 8200 pseudo-header).
        if with_option {
            f[56..58].copy_from_slice(&[0x6e, 0x53]);
            // Target link-layer address option: type 2, length 1, peer MAC
            f.extend_from_slice(&[2, 1, 0x02, 0x00, 0x00, 0x00, 0x00, 0x20]);
        } else {
            f[56..58].copy_from_slice(&[0x72, 0x7c]);
        }
        f
    }

    #[test]
    fn solicited_na_for_the_vip_names_the_target_link_layer_address() {
        let vip = v6("fd00:24::88");
        let f = solicited_na(true);
        assert_eq!(na_holder(&f, vip), Some(PEER));
        assert_eq!(holder(&f, IpAddr::V6(vip)), Some(PEER));
        // The option wins over the Ethernet source (a bridge or proxy in between).
        let mut relayed = f.clone();
        relayed[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        assert_eq!(na_holder(&relayed, vip), Some(PEER));
        assert_eq!(na_holder(&f, v6("fd00:24::89")), None);
        assert_eq!(holder(&f, "10.10.24.88".parse().unwrap()), None);
    }

    #[test]
    fn na_without_option_names_the_ethernet_source() {
        let vip = v6("fd00:24::88");
        let mut f = solicited_na(false);
        assert_eq!(na_holder(&f, vip), Some(PEER));
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        assert_eq!(na_holder(&f, vip), Some([0x02, 0, 0, 0, 0, 0x99]));
    }

    #[test]
    fn unsolicited_na_of_a_holder_names_it() {
        let vip = v6("fd00:24::88");
        assert_eq!(na_holder(&unsolicited_na(PEER, vip), vip), Some(PEER));
    }

    #[test]
    fn na_padded_beyond_its_payload_length_still_parses() {
        let mut f = solicited_na(true);
        f.extend_from_slice(&[0xaa; 10]);
        assert_eq!(na_holder(&f, v6("fd00:24::88")), Some(PEER));
    }

    #[test]
    fn neighbor_solicitations_name_no_holder() {
        let vip = v6("fd00:24::88");
        let ours = neighbor_solicit(MAC, v6("fe80::42:acff:fe11:2"), vip);
        assert_eq!(na_holder(&ours, vip), None);
        // Even one sent from the VIP: only advertisements count for IPv6.
        assert_eq!(na_holder(&neighbor_solicit(PEER, vip, vip), vip), None);
    }

    #[test]
    fn malformed_na_names_no_holder() {
        let vip = v6("fd00:24::88");
        // Each edit comes with a correct checksum, so that only the edited
        // field can be what the parser refuses.
        let damaged = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut f = solicited_na(true);
            edit(&mut f);
            fix_checksum(&mut f);
            na_holder(&f, vip)
        };
        assert_eq!(damaged(&|_| {}), Some(PEER), "the undamaged frame");
        assert_eq!(damaged(&|f| f[12] = 0x08), None, "EtherType");
        assert_eq!(damaged(&|f| f[14] = 0x40), None, "IP version 4");
        assert_eq!(damaged(&|f| f[20] = 0), None, "hop-by-hop header first");
        assert_eq!(damaged(&|f| f[21] = 64), None, "hop limit below 255");
        assert_eq!(damaged(&|f| f[54] = 135), None, "a solicitation");
        assert_eq!(damaged(&|f| f[55] = 1), None, "code 1");
        assert_eq!(damaged(&|f| f[79] = 0), None, "option of length 0");
        assert_eq!(damaged(&|f| f[80] = 0x03), None, "multicast option MAC");
        let mut bad_sum = solicited_na(true);
        bad_sum[57] ^= 1;
        assert_eq!(na_holder(&bad_sum, vip), None, "checksum");
        let mut too_long = solicited_na(true);
        too_long[19] = 40;
        assert_eq!(na_holder(&too_long, vip), None, "payload beyond frame");
        let mut too_short = solicited_na(false);
        too_short[19] = 16;
        too_short.truncate(70);
        fix_checksum(&mut too_short);
        assert_eq!(na_holder(&too_short, vip), None, "ICMPv6 shorter than 24");
        // A solicited advertisement sent to a multicast group is invalid.
        let mut multicast = solicited_na(true);
        multicast[38..54].copy_from_slice(&v6("ff02::1").octets());
        fix_checksum(&mut multicast);
        assert_eq!(na_holder(&multicast, vip), None);
        multicast[58] = 0x20; // only the override flag: valid again
        fix_checksum(&mut multicast);
        assert_eq!(na_holder(&multicast, vip), Some(PEER));
        let f = solicited_na(true);
        for len in 0..f.len() {
            assert_eq!(na_holder(&f[..len], vip), None, "cut at {len}");
        }
    }

    #[test]
    fn na_checks_options_to_the_end() {
        let vip = v6("fd00:24::88");
        let mut f = solicited_na(true);
        // A second option (MTU, 8 bytes) after the link-layer one is fine.
        f[19] = 40;
        f.extend_from_slice(&[5, 1, 0, 0, 0, 0, 0x05, 0xdc]);
        fix_checksum(&mut f);
        assert_eq!(na_holder(&f, vip), Some(PEER));
        // One that claims more than is left is not.
        f[87] = 2;
        fix_checksum(&mut f);
        assert_eq!(na_holder(&f, vip), None);
    }

    /// Recomputes the ICMPv6 checksum of an edited frame.
    fn fix_checksum(f: &mut [u8]) {
        f[56..58].fill(0);
        let len = (54 + usize::from(be16(f, 18))).min(f.len());
        let sum = icmpv6_checksum(ipv6_at(f, 22), ipv6_at(f, 38), &f[54..len]);
        f[56..58].copy_from_slice(&sum.to_be_bytes());
    }

    /// What the kernel's classic BPF interpreter does with the opcodes
    /// [`holder_filter`] uses: the number of bytes kept, 0 for dropped. A
    /// load past the end of the frame drops it, as in the kernel.
    fn run_filter(prog: &[BpfInsn], frame: &[u8]) -> u32 {
        let mut a = 0u32;
        let mut pc = 0;
        loop {
            let i = prog[pc];
            let at = i.k as usize;
            let load = |n: usize| frame.get(at..at + n);
            match i.code {
                c if c == BPF_LD | BPF_W | BPF_ABS => {
                    let Some(b) = load(4) else { return 0 };
                    a = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                }
                c if c == BPF_LD | BPF_H | BPF_ABS => {
                    let Some(b) = load(2) else { return 0 };
                    a = u32::from(u16::from_be_bytes([b[0], b[1]]));
                }
                c if c == BPF_LD | BPF_B | BPF_ABS => {
                    let Some(b) = load(1) else { return 0 };
                    a = u32::from(b[0]);
                }
                c if c == BPF_JMP | BPF_JEQ | BPF_K => {
                    pc += usize::from(if a == i.k { i.jt } else { i.jf });
                }
                c if c == BPF_RET | BPF_K => return i.k,
                c => panic!("opcode {c:#x} not interpreted"),
            }
            pc += 1;
        }
    }

    /// The kernel's checks of a classic program (`bpf_check_classic`):
    /// every jump lands inside, and the last instruction returns.
    fn assert_kernel_would_load(prog: &[BpfInsn]) {
        assert!(!prog.is_empty() && prog.len() <= 4096);
        for (pc, i) in prog.iter().enumerate() {
            if i.code & 0x07 == BPF_JMP {
                assert!(
                    pc + 1 + usize::from(i.jt.max(i.jf)) < prog.len(),
                    "jump at {pc}"
                );
            }
        }
        assert_eq!(prog.last().unwrap().code, BPF_RET | BPF_K);
    }

    #[test]
    fn filter_keeps_what_names_the_holder_and_drops_the_rest() {
        let v4_vip = v4("10.10.24.88");
        let v6_vip = v6("fd00:24::88");
        let arp = holder_filter(IpAddr::V4(v4_vip));
        let nd = holder_filter(IpAddr::V6(v6_vip));
        assert_kernel_would_load(&arp);
        assert_kernel_would_load(&nd);
        // Like `tcpdump -dd 'arp and arp[14:4] = 10.10.24.88'`.
        assert_eq!(
            arp,
            [
                insn(0x28, 0, 0, 12),
                insn(0x15, 0, 3, 0x0806),
                insn(0x20, 0, 0, 28),
                insn(0x15, 0, 1, 0x0a0a_1858),
                insn(0x06, 0, 0, u32::MAX),
                insn(0x06, 0, 0, 0),
            ]
        );

        assert_ne!(run_filter(&arp, &ARP_REPLY), 0);
        assert_ne!(run_filter(&arp, &gratuitous_arp(PEER, v4_vip)), 0);
        assert_eq!(
            run_filter(&arp, &arp_request(MAC, v4("10.10.24.10"), v4_vip)),
            0
        );
        assert_eq!(
            run_filter(&arp, &gratuitous_arp(PEER, v4("10.10.24.89"))),
            0
        );
        assert_eq!(run_filter(&arp, &solicited_na(true)), 0);

        assert_ne!(run_filter(&nd, &solicited_na(true)), 0);
        assert_ne!(run_filter(&nd, &solicited_na(false)), 0);
        assert_ne!(run_filter(&nd, &unsolicited_na(PEER, v6_vip)), 0);
        assert_eq!(run_filter(&nd, &unsolicited_na(PEER, v6("fd00:24::89"))), 0);
        assert_eq!(
            run_filter(&nd, &neighbor_solicit(MAC, v6("fe80::1"), v6_vip)),
            0
        );
        assert_eq!(run_filter(&nd, &ARP_REPLY), 0);
        // The last word of the target is compared too.
        assert_eq!(
            run_filter(&nd, &unsolicited_na(PEER, v6("fd00:24::1:88"))),
            0
        );
    }

    proptest! {
        /// The kernel-side filter must never drop a frame the parser would
        /// accept, or the probe goes blind to that holder.
        #[test]
        fn filter_is_never_stricter_than_the_parser(
            frame in prop_oneof![
                (any::<[u8; 6]>(), any::<[u8; 4]>(), any::<[u8; 4]>(), any::<bool>()).prop_map(
                    |(mac, s, t, reply)| {
                        let mut f = arp_request(mac, s.into(), t.into()).to_vec();
                        if reply {
                            f[21] = 2;
                        }
                        f
                    }
                ),
                (any::<[u8; 6]>(), any::<[u8; 16]>()).prop_map(|(mac, t)| unsolicited_na(mac, t.into()).to_vec()),
                proptest::collection::vec(any::<u8>(), 0..128),
            ],
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        ) {
            let mut frame = frame;
            for (at, value) in edits {
                if !frame.is_empty() {
                    let len = frame.len();
                    frame[at % len] = value;
                }
            }
            // Ask about the address the frame itself carries, so that
            // acceptance is common rather than a rare accident.
            let vips = [
                frame.get(28..32).map(|b| IpAddr::from(<[u8; 4]>::try_from(b).unwrap())),
                frame.get(62..78).map(|b| IpAddr::from(<[u8; 16]>::try_from(b).unwrap())),
            ];
            for vip in vips.into_iter().flatten() {
                if holder(&frame, vip).is_some() {
                    prop_assert_ne!(run_filter(&holder_filter(vip), &frame), 0);
                }
            }
        }
    }
}
