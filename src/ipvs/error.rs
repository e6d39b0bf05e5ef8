//! Errors, and the translation of kernel errnos into messages an operator
//! can act on.
//!
//! The kernel answers every IPVS command with a bare errno; what it *means*
//! depends on the command (ENOENT on `NEW_SERVICE` is a missing scheduler
//! module, on `DEL_DEST` a missing destination). The request that got the errno
//! translates it (`message::Request::error`); every [`IpvsError`] variant names
//! the object the failed request was about. This file is a leaf of the module:
//! it knows the objects, not the messages.

use std::time::Duration;

use crate::ipvs::types::{DestKey, SyncDaemon, SyncRole, Virtual};

/// `EPERM`.
pub const EPERM: i32 = 1;
/// `ENOENT`.
pub const ENOENT: i32 = 2;
/// `ESRCH`.
pub const ESRCH: i32 = 3;
/// `EEXIST`.
pub const EEXIST: i32 = 17;
/// `ENODEV`.
pub const ENODEV: i32 = 19;
/// `EINVAL`.
pub const EINVAL: i32 = 22;

/// Hint shared by every permission failure.
const PERM_HINT: &str = "needs CAP_NET_ADMIN in the host network namespace \
     (run privileged with hostNetwork: true)";

/// What the kernel said about one request, translated for its command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// ENOENT on NEW/SET_SERVICE: `ip_vs_scheduler_get()` found no such scheduler.
    #[error("scheduler module ip_vs_{scheduler} is not available (modprobe ip_vs_{scheduler})")]
    SchedulerUnavailable {
        /// The scheduler name that was asked for.
        scheduler: String,
    },
    /// EEXIST on NEW_*: the object is already there.
    #[error("already exists (EEXIST)")]
    Exists,
    /// ESRCH: the virtual service does not exist.
    #[error("no such service (ESRCH)")]
    NoSuchService,
    /// ENOENT on *_DEST: the destination does not exist in that service.
    #[error("no such destination (ENOENT)")]
    NoSuchDest,
    /// EPERM: IPVS commands are `GENL_ADMIN_PERM`.
    #[error("operation not permitted (EPERM): {PERM_HINT}")]
    PermissionDenied,
    /// EINVAL: the kernel rejected the attribute values.
    #[error("invalid argument (EINVAL): the kernel rejected the values")]
    Invalid,
    /// EEXIST on NEW_DAEMON: a daemon of that role already runs (`start_sync_thread`).
    #[error("one already runs in this network namespace (EEXIST); stop it first")]
    DaemonRunning,
    /// ESRCH on DEL_DAEMON: no daemon of that role runs (`stop_sync_thread`).
    #[error("none runs in this network namespace (ESRCH)")]
    NoDaemon,
    /// ENODEV on NEW_DAEMON: the multicast interface does not exist in the namespace.
    #[error("no such interface in this network namespace (ENODEV)")]
    NoSuchInterface,
    /// EINVAL on NEW_DAEMON: the attribute policy or `ip_vs_genl_new_daemon` refused it.
    #[error(
        "invalid argument (EINVAL): the kernel refuses a sync daemon whose interface name is \
         longer than 15 bytes or whose group is not multicast, and any sync daemon while a \
         service has destinations of another address family"
    )]
    DaemonRejected,
    /// Any other errno.
    #[error("{}", std::io::Error::from_raw_os_error(*.0))]
    Errno(i32),
    /// The request could not be sent or its ack never came (socket failure or timeout).
    #[error("no reply from the kernel: {0}")]
    Transport(String),
}

impl KernelError {
    /// The errno behind this error, if it came from the kernel.
    pub fn errno(&self) -> Option<i32> {
        match self {
            KernelError::SchedulerUnavailable { .. } | KernelError::NoSuchDest => Some(ENOENT),
            KernelError::Exists => Some(EEXIST),
            KernelError::NoSuchService => Some(ESRCH),
            KernelError::PermissionDenied => Some(EPERM),
            KernelError::Invalid | KernelError::DaemonRejected => Some(EINVAL),
            KernelError::DaemonRunning => Some(EEXIST),
            KernelError::NoDaemon => Some(ESRCH),
            KernelError::NoSuchInterface => Some(ENODEV),
            KernelError::Errno(e) => Some(*e),
            KernelError::Transport(_) => None,
        }
    }
}

/// Everything that can go wrong talking to IPVS.
#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    /// The generic-netlink family "IPVS" is not registered.
    #[error(
        "IPVS is not available: the generic netlink family \"IPVS\" is not registered; \
         load the kernel module with `modprobe ip_vs`"
    )]
    NotLoaded,
    /// EPERM while connecting/probing.
    #[error("permission denied talking to IPVS: {PERM_HINT}")]
    PermissionDenied,
    /// Socket-level failure (socket(), send(), recv()).
    #[error("netlink socket error: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel sent bytes we could not parse.
    #[error("malformed netlink message: {0}")]
    Malformed(String),
    /// The kernel did not answer in time: the call was abandoned so that the agent's other work
    /// (Lease renewals, health probes, /healthz) goes on, and it is retried at the next resync.
    #[error("IPVS did not answer within {0:?}; will retry")]
    Timeout(Duration),
    /// `GET_INFO` failed.
    #[error("get IPVS info: {source}")]
    Info {
        /// Translated errno.
        source: KernelError,
    },
    /// Resolving the family failed with something other than ENOENT.
    #[error("resolve generic netlink family IPVS: {source}")]
    Resolve {
        /// Translated errno.
        source: KernelError,
    },
    /// `GET_SERVICE` dump failed.
    #[error("list services: {source}")]
    ListServices {
        /// Translated errno.
        source: KernelError,
    },
    /// `GET_DEST` dump failed.
    #[error("list destinations of {service}: {source}")]
    ListDests {
        service: Virtual,
        /// Translated errno.
        source: KernelError,
    },
    /// `NEW_SERVICE` failed.
    #[error("add service {service}: {source}")]
    NewService {
        service: Virtual,
        /// Translated errno.
        source: KernelError,
    },
    /// `SET_SERVICE` failed.
    #[error("edit service {service}: {source}")]
    SetService {
        service: Virtual,
        /// Translated errno.
        source: KernelError,
    },
    /// `DEL_SERVICE` failed.
    #[error("delete service {service}: {source}")]
    DelService {
        service: Virtual,
        /// Translated errno.
        source: KernelError,
    },
    /// `NEW_DEST` failed.
    #[error("add destination {dest} to {service}: {source}")]
    NewDest {
        service: Virtual,
        dest: DestKey,
        /// Translated errno.
        source: KernelError,
    },
    /// `SET_DEST` failed.
    #[error("edit destination {dest} of {service}: {source}")]
    SetDest {
        service: Virtual,
        dest: DestKey,
        /// Translated errno.
        source: KernelError,
    },
    /// `DEL_DEST` failed.
    #[error("delete destination {dest} from {service}: {source}")]
    DelDest {
        service: Virtual,
        dest: DestKey,
        /// Translated errno.
        source: KernelError,
    },
    /// `NEW_DAEMON` failed.
    #[error(
        "start {} sync daemon on {} (syncid {}): {source}",
        daemon.role,
        daemon.interface,
        daemon.sync_id
    )]
    StartDaemon {
        daemon: SyncDaemon,
        /// Translated errno.
        source: KernelError,
    },
    /// `DEL_DAEMON` failed.
    #[error("stop {role} sync daemon: {source}")]
    StopDaemon {
        role: SyncRole,
        /// Translated errno.
        source: KernelError,
    },
    /// `GET_DAEMON` dump failed.
    #[error("list sync daemons: {source}")]
    ListDaemons {
        /// Translated errno.
        source: KernelError,
    },
}

impl IpvsError {
    pub(crate) fn malformed(msg: impl Into<String>) -> Self {
        IpvsError::Malformed(msg.into())
    }

    /// The translated kernel error inside a per-object variant, if any; lets
    /// callers match e.g. `Some(KernelError::Exists)` to treat NEW as SET.
    pub fn kernel(&self) -> Option<&KernelError> {
        match self {
            IpvsError::Info { source }
            | IpvsError::Resolve { source }
            | IpvsError::ListServices { source }
            | IpvsError::ListDests { source, .. }
            | IpvsError::NewService { source, .. }
            | IpvsError::SetService { source, .. }
            | IpvsError::DelService { source, .. }
            | IpvsError::NewDest { source, .. }
            | IpvsError::SetDest { source, .. }
            | IpvsError::DelDest { source, .. }
            | IpvsError::StartDaemon { source, .. }
            | IpvsError::StopDaemon { source, .. }
            | IpvsError::ListDaemons { source } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_service_and_destination_as_ipvsadm_lists_them() {
        let e = IpvsError::DelDest {
            service: crate::ipvs::ServiceKey {
                vip: "10.10.24.88".parse().unwrap(),
                protocol: crate::ipvs::Protocol::Tcp,
                port: 80,
            }
            .into(),
            dest: DestKey {
                addr: "10.10.24.21".parse().unwrap(),
                port: 80,
            },
            source: KernelError::NoSuchDest,
        };
        assert_eq!(
            e.to_string(),
            "delete destination 10.10.24.21:80 from TCP 10.10.24.88:80: no such destination (ENOENT)"
        );
    }

    #[test]
    fn missing_family_tells_the_user_to_load_ip_vs() {
        assert!(IpvsError::NotLoaded.to_string().contains("modprobe ip_vs"));
        assert!(
            KernelError::PermissionDenied
                .to_string()
                .contains("host network namespace")
        );
    }
}
