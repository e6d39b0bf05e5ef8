//! Address, sysctl and neighbour-announcement side of the LVS-DR data plane.
//!
//! A director holds each VIP as a host route (`/32`, `/128`) on its LAN
//! interface and announces it with a gratuitous ARP / unsolicited neighbour
//! advertisement; a real server holds the VIP on `lo` and silences ARP for it
//! through `arp_ignore`/`arp_announce`. This module provides those three
//! pieces: [`Addresses`] (rtnetlink, like `ip addr`), [`Sysctls`] (like
//! `sysctl -w net.ipv4.conf.*`) and [`announce`] (like `arping -U` /
//! `ndisend`), with the wire formats kept in the pure [`frames`] module.
//! A fourth, [`who_has`] (like `arping`/`ndisc6` listening for every
//! answer), lets a director find a second holder of its VIP; its frames and
//! parsers are the pure [`probe_frames`].

pub mod addr;
pub mod announce;
pub mod error;
pub mod frames;
pub mod probe;
pub mod probe_frames;
pub mod sysctl;

#[cfg(test)]
mod kernel_tests;
#[cfg(test)]
mod probe_kernel_tests;

pub use crate::netdev::addr::{AddrEntry, Addresses, LinkEntry};
pub use crate::netdev::announce::{Repeats, announce};
pub use crate::netdev::error::NetdevError;
pub use crate::netdev::probe::{sender_for, who_has};
pub use crate::netdev::sysctl::Sysctls;

/// The MAC address of `ifname`, as `ip link` prints it, from sysfs (of the network namespace the
/// process was started in, as `ip netns exec` and a hostNetwork pod arrange).
pub fn interface_mac(ifname: &str) -> Option<String> {
    if ifname.is_empty() || ifname.contains('/') || ifname.starts_with('.') {
        return None;
    }
    let text = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address")).ok()?;
    Some(text.trim().to_string())
}
