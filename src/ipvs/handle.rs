//! `IpvsHandle`: the live connection to the kernel's IPVS generic-netlink
//! family, built on neli's raw [`NlSocket`].
//!
//! We use neli only for the socket (socket/bind/send/recv, no `unsafe` here)
//! and our own [`crate::ipvs::message`] codec for the bytes. That is what
//! makes batching possible: [`IpvsHandle::apply`] concatenates many requests,
//! each with `NLM_F_REQUEST | NLM_F_ACK` and its own sequence number, into one
//! `sendmsg`, and the kernel (`netlink_rcv_skb`) processes every one of them
//! and acks each, so results are matched back by sequence number.

use std::collections::HashMap;

use neli::consts::socket::{Msg, NlFamily};
use neli::socket::NlSocket;
use neli::utils::Groups;

use crate::ipvs::error::{ENOENT, EPERM, IpvsError, KernelError};
use crate::ipvs::message::{
    Cmd, IPVS_GENL_NAME, Reply, Request, emit_resolve_family, parse_family_reply,
};
use crate::ipvs::types::{Destination, Info, ObservedDest, ObservedService, Service};
use crate::ipvs::wire::{
    self, GENL_ID_CTRL, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, RawMsg,
};

/// Receive buffer size. Dump replies are built in skbs of at most 32 KiB
/// (`netlink_dump`); twice that leaves headroom, and truncation is detected.
const RECV_BUF: usize = 64 * 1024;

/// Requests per `sendmsg` in [`IpvsHandle::apply`]. Every request produces an
/// ack skb queued on our socket before `send` returns; keeping the batch
/// bounded keeps those acks within the default `SO_RCVBUF` (≈208 KiB), beyond
/// which the kernel would drop them (ENOBUFS) and we could not attribute
/// results.
const BATCH: usize = 64;

/// One mutation, as accepted by [`IpvsHandle::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `IPVS_CMD_NEW_SERVICE` (`ipvsadm -A`).
    NewService(Service),
    /// `IPVS_CMD_SET_SERVICE` (`ipvsadm -E`).
    SetService(Service),
    /// `IPVS_CMD_DEL_SERVICE` (`ipvsadm -D`).
    DelService(Service),
    /// `IPVS_CMD_NEW_DEST` (`ipvsadm -a`).
    NewDest(Service, Destination),
    /// `IPVS_CMD_SET_DEST` (`ipvsadm -e`).
    SetDest(Service, Destination),
    /// `IPVS_CMD_DEL_DEST` (`ipvsadm -d`).
    DelDest(Service, Destination),
}

impl Op {
    /// The wire request for this operation.
    pub fn request(&self) -> Request {
        match self {
            Op::NewService(s) => Request::NewService(s.clone()),
            Op::SetService(s) => Request::SetService(s.clone()),
            Op::DelService(s) => Request::DelService(s.key()),
            Op::NewDest(s, d) => Request::NewDest(s.key(), d.clone()),
            Op::SetDest(s, d) => Request::SetDest(s.key(), d.clone()),
            Op::DelDest(s, d) => Request::DelDest(s.key(), d.key()),
        }
    }

    /// Translates an errno for this operation into an error naming its objects.
    pub fn error_from_errno(&self, errno: i32) -> IpvsError {
        let sched = match self {
            Op::NewService(s) | Op::SetService(s) => Some(s.scheduler.as_str()),
            _ => None,
        };
        self.error(KernelError::from_errno(self.request().cmd(), errno, sched))
    }

    fn error(&self, source: KernelError) -> IpvsError {
        match self {
            Op::NewService(s) => IpvsError::NewService {
                service: s.to_string(),
                source,
            },
            Op::SetService(s) => IpvsError::SetService {
                service: s.to_string(),
                source,
            },
            Op::DelService(s) => IpvsError::DelService {
                service: s.to_string(),
                source,
            },
            Op::NewDest(s, d) => IpvsError::NewDest {
                service: s.to_string(),
                dest: d.to_string(),
                source,
            },
            Op::SetDest(s, d) => IpvsError::SetDest {
                service: s.to_string(),
                dest: d.to_string(),
                source,
            },
            Op::DelDest(s, d) => IpvsError::DelDest {
                service: s.to_string(),
                dest: d.to_string(),
                source,
            },
        }
    }
}

/// Returns `(op index, errno)` (0 = success) for every ack in `datagram`
/// whose sequence number is pending, removing it from `pending`.
///
/// Acks are matched by sequence number, not by position: that is what makes
/// the attribution robust to leftovers of an abandoned exchange on the socket.
pub fn match_acks(
    datagram: &[u8],
    pending: &mut HashMap<u32, usize>,
) -> Result<Vec<(usize, i32)>, IpvsError> {
    let mut out = Vec::new();
    for m in wire::split_messages(datagram)? {
        if m.ty == NLMSG_ERROR
            && let Some(i) = pending.remove(&m.seq)
        {
            out.push((i, wire::error_code(m.payload)?));
        }
    }
    Ok(out)
}

/// Why a request/reply exchange failed: an errno from the kernel (which the
/// caller turns into an error naming the object) or anything else.
enum Failure {
    Errno(i32),
    Other(IpvsError),
}

impl From<IpvsError> for Failure {
    fn from(e: IpvsError) -> Self {
        Failure::Other(e)
    }
}

/// A generic-netlink socket bound to the IPVS family.
pub struct IpvsHandle {
    sock: NlSocket,
    family: u16,
    next_seq: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for IpvsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpvsHandle")
            .field("family", &self.family)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl IpvsHandle {
    /// Opens a `NETLINK_GENERIC` socket, resolves the "IPVS" family and
    /// probes it with `GET_INFO`, so that a missing module
    /// ([`IpvsError::NotLoaded`]) or missing privileges
    /// ([`IpvsError::PermissionDenied`]) show up here, not mid-reconcile.
    pub fn connect() -> Result<Self, IpvsError> {
        let mut h = Self::open()?;
        h.family = h.resolve_family()?;
        match h.info() {
            Ok(_) => Ok(h),
            Err(IpvsError::Info {
                source: KernelError::PermissionDenied,
            }) => Err(IpvsError::PermissionDenied),
            Err(e) => Err(e),
        }
    }

    /// The bare socket, family not yet resolved.
    fn open() -> Result<Self, IpvsError> {
        let sock = NlSocket::connect(NlFamily::Generic, None, Groups::empty())?;
        Ok(IpvsHandle {
            sock,
            family: 0,
            next_seq: 1,
            buf: vec![0; RECV_BUF],
        })
    }

    /// The dynamic generic-netlink id the kernel gave the IPVS family.
    pub fn family_id(&self) -> u16 {
        self.family
    }

    /// `IPVS_CMD_GET_INFO` — the `IP Virtual Server version …` line of `ipvsadm -L`.
    pub fn info(&mut self) -> Result<Info, IpvsError> {
        let to_err = |f| match f {
            Failure::Errno(e) => IpvsError::Info {
                source: KernelError::from_errno(Cmd::GetInfo, e, None),
            },
            Failure::Other(e) => e,
        };
        let replies = self.exchange_ipvs(&Request::GetInfo, 0).map_err(to_err)?;
        match replies.into_iter().next() {
            Some(Reply::Info(i)) => Ok(i),
            _ => Err(IpvsError::malformed("GET_INFO without an info reply")),
        }
    }

    /// `IPVS_CMD_GET_SERVICE` dump — the services of `ipvsadm -Sn`. Fwmark
    /// and unknown-protocol services come back as foreign entries.
    pub fn services(&mut self) -> Result<Vec<ObservedService>, IpvsError> {
        let replies = self
            .exchange_ipvs(&Request::GetServices, 0)
            .map_err(|f| match f {
                Failure::Errno(e) => IpvsError::ListServices {
                    source: KernelError::from_errno(Cmd::GetService, e, None),
                },
                Failure::Other(e) => e,
            })?;
        replies
            .into_iter()
            .map(|r| match r {
                Reply::Service(s) => Ok(s),
                other => Err(IpvsError::malformed(format!(
                    "unexpected {other:?} in service dump"
                ))),
            })
            .collect()
    }

    /// `IPVS_CMD_GET_DEST` dump for one service — `ipvsadm -Ln -t VIP:PORT`.
    /// A service that does not exist yields an empty list (the kernel just
    /// ends the dump), not an error.
    pub fn dests(&mut self, service: &Service) -> Result<Vec<ObservedDest>, IpvsError> {
        let replies = self
            .exchange_ipvs(&Request::GetDests(service.key()), service.family())
            .map_err(|f| match f {
                Failure::Errno(e) => IpvsError::ListDests {
                    service: service.to_string(),
                    source: KernelError::from_errno(Cmd::GetDest, e, None),
                },
                Failure::Other(e) => e,
            })?;
        replies
            .into_iter()
            .map(|r| match r {
                Reply::Dest(d) => Ok(d),
                other => Err(IpvsError::malformed(format!(
                    "unexpected {other:?} in dest dump"
                ))),
            })
            .collect()
    }

    /// `IPVS_CMD_NEW_SERVICE` — `ipvsadm -A -t VIP:80 -s rr`.
    pub fn new_service(&mut self, service: &Service) -> Result<(), IpvsError> {
        self.apply_one(Op::NewService(service.clone()))
    }

    /// `IPVS_CMD_SET_SERVICE` — `ipvsadm -E -t VIP:80 -s wlc`.
    pub fn set_service(&mut self, service: &Service) -> Result<(), IpvsError> {
        self.apply_one(Op::SetService(service.clone()))
    }

    /// `IPVS_CMD_DEL_SERVICE` — `ipvsadm -D -t VIP:80`.
    pub fn del_service(&mut self, service: &Service) -> Result<(), IpvsError> {
        self.apply_one(Op::DelService(service.clone()))
    }

    /// `IPVS_CMD_NEW_DEST` — `ipvsadm -a -t VIP:80 -r RIP:80 -g -w 1`.
    pub fn new_dest(&mut self, service: &Service, dest: &Destination) -> Result<(), IpvsError> {
        self.apply_one(Op::NewDest(service.clone(), dest.clone()))
    }

    /// `IPVS_CMD_SET_DEST` — `ipvsadm -e -t VIP:80 -r RIP:80 -g -w 0`.
    pub fn set_dest(&mut self, service: &Service, dest: &Destination) -> Result<(), IpvsError> {
        self.apply_one(Op::SetDest(service.clone(), dest.clone()))
    }

    /// `IPVS_CMD_DEL_DEST` — `ipvsadm -d -t VIP:80 -r RIP:80`.
    pub fn del_dest(&mut self, service: &Service, dest: &Destination) -> Result<(), IpvsError> {
        self.apply_one(Op::DelDest(service.clone(), dest.clone()))
    }

    /// Applies many operations with few syscalls; result `i` belongs to
    /// `ops[i]`. Operations are independent: the kernel keeps processing a
    /// batch after a failed request, so order dependent operations (service
    /// before its dests) and expect later ones to fail with ESRCH if an
    /// earlier one did.
    pub fn apply(&mut self, ops: &[Op]) -> Vec<Result<(), IpvsError>> {
        let mut results: Vec<Option<Result<(), IpvsError>>> = ops.iter().map(|_| None).collect();
        for start in (0..ops.len()).step_by(BATCH) {
            let end = (start + BATCH).min(ops.len());
            let mut buf = Vec::new();
            let mut pending: HashMap<u32, usize> = HashMap::new();
            for (i, op) in ops.iter().enumerate().take(end).skip(start) {
                let seq = self.seq();
                buf = op.request().emit_into(buf, self.family, seq);
                pending.insert(seq, i);
            }
            if let Err(e) = self.send(&buf) {
                let why = e.to_string();
                for (_, i) in pending.drain() {
                    results[i] = Some(Err(ops[i].error(KernelError::Transport(why.clone()))));
                }
                continue;
            }
            while !pending.is_empty() {
                match self.recv_acks(&mut pending) {
                    Ok(acks) => {
                        for (i, errno) in acks {
                            results[i] = Some(if errno == 0 {
                                Ok(())
                            } else {
                                Err(ops[i].error_from_errno(errno))
                            });
                        }
                    }
                    Err(e) => {
                        let why = e.to_string();
                        for (_, i) in pending.drain() {
                            results[i] =
                                Some(Err(ops[i].error(KernelError::Transport(why.clone()))));
                        }
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(IpvsError::malformed("operation got no result"))))
            .collect()
    }

    fn apply_one(&mut self, op: Op) -> Result<(), IpvsError> {
        self.apply(std::slice::from_ref(&op))
            .pop()
            .unwrap_or_else(|| Err(IpvsError::malformed("operation got no result")))
    }

    /// Reads one datagram and attributes the acks in it (see [`match_acks`]).
    fn recv_acks(
        &mut self,
        pending: &mut HashMap<u32, usize>,
    ) -> Result<Vec<(usize, i32)>, IpvsError> {
        let n = self.recv()?;
        match_acks(&self.buf[..n], pending)
    }

    /// `CTRL_CMD_GETFAMILY "IPVS"`; ENOENT means ip_vs is not loaded.
    fn resolve_family(&mut self) -> Result<u16, IpvsError> {
        self.resolve_family_named(IPVS_GENL_NAME)
    }

    /// `CTRL_CMD_GETFAMILY name` (separate so tests can resolve a family
    /// every kernel has).
    fn resolve_family_named(&mut self, name: &str) -> Result<u16, IpvsError> {
        let seq = self.seq();
        let mut id = None;
        let res = self.exchange(&emit_resolve_family(name, seq), seq, false, |m| {
            if m.ty == GENL_ID_CTRL {
                id = Some(parse_family_reply(m.payload)?);
                Ok(true)
            } else {
                Ok(false)
            }
        });
        match res {
            Ok(()) => id.ok_or_else(|| IpvsError::malformed("no family id in controller reply")),
            Err(Failure::Errno(ENOENT)) => Err(IpvsError::NotLoaded),
            Err(Failure::Errno(EPERM)) => Err(IpvsError::PermissionDenied),
            Err(Failure::Errno(e)) => Err(IpvsError::Resolve {
                source: KernelError::Errno(e),
            }),
            Err(Failure::Other(e)) => Err(e),
        }
    }

    /// Sends one IPVS request and collects its replies (all parts of a dump).
    fn exchange_ipvs(&mut self, req: &Request, dest_family: u16) -> Result<Vec<Reply>, Failure> {
        let seq = self.seq();
        let family = self.family;
        let dump = matches!(req, Request::GetServices | Request::GetDests(_));
        let mut out = Vec::new();
        self.exchange(&req.emit(family, seq), seq, dump, |m| {
            if m.ty == family {
                out.push(Reply::parse(m.payload, dest_family)?);
                Ok(true)
            } else {
                Ok(false)
            }
        })?;
        Ok(out)
    }

    /// Sends `bytes` and feeds every reply with sequence `seq` to `on_msg`
    /// (which returns whether it consumed the message) until `NLMSG_DONE`
    /// (dumps) or the first consumed reply (single requests). Errors arrive
    /// as `NLMSG_ERROR` with a negative errno.
    fn exchange<F>(
        &mut self,
        bytes: &[u8],
        seq: u32,
        dump: bool,
        mut on_msg: F,
    ) -> Result<(), Failure>
    where
        F: FnMut(&RawMsg<'_>) -> Result<bool, IpvsError>,
    {
        self.send(bytes)?;
        loop {
            let n = self.recv()?;
            for m in wire::split_messages(&self.buf[..n])? {
                if m.seq != seq {
                    continue; // stale reply to an earlier, abandoned request
                }
                match m.ty {
                    NLMSG_ERROR => match wire::error_code(m.payload)? {
                        0 => {}
                        e => return Err(Failure::Errno(e)),
                    },
                    NLMSG_DONE => {
                        // A dump may end with an error in the DONE payload.
                        return match wire::error_code(m.payload).unwrap_or(0) {
                            0 => Ok(()),
                            e => Err(Failure::Errno(e)),
                        };
                    }
                    NLMSG_NOOP => {}
                    NLMSG_OVERRUN => {
                        return Err(IpvsError::malformed("NLMSG_OVERRUN").into());
                    }
                    _ => {
                        let consumed = on_msg(&m)?;
                        if consumed && !dump {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    fn seq(&mut self) -> u32 {
        let s = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        s
    }

    fn send(&self, bytes: &[u8]) -> Result<(), IpvsError> {
        let sent = self.sock.send(bytes, Msg::empty())?;
        if sent != bytes.len() {
            return Err(IpvsError::malformed(format!(
                "short netlink send: {sent} of {} bytes",
                bytes.len()
            )));
        }
        Ok(())
    }

    /// One datagram into `self.buf`; `MSG_TRUNC` makes the kernel report the
    /// real size so a truncated reply is an error instead of silent data loss.
    fn recv(&mut self) -> Result<usize, IpvsError> {
        let (n, _groups) = self.sock.recv(&mut self.buf[..], Msg::TRUNC)?;
        if n > self.buf.len() {
            return Err(IpvsError::malformed(format!(
                "reply of {n} bytes truncated to {}",
                self.buf.len()
            )));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The operator drives the handle from `spawn_blocking`; it must move
    /// between threads.
    #[test]
    fn handle_can_be_moved_to_a_blocking_thread() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<IpvsHandle>();
    }

    /// Talks to the running kernel: the controller resolves itself
    /// ("nlctrl" is always id 0x10) and answers ENOENT for an unknown family,
    /// which is exactly the `NotLoaded` path of a host without ip_vs.
    /// (Names must stay under `GENL_NAMSIZ` = 16 bytes, else EINVAL.)
    #[test]
    fn family_resolution_works_against_the_running_kernel() {
        let Ok(mut h) = IpvsHandle::open() else {
            eprintln!("no NETLINK_GENERIC socket in this sandbox; skipped");
            return;
        };
        assert_eq!(h.resolve_family_named("nlctrl").unwrap(), GENL_ID_CTRL);
        let missing = h.resolve_family_named("nosuchfamily");
        assert!(matches!(missing, Err(IpvsError::NotLoaded)), "{missing:?}");
    }
}
