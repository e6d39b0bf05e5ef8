//! Per-interface IPv4 sysctls: the `sysctl -w net.ipv4.conf.IF.NAME=V` part.
//!
//! A real server holds the VIP on `lo` but must not answer ARP for it, or it
//! would steal the director's traffic; `arp_ignore=1` and `arp_announce=2` on
//! `lo` and `all` (`core::REAL_SERVER_SYSCTLS`) do that. [`Sysctls`] reads and writes
//! `ROOT/net/ipv4/conf/IF/NAME` with the root a parameter, so tests point it
//! at a temporary directory standing in for `/proc/sys`.
//!
//! The I/O is synchronous on purpose: procfs reads and writes never block,
//! and `/proc/sys/net` shows the network namespace of the calling thread, so
//! handing the work to a blocking-pool thread (as `tokio::fs` does) could
//! read or write another namespace's values.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::netdev::error::NetdevError;

/// Splits a dotted name as the pure core writes it (`net.ipv4.conf.lo.arp_ignore`) into the
/// interface and the setting (`lo`, `arp_ignore`). The setting never holds a dot; an interface
/// name may (`eth0.100`), so the split is at the last dot.
pub fn split_conf_name(dotted: &str) -> Option<(&str, &str)> {
    dotted.strip_prefix("net.ipv4.conf.")?.rsplit_once('.')
}

/// Reads and writes `ROOT/net/ipv4/conf/<if>/<name>` and `ROOT/net/ipv4/vs/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctls {
    root: PathBuf,
}

impl Sysctls {
    /// The real sysctl tree.
    pub const PROC_SYS: &'static str = "/proc/sys";

    /// Sysctls under `root`, which stands for `/proc/sys`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Sysctls under the real `/proc/sys`.
    pub fn system() -> Self {
        Self::new(Self::PROC_SYS)
    }

    /// The root this instance reads under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of `net.ipv4.conf.IFNAME.NAME`.
    ///
    /// The interface name is used as the directory name verbatim, so a VLAN
    /// `eth0.100` is `conf/eth0.100/` (the `sysctl` command would need it
    /// written `eth0/100`, because it maps dots to slashes).
    pub fn ipv4_conf_path(&self, ifname: &str, name: &str) -> Result<PathBuf, NetdevError> {
        check_component("interface name", ifname, 15)?;
        check_component("sysctl name", name, 64)?;
        Ok(self.root.join("net/ipv4/conf").join(ifname).join(name))
    }

    /// The file of a dotted name the agent manages: `net.ipv4.conf.IF.NAME` or
    /// `net.ipv4.vs.NAME`.
    pub fn path_of(&self, dotted: &str) -> Result<PathBuf, NetdevError> {
        if let Some((ifname, name)) = split_conf_name(dotted) {
            return self.ipv4_conf_path(ifname, name);
        }
        match dotted.strip_prefix("net.ipv4.vs.") {
            Some(name) if !name.contains('.') => {
                check_component("sysctl name", name, 64)?;
                Ok(self.root.join("net/ipv4/vs").join(name))
            }
            _ => Err(NetdevError::InvalidArgument {
                what: format!("sysctl {dotted:?}"),
                reason: "not a net.ipv4.conf.IF.NAME or net.ipv4.vs.NAME setting".into(),
            }),
        }
    }

    /// Reads a value by dotted name, trimmed, like `sysctl -n NAME`.
    pub fn read(&self, dotted: &str) -> Result<String, NetdevError> {
        read_trimmed(&self.path_of(dotted)?)
    }

    /// Writes a value by dotted name, like `sysctl -w NAME=VALUE`; never creates a key.
    pub fn write(&self, dotted: &str, value: &str) -> Result<(), NetdevError> {
        write_value(&self.path_of(dotted)?, value)
    }

    /// Reads a value, trimmed, like `sysctl -n net.ipv4.conf.IFNAME.NAME`.
    pub fn get(&self, ifname: &str, name: &str) -> Result<String, NetdevError> {
        read_trimmed(&self.ipv4_conf_path(ifname, name)?)
    }

    /// Writes a value, like `sysctl -w net.ipv4.conf.IFNAME.NAME=VALUE`.
    /// The key must exist: a missing file is an error, as it is for
    /// `sysctl -w`, rather than a file created in a fake root.
    pub fn set(&self, ifname: &str, name: &str, value: &str) -> Result<(), NetdevError> {
        write_value(&self.ipv4_conf_path(ifname, name)?, value)
    }
}

fn read_trimmed(path: &Path) -> Result<String, NetdevError> {
    std::fs::read_to_string(path)
        .map(|v| v.trim().to_string())
        .map_err(|source| path_error(path, source))
}

fn write_value(path: &Path, value: &str) -> Result<(), NetdevError> {
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        // One write call: procfs parses each write on its own.
        .and_then(|mut f| f.write_all(value.trim().as_bytes()))
        .map_err(|source| path_error(path, source))
}

/// Rejects names that would leave the `conf` directory or cannot be an
/// interface (IFNAMSIZ is 16 with the NUL).
fn check_component(kind: &str, s: &str, max_len: usize) -> Result<(), NetdevError> {
    let bad = s.is_empty()
        || s.len() > max_len
        || s == "."
        || s == ".."
        || s.contains(['/', '\0'])
        || s.chars().any(char::is_whitespace);
    if bad {
        return Err(NetdevError::InvalidArgument {
            what: format!("{kind} {s:?}"),
            reason: format!("not a valid {kind}"),
        });
    }
    Ok(())
}

fn path_error(path: &Path, source: std::io::Error) -> NetdevError {
    NetdevError::Io {
        what: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A throwaway fake `/proc/sys`, removed on drop.
    struct FakeProcSys(PathBuf);

    impl FakeProcSys {
        fn new(keys: &[(&str, &str, &str)]) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let root = std::env::temp_dir().join(format!(
                "netdev-sysctl-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            for (ifname, name, value) in keys {
                let dir = root.join("net/ipv4/conf").join(ifname);
                std::fs::create_dir_all(&dir).unwrap();
                // The kernel ends every value with a newline.
                std::fs::write(dir.join(name), format!("{value}\n")).unwrap();
            }
            Self(root)
        }
    }

    impl Drop for FakeProcSys {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn get_trims_the_value() {
        let fake = FakeProcSys::new(&[("eth0", "arp_ignore", "0")]);
        let s = Sysctls::new(&fake.0);
        assert_eq!(s.get("eth0", "arp_ignore").unwrap(), "0");
    }

    #[test]
    fn set_then_get_round_trips() {
        let fake = FakeProcSys::new(&[("lo", "arp_announce", "0")]);
        let s = Sysctls::new(&fake.0);
        s.set("lo", "arp_announce", "2").unwrap();
        assert_eq!(s.get("lo", "arp_announce").unwrap(), "2");
        let raw = std::fs::read_to_string(fake.0.join("net/ipv4/conf/lo/arp_announce")).unwrap();
        assert_eq!(raw, "2");
    }

    #[test]
    fn missing_key_errors_name_the_path() {
        let fake = FakeProcSys::new(&[("lo", "arp_ignore", "0")]);
        let s = Sysctls::new(&fake.0);
        let want = fake.0.join("net/ipv4/conf/eth9/arp_ignore");
        let err = s.get("eth9", "arp_ignore").unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}: ", want.display())),
            "{err}"
        );
        // Writing does not create keys the kernel does not have.
        let err = s.set("eth9", "arp_ignore", "1").unwrap_err();
        assert!(
            err.to_string().contains(&want.display().to_string()),
            "{err}"
        );
        assert!(!want.exists());
    }

    #[test]
    fn dotted_names_split_at_the_last_dot_so_vlan_interfaces_keep_theirs() {
        assert_eq!(
            split_conf_name("net.ipv4.conf.eth0.100.arp_ignore"),
            Some(("eth0.100", "arp_ignore"))
        );
        assert_eq!(split_conf_name("net.ipv6.conf.all.forwarding"), None);
    }

    #[test]
    fn dotted_names_reach_conf_and_vs_settings_only() {
        let s = Sysctls::new("/proc/sys");
        assert_eq!(
            s.path_of("net.ipv4.conf.eth0.100.arp_ignore").unwrap(),
            Path::new("/proc/sys/net/ipv4/conf/eth0.100/arp_ignore")
        );
        assert_eq!(
            s.path_of("net.ipv4.vs.expire_nodest_conn").unwrap(),
            Path::new("/proc/sys/net/ipv4/vs/expire_nodest_conn")
        );
        for bad in [
            "net.ipv4.vs.a.b",
            "net.ipv4.vs...",
            "net.ipv4.vs.",
            "net.ipv6.conf.all.forwarding",
            "kernel.panic",
        ] {
            assert!(s.path_of(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn path_layout_and_rejected_names() {
        let s = Sysctls::new("/proc/sys");
        assert_eq!(
            s.ipv4_conf_path("eth0.100", "arp_ignore").unwrap(),
            Path::new("/proc/sys/net/ipv4/conf/eth0.100/arp_ignore")
        );
        assert_eq!(Sysctls::system(), s);
        for bad in ["", "..", ".", "a/b", "eth 0", "sixteen-chars-xx"] {
            assert!(s.ipv4_conf_path(bad, "arp_ignore").is_err(), "{bad:?}");
        }
        assert!(s.ipv4_conf_path("lo", "../../../../etc/passwd").is_err());
    }
}
