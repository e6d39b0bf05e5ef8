//! Interface addresses over rtnetlink: the `ip addr` part of the data plane.
//!
//! [`Addresses`] lists, adds and deletes addresses the way `ip -o addr show`,
//! `ip addr add` and `ip addr del` do, with the idempotence a reconciler
//! needs (adding a present address or deleting an absent one is success).
//! Which interface a VIP belongs on is the pure core's decision
//! (`core::interface_for`), made from [`Addresses::list`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{AddressMessageBuilder, Handle};
use tokio::task::JoinHandle;

use crate::netdev::error::NetdevError;

/// One address as the kernel holds it, like a line of `ip -o addr show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrEntry {
    /// Interface name, e.g. `eth0`.
    pub ifname: String,
    /// Interface index.
    pub ifindex: u32,
    /// The local address (IFA_LOCAL, or IFA_ADDRESS where there is no local).
    pub addr: IpAddr,
    /// Prefix length, e.g. 24 for `10.10.24.10/24`.
    pub prefix_len: u8,
}

/// One link as the kernel holds it, like a line of `ip -o link show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEntry {
    /// Interface name, e.g. `eth0`.
    pub ifname: String,
    /// Interface index.
    pub ifindex: u32,
    /// The Ethernet address, when the link has a non-zero 6-byte one
    /// (`lo`, tunnels and the like have none).
    pub mac: Option<[u8; 6]>,
}

/// A handle on the kernel's address table over one rtnetlink socket.
///
/// The socket belongs to the network namespace of the thread that called
/// [`Addresses::connect`], which is what lets tests run it inside a throwaway
/// namespace.
pub struct Addresses {
    handle: Handle,
    connection: JoinHandle<()>,
}

impl Drop for Addresses {
    fn drop(&mut self) {
        // The connection task only ends once every handle clone is gone; stop
        // it explicitly so dropping `Addresses` always releases the socket.
        self.connection.abort();
    }
}

impl Addresses {
    /// Opens the rtnetlink socket and spawns its driver on the current tokio
    /// runtime (so it must be called from within one).
    pub fn connect() -> Result<Self, NetdevError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetdevError::Connect)?;
        let connection = tokio::spawn(connection);
        Ok(Self { handle, connection })
    }

    /// All links, like `ip -o link show` (one RTM_GETLINK dump).
    pub async fn links(&self) -> Result<Vec<LinkEntry>, NetdevError> {
        let mut stream = self.handle.link().get().execute();
        let mut links = Vec::new();
        loop {
            match stream.try_next().await {
                Ok(Some(msg)) => links.extend(link_entry(&msg)),
                Ok(None) => return Ok(links),
                Err(e) => return Err(explain("dump links".into(), e)),
            }
        }
    }

    /// One link by name, like `ip -o link show dev IFNAME`.
    pub async fn link(&self, ifname: &str) -> Result<LinkEntry, NetdevError> {
        // A dump filtered here rather than RTM_GETLINK by name: the kernel's
        // "no such device" for a by-name get would come back as a bare
        // ENODEV, and a dump is cheap at the interface counts of a node.
        self.links()
            .await?
            .into_iter()
            .find(|l| l.ifname == ifname)
            .ok_or_else(|| NetdevError::InterfaceNotFound {
                ifname: ifname.to_string(),
            })
    }

    /// All addresses of all interfaces, like `ip -o addr show`: one dump of
    /// links (for the names) and one dump of addresses.
    pub async fn list(&self) -> Result<Vec<AddrEntry>, NetdevError> {
        let names: HashMap<u32, String> = self
            .links()
            .await?
            .into_iter()
            .map(|l| (l.ifindex, l.ifname))
            .collect();
        let mut stream = self.handle.address().get().execute();
        let mut entries = Vec::new();
        loop {
            match stream.try_next().await {
                Ok(Some(msg)) => {
                    // A link created between the two dumps has no name here;
                    // skipping it is the same as having dumped a moment earlier.
                    let Some(ifname) = names.get(&msg.header.index) else {
                        continue;
                    };
                    if let Some(addr) = message_addr(&msg) {
                        entries.push(AddrEntry {
                            ifname: ifname.clone(),
                            ifindex: msg.header.index,
                            addr,
                            prefix_len: msg.header.prefix_len,
                        });
                    }
                }
                Ok(None) => return Ok(entries),
                Err(e) => return Err(explain("dump addresses".into(), e)),
            }
        }
    }

    /// Adds `addr/prefix_len` to `ifname`; already present is success.
    ///
    /// IPv4 matches `ip addr add A/P dev IF` and, for /32, the LVS-DR
    /// `ip addr add A/32 broadcast A dev IF`. IPv6 matches
    /// `ip addr add A/P dev IF nodad`, so the VIP is usable at once instead
    /// of sitting tentative for the DAD second.
    pub async fn add(&self, ifname: &str, addr: IpAddr, prefix_len: u8) -> Result<(), NetdevError> {
        let what = format!("add {addr}/{prefix_len} on {ifname}");
        check_addr(&what, addr, prefix_len)?;
        let link = self.link(ifname).await?;
        let mut req = self.handle.address().add(link.ifindex, addr, prefix_len);
        let msg = req.message_mut();
        // Scope global, as `ip addr add` uses for any non-127/8 address.
        msg.header.scope = AddressScope::Universe;
        match addr {
            IpAddr::V4(v4) if prefix_len == 32 => {
                // rtnetlink only sets a broadcast below /31; the LVS-DR recipe
                // sets it to the VIP itself on a /32.
                msg.attributes.push(AddressAttribute::Broadcast(v4));
            }
            IpAddr::V4(_) => {}
            IpAddr::V6(_) => {
                // The header byte and IFA_FLAGS both, as iproute2 sends them;
                // the kernel prefers IFA_FLAGS when present.
                msg.header.flags |= AddressHeaderFlags::Nodad;
                msg.attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) => map_error(what, e, Errno::EEXIST),
        }
    }

    /// Deletes `addr/prefix_len` from `ifname`, like `ip addr del A/P dev IF`;
    /// already absent is success. A missing interface is still an error
    /// ([`NetdevError::InterfaceNotFound`]) so a typo does not pass silently.
    pub async fn del(&self, ifname: &str, addr: IpAddr, prefix_len: u8) -> Result<(), NetdevError> {
        let what = format!("delete {addr}/{prefix_len} on {ifname}");
        check_addr(&what, addr, prefix_len)?;
        let link = self.link(ifname).await?;
        let message = match addr {
            IpAddr::V4(v4) => AddressMessageBuilder::<Ipv4Addr>::new()
                .index(link.ifindex)
                .address(v4, prefix_len)
                .build(),
            IpAddr::V6(v6) => AddressMessageBuilder::<Ipv6Addr>::new()
                .index(link.ifindex)
                .address(v6, prefix_len)
                .build(),
        };
        match self.handle.address().del(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) => map_error(what, e, Errno::EADDRNOTAVAIL),
        }
    }
}

/// Rejects what the kernel would reject less legibly.
fn check_addr(what: &str, addr: IpAddr, prefix_len: u8) -> Result<(), NetdevError> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let reason = if prefix_len > max {
        format!("prefix length must be at most {max}")
    } else if addr.is_multicast() || addr.is_unspecified() {
        "not a unicast address".to_string()
    } else {
        return Ok(());
    };
    Err(NetdevError::InvalidArgument {
        what: what.to_string(),
        reason,
    })
}

/// Name, index and MAC of one link message; `None` for a nameless link.
fn link_entry(msg: &LinkMessage) -> Option<LinkEntry> {
    let mut ifname = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => ifname = Some(name.clone()),
            LinkAttribute::Address(bytes) => {
                mac = <[u8; 6]>::try_from(bytes.as_slice())
                    .ok()
                    .filter(|m| m != &[0; 6]);
            }
            _ => {}
        }
    }
    Some(LinkEntry {
        ifname: ifname?,
        ifindex: msg.header.index,
        mac,
    })
}

/// The interface's own address of one address message.
fn message_addr(msg: &AddressMessage) -> Option<IpAddr> {
    // IFA_LOCAL is the local address on IPv4 and on point-to-point links,
    // where IFA_ADDRESS is the peer; IPv6 on a LAN sends only IFA_ADDRESS.
    // iproute2 prints the same preference.
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(a) => return Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            _ => {}
        }
    }
    address
}

/// The errno of a kernel refusal, positive (`EPERM` = 1).
fn errno_of(err: &rtnetlink::Error) -> Option<Errno> {
    match err {
        rtnetlink::Error::NetlinkError(msg) if msg.raw_code() != 0 => {
            Some(Errno::from_raw(msg.raw_code().abs()))
        }
        _ => None,
    }
}

/// Turns an rtnetlink error into `Ok` (the tolerated errno, meaning "already
/// done") or the [`NetdevError`] from [`explain`].
fn map_error(what: String, err: rtnetlink::Error, tolerate: Errno) -> Result<(), NetdevError> {
    if errno_of(&err) == Some(tolerate) {
        return Ok(());
    }
    Err(explain(what, err))
}

/// Turns an rtnetlink error into a [`NetdevError`] that says what to do.
fn explain(what: String, err: rtnetlink::Error) -> NetdevError {
    match errno_of(&err) {
        Some(Errno::EPERM | Errno::EACCES) => NetdevError::PermissionDenied {
            what,
            capability: "CAP_NET_ADMIN",
        },
        Some(Errno::ENODEV) => NetdevError::InterfaceNotFound {
            // `what` ends in "on IFNAME" for per-interface operations.
            ifname: what.rsplit(" on ").next().unwrap_or(&what).to_string(),
        },
        _ => NetdevError::Netlink { what, source: err },
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroI32;

    use rtnetlink::packet_core::ErrorMessage;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn check_addr_rejects_bad_prefix_and_non_unicast() {
        assert!(check_addr("x", ip("10.0.0.1"), 32).is_ok());
        assert!(check_addr("x", ip("fd00::1"), 128).is_ok());
        let err = check_addr("add 10.0.0.1/33 on eth0", ip("10.0.0.1"), 33).unwrap_err();
        assert_eq!(
            err.to_string(),
            "add 10.0.0.1/33 on eth0: prefix length must be at most 32"
        );
        assert!(check_addr("x", ip("ff02::1"), 128).is_err());
        assert!(check_addr("x", ip("0.0.0.0"), 32).is_err());
    }

    fn nl_error(errno: Errno) -> rtnetlink::Error {
        let mut msg = ErrorMessage::default();
        msg.code = NonZeroI32::new(-(errno as i32));
        rtnetlink::Error::NetlinkError(msg)
    }

    #[test]
    fn map_error_tolerates_only_the_given_errno() {
        let what = || "add 10.0.0.1/32 on eth0".to_string();
        let eexist = Errno::EEXIST;
        assert!(map_error(what(), nl_error(Errno::EEXIST), eexist).is_ok());
        let err = map_error(what(), nl_error(Errno::EINVAL), eexist).unwrap_err();
        assert!(matches!(err, NetdevError::Netlink { .. }), "{err:?}");
        assert!(
            err.to_string().starts_with("add 10.0.0.1/32 on eth0: "),
            "{err}"
        );
        assert!(map_error(what(), nl_error(Errno::EEXIST), Errno::EADDRNOTAVAIL).is_err());
    }

    #[test]
    fn map_error_explains_eperm_and_enodev() {
        let what = || "delete 10.0.0.1/32 on eth7".to_string();
        let tol = Errno::EADDRNOTAVAIL;
        assert!(map_error(what(), nl_error(Errno::EADDRNOTAVAIL), tol).is_ok());
        let err = map_error(what(), nl_error(Errno::EPERM), tol).unwrap_err();
        assert_eq!(
            err.to_string(),
            "delete 10.0.0.1/32 on eth7: needs CAP_NET_ADMIN"
        );
        let err = map_error(what(), nl_error(Errno::ENODEV), tol).unwrap_err();
        assert_eq!(err.to_string(), "interface eth7 not found");
    }
}
