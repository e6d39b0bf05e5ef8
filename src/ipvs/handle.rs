//! `IpvsHandle`: the live connection to the kernel's IPVS generic-netlink
//! family, built on neli's raw [`NlSocket`].
//!
//! We use neli only for the socket (socket/bind/send/recv, no `unsafe` here)
//! and our own [`crate::ipvs::message`] codec for the bytes. That is what
//! makes batching possible: [`IpvsHandle::apply`] concatenates many requests,
//! each with `NLM_F_REQUEST | NLM_F_ACK` and its own sequence number, into one
//! `sendmsg`, and the kernel (`netlink_rcv_skb`) processes every one of them
//! and acks each, so results are matched back by sequence number.
//!
//! No call can hang. The kernel handles a request inside our `sendmsg` and
//! builds each part of a dump inside the `recvmsg` that takes the previous
//! one, so an answer is always queued by the time we read; a read that finds
//! nothing means the answer was lost (an overrun), not that it is coming. Reads
//! are therefore non-blocking (`MSG_DONTWAIT`), retried briefly, and give up
//! with [`IpvsError::Timeout`] after [`EXCHANGE_DEADLINE`] (moby/ipvs sets
//! socket timeouts for the same reason, "to avoid deadlocks"). The handle is
//! still synchronous: `worker` runs it on a thread of its own so the agent's
//! runtime never waits on the kernel.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use neli::consts::socket::{Msg, NlFamily};
use neli::socket::NlSocket;
use neli::utils::Groups;

use crate::ipvs::error::{ENOENT, EPERM, IpvsError, KernelError};
use crate::ipvs::message::{
    IPVS_GENL_NAME, Reply, Request, emit_resolve_family, parse_family_reply,
};
use crate::ipvs::types::{DestEntry, Info, ServiceEntry, SyncDaemon, SyncRole, Virtual};
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
pub const BATCH: usize = 64;

/// How long one exchange (a request and all its replies) may wait for the kernel in total.
pub const EXCHANGE_DEADLINE: Duration = Duration::from_secs(5);

/// Returns `(request index, errno)` (0 = success) for every ack in `datagram`
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
        h.family = h.resolve_family(IPVS_GENL_NAME)?;
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

    /// `IPVS_CMD_GET_INFO` — the `IP Virtual Server version …` line of `ipvsadm -L`.
    pub fn info(&mut self) -> Result<Info, IpvsError> {
        match self.exchange_ipvs(&Request::GetInfo)?.into_iter().next() {
            Some(Reply::Info(i)) => Ok(i),
            _ => Err(IpvsError::malformed("GET_INFO without an info reply")),
        }
    }

    /// `IPVS_CMD_GET_SERVICE` dump — the services of `ipvsadm -Sn`. Fwmark
    /// and unknown-protocol services come back as foreign entries.
    pub fn services(&mut self) -> Result<Vec<ServiceEntry>, IpvsError> {
        self.exchange_ipvs(&Request::GetServices)?
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
    pub fn dests(&mut self, service: impl Into<Virtual>) -> Result<Vec<DestEntry>, IpvsError> {
        self.exchange_ipvs(&Request::GetDests(service.into()))?
            .into_iter()
            .map(|r| match r {
                Reply::Dest(d) => Ok(d),
                other => Err(IpvsError::malformed(format!(
                    "unexpected {other:?} in dest dump"
                ))),
            })
            .collect()
    }

    /// `IPVS_CMD_NEW_DAEMON` — `ipvsadm --start-daemon ...` (the daemon's `Display`). The kernel
    /// starts its sync threads before it answers. A daemon of the same role already running is
    /// [`KernelError::DaemonRunning`], a missing interface [`KernelError::NoSuchInterface`].
    pub fn start_daemon(&mut self, daemon: &SyncDaemon) -> Result<(), IpvsError> {
        self.apply_one(Request::NewDaemon(daemon.clone()))
    }

    /// `IPVS_CMD_DEL_DAEMON` — `ipvsadm --stop-daemon ROLE`. No daemon of that role running is
    /// [`KernelError::NoDaemon`].
    pub fn stop_daemon(&mut self, role: SyncRole) -> Result<(), IpvsError> {
        self.apply_one(Request::DelDaemon(role))
    }

    /// `IPVS_CMD_GET_DAEMON` dump — `ipvsadm -L --daemon`: the master, then the backup, of those
    /// that run. A kernel >= 4.3 reports every setting, the defaults it chose included.
    pub fn daemons(&mut self) -> Result<Vec<SyncDaemon>, IpvsError> {
        self.exchange_ipvs(&Request::GetDaemons)?
            .into_iter()
            .map(|r| match r {
                Reply::Daemon(d) => Ok(d),
                other => Err(IpvsError::malformed(format!(
                    "unexpected {other:?} in daemon dump"
                ))),
            })
            .collect()
    }

    /// One mutation through [`IpvsHandle::apply`], for the commands that are not batched.
    fn apply_one(&mut self, request: Request) -> Result<(), IpvsError> {
        self.apply(std::slice::from_ref(&request))
            .pop()
            .unwrap_or_else(|| Err(IpvsError::malformed("request got no result")))
    }

    /// Carries out mutations (`NEW_*`, `SET_*`, `DEL_*`) with few syscalls;
    /// result `i` belongs to `requests[i]`. Requests are independent: the
    /// kernel keeps processing a batch after a failed one, so order dependent
    /// requests (service before its dests) and expect later ones to fail with
    /// ESRCH if an earlier one did.
    pub fn apply(&mut self, requests: &[Request]) -> Vec<Result<(), IpvsError>> {
        let mut results: Vec<Option<Result<(), IpvsError>>> =
            requests.iter().map(|_| None).collect();
        for start in (0..requests.len()).step_by(BATCH) {
            let end = (start + BATCH).min(requests.len());
            let mut buf = Vec::new();
            let mut pending: HashMap<u32, usize> = HashMap::new();
            for (i, request) in requests.iter().enumerate().take(end).skip(start) {
                let seq = self.seq();
                buf = request.emit_into(buf, self.family, seq);
                pending.insert(seq, i);
            }
            let transport =
                |e: IpvsError, pending: &mut HashMap<u32, usize>, results: &mut Vec<_>| {
                    let why = e.to_string();
                    for (_, i) in pending.drain() {
                        let r: &Request = &requests[i];
                        results[i] = Some(Err(r.error(KernelError::Transport(why.clone()))));
                    }
                };
            if let Err(e) = self.send(&buf) {
                transport(e, &mut pending, &mut results);
                continue;
            }
            let deadline = Instant::now() + EXCHANGE_DEADLINE;
            while !pending.is_empty() {
                match self.recv(deadline) {
                    Ok(n) => match match_acks(&self.buf[..n], &mut pending) {
                        Ok(acks) => {
                            for (i, errno) in acks {
                                let r = &requests[i];
                                results[i] = Some(if errno == 0 {
                                    Ok(())
                                } else {
                                    Err(r.error(r.kernel_error(errno)))
                                });
                            }
                        }
                        Err(e) => transport(e, &mut pending, &mut results),
                    },
                    Err(e) => transport(e, &mut pending, &mut results),
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(IpvsError::malformed("request got no result"))))
            .collect()
    }

    /// `CTRL_CMD_GETFAMILY name`; ENOENT means the family (ip_vs) is not loaded.
    fn resolve_family(&mut self, name: &str) -> Result<u16, IpvsError> {
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
    fn exchange_ipvs(&mut self, req: &Request) -> Result<Vec<Reply>, IpvsError> {
        let seq = self.seq();
        let family = self.family;
        let dest_family = match req {
            Request::GetDests(k) => k.family(),
            _ => 0,
        };
        let mut out = Vec::new();
        self.exchange(&req.emit(family, seq), seq, req.is_dump(), |m| {
            if m.ty == family {
                out.push(Reply::parse(m.payload, dest_family)?);
                Ok(true)
            } else {
                Ok(false)
            }
        })
        .map_err(|f| match f {
            Failure::Errno(e) => req.error(req.kernel_error(e)),
            Failure::Other(e) => e,
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
        let deadline = Instant::now() + EXCHANGE_DEADLINE;
        loop {
            let n = self.recv(deadline)?;
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

    /// One datagram into `self.buf`, waiting until `deadline` at most (see the module doc for
    /// why an empty queue is retried only briefly). `MSG_TRUNC` makes the kernel report the real
    /// size, so a truncated reply is an error instead of silent data loss.
    fn recv(&mut self, deadline: Instant) -> Result<usize, IpvsError> {
        let mut pause = Duration::from_micros(50);
        loop {
            match self
                .sock
                .recv(&mut self.buf[..], Msg::TRUNC | Msg::DONTWAIT)
            {
                Ok((n, _groups)) if n > self.buf.len() => {
                    return Err(IpvsError::malformed(format!(
                        "reply of {n} bytes truncated to {}",
                        self.buf.len()
                    )));
                }
                Ok((n, _groups)) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(IpvsError::Timeout(EXCHANGE_DEADLINE));
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Talks to the running kernel: the controller resolves itself
    /// ("nlctrl" is always id 0x10) and answers ENOENT for an unknown family,
    /// which is exactly the `NotLoaded` path of a host without ip_vs.
    /// (Names must stay under `GENL_NAMSIZ` = 16 bytes, else EINVAL.)
    #[test]
    fn family_resolution_works_against_the_running_kernel() {
        let mut h = IpvsHandle::open().expect("a NETLINK_GENERIC socket");
        assert_eq!(h.resolve_family("nlctrl").unwrap(), GENL_ID_CTRL);
        let missing = h.resolve_family("nosuchfamily");
        assert!(matches!(missing, Err(IpvsError::NotLoaded)), "{missing:?}");
    }

    /// A request whose answer never comes (here: an ack was never asked for) ends with a
    /// timeout instead of waiting forever.
    #[test]
    fn an_answer_that_never_comes_is_a_timeout_not_a_hang() {
        let mut h = IpvsHandle::open().expect("a NETLINK_GENERIC socket");
        let started = Instant::now();
        let err = h
            .recv(Instant::now() + Duration::from_millis(200))
            .unwrap_err();
        assert!(matches!(err, IpvsError::Timeout(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
