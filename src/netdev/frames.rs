//! Wire formats of VIP announcements, as pure functions over bytes.
//!
//! When a director takes a VIP, switches and neighbours still map the VIP to
//! the previous holder's MAC. A gratuitous ARP (IPv4) or an unsolicited
//! neighbour advertisement with the override flag (IPv6) makes them update at
//! once. This module only builds the Ethernet frames; `announce` sends them.
//! The ARP request and the IPv6/ICMPv6 framing here are shared with the
//! who-has probe, whose own frames and parsers are in `probe_frames`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// EtherType of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// EtherType of IPv4, also the ARP protocol type of IPv4 addresses.
pub const ETH_P_IP: u16 = 0x0800;
/// The Ethernet broadcast address.
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];
/// ff02::1, the all-nodes multicast group unsolicited NAs go to (RFC 4861 7.2.6).
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// Length of a gratuitous ARP frame: Ethernet header 14 + ARP 28.
pub const GARP_LEN: usize = 42;
/// Length of an unsolicited NA frame: Ethernet 14 + IPv6 40 + NA 24 + option 8.
pub const UNSOLICITED_NA_LEN: usize = 86;

/// ARP hardware type of Ethernet.
pub const ARPHRD_ETHER: u16 = 1;
/// ARP operation: request.
pub const ARPOP_REQUEST: u16 = 1;
/// ARP operation: reply.
pub const ARPOP_REPLY: u16 = 2;
/// ICMPv6 type of a neighbour solicitation (RFC 4861 4.3).
pub const ICMPV6_NEIGHBOR_SOLICIT: u8 = 135;
/// ICMPv6 type of a neighbour advertisement (RFC 4861 4.4).
pub const ICMPV6_NEIGHBOR_ADVERT: u8 = 136;
/// IPv6 next header of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;
/// Neighbour discovery option: source link-layer address (RFC 4861 4.6.1).
pub const ND_OPT_SOURCE_LL_ADDR: u8 = 1;
/// Neighbour discovery option: target link-layer address (RFC 4861 4.6.1).
pub const ND_OPT_TARGET_LL_ADDR: u8 = 2;
const NA_FLAG_OVERRIDE: u8 = 0x20;

/// The announcement frame for `vip` from an interface with address `mac`:
/// [`gratuitous_arp`] for IPv4, [`unsolicited_na`] for IPv6.
pub fn announcement(mac: [u8; 6], vip: IpAddr) -> Vec<u8> {
    match vip {
        IpAddr::V4(v4) => gratuitous_arp(mac, v4).to_vec(),
        IpAddr::V6(v6) => unsolicited_na(mac, v6).to_vec(),
    }
}

/// A gratuitous ARP request for `vip`, like `arping -U -I IF VIP`: broadcast,
/// sender and target protocol address both the VIP, sender hardware address
/// the interface's MAC.
///
/// The target hardware address is zero, as the kernel's own ARP requests and
/// RFC 5227 have it (iputils' arping puts ff:ff:.. there; receivers ignore
/// it). No padding to 60 bytes: drivers pad short frames, as they do for
/// the kernel's own 42-byte ARP.
pub fn gratuitous_arp(mac: [u8; 6], vip: Ipv4Addr) -> [u8; GARP_LEN] {
    arp_request(mac, vip, vip)
}

/// A broadcast ARP request "who-has `target` tell `sender`" (RFC 826) from
/// an interface with address `mac`, like `arping -I IF -s SENDER TARGET`.
///
/// The target hardware address is zero, as in [`gratuitous_arp`]; a
/// `sender` of 0.0.0.0 makes it an RFC 5227 ARP probe.
pub fn arp_request(mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> [u8; GARP_LEN] {
    let mut f = [0u8; GARP_LEN];
    ethernet_header(&mut f, BROADCAST_MAC, mac, ETH_P_ARP);
    let arp = &mut f[14..];
    arp[0..2].copy_from_slice(&ARPHRD_ETHER.to_be_bytes()); // hardware type
    arp[2..4].copy_from_slice(&ETH_P_IP.to_be_bytes()); // protocol type
    arp[4] = 6; // hardware address length
    arp[5] = 4; // protocol address length
    arp[6..8].copy_from_slice(&ARPOP_REQUEST.to_be_bytes()); // operation
    arp[8..14].copy_from_slice(&mac); // sender hardware address
    arp[14..18].copy_from_slice(&sender.octets()); // sender protocol address
    // 18..24 target hardware address stays zero.
    arp[24..28].copy_from_slice(&target.octets()); // target protocol address
    f
}

/// An unsolicited neighbour advertisement for `vip` to all nodes, like
/// `ndsend VIP IF` (or the NA the kernel sends with `ndisc_notify=1`):
/// source the VIP, destination ff02::1, hop limit 255 (receivers drop
/// anything less), override flag set so caches replace the old MAC, and a
/// target link-layer address option carrying the interface's MAC.
pub fn unsolicited_na(mac: [u8; 6], vip: Ipv6Addr) -> [u8; UNSOLICITED_NA_LEN] {
    let mut f = [0u8; UNSOLICITED_NA_LEN];
    let icmp = &mut f[54..];
    icmp[0] = ICMPV6_NEIGHBOR_ADVERT;
    // icmp[1] code 0; icmp[2..4] checksum, filled in by `icmpv6_frame`.
    icmp[4] = NA_FLAG_OVERRIDE; // not router, not solicited, override
    icmp[8..24].copy_from_slice(&vip.octets()); // target address
    icmp[24] = ND_OPT_TARGET_LL_ADDR;
    icmp[25] = 1; // option length in units of 8 bytes
    icmp[26..32].copy_from_slice(&mac);
    icmpv6_frame(&mut f, multicast_mac(ALL_NODES), mac, vip, ALL_NODES);
    f
}

/// Fills in the Ethernet and IPv6 headers (hop limit 255, as neighbour
/// discovery requires) and the ICMPv6 checksum of `f`, a frame whose ICMPv6
/// message from byte 54 on is already written with a zero checksum.
pub(crate) fn icmpv6_frame(
    f: &mut [u8],
    dst_mac: [u8; 6],
    mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
) {
    ethernet_header(f, dst_mac, mac, ETH_P_IPV6);
    let icmp_len = f.len() - 14 - 40;
    let ip = &mut f[14..54];
    ip[0] = 0x60; // version 6, traffic class and flow label zero
    ip[4..6].copy_from_slice(&(icmp_len as u16).to_be_bytes()); // payload length
    ip[6] = IPPROTO_ICMPV6; // next header
    ip[7] = 255; // hop limit
    ip[8..24].copy_from_slice(&src.octets()); // source
    ip[24..40].copy_from_slice(&dst.octets()); // destination
    let icmp = &mut f[54..];
    let sum = icmpv6_checksum(src, dst, icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
}

/// The ICMPv6 checksum (RFC 4443 2.3) of `icmp`, whose checksum field must
/// be zero, over the IPv6 pseudo-header of RFC 8200 8.1.
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, IPPROTO_ICMPV6]);
    !fold(ones_complement_sum(&pseudo) + ones_complement_sum(icmp))
}

/// The Ethernet multicast address of an IPv6 group: 33:33 and its last four
/// bytes (RFC 2464 7).
pub fn multicast_mac(group: Ipv6Addr) -> [u8; 6] {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

fn ethernet_header(f: &mut [u8], dst: [u8; 6], src: [u8; 6], ethertype: u16) {
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

/// Sum of big-endian 16-bit words (odd tail padded with zero), unfolded;
/// a u64 cannot overflow for any frame.
fn ones_complement_sum(bytes: &[u8]) -> u64 {
    bytes
        .chunks(2)
        .map(|c| u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// Folds carries back into 16 bits (RFC 1071 end-around carry).
fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];

    #[test]
    fn gratuitous_arp_bytes() {
        let f = gratuitous_arp(MAC, Ipv4Addr::new(10, 10, 24, 88));
        #[rustfmt::skip]
        let want: [u8; 42] = [
            // Ethernet: broadcast destination, our source, EtherType ARP
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x02, 0x42, 0xac, 0x11, 0x00, 0x02,
            0x08, 0x06,
            // ARP: Ethernet/IPv4, 6/4, request
            0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01,
            // sender MAC, sender IP = VIP
            0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 10, 10, 24, 88,
            // target MAC zero, target IP = VIP
            0, 0, 0, 0, 0, 0, 10, 10, 24, 88,
        ];
        assert_eq!(f, want);
    }

    #[test]
    fn unsolicited_na_bytes() {
        let vip: Ipv6Addr = "fd00:24::88".parse().unwrap();
        let f = unsolicited_na(MAC, vip);
        let mut vip_bytes = vip.octets().to_vec();
        #[rustfmt::skip]
        let mut want: Vec<u8> = vec![
            // Ethernet: 33:33:00:00:00:01 (ff02::1), our source, EtherType IPv6
            0x33, 0x33, 0x00, 0x00, 0x00, 0x01,
            0x02, 0x42, 0xac, 0x11, 0x00, 0x02,
            0x86, 0xdd,
            // IPv6: version 6, payload 32, next header ICMPv6, hop limit 255
            0x60, 0, 0, 0, 0x00, 0x20, 58, 255,
        ];
        want.append(&mut vip_bytes.clone()); // source = VIP
        want.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01]);
        // ICMPv6 NA: type 136 code 0, checksum (checked separately), O flag
        want.extend_from_slice(&[136, 0, f[56], f[57], 0x20, 0, 0, 0]);
        want.append(&mut vip_bytes); // target = VIP
        // Target link-layer address option: type 2, length 1 (8 bytes), MAC
        want.extend_from_slice(&[2, 1, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        assert_eq!(f.to_vec(), want);
    }

    #[test]
    fn unsolicited_na_checksum_verifies() {
        // A receiver sums pseudo-header and message including the checksum;
        // a correct one makes that 0xffff.
        let vip: Ipv6Addr = "fd00:24::88".parse().unwrap();
        let f = unsolicited_na(MAC, vip);
        let icmp = &f[54..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[22..38]); // source from the IPv6 header
        pseudo.extend_from_slice(&f[38..54]); // destination from the IPv6 header
        pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        let total = fold(ones_complement_sum(&pseudo) + ones_complement_sum(icmp));
        assert_eq!(total, 0xffff);
        assert_ne!(&f[56..58], &[0, 0]);
    }

    #[test]
    fn unsolicited_na_checksum_known_value() {
        // Computed independently (Python, RFC 8200 pseudo-header) for
        // src fe80::1, dst ff02::1, MAC 02:42:ac:11:00:02, target fe80::1.
        let f = unsolicited_na(MAC, "fe80::1".parse().unwrap());
        assert_eq!(u16::from_be_bytes([f[56], f[57]]), KNOWN_FE80_1_CHECKSUM);
    }

    const KNOWN_FE80_1_CHECKSUM: u16 = 0xab46;

    #[test]
    fn rfc1071_example_sum() {
        // RFC 1071 section 3: these words sum to ddf2 after the carry fold.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(ones_complement_sum(&bytes)), 0xddf2);
        // An odd tail is padded with a zero byte.
        assert_eq!(ones_complement_sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn multicast_mac_of_all_nodes() {
        assert_eq!(multicast_mac(ALL_NODES), [0x33, 0x33, 0, 0, 0, 1]);
    }

    #[test]
    fn announcement_dispatches_on_family() {
        assert_eq!(
            announcement(MAC, "10.0.0.1".parse().unwrap()).len(),
            GARP_LEN
        );
        assert_eq!(
            announcement(MAC, "fd00::1".parse().unwrap()).len(),
            UNSOLICITED_NA_LEN
        );
    }
}
