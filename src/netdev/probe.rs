//! Asks the LAN who holds a VIP: the sending and listening side of the
//! who-has probe, like `arping -I IF -s SENDER VIP` / `ndisc6 VIP IF` run
//! for a fixed time, keeping every MAC that answers.
//!
//! Every director of a VIP runs it periodically; an answer from any MAC but
//! its own means a second holder (an address added by hand on another box, a
//! partitioned director that kept the VIP). Real servers stay silent: they
//! hold the VIP on `lo` with `arp_ignore=1`, and IPv6 only answers for
//! addresses on the receiving interface. The frames and their parsers are
//! the pure [`crate::netdev::probe_frames`]; the socket is an `AF_PACKET`
//! one as in [`crate::netdev::announce`], made non-blocking and driven by
//! tokio's reactor so no thread waits for the answers.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{LinkAddr, MsgFlags, bind, recvfrom, sendto};
use socket2::{Domain, Protocol, SockFilter, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use crate::netdev::addr::{AddrEntry, LinkEntry};
use crate::netdev::announce::{io_error, packet_addr};
use crate::netdev::error::NetdevError;
use crate::netdev::frames::{ETH_P_ARP, ETH_P_IPV6};
use crate::netdev::probe_frames::{holder, holder_filter, who_has_request};

/// `sll_pkttype` of a frame this host sent (`linux/if_packet.h`).
const PACKET_OUTGOING: u8 = 4;

/// Room for any frame that can name a holder (60-byte ARP, NAs of some
/// hundred bytes); a longer frame is cut to this and then fails to parse.
const RECV_BUF: usize = 2048;

/// The MACs, other than `link`'s own, that claim `vip` on `link` within
/// `wait` of asking once, as `sender`.
///
/// IPv4 asks with a broadcast ARP request "who-has VIP tell SENDER" and
/// counts ARP replies and requests whose sender is the VIP (a gratuitous ARP
/// seen meanwhile counts too). IPv6 sends a neighbour solicitation for the
/// VIP to its solicited-node group, from SENDER with our MAC as source
/// link-layer option, and counts advertisements whose target is the VIP.
///
/// `sender` is the address the question comes from; [`sender_for`] picks
/// it. It must not be the VIP, even on the active director that holds it: a
/// question from the VIP is itself a claim (neighbours that cache the VIP
/// re-point it at the asker, as they do for a gratuitous ARP, so a standby
/// director probing that way would pull the VIP's traffic to itself), and
/// a Linux holder drops an ARP request whose sender is one of its own
/// addresses (the route check of `arp_process` sees a martian source), so
/// the answer would never come. 0.0.0.0 is accepted for IPv4 (an RFC 5227
/// ARP probe, which claims nothing and which Linux answers as any request);
/// for IPv6 the link-local address is the choice.
///
/// An empty set means nobody answered within `wait`. One question is sent:
/// a lost frame is caught by the next periodic probe. A Linux holder answers
/// within a millisecond on a quiet LAN (0.1 to 0.6 ms between namespaces,
/// 9 ms at worst over 100 answers), so a `wait` of a few hundred
/// milliseconds is ample; the call always takes the whole `wait`. Our own
/// MAC never counts, whatever frame carries it, nor do frames of other
/// interfaces. Needs `CAP_NET_RAW`; the interface must be up with an
/// Ethernet address.
pub async fn who_has(
    link: &LinkEntry,
    vip: IpAddr,
    sender: IpAddr,
    wait: Duration,
) -> Result<BTreeSet<[u8; 6]>, NetdevError> {
    Ok(answers(link, vip, sender, wait)
        .await?
        .into_iter()
        .map(|a| a.mac)
        .collect())
}

/// The address a director asks as on interface `ifindex`, from
/// [`crate::netdev::Addresses::list`]; `None` when it has none that works.
///
/// IPv4: the interface's own address whose subnet holds the VIP (the
/// source the kernel itself puts in an ARP request with `arp_announce=2`,
/// and what a holder with `arp_ignore=2` wants to see), else its first
/// non-host-route address, else 0.0.0.0. The ARP probe from 0.0.0.0 comes
/// last because RFC 5227 gives it a meaning: a host that is itself probing
/// for the VIP takes it as a conflict and gives the address up. IPv6: its
/// link-local address, which every IPv6 interface has and which is never a
/// VIP, else an address whose prefix holds the VIP. Host routes (/32, /128)
/// are skipped everywhere: they are VIPs, this one or others this director
/// holds.
pub fn sender_for(vip: IpAddr, ifindex: u32, addrs: &[AddrEntry]) -> Option<IpAddr> {
    let host_route = if vip.is_ipv4() { 32 } else { 128 };
    let mut own = addrs.iter().filter(|e| {
        e.ifindex == ifindex
            && e.addr.is_ipv4() == vip.is_ipv4()
            && e.addr != vip
            && e.prefix_len < host_route
    });
    let in_subnet = |e: &&AddrEntry| crate::core::same_subnet(e.addr, vip, e.prefix_len);
    match vip {
        IpAddr::V4(_) => own
            .clone()
            .find(in_subnet)
            .or_else(|| own.next())
            .map(|e| e.addr)
            .or(Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED))),
        IpAddr::V6(_) => own
            .clone()
            .find(|e| matches!(e.addr, IpAddr::V6(a) if a.is_unicast_link_local()))
            .or_else(|| own.find(in_subnet))
            .map(|e| e.addr),
    }
}

/// One answer to the probe: who, and how long after the question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answer {
    pub mac: [u8; 6],
    pub after: Duration,
}

/// [`who_has`] keeping every answer with its delay, first answer first.
pub(crate) async fn answers(
    link: &LinkEntry,
    vip: IpAddr,
    sender: IpAddr,
    wait: Duration,
) -> Result<Vec<Answer>, NetdevError> {
    let what = format!("probe who has {vip} on {}", link.ifname);
    let (mac, request) =
        check_probe(link, vip, sender).map_err(|reason| NetdevError::InvalidArgument {
            what: what.clone(),
            reason: reason.to_string(),
        })?;
    let fail = |e: Errno| io_error(&what, &link.ifname, e);
    let socket = open_socket(link, vip).map_err(fail)?;
    let started = Instant::now();
    send_request(&socket, link, &request).map_err(fail)?;
    collect(&socket, link.ifindex, mac, vip, started, wait)
        .await
        .map_err(fail)
}

/// Our MAC and the request frame, or why the probe can never work.
fn check_probe(
    link: &LinkEntry,
    vip: IpAddr,
    sender: IpAddr,
) -> Result<([u8; 6], Vec<u8>), &'static str> {
    let mac = link.mac.ok_or("interface has no Ethernet address")?;
    if vip.is_multicast() || vip.is_unspecified() {
        return Err("the VIP is not a unicast address");
    }
    if sender == vip {
        return Err("asking as the VIP would claim it; ask as the interface's own address");
    }
    if sender.is_multicast() || (sender.is_ipv6() && sender.is_unspecified()) {
        return Err("the sender is not a unicast address");
    }
    let request =
        who_has_request(mac, sender, vip).ok_or("sender and VIP are of different families")?;
    Ok((mac, request))
}

/// An `AF_PACKET` raw socket on `link` that receives ARP (IPv4 VIP) or IPv6
/// (IPv6 VIP) frames passing [`holder_filter`], registered with tokio.
fn open_socket(link: &LinkEntry, vip: IpAddr) -> Result<AsyncFd<Socket>, Errno> {
    let ethertype = if vip.is_ipv4() { ETH_P_ARP } else { ETH_P_IPV6 };
    // The protocol goes to socket(2) in network byte order, as with htons().
    let protocol = Protocol::from(i32::from(ethertype.to_be()));
    let socket =
        Socket::new(Domain::PACKET, Type::RAW.nonblocking(), Some(protocol)).map_err(errno)?;
    // The filter before the bind: from socket(2) to bind(2) the socket sees
    // every interface, and whatever still slips in is dropped in `answer_of`
    // by its interface index.
    let filter: Vec<SockFilter> = holder_filter(vip)
        .into_iter()
        .map(|i| SockFilter::new(i.code, i.jt, i.jf, i.k))
        .collect();
    socket.attach_filter(&filter).map_err(errno)?;
    // The sockaddr_ll from getifaddrs has protocol 0, which bind(2) reads as
    // "keep the socket's protocol".
    bind(socket.as_raw_fd(), &packet_addr(link)?)?;
    // `AsyncFd::new` is deprecated (tokio#8587) because a `T` whose raw fd it
    // does not own could close it under the reactor; its replacement is
    // `unsafe`, which this crate forbids. Here the fd is owned by the
    // `socket2::Socket` the `AsyncFd` holds until it drops it, so the
    // invariant `register` asks callers to uphold holds.
    #[allow(deprecated)]
    AsyncFd::new(socket).map_err(errno)
}

/// Sends the question through the listening socket itself, already bound and
/// filtered, so no answer can come too early to be seen.
fn send_request(socket: &AsyncFd<Socket>, link: &LinkEntry, request: &[u8]) -> Result<(), Errno> {
    let sent = sendto(
        socket.as_raw_fd(),
        request,
        &packet_addr(link)?,
        MsgFlags::empty(),
    )?;
    if sent != request.len() {
        // As in `announce::FramePort::send`: packet sockets send whole frames.
        return Err(Errno::EMSGSIZE);
    }
    Ok(())
}

/// Reads frames until `wait` after `started` has passed, keeping the first
/// answer of each MAC.
async fn collect(
    socket: &AsyncFd<Socket>,
    ifindex: u32,
    mac: [u8; 6],
    vip: IpAddr,
    started: Instant,
    wait: Duration,
) -> Result<Vec<Answer>, Errno> {
    let deadline = started + wait;
    let mut found: Vec<Answer> = Vec::new();
    let mut buf = [0u8; RECV_BUF];
    // Checked on every turn, not only through the timeout: with frames
    // arriving back to back `readable` is always ready at once.
    while Instant::now() < deadline {
        let Ok(ready) = tokio::time::timeout_at(deadline, socket.readable()).await else {
            break;
        };
        let mut guard = ready.map_err(errno)?;
        let received = guard
            .try_io(|s| recvfrom::<LinkAddr>(s.as_raw_fd(), &mut buf).map_err(io::Error::from));
        let (len, from) = match received {
            Err(_would_block) => continue,
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(e)) => return Err(errno(e)),
            Ok(Ok(got)) => got,
        };
        let Some(from) = from else { continue };
        let Some(holder) = answer_of(&buf[..len], &from, ifindex, mac, vip) else {
            continue;
        };
        if found.iter().all(|a| a.mac != holder) {
            found.push(Answer {
                mac: holder,
                after: started.elapsed(),
            });
        }
    }
    Ok(found)
}

/// The holder a received frame names, unless it is no answer to us: from
/// another interface (possible between socket(2) and bind(2)), naming our own
/// MAC (our announcements, or our kernel's answer to our own question when
/// we hold the VIP, sent back by a hairpin port or a loop), or sent by this
/// host.
///
/// A socket bound to one EtherType never sees this host's outgoing frames
/// (`dev_queue_xmit_nit` copies them only to `ETH_P_ALL` sockets), so the
/// `PACKET_OUTGOING` check only keeps this correct should the socket ever
/// listen to all protocols.
fn answer_of(
    frame: &[u8],
    from: &LinkAddr,
    ifindex: u32,
    mac: [u8; 6],
    vip: IpAddr,
) -> Option<[u8; 6]> {
    answer_of_parts(frame, from.pkttype(), from.ifindex(), ifindex, mac, vip)
}

/// [`answer_of`] over plain values, for tests.
fn answer_of_parts(
    frame: &[u8],
    pkttype: u8,
    from_ifindex: usize,
    ifindex: u32,
    mac: [u8; 6],
    vip: IpAddr,
) -> Option<[u8; 6]> {
    if pkttype == PACKET_OUTGOING || from_ifindex != ifindex as usize {
        return None;
    }
    holder(frame, vip).filter(|h| *h != mac)
}

fn errno(e: io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netdev::frames::{gratuitous_arp, unsolicited_na};

    const MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
    const PEER: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x20];
    /// `sll_pkttype` of a frame addressed to this host.
    const PACKET_HOST: u8 = 0;
    /// `sll_pkttype` of a broadcast frame.
    const PACKET_BROADCAST: u8 = 1;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn entry(ifindex: u32, addr: &str, prefix_len: u8) -> AddrEntry {
        AddrEntry {
            ifname: format!("eth{ifindex}"),
            ifindex,
            addr: ip(addr),
            prefix_len,
        }
    }

    fn link(mac: Option<[u8; 6]>) -> LinkEntry {
        LinkEntry {
            ifname: "eth0".to_string(),
            ifindex: 2,
            mac,
        }
    }

    #[test]
    fn our_own_mac_never_counts_as_a_holder() {
        let vip = ip("10.10.24.88");
        let IpAddr::V4(v4) = vip else { unreachable!() };
        let ours = gratuitous_arp(MAC, v4);
        // Even arriving as if from outside (a switch reflecting it back).
        assert_eq!(
            answer_of_parts(&ours, PACKET_BROADCAST, 2, 2, MAC, vip),
            None
        );
        let theirs = gratuitous_arp(PEER, v4);
        assert_eq!(
            answer_of_parts(&theirs, PACKET_BROADCAST, 2, 2, MAC, vip),
            Some(PEER)
        );

        let vip = ip("fd00:24::88");
        let IpAddr::V6(v6) = vip else { unreachable!() };
        assert_eq!(
            answer_of_parts(&unsolicited_na(MAC, v6), PACKET_HOST, 2, 2, MAC, vip),
            None
        );
        assert_eq!(
            answer_of_parts(&unsolicited_na(PEER, v6), PACKET_HOST, 2, 2, MAC, vip),
            Some(PEER)
        );
    }

    #[test]
    fn outgoing_frames_and_other_interfaces_are_ignored() {
        let vip = ip("10.10.24.88");
        let IpAddr::V4(v4) = vip else { unreachable!() };
        let theirs = gratuitous_arp(PEER, v4);
        assert_eq!(
            answer_of_parts(&theirs, PACKET_OUTGOING, 2, 2, MAC, vip),
            None
        );
        assert_eq!(
            answer_of_parts(&theirs, PACKET_BROADCAST, 3, 2, MAC, vip),
            None
        );
    }

    #[test]
    fn sender_is_the_interface_address_in_the_vip_subnet() {
        let addrs = [
            entry(1, "127.0.0.1", 8),
            entry(1, "10.10.24.88", 32),
            entry(2, "10.10.24.77", 32), // another VIP we hold
            entry(2, "192.168.7.10", 24),
            entry(2, "10.10.24.10", 24),
            entry(2, "10.10.24.88", 32), // the VIP itself
            entry(3, "10.10.24.30", 24),
        ];
        assert_eq!(
            sender_for(ip("10.10.24.88"), 2, &addrs),
            Some(ip("10.10.24.10"))
        );
        // No address in the VIP's subnet: the first real one.
        assert_eq!(
            sender_for(ip("10.99.0.1"), 2, &addrs),
            Some(ip("192.168.7.10"))
        );
        // Only host routes: an ARP probe from 0.0.0.0.
        assert_eq!(
            sender_for(ip("10.10.24.88"), 1, &addrs[1..2]),
            Some(ip("0.0.0.0"))
        );
        assert_eq!(
            sender_for(ip("10.10.24.88"), 9, &addrs),
            Some(ip("0.0.0.0"))
        );
    }

    #[test]
    fn ipv6_sender_is_the_link_local_address() {
        let addrs = [
            entry(2, "fd00:24::88", 128),
            entry(2, "fd00:24::10", 64),
            entry(2, "fe80::42:acff:fe11:2", 64),
            entry(2, "10.10.24.10", 24),
        ];
        let vip = ip("fd00:24::88");
        assert_eq!(sender_for(vip, 2, &addrs), Some(ip("fe80::42:acff:fe11:2")));
        assert_eq!(sender_for(vip, 2, &addrs[..2]), Some(ip("fd00:24::10")));
        assert_eq!(sender_for(vip, 2, &addrs[..1]), None);
        assert_eq!(sender_for(ip("fd99::1"), 2, &addrs[..2]), None);
    }

    #[test]
    fn a_probe_that_cannot_work_is_refused_before_any_socket() {
        let v4 = ip("10.10.24.88");
        let v6 = ip("fd00:24::88");
        let refused = |l: LinkEntry, vip, sender| check_probe(&l, vip, sender).unwrap_err();
        assert_eq!(
            refused(link(None), v4, ip("10.10.24.10")),
            "interface has no Ethernet address"
        );
        assert!(refused(link(Some(MAC)), v4, v4).starts_with("asking as the VIP would claim it"));
        assert!(refused(link(Some(MAC)), v6, v6).starts_with("asking as the VIP would claim it"));
        assert_eq!(
            refused(link(Some(MAC)), v4, ip("fe80::1")),
            "sender and VIP are of different families"
        );
        assert_eq!(
            refused(link(Some(MAC)), v6, ip("::")),
            "the sender is not a unicast address"
        );
        assert_eq!(
            refused(link(Some(MAC)), ip("ff02::1"), ip("fe80::1")),
            "the VIP is not a unicast address"
        );
        let (mac, frame) = check_probe(&link(Some(MAC)), v4, ip("0.0.0.0")).unwrap();
        assert_eq!((mac, frame.len()), (MAC, 42));
    }

    #[tokio::test]
    async fn refusal_names_the_probe_and_the_reason() {
        let err = who_has(
            &link(None),
            ip("10.10.24.88"),
            ip("10.10.24.10"),
            Duration::ZERO,
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "probe who has 10.10.24.88 on eth0: interface has no Ethernet address"
        );
    }
}
