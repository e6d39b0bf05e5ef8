//! Sends VIP announcements (gratuitous ARP / unsolicited NA) on an interface.
//!
//! The frame comes from [`crate::netdev::frames`] with the MAC from the
//! rtnetlink link dump; it leaves through an `AF_PACKET`/`SOCK_RAW` socket,
//! the way `arping -U` and `ndsend` send theirs. Everything here is safe
//! code: the `sockaddr_ll` naming the interface comes from `getifaddrs(3)`
//! (glibc returns one `AF_PACKET` entry per link), so no raw socket address
//! has to be built by hand.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, LinkAddr, MsgFlags, SockFlag, SockType, sendto, socket};
use tokio::task::AbortHandle;
use tracing::warn;

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
///
/// The first announcement has left when this returns; the repeats go out from
/// a task of their own, so a director that takes many VIPs at once adds and
/// announces each of them at once instead of waiting out every burst in turn
/// (3 x 100 ms per VIP held the tenth VIP of a takeover back by 1.8 s). A
/// failed repeat is logged, not returned. Dropping the [`Repeats`] stops them:
/// a VIP let go must not be announced again.
pub async fn announce(
    addrs: &Addresses,
    ifname: &str,
    vip: IpAddr,
    count: u32,
    interval: Duration,
) -> Result<Repeats, NetdevError> {
    let link = addrs.link(ifname).await?;
    let what = format!("announce {vip} on {ifname}");
    let mac = link.mac.ok_or_else(|| NetdevError::InvalidArgument {
        what: what.clone(),
        reason: "interface has no Ethernet address".to_string(),
    })?;
    let frame = frames::announcement(mac, vip);
    // Opened here: a socket stays in the network namespace of the thread that opened it,
    // whichever thread sends on it later (the namespace is a per-thread property).
    let port = FramePort::open(&link).map_err(|e| io_error(&what, ifname, e))?;
    port.send(&frame).map_err(|e| io_error(&what, ifname, e))?;
    if count <= 1 {
        return Ok(Repeats(None));
    }
    let task = tokio::spawn(async move {
        for _ in 1..count {
            tokio::time::sleep(interval).await;
            if let Err(e) = port.send(&frame) {
                warn!("{what}: repeat failed: {e}");
                return;
            }
        }
    });
    Ok(Repeats(Some(task.abort_handle())))
}

/// The repeats of an announcement that are still to go out (see [`announce`]); dropping this
/// stops them.
#[must_use = "dropping Repeats stops the repeated announcements"]
#[derive(Debug)]
pub struct Repeats(Option<AbortHandle>);

impl Drop for Repeats {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// A packet socket and the `sockaddr_ll` of the link its frames leave by: each send is
/// `sendto(socket(AF_PACKET, SOCK_RAW, 0), frame, sockaddr_ll{ifindex})`.
///
/// Protocol 0 means the socket receives nothing, so no queue builds up;
/// the kernel takes the EtherType from the frame's own header. Sends are
/// non-blocking: one send on a packet socket never waits.
struct FramePort {
    fd: OwnedFd,
    dest: LinkAddr,
}

impl FramePort {
    fn open(link: &LinkEntry) -> Result<Self, Errno> {
        let dest = packet_addr(link)?;
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        Ok(Self { fd, dest })
    }

    fn send(&self, frame: &[u8]) -> Result<(), Errno> {
        let sent = sendto(self.fd.as_raw_fd(), frame, &self.dest, MsgFlags::empty())?;
        if sent != frame.len() {
            // Packet sockets send whole frames or fail; a short count would be
            // a kernel contract break, reported rather than ignored.
            return Err(Errno::EMSGSIZE);
        }
        Ok(())
    }
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
