//! The parsers of what the kernel sends, fed arbitrary bytes and damaged versions of real messages:
//! none may panic, and none may allocate more than a fixed multiple of its input (a length field
//! claiming gigabytes must not become a gigabyte allocation).
//!
//! Covered: the netlink framing (`wire::split_messages`, attributes, nests), the IPVS reply parser
//! (`message::Reply::parse`, every command and family), the ack matcher of batches
//! (`handle::match_acks`) and the generic-netlink controller reply (`parse_family_reply`), and the
//! who-has probe's reading of Ethernet frames (`probe_frames::holder`), which must also refuse
//! every frame cut short. The rtnetlink side is parsed by the rtnetlink crate, not by us.
//!
//! `make test` runs a bounded number of cases; `make fuzz` runs the same properties for much
//! longer (`PROPTEST_CASES`). Allocation is measured by a counting global allocator, per thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::net::IpAddr;

use lvs_operator::ipvs::handle::match_acks;
use lvs_operator::ipvs::message::{Reply, Request, parse_family_reply};
use lvs_operator::ipvs::types::{AF_INET, AF_INET6};
use lvs_operator::ipvs::wire::split_messages;
use lvs_operator::ipvs::{Dest, DestKey, Protocol, Scheduler, ServiceConfig, ServiceKey};
use lvs_operator::netdev::frames::{arp_request, unsolicited_na};
use lvs_operator::netdev::probe_frames::{holder, neighbor_solicit};
use proptest::prelude::*;

/// Counts the bytes this thread has live and the peak since [`reset_peak`].
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc(size: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + size;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn note_free(size: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(size)));
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are plain
// const-initialised thread locals that never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: the caller's contract is passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_free(layout.size());
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_free(layout.size());
        note_alloc(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Runs `f` and returns the most memory it had allocated at once, beyond what was live before.
fn peak_allocation(f: impl FnOnce()) -> usize {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    f();
    PEAK.with(Cell::get).saturating_sub(base)
}

/// Every parser of kernel bytes, on one datagram.
fn parse_everything(datagram: &[u8]) {
    if let Ok(msgs) = split_messages(datagram) {
        for m in &msgs {
            for family in [0, AF_INET, AF_INET6] {
                let _ = Reply::parse(m.payload, family);
            }
            let _ = parse_family_reply(m.payload);
        }
    }
    let mut pending: HashMap<u32, usize> = (0..8).map(|s| (s, s as usize)).collect();
    let _ = match_acks(datagram, &mut pending);
}

/// The bound: a fixed multiple of the input, plus room for the parsers' small fixed buffers.
fn bound(len: usize) -> usize {
    64 * len + 64 * 1024
}

fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ]
}

fn key() -> impl Strategy<Value = ServiceKey> {
    (
        addr(),
        prop_oneof![
            Just(Protocol::Tcp),
            Just(Protocol::Udp),
            Just(Protocol::Sctp)
        ],
        any::<u16>(),
    )
        .prop_map(|(vip, protocol, port)| ServiceKey {
            vip,
            protocol,
            port,
        })
}

/// Messages laid out as the kernel lays out dump parts: a service part is a NEW_SERVICE with the
/// service nested, a destination part a NEW_DEST with the destination nested.
fn kernel_like_message() -> impl Strategy<Value = Vec<u8>> {
    let service = (key(), any::<u32>(), any::<u32>()).prop_map(|(k, flags, timeout)| {
        let config = ServiceConfig {
            flags,
            timeout,
            ..ServiceConfig::new(Scheduler::Wrr, k.vip)
        };
        Request::NewService(k.into(), config).emit(0x23, 1)
    });
    let dest = (key(), addr(), any::<u16>(), any::<u32>()).prop_map(|(k, a, port, w)| {
        Request::NewDest(k.into(), DestKey { addr: a, port }, Dest::direct_route(w)).emit(0x23, 2)
    });
    prop_oneof![service, dest]
}

/// A real message, damaged: bytes overwritten, the length fields among them, and cut short.
fn damaged_message() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(kernel_like_message(), 1..4),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        any::<usize>(),
    )
        .prop_map(|(msgs, edits, cut)| {
            let mut bytes = msgs.concat();
            let len = bytes.len();
            for (at, value) in edits {
                bytes[at % len] = value;
            }
            bytes.truncate(len - cut % (len / 4 + 1));
            bytes
        })
}

/// A frame in which a unicast MAC claims the VIP, as the probe receives one, with that VIP: an
/// ARP reply or a gratuitous ARP, or a neighbour advertisement.
fn holder_frame() -> impl Strategy<Value = (Vec<u8>, IpAddr)> {
    // A unicast MAC: the low bit of the first byte clear, and never all zero.
    let mac = any::<[u8; 6]>().prop_map(|mut m| {
        m[0] &= 0xfe;
        m[5] |= 1;
        m
    });
    let arp = (
        mac.clone(),
        any::<[u8; 4]>(),
        any::<[u8; 4]>(),
        any::<bool>(),
    )
        .prop_map(|(mac, vip, target, reply)| {
            let mut f = arp_request(mac, vip.into(), target.into()).to_vec();
            if reply {
                f[21] = 2; // operation: reply
            }
            (f, IpAddr::from(vip))
        });
    let na = (mac, any::<[u8; 16]>())
        .prop_map(|(mac, vip)| (unsolicited_na(mac, vip.into()).to_vec(), IpAddr::from(vip)));
    prop_oneof![arp, na]
}

/// Every frame the probe sends or reads, damaged: bytes overwritten and cut short.
fn damaged_frame() -> impl Strategy<Value = (Vec<u8>, IpAddr)> {
    let request =
        (any::<[u8; 6]>(), any::<[u8; 16]>(), any::<[u8; 16]>()).prop_map(|(mac, s, v)| {
            (
                neighbor_solicit(mac, s.into(), v.into()).to_vec(),
                IpAddr::from(v),
            )
        });
    (
        prop_oneof![holder_frame(), request],
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        any::<usize>(),
    )
        .prop_map(|((mut f, vip), edits, cut)| {
            let len = f.len();
            for (at, value) in edits {
                f[at % len] = value;
            }
            f.truncate(len - cut % (len + 1));
            (f, vip)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(3000)
    ))]

    #[test]
    fn arbitrary_bytes_never_panic_and_allocate_in_proportion(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096)
    ) {
        let peak = peak_allocation(|| parse_everything(&bytes));
        prop_assert!(peak <= bound(bytes.len()), "{peak} bytes for {} of input", bytes.len());
    }

    #[test]
    fn damaged_kernel_messages_never_panic_and_allocate_in_proportion(bytes in damaged_message()) {
        let peak = peak_allocation(|| parse_everything(&bytes));
        prop_assert!(peak <= bound(bytes.len()), "{peak} bytes for {} of input", bytes.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(3000)
    ))]

    #[test]
    fn arbitrary_frames_never_panic_and_allocate_little(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        vip in addr(),
    ) {
        let peak = peak_allocation(|| { let _ = holder(&bytes, vip); });
        prop_assert!(peak <= bound(bytes.len()), "{peak} bytes for {} of input", bytes.len());
    }

    #[test]
    fn damaged_frames_never_panic((frame, vip) in damaged_frame()) {
        let _ = holder(&frame, vip);
    }

    #[test]
    fn a_holder_frame_is_read_whole_and_refused_cut_short((frame, vip) in holder_frame()) {
        prop_assert!(holder(&frame, vip).is_some());
        for len in 0..frame.len() {
            prop_assert_eq!(holder(&frame[..len], vip), None, "cut at {}", len);
        }
    }
}

/// The measurement itself must be able to fail: a parse that keeps what it read is seen.
#[test]
fn the_allocation_bound_sees_an_allocation_out_of_proportion() {
    let input = [0u8; 16];
    let peak = peak_allocation(|| {
        let big = vec![0u8; bound(input.len()) + 1];
        std::hint::black_box(&big);
    });
    assert!(peak > bound(input.len()));
}
