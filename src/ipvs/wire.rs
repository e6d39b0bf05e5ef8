//! Netlink framing: the `nlmsghdr` / `genlmsghdr` / `nlattr` byte layouts.
//!
//! This file knows nothing about IPVS. It writes and reads the generic pieces
//! every generic-netlink message is made of, exactly as `include/uapi/linux/
//! netlink.h` and `genetlink.h` lay them out:
//!
//! ```text
//! nlmsghdr  { u32 len; u16 type; u16 flags; u32 seq; u32 pid }   16 bytes
//! genlmsghdr{ u8 cmd; u8 version; u16 reserved }                  4 bytes
//! nlattr    { u16 len; u16 type } payload, padded to 4 bytes
//! ```
//!
//! All integers in the headers are host-endian (netlink never leaves the
//! machine). We keep our own emitter/parser rather than neli's typed structs so
//! that several requests can be concatenated into one `sendmsg` buffer and so
//! that tests can compare exact bytes.

use crate::ipvs::error::IpvsError;

/// `sizeof(struct nlmsghdr)`.
pub const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct genlmsghdr)`.
pub const GENL_HDRLEN: usize = 4;
/// `sizeof(struct nlattr)`.
pub const NLA_HDRLEN: usize = 4;

/// `NLM_F_REQUEST`: this message is a request.
pub const NLM_F_REQUEST: u16 = 0x0001;
/// `NLM_F_MULTI`: part of a multipart (dump) reply.
pub const NLM_F_MULTI: u16 = 0x0002;
/// `NLM_F_ACK`: ask the kernel for an explicit ack (an `NLMSG_ERROR` with 0).
pub const NLM_F_ACK: u16 = 0x0004;
/// `NLM_F_DUMP` = `NLM_F_ROOT | NLM_F_MATCH`: dump every object.
pub const NLM_F_DUMP: u16 = 0x0300;

/// `NLMSG_NOOP`.
pub const NLMSG_NOOP: u16 = 1;
/// `NLMSG_ERROR`: error or ack, payload `struct nlmsgerr`.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`: end of a dump.
pub const NLMSG_DONE: u16 = 3;
/// `NLMSG_OVERRUN`.
pub const NLMSG_OVERRUN: u16 = 4;

/// `NLA_F_NESTED`; masked off when reading (the kernel's IPVS dumps do not
/// set it, other emitters may).
pub const NLA_F_NESTED: u16 = 0x8000;
/// `NLA_F_NET_BYTEORDER`.
pub const NLA_F_NET_BYTEORDER: u16 = 0x4000;
/// `NLA_TYPE_MASK`.
pub const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

/// `GENL_ID_CTRL`: the generic-netlink controller family id (fixed).
pub const GENL_ID_CTRL: u16 = 0x10;
/// `CTRL_CMD_NEWFAMILY`: the controller's reply command.
pub const CTRL_CMD_NEWFAMILY: u8 = 1;
/// `CTRL_CMD_GETFAMILY`: resolve a family name to its id.
pub const CTRL_CMD_GETFAMILY: u8 = 3;
/// `CTRL_ATTR_FAMILY_ID` (u16).
pub const CTRL_ATTR_FAMILY_ID: u16 = 1;
/// `CTRL_ATTR_FAMILY_NAME` (NUL-terminated string).
pub const CTRL_ATTR_FAMILY_NAME: u16 = 2;

/// Rounds up to the 4-byte netlink alignment (`NLMSG_ALIGN` / `NLA_ALIGN`).
pub const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// Builds one netlink message (header + genl header + attributes).
///
/// The length field is patched in [`MsgWriter::finish`], and nested
/// attributes are patched in [`MsgWriter::end_nest`], so callers write
/// top-down the way the kernel's `nla_nest_start`/`nla_nest_end` do.
#[derive(Debug)]
pub struct MsgWriter {
    buf: Vec<u8>,
    start: usize,
}

impl MsgWriter {
    /// Starts a generic-netlink message appended to `buf` (which may already
    /// hold earlier messages of the same batch).
    pub fn new(buf: Vec<u8>, ty: u16, flags: u16, seq: u32, cmd: u8, version: u8) -> Self {
        let start = buf.len();
        let mut w = MsgWriter { buf, start };
        w.buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, patched later
        w.buf.extend_from_slice(&ty.to_ne_bytes());
        w.buf.extend_from_slice(&flags.to_ne_bytes());
        w.buf.extend_from_slice(&seq.to_ne_bytes());
        // nlmsg_pid 0: the kernel is the destination and fills in our port id.
        w.buf.extend_from_slice(&0u32.to_ne_bytes());
        w.buf.push(cmd);
        w.buf.push(version);
        w.buf.extend_from_slice(&0u16.to_ne_bytes());
        w
    }

    /// Appends one attribute with a raw payload, plus its alignment padding.
    pub fn attr(&mut self, ty: u16, payload: &[u8]) {
        let len = NLA_HDRLEN + payload.len();
        let len16 = u16::try_from(len).expect("netlink attribute larger than 64 KiB");
        self.buf.extend_from_slice(&len16.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
    }

    /// `nla_put_u8`.
    pub fn u8(&mut self, ty: u16, v: u8) {
        self.attr(ty, &[v]);
    }

    /// `nla_put_u16` (host order).
    pub fn u16(&mut self, ty: u16, v: u16) {
        self.attr(ty, &v.to_ne_bytes());
    }

    /// `nla_put_be16` (network order, used for ports).
    pub fn be16(&mut self, ty: u16, v: u16) {
        self.attr(ty, &v.to_be_bytes());
    }

    /// `nla_put_u32` (host order).
    pub fn u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_ne_bytes());
    }

    /// `nla_put_string`: the kernel's `NLA_NUL_STRING` policy wants the NUL.
    pub fn string(&mut self, ty: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.attr(ty, &v);
    }

    /// `nla_nest_start_noflag`: returns the offset to hand to [`Self::end_nest`].
    ///
    /// We do not set `NLA_F_NESTED`, matching ipvsadm (libnl) and the
    /// kernel's own IPVS dumps; IPVS parses its nests liberally either way.
    pub fn begin_nest(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        at
    }

    /// `nla_nest_end`: patches the nest length (which includes padded children).
    pub fn end_nest(&mut self, at: usize) {
        let len = u16::try_from(self.buf.len() - at).expect("nested attribute larger than 64 KiB");
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        let padded = self.start + align4(self.buf.len() - self.start);
        self.buf.resize(padded, 0);
    }

    /// Patches `nlmsg_len` and returns the buffer (this message appended).
    pub fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len() - self.start).expect("netlink message too large");
        self.buf[self.start..self.start + 4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// One parsed netlink message, borrowing its payload from the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMsg<'a> {
    /// `nlmsg_type`: a family id, or `NLMSG_ERROR` / `NLMSG_DONE`.
    pub ty: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`: used to attribute replies to requests.
    pub seq: u32,
    /// `nlmsg_pid`.
    pub pid: u32,
    /// Everything after the 16-byte header, up to `nlmsg_len`.
    pub payload: &'a [u8],
}

/// Splits a receive buffer into netlink messages (`NLMSG_NEXT` loop).
pub fn split_messages(mut buf: &[u8]) -> Result<Vec<RawMsg<'_>>, IpvsError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        if buf.len() < NLMSG_HDRLEN {
            return Err(IpvsError::malformed("trailing bytes shorter than nlmsghdr"));
        }
        let len = read_u32(&buf[0..4]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(IpvsError::malformed(format!(
                "nlmsg_len {len} out of range (buffer has {})",
                buf.len()
            )));
        }
        out.push(RawMsg {
            ty: read_u16(&buf[4..6]),
            flags: read_u16(&buf[6..8]),
            seq: read_u32(&buf[8..12]),
            pid: read_u32(&buf[12..16]),
            payload: &buf[NLMSG_HDRLEN..len],
        });
        buf = &buf[align4(len).min(buf.len())..];
    }
    Ok(out)
}

/// The generic-netlink header and attribute area of a family message.
pub fn split_genl(payload: &[u8]) -> Result<(u8, u8, &[u8]), IpvsError> {
    if payload.len() < GENL_HDRLEN {
        return Err(IpvsError::malformed("message shorter than genlmsghdr"));
    }
    Ok((payload[0], payload[1], &payload[GENL_HDRLEN..]))
}

/// The errno carried by an `NLMSG_ERROR` (0 = ack) or `NLMSG_DONE` payload,
/// as a positive number.
pub fn error_code(payload: &[u8]) -> Result<i32, IpvsError> {
    if payload.len() < 4 {
        return Err(IpvsError::malformed(
            "NLMSG_ERROR/DONE shorter than 4 bytes",
        ));
    }
    let raw = i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
    // The kernel sends -errno; flip so callers can compare with libc-style codes.
    Ok(raw.checked_neg().unwrap_or(i32::MAX))
}

/// One attribute: its type with the flag bits masked off, and its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    /// `nla_type & NLA_TYPE_MASK`.
    pub ty: u16,
    /// Payload without padding.
    pub payload: &'a [u8],
}

impl<'a> Attr<'a> {
    /// The payload as exactly `N` bytes. Fixed-size attributes must have their size: the kernel
    /// always sends it, and reading the first bytes of a longer payload would silently mis-parse.
    /// `what` names the value in the error (`"u32"`, `"in6_addr"`).
    pub fn exact<const N: usize>(&self, what: &str) -> Result<[u8; N], IpvsError> {
        self.payload.try_into().map_err(|_| self.bad_len(what, N))
    }
    /// `nla_get_u8`.
    pub fn u8(&self) -> Result<u8, IpvsError> {
        self.exact::<1>("u8").map(|[b]| b)
    }
    /// `nla_get_u16` (host order).
    pub fn u16(&self) -> Result<u16, IpvsError> {
        self.exact("u16").map(u16::from_ne_bytes)
    }
    /// `nla_get_be16` (network order).
    pub fn be16(&self) -> Result<u16, IpvsError> {
        self.exact("be16").map(u16::from_be_bytes)
    }
    /// `nla_get_u32` (host order).
    pub fn u32(&self) -> Result<u32, IpvsError> {
        self.exact("u32").map(u32::from_ne_bytes)
    }
    /// `nla_get_be32` (network order).
    pub fn be32(&self) -> Result<u32, IpvsError> {
        self.exact("be32").map(u32::from_be_bytes)
    }
    /// A counter that is u32 in `*_ATTR_STATS` and u64 in `*_ATTR_STATS64`:
    /// the length tells which.
    pub fn uint(&self) -> Result<u64, IpvsError> {
        match self.payload.len() {
            4 => self.u32().map(u64::from),
            _ => self.exact("u64").map(u64::from_ne_bytes),
        }
    }
    /// `nla_get_string`: up to the first NUL.
    pub fn string(&self) -> Result<String, IpvsError> {
        let end = self
            .payload
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.payload.len());
        String::from_utf8(self.payload[..end].to_vec())
            .map_err(|_| IpvsError::malformed(format!("attribute {} is not UTF-8", self.ty)))
    }
    /// Children of a nested attribute.
    pub fn nested(&self) -> Result<Vec<Attr<'a>>, IpvsError> {
        parse_attrs(self.payload)
    }

    fn bad_len(&self, what: &str, want: usize) -> IpvsError {
        IpvsError::malformed(format!(
            "attribute {} has {} bytes, a {what} has {want}",
            self.ty,
            self.payload.len()
        ))
    }
}

/// Parses a run of attributes (`nla_for_each_attr`).
pub fn parse_attrs(mut buf: &[u8]) -> Result<Vec<Attr<'_>>, IpvsError> {
    let mut out = Vec::new();
    while buf.len() >= NLA_HDRLEN {
        let len = read_u16(&buf[0..2]) as usize;
        if len < NLA_HDRLEN || len > buf.len() {
            return Err(IpvsError::malformed(format!(
                "nla_len {len} out of range ({} bytes left)",
                buf.len()
            )));
        }
        out.push(Attr {
            ty: read_u16(&buf[2..4]) & NLA_TYPE_MASK,
            payload: &buf[NLA_HDRLEN..len],
        });
        buf = &buf[align4(len).min(buf.len())..];
    }
    Ok(out)
}

fn read_u16(b: &[u8]) -> u16 {
    u16::from_ne_bytes([b[0], b[1]])
}

fn read_u32(b: &[u8]) -> u32 {
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_payloads_are_padded_to_four_bytes_but_len_is_unpadded() {
        let mut w = MsgWriter::new(Vec::new(), 0x20, NLM_F_REQUEST, 7, 1, 1);
        w.attr(6, b"rr\0");
        let buf = w.finish();
        assert_eq!(buf.len(), 16 + 4 + 8);
        assert_eq!(&buf[20..28], &[7, 0, 6, 0, b'r', b'r', 0, 0]);
        assert_eq!(u32::from_ne_bytes(buf[0..4].try_into().unwrap()), 28);
    }

    #[test]
    fn nested_attribute_length_covers_its_padded_children() {
        let mut w = MsgWriter::new(Vec::new(), 0x20, 0, 1, 1, 1);
        let n = w.begin_nest(1);
        w.u16(1, 2);
        w.end_nest(n);
        let buf = w.finish();
        assert_eq!(&buf[20..32], &[12, 0, 1, 0, 6, 0, 1, 0, 2, 0, 0, 0]);
    }

    #[test]
    fn split_messages_rejects_a_length_beyond_the_buffer() {
        let mut buf = MsgWriter::new(Vec::new(), 3, 0, 1, 0, 0).finish();
        buf[0] = 200;
        assert!(split_messages(&buf).is_err());
    }

    #[test]
    fn fixed_size_attributes_of_another_size_are_refused_not_truncated() {
        let long = Attr {
            ty: 4,
            payload: &[1, 2, 3, 4, 5, 6],
        };
        assert!(long.u32().is_err());
        assert!(long.be16().is_err());
        assert!(long.uint().is_err());
        let eight = Attr {
            ty: 1,
            payload: &[1, 0, 0, 0, 0, 0, 0, 0],
        };
        assert_eq!(eight.uint().unwrap(), 1);
    }

    #[test]
    fn attribute_types_are_read_without_the_nested_flag() {
        let buf = [8u8, 0, 0x01, 0x80, 1, 2, 3, 4];
        let attrs = parse_attrs(&buf).unwrap();
        assert_eq!(attrs[0].ty, 1);
        assert_eq!(attrs[0].payload, &[1, 2, 3, 4]);
    }
}
