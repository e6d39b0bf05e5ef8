//! The tests of the agent's loop that need no kernel (on the in-memory data plane).

use std::path::PathBuf;
use std::time::Duration;

use crate::core::HostAddress;

use super::ledger::LedgerStore;
use super::standalone::{Beside, Options, Role, resync};

/// The in-memory data plane, under the name the tests knew it by.
pub type FakeKernel = super::memory::MemoryDataPlane;

struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("lvs-agent-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("objects")).unwrap();
        Self { dir }
    }
    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.dir.join("objects").join(file), text).unwrap();
    }
    fn remove(&self, file: &str) {
        std::fs::remove_file(self.dir.join("objects").join(file)).unwrap();
    }
    fn store(&self) -> LedgerStore {
        LedgerStore::new(&self.dir.join("state"))
    }
    fn objects(&self) -> PathBuf {
        self.dir.join("objects")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const REFERENCE: &str = include_str!("../../tests/valid/reference.yaml");

fn director_kernel() -> FakeKernel {
    let mut k = FakeKernel::default();
    k.state.addresses.insert(HostAddress {
        ifname: "eth0".into(),
        addr: "10.10.24.10".parse().unwrap(),
        prefix_len: 24,
    });
    k.state
        .sysctls
        .insert("net.ipv4.conf.eth0.accept_local".into(), "0".into());
    // The kernel's defaults, once ip_vs is loaded.
    for (name, _) in crate::core::CHECKED_DIRECTOR_SYSCTLS {
        k.state.sysctls.insert(name.into(), "0".into());
    }
    k
}

fn opts(path: &std::path::Path, role: Role) -> Options<'_> {
    Options {
        path,
        role,
        interface: None,
        dry_run: false,
        drain_timeout: Duration::from_secs(900),
        marks: (0x4c56_0001, 0x4c56_ffff),
        sync_id: 0,
    }
}

#[tokio::test]
async fn a_second_resync_writes_nothing() {
    let s = Scratch::new("idle");
    s.write("web.yaml", REFERENCE);
    let mut k = director_kernel();
    let path = s.objects();
    let o = opts(&path, Role::Director);
    let first = resync(&mut k, &s.store(), &o, &mut Beside::default())
        .await
        .unwrap();
    assert!(first.ok(), "{:?}", first.converged());
    // The seed's five commands; for the checks, expire_nodest_conn and expire_quiescent_template,
    // accept_local on eth0 and a firewall-mark service with its real server for each of the
    // three (the checks go through the VIP).
    assert_eq!(first.converged().plan.ops.len(), 5 + 2 + 1 + 3 * 2);
    let second = resync(&mut k, &s.store(), &o, &mut Beside::default())
        .await
        .unwrap();
    assert!(second.converged().plan.ops.is_empty());
    assert_eq!(k.batches.len(), 1, "one batch, for the first resync only");
}

#[tokio::test]
async fn an_invalid_object_is_reported_and_the_valid_one_is_served() {
    let s = Scratch::new("invalid");
    s.write("web.yaml", REFERENCE);
    s.write(
        "bad.yaml",
        &include_str!("../../tests/invalid/07-port-70000.yaml").replace("port-70000", "bad"),
    );
    let mut k = director_kernel();
    let out = resync(
        &mut k,
        &s.store(),
        &opts(&s.objects(), Role::Director),
        &mut Beside::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        out.rejected,
        vec!["bad: spec.ports[0].port: 70000 is out of range 1..65535"]
    );
    assert!(!out.ok());
    assert_eq!(k.state.services.len(), 1, "web is served");
}

#[tokio::test]
async fn an_object_removed_from_the_path_is_cleaned_up_and_nothing_else() {
    let s = Scratch::new("removed");
    s.write("web.yaml", REFERENCE);
    let mut k = director_kernel();
    let before = k.state.clone();
    let path = s.objects();
    let o = opts(&path, Role::Director);
    resync(&mut k, &s.store(), &o, &mut Beside::default())
        .await
        .unwrap();
    s.remove("web.yaml");
    resync(&mut k, &s.store(), &o, &mut Beside::default())
        .await
        .unwrap();
    assert_eq!(k.state, before);
}

#[tokio::test]
async fn an_unreadable_path_leaves_the_data_plane_as_it_is() {
    let s = Scratch::new("unreadable");
    s.write("web.yaml", REFERENCE);
    let mut k = director_kernel();
    resync(
        &mut k,
        &s.store(),
        &opts(&s.objects(), Role::Director),
        &mut Beside::default(),
    )
    .await
    .unwrap();
    let programmed = k.state.clone();
    let missing = s.dir.join("nowhere");
    assert!(
        resync(
            &mut k,
            &s.store(),
            &opts(&missing, Role::Director),
            &mut Beside::default()
        )
        .await
        .is_err()
    );
    assert_eq!(k.state, programmed);
}

#[tokio::test]
async fn a_restarted_agent_adopts_its_own_state_from_the_ledger() {
    let s = Scratch::new("restart");
    s.write("web.yaml", REFERENCE);
    let mut k = director_kernel();
    let path = s.objects();
    let o = opts(&path, Role::Director);
    resync(&mut k, &s.store(), &o, &mut Beside::default())
        .await
        .unwrap();
    // A new process: same kernel, same state dir, nothing in memory.
    let mut k2 = FakeKernel {
        state: k.state.clone(),
        batches: vec![],
        every_sysctl: false,
    };
    s.remove("web.yaml");
    resync(&mut k2, &s.store(), &o, &mut Beside::default())
        .await
        .unwrap();
    assert!(
        k2.state.services.is_empty(),
        "its own service was recognised and removed"
    );
}

#[tokio::test]
async fn dry_run_changes_nothing() {
    let s = Scratch::new("dry");
    s.write("web.yaml", REFERENCE);
    let mut k = director_kernel();
    let path = s.objects();
    let mut o = opts(&path, Role::Director);
    o.dry_run = true;
    let out = resync(&mut k, &s.store(), &o, &mut Beside::default())
        .await
        .unwrap();
    let commands: Vec<String> = out
        .converged()
        .plan
        .ops
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        commands[..5],
        [
            "sysctl -w net.ipv4.conf.eth0.accept_local=1",
            "sysctl -w net.ipv4.vs.expire_nodest_conn=1",
            "sysctl -w net.ipv4.vs.expire_quiescent_template=1",
            "ipvsadm -A -t 10.10.24.88:80 -s rr",
            "ipvsadm -a -t 10.10.24.88:80 -r 10.10.24.21:80 -g -w 1",
        ]
    );
    assert!(
        commands.contains(&format!("ipvsadm -A -f {} -s rr", 0x4c56_0001)),
        "{commands:?}"
    );
    assert!(k.batches.is_empty());
    assert!(!s.store().path().exists());
}

#[tokio::test]
async fn backend_role_puts_the_vip_on_lo_with_the_arp_sysctls() {
    let s = Scratch::new("backend");
    s.write("web.yaml", REFERENCE);
    let mut k = FakeKernel::default();
    for (name, _) in crate::core::REAL_SERVER_SYSCTLS {
        k.state.sysctls.insert(name.to_string(), "0".into());
    }
    // A web server on every address, as busybox httpd listens.
    k.state
        .listeners
        .insert((crate::core::Protocol::Tcp, "0.0.0.0:80".parse().unwrap()));
    let out = resync(
        &mut k,
        &s.store(),
        &opts(&s.objects(), Role::Backend),
        &mut Beside::default(),
    )
    .await
    .unwrap();
    assert!(out.ok(), "{:?}", out.rejected);
    assert!(
        k.state
            .addresses
            .contains(&HostAddress::vip("lo", "10.10.24.88".parse().unwrap()))
    );
    assert_eq!(k.state.sysctls["net.ipv4.conf.all.arp_ignore"], "1");
    assert_eq!(k.state.sysctls["net.ipv4.conf.lo.arp_announce"], "2");
}

#[tokio::test]
async fn a_real_server_with_nothing_listening_on_the_port_says_so() {
    let s = Scratch::new("deaf");
    s.write("web.yaml", REFERENCE);
    let mut k = FakeKernel::default();
    for (name, _) in crate::core::REAL_SERVER_SYSCTLS {
        k.state.sysctls.insert(name.to_string(), "0".into());
    }
    let out = resync(
        &mut k,
        &s.store(),
        &opts(&s.objects(), Role::Backend),
        &mut Beside::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        out.unready,
        vec![
            "web: this real server cannot serve the VIP: nothing listens on 80/TCP on the VIP or on every address"
        ]
    );
    assert!(out.rejected.is_empty());
    assert!(out.ok(), "the resync did its work: --once succeeds");
}
