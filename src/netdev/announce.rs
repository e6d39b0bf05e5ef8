//! Sends VIP announcements (gratuitous ARP / unsolicited NA) on an interface.
//!
//! The frame comes from [`crate::netdev::frames`] with the MAC from the
//! rtnetlink link dump; it leaves through an `AF_PACKET`/`SOCK_RAW` socket,
//! the way `arping -U` and `ndsend` send theirs. Everything here is safe
//! code: the `sockaddr_ll` naming the interface comes from `getifaddrs(3)`
//! (glibc returns one `AF_PACKET` entry per link), so no raw socket address
//! has to be built by hand.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, LinkAddr, MsgFlags, SockFlag, SockType, sendto, socket};

use crate::netdev::addr::{Addresses, LinkEntry};
use crate::netdev::error::NetdevError;
use crate::netdev::frames;

/// Announces `vip` on `ifname` `count` times, `interval` apart, like
/// `arping -U -c COUNT -I IFNAME VIP` (IPv4) or `ndsend VIP IFNAME` (IPv6).
///
/// Call it right after [`Addresses::add`] on a director. More than one
/// announcement covers a switch port that was still coming up; keepalived
/// sends five by default. The interface must be up (the kernel refuses
/// sends on a down link with ENETDOWN) and have an Ethernet address.
pub async fn announce(
    addrs: &Addresses,
    ifname: &str,
    vip: IpAddr,
    count: u32,
    interval: Duration,
) -> Result<(), NetdevError> {
    let link = addrs.link(ifname).await?;
    let what = format!("announce {vip} on {ifname}");
    let mac = link.mac.ok_or_else(|| NetdevError::InvalidArgument {
        what: what.clone(),
        reason: "interface has no Ethernet address".to_string(),
    })?;
    let frame = frames::announcement(mac, vip);
    for i in 0..count {
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        // Sent inline, not via spawn_blocking: one non-blocking send on a
        // packet socket never waits, and the network namespace is a
        // per-thread property, so a blocking-pool thread might send in
        // another namespace than the one `addrs` talks to.
        send_frame(&link, &frame).map_err(|e| io_error(&what, ifname, e))?;
    }
    Ok(())
}

/// Sends one complete Ethernet frame out of `link`, like
/// `socket(AF_PACKET, SOCK_RAW, 0)` + `sendto(..., sockaddr_ll{ifindex})`.
///
/// Protocol 0 means the socket receives nothing, so no queue builds up;
/// the kernel takes the EtherType from the frame's own header.
pub fn send_frame(link: &LinkEntry, frame: &[u8]) -> Result<(), Errno> {
    let dest = packet_addr(link)?;
    let fd = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    let sent = sendto(fd.as_raw_fd(), frame, &dest, MsgFlags::empty())?;
    if sent != frame.len() {
        // Packet sockets send whole frames or fail; a short count would be
        // a kernel contract break, reported rather than ignored.
        return Err(Errno::EMSGSIZE);
    }
    Ok(())
}

/// The `sockaddr_ll` of `link` from `getifaddrs(3)`, checked against the
/// index from the link dump so a rename in between cannot redirect the frame.
pub(crate) fn packet_addr(link: &LinkEntry) -> Result<LinkAddr, Errno> {
    nix::ifaddrs::getifaddrs()?
        .filter(|ifa| ifa.interface_name == link.ifname)
        .filter_map(|ifa| ifa.address.and_then(|a| a.as_link_addr().copied()))
        .find(|la| la.ifindex() == link.ifindex as usize)
        .ok_or(Errno::ENODEV)
}

pub(crate) fn io_error(what: &str, ifname: &str, errno: Errno) -> NetdevError {
    match errno {
        // From `packet_addr`: the link vanished after the dump.
        Errno::ENODEV => NetdevError::InterfaceNotFound {
            ifname: ifname.to_string(),
        },
        Errno::EPERM | Errno::EACCES => NetdevError::PermissionDenied {
            what: what.to_string(),
            capability: "CAP_NET_RAW",
        },
        _ => NetdevError::Io {
            what: what.to_string(),
            source: errno.into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_explains_missing_capability() {
        let what = "announce 10.0.0.1 on eth0";
        let err = io_error(what, "eth0", Errno::EPERM);
        assert_eq!(
            err.to_string(),
            "announce 10.0.0.1 on eth0: needs CAP_NET_RAW"
        );
        let err = io_error(what, "eth0", Errno::ENODEV);
        assert_eq!(err.to_string(), "interface eth0 not found");
        let err = io_error(what, "eth0", Errno::ENETDOWN);
        assert!(
            err.to_string().starts_with("announce 10.0.0.1 on eth0: "),
            "{err}"
        );
    }
}
