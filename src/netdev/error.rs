//! The one error type of the netdev module.
//!
//! Every variant carries enough context (interface, address, path) to be
//! logged as-is by the reconciler, and the common kernel refusals are turned
//! into plain advice ("needs CAP_NET_ADMIN", "interface X not found") so an
//! operator reading the event does not have to decode errno values.

use std::io;

/// Errors from address, sysctl and announcement operations.
#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    /// Opening the rtnetlink socket failed.
    #[error("opening rtnetlink socket: {0}")]
    Connect(#[source] io::Error),

    /// The kernel refused with EPERM/EACCES: the process lacks a capability
    /// (`CAP_NET_ADMIN` for addresses, `CAP_NET_RAW` for packet sockets).
    #[error("{what}: needs {capability}")]
    PermissionDenied {
        /// The operation, e.g. `add 10.10.24.88/32 on eth0`.
        what: String,
        /// The capability the operation needs, e.g. `CAP_NET_ADMIN`.
        capability: &'static str,
    },

    /// No link of that name exists (in this network namespace).
    #[error("interface {ifname} not found")]
    InterfaceNotFound {
        /// The interface name as given by the caller.
        ifname: String,
    },

    /// Any other rtnetlink failure.
    #[error("{what}: {source}")]
    Netlink {
        /// The operation, e.g. `add 10.10.24.88/32 on eth0`.
        what: String,
        /// The rtnetlink error.
        #[source]
        source: rtnetlink::Error,
    },

    /// A file or socket operation failed; `what` names the path or socket.
    #[error("{what}: {source}")]
    Io {
        /// The path (sysctl) or operation (packet socket) that failed.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The caller passed something that can never work.
    #[error("{what}: {reason}")]
    InvalidArgument {
        /// The operation or value that was rejected.
        what: String,
        /// Why it was rejected.
        reason: String,
    },
}
