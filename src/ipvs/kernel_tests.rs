//! The sync-daemon commands against a real kernel, inside throwaway network namespaces (IPVS keeps
//! one master and one backup daemon per namespace).
//!
//! Each test creates its own namespace with a veth pair (`sync0`, `sync1`), moves one thread into
//! it with `setns(2)` and drives [`IpvsHandle`] from that thread. They need root and a kernel with
//! ip_vs, which the dev/CI host does not have: they are `#[ignore]`d, `make unit-root` leaves them
//! out by name (`--skip ipvs::kernel_tests`), and `tests/vm/sync.sh` runs them in the VM on
//! Debian's kernel, where a test that cannot run fails; none passes by skipping.

use std::fs::File;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use nix::sched::{CloneFlags, setns};

use crate::ipvs::types::{DEFAULT_SYNC_GROUP, DEFAULT_SYNC_PORT};
use crate::ipvs::{IpvsHandle, KernelError, SyncDaemon, SyncRole};

/// Runs `ip ARGS`, panicking with its stderr on failure.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with a veth pair `sync0` (192.0.2.1, fd00:99::1) and `sync1`
/// (192.0.2.2), deleted on drop, which also stops the daemons still running in it.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "kernel tests need root (the VM runs them as root)"
        );
        let ns = Self(format!("lvs-sync-{}-{tag}", std::process::id()));
        ip(&["netns", "add", &ns.0]);
        for args in [
            &["link", "set", "lo", "up"][..],
            &[
                "link", "add", "sync0", "type", "veth", "peer", "name", "sync1",
            ],
            &["addr", "add", "192.0.2.1/24", "dev", "sync0"],
            &["addr", "add", "192.0.2.2/24", "dev", "sync1"],
            // No duplicate address detection: an IPv6 sender needs a usable source address now.
            &[
                "-6",
                "addr",
                "add",
                "fd00:99::1/64",
                "dev",
                "sync0",
                "nodad",
            ],
            &["link", "set", "sync0", "up"],
            &["link", "set", "sync1", "up"],
        ] {
            let mut all = vec!["-n", ns.0.as_str()];
            all.extend_from_slice(args);
            ip(&all);
        }
        ns
    }

    /// Runs `f` with a handle opened on a thread that has moved into this namespace.
    fn run<T: Send>(&self, f: impl FnOnce(&mut IpvsHandle) -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let path = format!("/run/netns/{}", self.0);
                setns(
                    File::open(&path).expect("open netns"),
                    CloneFlags::CLONE_NEWNET,
                )
                .expect("setns");
                // Proof before touching anything: this thread is in the test's namespace.
                let ours = std::fs::metadata("/proc/thread-self/ns/net").expect("own netns");
                let want = std::fs::metadata(&path).expect("test netns");
                assert_eq!((ours.dev(), ours.ino()), (want.dev(), want.ino()));
                let mut handle = IpvsHandle::connect().expect("IPVS in the test namespace");
                f(&mut handle)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
#[ignore = "needs root and a kernel with ip_vs (runs in the VM: tests/vm/sync.sh)"]
fn a_master_runs_once_with_the_kernels_defaults_and_stops_once() {
    Netns::new("master").run(|h| {
        assert_eq!(h.daemons().unwrap(), []);
        let master = SyncDaemon::new(SyncRole::Master, "sync0", 7);
        h.start_daemon(&master).unwrap();
        // What start_sync_thread fills in: 224.0.0.81:8848, TTL 1, 1500 - IPv4 and UDP headers.
        let running = SyncDaemon {
            max_len: Some(1472),
            group: Some(DEFAULT_SYNC_GROUP.into()),
            port: Some(DEFAULT_SYNC_PORT),
            ttl: Some(1),
            ..master.clone()
        };
        assert_eq!(h.daemons().unwrap(), std::slice::from_ref(&running));

        let again = h.start_daemon(&master).unwrap_err();
        assert_eq!(again.kernel(), Some(&KernelError::DaemonRunning), "{again}");
        // The running daemon is untouched by the refused second one.
        assert_eq!(h.daemons().unwrap(), [running]);

        h.stop_daemon(SyncRole::Master).unwrap();
        assert_eq!(h.daemons().unwrap(), []);
        let twice = h.stop_daemon(SyncRole::Master).unwrap_err();
        assert_eq!(twice.kernel(), Some(&KernelError::NoDaemon), "{twice}");
        assert_eq!(
            twice.to_string(),
            "stop master sync daemon: none runs in this network namespace (ESRCH)"
        );
    });
}

#[test]
#[ignore = "needs root and a kernel with ip_vs (runs in the VM: tests/vm/sync.sh)"]
fn a_backup_beside_a_master_keeps_the_settings_it_was_given() {
    Netns::new("both").run(|h| {
        let backup = SyncDaemon {
            max_len: Some(1400),
            group: Some(addr("239.1.2.3")),
            port: Some(9000),
            ttl: Some(3),
            ..SyncDaemon::new(SyncRole::Backup, "sync1", 9)
        };
        let master = SyncDaemon {
            group: Some(addr("ff02::81")),
            port: Some(8850),
            ..SyncDaemon::new(SyncRole::Master, "sync0", 9)
        };
        h.start_daemon(&backup).unwrap();
        h.start_daemon(&master).unwrap();
        // The dump lists the master first; an IPv6 master's default length leaves room for the
        // 40-byte IPv6 header.
        let master_running = SyncDaemon {
            max_len: Some(1452),
            ttl: Some(1),
            ..master
        };
        assert_eq!(h.daemons().unwrap(), [master_running, backup.clone()]);

        h.stop_daemon(SyncRole::Master).unwrap();
        assert_eq!(h.daemons().unwrap(), [backup]);
        h.stop_daemon(SyncRole::Backup).unwrap();
        assert_eq!(h.daemons().unwrap(), []);
    });
}

#[test]
#[ignore = "needs root and a kernel with ip_vs (runs in the VM: tests/vm/sync.sh)"]
fn a_daemon_the_kernel_cannot_start_is_refused_with_the_reason() {
    Netns::new("refused").run(|h| {
        let missing = SyncDaemon::new(SyncRole::Backup, "eth9", 1);
        let e = h.start_daemon(&missing).unwrap_err();
        assert_eq!(e.kernel(), Some(&KernelError::NoSuchInterface), "{e}");
        assert_eq!(
            e.to_string(),
            "start backup sync daemon on eth9 (syncid 1): \
             no such interface in this network namespace (ENODEV)"
        );

        let unicast = SyncDaemon {
            group: Some(addr("192.0.2.9")),
            ..SyncDaemon::new(SyncRole::Master, "sync0", 1)
        };
        let e = h.start_daemon(&unicast).unwrap_err();
        assert_eq!(e.kernel(), Some(&KernelError::DaemonRejected), "{e}");

        let long_name = SyncDaemon::new(SyncRole::Master, "a-name-of-twenty-b", 1);
        let e = h.start_daemon(&long_name).unwrap_err();
        assert_eq!(e.kernel(), Some(&KernelError::DaemonRejected), "{e}");

        assert_eq!(h.daemons().unwrap(), []);
    });
}
