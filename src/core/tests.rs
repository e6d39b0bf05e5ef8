//! Tests of the pure core: objects to desired state, and desired vs observed to operations.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use pretty_assertions::assert_eq;

use super::*;
use crate::api::{manifest, validate};

const NOW: u64 = 1_000;
const DRAIN: u64 = 900;

/// The objects of a manifest, validated (the tests speak YAML; the core reads only the result),
/// without health checks: these tests are about programming; `health.rs` tests the checks.
fn objects(yaml: &str) -> Vec<VirtualService> {
    manifest::parse_documents("test", yaml)
        .into_iter()
        .map(|d| VirtualService {
            health: None,
            ..validate(&d.unwrap()).unwrap()
        })
        .collect()
}

fn reference() -> VirtualService {
    objects(include_str!("../../tests/valid/reference.yaml")).remove(0)
}

fn eth0(_: IpAddr) -> Option<String> {
    Some("eth0".into())
}

fn director(objs: &[VirtualService]) -> NodeState {
    let a: Vec<_> = objs
        .iter()
        .map(|o| Assignment {
            service: o,
            backends: o.backends.clone().unwrap_or_default(),
            director: Some(DirectorRole {
                holds_vip: true,
                interface: None,
                handover: None,
            }),
            real_server: false,
            health: Default::default(),
        })
        .collect();
    let (state, errors) = desired_state(&a, &eth0);
    assert_eq!(errors, vec![]);
    state
}

fn real_server(objs: &[VirtualService]) -> NodeState {
    let a: Vec<_> = objs
        .iter()
        .map(|o| Assignment {
            service: o,
            backends: vec![],
            director: None,
            real_server: true,
            health: Default::default(),
        })
        .collect();
    desired_state(&a, &eth0).0
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn key(vip: &str, protocol: Protocol, port: u16) -> ServiceKey {
    ServiceKey {
        vip: ip(vip),
        protocol,
        port,
    }
}

fn desired_state(
    a: &[Assignment<'_>],
    interface_for: &dyn Fn(IpAddr) -> Option<String>,
) -> (NodeState, Vec<PlacementError>) {
    let d = desired(a, interface_for, &Default::default());
    (d.state, d.errors)
}

fn commands(p: &Plan) -> Vec<String> {
    p.ops.iter().map(|o| o.to_string()).collect()
}

/// The kernel state after carrying out a plan, as the agent would observe it next time.
fn apply(observed: &NodeState, p: &Plan, ledger: &mut Ledger) -> NodeState {
    let mut s = observed.clone();
    for op in &p.ops {
        super::fake::apply_op(&mut s, op);
        ledger.record(op, NOW);
    }
    s
}

/// A node nobody has configured: no IPVS service, no VIP, the ARP sysctls at the kernel's 0.
fn bare() -> NodeState {
    let mut s = NodeState::default();
    for (name, _) in REAL_SERVER_SYSCTLS {
        s.sysctls.insert(name.to_string(), "0".into());
    }
    s
}

/// The kernel and the ledger after programming `desired` on a bare node.
fn programmed(desired: &NodeState) -> (NodeState, Ledger) {
    let mut ledger = Ledger::default();
    let first = plan(desired, &bare(), &ledger, NOW, DRAIN);
    let observed = apply(&bare(), &first, &mut ledger);
    (observed, ledger)
}

#[test]
fn reference_object_programs_the_seed_documents_commands_in_order() {
    let desired = director(&[reference()]);
    let p = plan(
        &desired,
        &NodeState::default(),
        &Ledger::default(),
        NOW,
        DRAIN,
    );
    assert_eq!(
        commands(&p),
        vec![
            "ipvsadm -A -t 10.10.24.88:80 -s rr",
            "ipvsadm -a -t 10.10.24.88:80 -r 10.10.24.21:80 -g -w 1",
            "ipvsadm -a -t 10.10.24.88:80 -r 10.10.24.22:80 -g -w 1",
            "ipvsadm -a -t 10.10.24.88:80 -r 10.10.24.23:80 -g -w 1",
            "ip addr add 10.10.24.88/32 broadcast 10.10.24.88 dev eth0",
        ]
    );
    assert!(matches!(
        p.ops.last(),
        Some(Op::AddAddress { announce: true, .. })
    ));
}

#[test]
fn real_server_sets_arp_sysctls_before_taking_the_vip_on_lo() {
    let mut observed = NodeState::default();
    for name in ["lo", "all"] {
        observed
            .sysctls
            .insert(format!("net.ipv4.conf.{name}.arp_ignore"), "0".into());
        observed
            .sysctls
            .insert(format!("net.ipv4.conf.{name}.arp_announce"), "0".into());
    }
    let p = plan(
        &real_server(&[reference()]),
        &observed,
        &Ledger::default(),
        NOW,
        DRAIN,
    );
    assert_eq!(
        commands(&p),
        vec![
            "sysctl -w net.ipv4.conf.all.arp_announce=2",
            "sysctl -w net.ipv4.conf.all.arp_ignore=1",
            "sysctl -w net.ipv4.conf.lo.arp_announce=2",
            "sysctl -w net.ipv4.conf.lo.arp_ignore=1",
            "ip addr add 10.10.24.88/32 broadcast 10.10.24.88 dev lo",
        ]
    );
    assert!(
        matches!(
            p.ops.last(),
            Some(Op::AddAddress {
                announce: false,
                ..
            })
        ),
        "lo is never announced"
    );
}

#[test]
fn plan_is_empty_once_the_kernel_holds_the_desired_state() {
    for desired in [director(&[reference()]), real_server(&[reference()])] {
        let (observed, ledger) = programmed(&desired);
        assert_eq!(
            plan(&desired, &observed, &ledger, NOW, DRAIN),
            Plan::default()
        );
    }
}

#[test]
fn every_scheduler_maps_to_its_kernel_name() {
    for s in Scheduler::ALL {
        let yaml = format!(
            "apiVersion: lvs-operator.io/v1alpha1\nkind: LvsService\nmetadata: {{name: s}}\nspec: {{vip: 10.0.0.1, ports: [{{port: 80}}], scheduler: {}, backends: [{{address: 10.0.0.2}}]}}\n",
            s.name()
        );
        let d = director(&objects(&yaml));
        assert_eq!(
            d.services[&key("10.0.0.1", Protocol::Tcp, 80)]
                .config
                .scheduler,
            s
        );
    }
    let d = director(&objects(
        "apiVersion: lvs-operator.io/v1alpha1\nkind: LvsService\nmetadata: {name: s}\nspec: {vip: 10.0.0.1, ports: [{port: 80}], backends: [{address: 10.0.0.2}]}\n",
    ));
    assert_eq!(
        d.services[&key("10.0.0.1", Protocol::Tcp, 80)]
            .config
            .scheduler,
        Scheduler::Wlc,
        "default as ipvsadm"
    );
}

#[test]
fn protocols_ports_and_flags_map_to_ipvsadm_options() {
    let objs = objects(include_str!("../../tests/valid/everything.yaml"));
    let d = director(&objs[..1]);
    let keys: Vec<_> = d.services.keys().copied().collect();
    assert_eq!(
        keys,
        vec![
            key("10.10.24.89", Protocol::Tcp, 80),
            key("10.10.24.89", Protocol::Udp, 53),
            key("10.10.24.89", Protocol::Sctp, 80),
        ]
    );
    let p = plan(&d, &NodeState::default(), &Ledger::default(), NOW, DRAIN);
    let c = commands(&p);
    assert_eq!(
        c[0],
        "ipvsadm -A -t 10.10.24.89:80 -s sh -b sh-fallback,sh-port -p 600 -M 255.255.255.0"
    );
    assert!(
        c.contains(
            &"ipvsadm -A -u 10.10.24.89:53 -s sh -b sh-fallback,sh-port -p 600 -M 255.255.255.0"
                .to_string()
        )
    );
    assert!(c.contains(
        &"ipvsadm -a --sctp-service 10.10.24.89:80 -r 10.10.24.21:80 -g -w 3".to_string()
    ));
    assert!(
        c.contains(&"ipvsadm -a -u 10.10.24.89:53 -r 10.10.24.22:53 -g -w 0".to_string()),
        "weight 0 is kept"
    );
    let config = &d.services[&keys[0]].config;
    assert_eq!(config.flags, SVC_F_PERSISTENT | SVC_F_SCHED1 | SVC_F_SCHED2);
    assert_eq!(config.netmask, 0xffff_ff00, "255.255.255.0 as a number");
}

#[test]
fn ipv6_vip_gets_a_128_address_a_prefix_netmask_and_no_arp_sysctls() {
    let objs = objects(include_str!("../../tests/valid/everything.yaml"));
    let web6 = &objs[1..2];
    let d = director(web6);
    let svc = &d.services[&key("fd00:24::88", Protocol::Tcp, 80)];
    assert_eq!(
        (svc.config.flags, svc.config.timeout, svc.config.netmask),
        (SVC_F_PERSISTENT, 300, 64)
    );
    let p = plan(&d, &NodeState::default(), &Ledger::default(), NOW, DRAIN);
    assert_eq!(
        commands(&p),
        vec![
            "ipvsadm -A -t [fd00:24::88]:80 -s wlc -p 300 -M 64",
            "ipvsadm -a -t [fd00:24::88]:80 -r [fd00:24::21]:80 -g -w 1",
            "ip addr add fd00:24::88/128 dev eth0",
        ]
    );
    let rs = real_server(web6);
    assert!(
        rs.sysctls.is_empty(),
        "IPv6 has no ARP; neighbour discovery answers only on the receiving interface"
    );
    assert_eq!(
        rs.addresses.iter().next().unwrap(),
        &HostAddress::vip("lo", ip("fd00:24::88"))
    );
}

#[test]
fn unpersistent_services_carry_the_netmask_ipvsadm_sends() {
    let d = director(&[reference()]);
    let c = &d.services[&key("10.10.24.88", Protocol::Tcp, 80)].config;
    assert_eq!((c.flags, c.timeout, c.netmask), (0, 0, u32::MAX));
}

#[test]
fn two_objects_share_a_vip_on_different_ports_and_one_address() {
    let objs = objects(
        "apiVersion: lvs-operator.io/v1alpha1\nkind: LvsService\nmetadata: {name: http}\nspec: {vip: 10.10.24.88, ports: [{port: 80}], scheduler: rr, backends: [{address: 10.10.24.21}]}\n---\n\
         apiVersion: lvs-operator.io/v1alpha1\nkind: LvsService\nmetadata: {name: https}\nspec: {vip: 10.10.24.88, ports: [{port: 443}], scheduler: lc, backends: [{address: 10.10.24.22}]}\n",
    );
    let d = director(&objs);
    assert_eq!(d.services.len(), 2);
    assert_eq!(d.addresses.len(), 1);
    assert_eq!(real_server(&objs).addresses.len(), 1);
}

#[test]
fn second_object_claiming_a_served_port_is_refused_whole() {
    let objs = objects(
        "apiVersion: lvs-operator.io/v1alpha1\nkind: LvsService\nmetadata: {name: first}\nspec: {vip: 10.10.24.88, ports: [{port: 80}], backends: [{address: 10.10.24.21}]}\n---\n\
         apiVersion: lvs-operator.io/v1alpha1\nkind: LvsService\nmetadata: {name: second}\nspec: {vip: 10.10.24.88, ports: [{port: 443}, {port: 80}], backends: [{address: 10.10.24.22}]}\n",
    );
    let a: Vec<_> = objs
        .iter()
        .map(|o| Assignment {
            service: o,
            backends: o.backends.clone().unwrap_or_default(),
            director: Some(DirectorRole {
                holds_vip: true,
                interface: None,
                handover: None,
            }),
            real_server: false,
            health: Default::default(),
        })
        .collect();
    let (state, errors) = desired_state(&a, &eth0);
    assert_eq!(
        state.services.len(),
        1,
        "nothing of the second object, not even its free port 443"
    );
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].object, "second");
    assert_eq!(
        errors[0].message,
        "spec.ports[1]: TCP 10.10.24.88:80 is already served by first"
    );
}

#[test]
fn director_without_an_interface_for_the_vip_reports_the_field() {
    let obj = reference();
    let a = [Assignment {
        service: &obj,
        backends: obj.backends.clone().unwrap_or_default(),
        director: Some(DirectorRole {
            holds_vip: true,
            interface: None,
            handover: None,
        }),
        real_server: false,
        health: Default::default(),
    }];
    let (state, errors) = desired_state(&a, &|_| None);
    assert_eq!(state, NodeState::default());
    assert!(errors[0].message.starts_with(
        "spec.directors.interface: no interface has an address in the subnet of 10.10.24.88"
    ));
}

#[test]
fn standby_director_programs_ipvs_without_the_vip() {
    let obj = reference();
    let a = [Assignment {
        service: &obj,
        backends: obj.backends.clone().unwrap_or_default(),
        director: Some(DirectorRole {
            holds_vip: false,
            interface: None,
            handover: None,
        }),
        real_server: false,
        health: Default::default(),
    }];
    let (state, _) = desired_state(&a, &eth0);
    assert_eq!(state.services.len(), 1);
    assert!(state.addresses.is_empty());
}

#[test]
fn both_sides_of_a_handover_send_new_tcp_connections_to_one_real_server_and_the_taker_picks_up_mid_flow()
 {
    // rs1 takes no new connections: rs2 is the one in service with the lowest address.
    let obj = objects(
        &include_str!("../../tests/valid/reference.yaml")
            .replace(
                "ports: [{port: 80, protocol: TCP}]",
                "ports: [{port: 80, protocol: TCP}, {port: 53, protocol: UDP}]",
            )
            .replace(
                "{address: 10.10.24.21}",
                "{address: 10.10.24.21, weight: 0}",
            ),
    )
    .remove(0);
    let assign = |handover| {
        [Assignment {
            service: &obj,
            backends: obj.backends.clone().unwrap_or_default(),
            director: Some(DirectorRole {
                holds_vip: true,
                interface: None,
                handover,
            }),
            real_server: false,
            health: Default::default(),
        }]
    };
    let weights = |state: &NodeState, port: u16| -> Vec<u32> {
        let protocol = if port == 53 {
            Protocol::Udp
        } else {
            Protocol::Tcp
        };
        state.services[&key("10.10.24.88", protocol, port)]
            .dests
            .values()
            .map(|d| d.weight)
            .collect()
    };
    let sloppy = |state: &NodeState| state.sysctls.get("net.ipv4.vs.sloppy_tcp").cloned();
    let (giving, errors) = desired_state(&assign(Some(Handover::Giving)), &eth0);
    assert_eq!(errors, vec![]);
    assert_eq!(weights(&giving, 80), [0, 1, 0]);
    assert_eq!(
        weights(&giving, 53),
        [0, 1, 1],
        "UDP is scheduled as before"
    );
    assert_eq!(sloppy(&giving), None);
    let (taking, _) = desired_state(&assign(Some(Handover::Taking)), &eth0);
    assert_eq!(weights(&taking, 80), [0, 1, 0]);
    assert_eq!(sloppy(&taking).as_deref(), Some("1"));
    let (after, _) = desired_state(&assign(None), &eth0);
    assert_eq!(weights(&after, 80), [0, 1, 1]);
    assert_eq!(sloppy(&after), None);
}

#[test]
fn a_standby_that_is_also_a_real_server_programs_the_vips_services_only_once_it_holds_the_vip() {
    let obj = reference();
    let assign = |holds_vip| {
        [Assignment {
            service: &obj,
            backends: obj.backends.clone().unwrap_or_default(),
            director: Some(DirectorRole {
                holds_vip,
                interface: None,
                handover: None,
            }),
            real_server: true,
            health: Default::default(),
        }]
    };
    let vip = ip("10.10.24.88");
    // Standing by: the VIP on lo as a real server, no service that would schedule again what
    // the active director sends it.
    let (standby, errors) = desired_state(&assign(false), &eth0);
    assert_eq!(errors, vec![]);
    assert!(standby.services.is_empty(), "{:?}", standby.services);
    assert_eq!(standby.addresses, [HostAddress::vip("lo", vip)].into());
    // Taking the VIP: its services come with it.
    let (active, _) = desired_state(&assign(true), &eth0);
    assert_eq!(active.services.len(), 1);
    assert_eq!(
        active.addresses,
        [HostAddress::vip("eth0", vip), HostAddress::vip("lo", vip)].into()
    );
}

#[test]
fn a_weight_change_is_exactly_one_edit() {
    let desired = director(&[reference()]);
    let (observed, ledger) = programmed(&desired);
    let mut obj = reference();
    obj.backends.as_mut().unwrap()[1].weight = 5;
    let p = plan(&director(&[obj]), &observed, &ledger, NOW, DRAIN);
    assert_eq!(
        commands(&p),
        vec!["ipvsadm -e -t 10.10.24.88:80 -r 10.10.24.22:80 -g -w 5"]
    );
}

#[test]
fn scheduler_change_edits_the_service_in_place() {
    let (observed, ledger) = programmed(&director(&[reference()]));
    let mut obj = reference();
    obj.config.scheduler = Scheduler::Wrr;
    let p = plan(&director(&[obj]), &observed, &ledger, NOW, DRAIN);
    assert_eq!(commands(&p), vec!["ipvsadm -E -t 10.10.24.88:80 -s wrr"]);
}

fn with_conns(mut s: NodeState, dest: &str, active: u32) -> NodeState {
    for svc in s.services.values_mut() {
        for (k, d) in svc.dests.iter_mut() {
            if k.addr == ip(dest) {
                d.active_conns = active;
            }
        }
    }
    s
}

#[test]
fn removed_backend_with_connections_is_drained_before_it_is_deleted() {
    let (observed, mut ledger) = programmed(&director(&[reference()]));
    let observed = with_conns(observed, "10.10.24.23", 2);
    let mut obj = reference();
    obj.backends.as_mut().unwrap().pop();
    let desired = director(&[obj]);

    let p = plan(&desired, &observed, &ledger, NOW, DRAIN);
    assert_eq!(
        commands(&p),
        vec!["ipvsadm -e -t 10.10.24.88:80 -r 10.10.24.23:80 -g -w 0"]
    );
    let observed = apply(&observed, &p, &mut ledger);
    let observed = with_conns(observed, "10.10.24.23", 2);
    assert_eq!(
        plan(&desired, &observed, &ledger, NOW + 10, DRAIN),
        Plan::default(),
        "still draining: nothing to do"
    );

    let idle = with_conns(observed.clone(), "10.10.24.23", 0);
    assert_eq!(
        commands(&plan(&desired, &idle, &ledger, NOW + 20, DRAIN)),
        vec!["ipvsadm -d -t 10.10.24.88:80 -r 10.10.24.23:80"]
    );
    assert_eq!(
        commands(&plan(&desired, &observed, &ledger, NOW + DRAIN, DRAIN)),
        vec!["ipvsadm -d -t 10.10.24.88:80 -r 10.10.24.23:80"],
        "the drain timeout ends a drain whatever the connections"
    );
}

#[test]
fn removed_backend_without_connections_is_deleted_at_once() {
    let (observed, ledger) = programmed(&director(&[reference()]));
    let mut obj = reference();
    obj.backends.as_mut().unwrap().remove(0);
    assert_eq!(
        commands(&plan(&director(&[obj]), &observed, &ledger, NOW, DRAIN)),
        vec!["ipvsadm -d -t 10.10.24.88:80 -r 10.10.24.21:80"]
    );
}

#[test]
fn backend_returning_while_draining_gets_its_weight_back() {
    let mut ledger = Ledger::default();
    let full = director(&[reference()]);
    let observed = apply(
        &NodeState::default(),
        &plan(&full, &NodeState::default(), &ledger, NOW, DRAIN),
        &mut ledger,
    );
    let mut obj = reference();
    obj.backends.as_mut().unwrap().pop();
    let observed = with_conns(observed, "10.10.24.23", 1);
    let observed = apply(
        &observed,
        &plan(&director(&[obj]), &observed, &ledger, NOW, DRAIN),
        &mut ledger,
    );
    assert_eq!(ledger.draining.len(), 1);
    let p = plan(&full, &observed, &ledger, NOW + 5, DRAIN);
    assert_eq!(
        commands(&p),
        vec!["ipvsadm -e -t 10.10.24.88:80 -r 10.10.24.23:80 -g -w 1"],
        "never stuck at 0"
    );
    apply(&observed, &p, &mut ledger);
    assert!(ledger.draining.is_empty());
}

#[test]
fn removed_object_is_cleaned_up_vip_first() {
    let (observed, mut ledger) = programmed(&director(&[reference()]));
    let p = plan(&NodeState::default(), &observed, &ledger, NOW, DRAIN);
    assert_eq!(
        commands(&p),
        vec![
            "ip addr del 10.10.24.88/32 dev eth0",
            "ipvsadm -D -t 10.10.24.88:80"
        ]
    );
    apply(&observed, &p, &mut ledger);
    assert_eq!(ledger, Ledger::default());
}

fn foreign() -> NodeState {
    let mut s = NodeState::default();
    s.services.insert(
        key("10.96.0.1", Protocol::Tcp, 443),
        ServiceState {
            config: ServiceConfig::new(Scheduler::Rr, ip("10.96.0.1")),
            dests: [(
                DestKey {
                    addr: ip("10.0.0.5"),
                    port: 6443,
                },
                DestState {
                    weight: 1,
                    active_conns: 3,
                    forward: Forward::Masq,
                },
            )]
            .into(),
        },
    );
    s.addresses.insert(HostAddress {
        ifname: "eth0".into(),
        addr: ip("10.10.24.10"),
        prefix_len: 24,
    });
    s.addresses
        .insert(HostAddress::vip("eth0", ip("10.10.24.99")));
    s
}

#[test]
fn foreign_services_and_addresses_survive_programming_and_removal() {
    let mut ledger = Ledger::default();
    let desired = director(&[reference()]);
    let p = plan(&desired, &foreign(), &ledger, NOW, DRAIN);
    let observed = apply(&foreign(), &p, &mut ledger);
    let removal = plan(&NodeState::default(), &observed, &ledger, NOW, DRAIN);
    let after = apply(&observed, &removal, &mut ledger);
    assert_eq!(after, foreign());
}

#[test]
fn a_foreign_service_on_our_port_is_a_conflict_and_is_left_alone() {
    let mut observed = foreign();
    let theirs = ServiceState {
        config: ServiceConfig::new(Scheduler::Wlc, ip("10.10.24.88")),
        dests: Default::default(),
    };
    observed
        .services
        .insert(key("10.10.24.88", Protocol::Tcp, 80), theirs);
    let p = plan(
        &director(&[reference()]),
        &observed,
        &Ledger::default(),
        NOW,
        DRAIN,
    );
    assert_eq!(
        p.blocked,
        vec![Blocked::ForeignService(key(
            "10.10.24.88",
            Protocol::Tcp,
            80
        ))]
    );
    assert!(
        p.ops
            .iter()
            .all(|o| !matches!(o, Op::EditService { .. } | Op::AddDest { .. }))
    );
    let p = plan(
        &NodeState::default(),
        &observed,
        &Ledger::default(),
        NOW,
        DRAIN,
    );
    assert_eq!(p, Plan::default(), "never deleted either");
}

#[test]
fn an_address_someone_else_made_is_shared_not_taken_over() {
    let mut observed = NodeState::default();
    observed
        .addresses
        .insert(HostAddress::vip("eth0", ip("10.10.24.88")));
    let mut ledger = Ledger::default();
    let p = plan(&director(&[reference()]), &observed, &ledger, NOW, DRAIN);
    assert!(p.ops.iter().all(|o| !matches!(o, Op::AddAddress { .. })));
    let observed = apply(&observed, &p, &mut ledger);
    let removal = plan(&NodeState::default(), &observed, &ledger, NOW, DRAIN);
    assert_eq!(
        commands(&removal),
        vec!["ipvsadm -D -t 10.10.24.88:80"],
        "the admin's VIP stays"
    );
}

#[test]
fn drift_is_repaired_service_address_and_sysctl() {
    let mut ledger = Ledger::default();
    let mut both = director(&[reference()]);
    let rs = real_server(&[reference()]);
    both.sysctls = rs.sysctls.clone();
    let observed = apply(
        &bare(),
        &plan(&both, &bare(), &ledger, NOW, DRAIN),
        &mut ledger,
    );
    let mut drifted = observed.clone();
    drifted.services.clear(); // ipvsadm -C
    drifted.addresses.clear(); // ip addr del
    drifted
        .sysctls
        .insert("net.ipv4.conf.all.arp_ignore".into(), "0".into());
    let p = plan(&both, &drifted, &ledger, NOW, DRAIN);
    assert_eq!(apply(&drifted, &p, &mut ledger), observed);
    assert_eq!(
        ledger.sysctls["net.ipv4.conf.all.arp_ignore"].previous, "0",
        "the first previous value is kept"
    );
}

#[test]
fn sysctls_are_restored_when_the_last_vip_leaves_unless_someone_changed_them_since() {
    let mut observed = NodeState::default();
    for (name, _) in REAL_SERVER_SYSCTLS {
        observed.sysctls.insert(name.to_string(), "0".into());
    }
    let mut ledger = Ledger::default();
    let rs = real_server(&[reference()]);
    let observed = apply(
        &observed,
        &plan(&rs, &observed, &ledger, NOW, DRAIN),
        &mut ledger,
    );
    let mut changed = observed.clone();
    changed
        .sysctls
        .insert("net.ipv4.conf.all.arp_announce".into(), "1".into());
    let p = plan(&NodeState::default(), &changed, &ledger, NOW, DRAIN);
    assert_eq!(
        commands(&p),
        vec![
            "ip addr del 10.10.24.88/32 dev lo",
            "sysctl -w net.ipv4.conf.all.arp_ignore=0",
            "sysctl -w net.ipv4.conf.lo.arp_announce=0",
            "sysctl -w net.ipv4.conf.lo.arp_ignore=0",
        ]
    );
}

#[test]
fn a_stricter_arp_ignore_an_admin_chose_is_kept() {
    let mut observed = NodeState::default();
    for (name, value) in REAL_SERVER_SYSCTLS {
        observed.sysctls.insert(name.to_string(), value.to_string());
    }
    observed
        .sysctls
        .insert("net.ipv4.conf.all.arp_ignore".into(), "2".into());
    let p = plan(
        &real_server(&[reference()]),
        &observed,
        &Ledger::default(),
        NOW,
        DRAIN,
    );
    assert_eq!(
        commands(&p),
        vec!["ip addr add 10.10.24.88/32 broadcast 10.10.24.88 dev lo"]
    );
}

#[test]
fn a_destination_someone_switched_to_masquerading_is_put_back_to_direct_routing() {
    let desired = director(&[reference()]);
    let (mut observed, ledger) = programmed(&desired);
    let svc = observed.services.values_mut().next().unwrap();
    svc.dests.values_mut().next().unwrap().forward = Forward::Masq;
    assert_eq!(
        commands(&plan(&desired, &observed, &ledger, NOW, DRAIN)),
        vec!["ipvsadm -e -t 10.10.24.88:80 -r 10.10.24.21:80 -g -w 1"]
    );
}

#[test]
fn ledger_survives_a_restart_as_json() {
    let mut ledger = Ledger::default();
    let _ = apply(
        &NodeState::default(),
        &plan(
            &director(&[reference()]),
            &NodeState::default(),
            &ledger,
            NOW,
            DRAIN,
        ),
        &mut ledger,
    );
    ledger.draining.push(Drain {
        service: key("10.10.24.88", Protocol::Tcp, 80),
        dest: DestKey {
            addr: ip("10.10.24.23"),
            port: 80,
        },
        since: 7,
    });
    let text = serde_json::to_string(&ledger).unwrap();
    assert_eq!(serde_json::from_str::<Ledger>(&text).unwrap(), ledger);
}

#[test]
fn vip_interface_is_the_one_holding_its_subnet() {
    let mut addrs = std::collections::BTreeSet::new();
    addrs.insert(HostAddress {
        ifname: "lo".into(),
        addr: ip("127.0.0.1"),
        prefix_len: 8,
    });
    addrs.insert(HostAddress::vip("eth1", ip("10.10.24.77")));
    addrs.insert(HostAddress {
        ifname: "eth1".into(),
        addr: ip("192.168.1.10"),
        prefix_len: 24,
    });
    addrs.insert(HostAddress {
        ifname: "eth0".into(),
        addr: ip("10.10.24.10"),
        prefix_len: 24,
    });
    addrs.insert(HostAddress {
        ifname: "eth2".into(),
        addr: ip("fd00:24::10"),
        prefix_len: 64,
    });
    assert_eq!(
        interface_for(ip("10.10.24.88"), &addrs).as_deref(),
        Some("eth0")
    );
    assert_eq!(
        interface_for(ip("fd00:24::88"), &addrs).as_deref(),
        Some("eth2")
    );
    assert_eq!(interface_for(ip("172.16.0.1"), &addrs), None);
    addrs.insert(HostAddress {
        ifname: "br0".into(),
        addr: ip("10.10.0.1"),
        prefix_len: 16,
    });
    assert_eq!(
        interface_for(ip("10.10.24.88"), &addrs).as_deref(),
        Some("eth0"),
        "the most specific subnet wins"
    );
}

#[test]
fn a_sysctl_that_cannot_be_read_is_never_written_nor_recorded() {
    let mut observed = bare();
    observed.sysctls.remove("net.ipv4.conf.all.arp_ignore");
    let mut ledger = Ledger::default();
    let p = plan(&real_server(&[reference()]), &observed, &ledger, NOW, DRAIN);
    assert_eq!(
        p.blocked,
        vec![Blocked::UnreadableSysctl(
            "net.ipv4.conf.all.arp_ignore".into()
        )]
    );
    assert!(
        commands(&p).iter().all(|c| !c.contains("all.arp_ignore")),
        "{p:?}"
    );
    apply(&observed, &p, &mut ledger);
    assert!(!ledger.sysctls.contains_key("net.ipv4.conf.all.arp_ignore"));
}

/// A crash after the kernel carried out a plan and before the ledger recorded it: the intents
/// written ahead are all a restarted agent has.
fn crashed_after_the_kernel(desired: &NodeState, start: &NodeState) -> (NodeState, Ledger) {
    let mut ledger = Ledger::default();
    let p = plan(desired, start, &ledger, NOW, DRAIN);
    assert!(ledger.intend(&p.ops));
    let mut kernel = start.clone();
    for op in &p.ops {
        super::fake::apply_op(&mut kernel, op);
    }
    (kernel, ledger)
}

#[test]
fn a_restart_after_a_crash_adopts_exactly_what_it_had_intended() {
    let mut desired = director(&[reference()]);
    desired.sysctls = real_server(&[reference()]).sysctls;
    let (kernel, mut ledger) = crashed_after_the_kernel(&desired, &bare());
    ledger.settle(&kernel, &desired);
    assert!(ledger.intents.is_empty());
    assert_eq!(ledger.services.len(), 1, "its service is its own");
    assert_eq!(ledger.addresses.len(), 1, "its VIP is its own");
    assert_eq!(ledger.sysctls["net.ipv4.conf.all.arp_ignore"].previous, "0");
    assert_eq!(
        plan(&desired, &kernel, &ledger, NOW, DRAIN),
        Plan::default()
    );
    let removal = plan(&NodeState::default(), &kernel, &ledger, NOW, DRAIN);
    assert_eq!(
        apply(&kernel, &removal, &mut ledger),
        bare(),
        "everything goes back"
    );
}

#[test]
fn an_intent_the_kernel_shows_done_differently_is_not_adopted() {
    let desired = director(&[reference()]);
    let (mut kernel, mut ledger) = crashed_after_the_kernel(&desired, &bare());
    // Someone made the service with other settings in between: it is theirs.
    kernel
        .services
        .values_mut()
        .next()
        .unwrap()
        .config
        .scheduler = Scheduler::Wlc;
    ledger.settle(&kernel, &desired);
    assert!(ledger.services.is_empty());
    assert_eq!(
        plan(&desired, &kernel, &ledger, NOW, DRAIN).blocked,
        vec![Blocked::ForeignService(key(
            "10.10.24.88",
            Protocol::Tcp,
            80
        ))]
    );
}

#[test]
fn what_is_gone_from_the_kernel_is_forgotten() {
    let desired = director(&[reference()]);
    let (observed, mut ledger) = programmed(&desired);
    ledger.settle(&NodeState::default(), &NodeState::default());
    assert_eq!(ledger, Ledger::default());
    // A service that someone else now makes under the same name is theirs, not ours.
    let theirs = observed;
    assert_eq!(
        plan(&NodeState::default(), &theirs, &ledger, NOW, DRAIN),
        Plan::default()
    );
}

#[test]
fn a_real_server_ejected_before_a_restart_stays_out_until_its_checks_pass() {
    // The reference object with its default TCP check; the kernel as a previous run left it,
    // rs2 ejected.
    let web = validate(
        &manifest::parse_documents("test", include_str!("../../tests/valid/reference.yaml"))
            .remove(0)
            .unwrap(),
    )
    .unwrap();
    assert!(web.health.is_some());
    let desired_with = |admissions: BTreeMap<(IpAddr, u16), Admission>| {
        let a = [Assignment {
            service: &web,
            backends: web.backends.clone().unwrap_or_default(),
            director: Some(DirectorRole {
                holds_vip: true,
                interface: None,
                handover: None,
            }),
            real_server: false,
            health: admissions,
        }];
        let mut d = desired(&a, &eth0, &Default::default());
        let (mut observed, _) = programmed(&d.state);
        let svc = observed
            .services
            .get_mut(&key("10.10.24.88", Protocol::Tcp, 80));
        svc.unwrap().dests.values_mut().nth(1).unwrap().weight = 0;
        hold_ejected(&mut d, &a, &observed);
        let weights: Vec<u32> = d.state.services[&key("10.10.24.88", Protocol::Tcp, 80)]
            .dests
            .values()
            .map(|s| s.weight)
            .collect();
        let part = &d.parts[&web.id].services[&key("10.10.24.88", Protocol::Tcp, 80)];
        assert_eq!(
            part.dests,
            d.state.services[&key("10.10.24.88", Protocol::Tcp, 80)].dests
        );
        weights
    };
    // No verdict yet (the agent just started): rs2 is kept at 0, the others keep theirs.
    assert_eq!(desired_with(BTreeMap::new()), [1, 0, 1]);
    // Its check passed: it gets its weight back.
    let passed = [((ip("10.10.24.22"), 80), Admission::Full)].into();
    assert_eq!(desired_with(passed), [1, 1, 1]);
}

fn daemon(role: SyncRole) -> SyncDaemon {
    SyncDaemon::new(role, "eth0", 7)
}

#[test]
fn a_director_with_peers_runs_a_master_where_it_holds_the_vip_and_a_backup_where_it_stands_by() {
    let objs = objects(
        "apiVersion: lvs-operator.io/v1alpha1\nkind: LvsService\nmetadata: {name: a}\nspec: {vip: 10.10.24.88, ports: [{port: 80}], backends: [{address: 10.10.24.21}]}\n---\napiVersion: lvs-operator.io/v1alpha1\nkind: LvsService\nmetadata: {name: b}\nspec: {vip: 10.10.24.89, ports: [{port: 80}], backends: [{address: 10.10.24.21}]}\n",
    );
    let assign = |holds: [bool; 2]| -> Vec<Assignment<'_>> {
        objs.iter()
            .zip(holds)
            .map(|(o, holds_vip)| Assignment {
                service: o,
                backends: o.backends.clone().unwrap_or_default(),
                director: Some(DirectorRole {
                    holds_vip,
                    interface: None,
                    handover: None,
                }),
                real_server: false,
                health: Default::default(),
            })
            .collect()
    };
    let roles =
        |holds| -> Vec<SyncRole> { sync_daemons(&assign(holds), &eth0, 7).into_keys().collect() };
    assert_eq!(roles([true, true]), [SyncRole::Master]);
    assert_eq!(roles([false, false]), [SyncRole::Backup]);
    assert_eq!(roles([true, false]), [SyncRole::Master, SyncRole::Backup]);
    assert_eq!(
        sync_daemons(&assign([true, true]), &eth0, 7)[&SyncRole::Master],
        daemon(SyncRole::Master)
    );
}

#[test]
fn a_takeover_swaps_backup_for_master_after_the_vip_and_a_foreign_daemon_is_left_alone() {
    let mut desired = NodeState::default();
    desired
        .daemons
        .insert(SyncRole::Backup, daemon(SyncRole::Backup));
    let (observed, mut ledger) = programmed(&desired);
    assert_eq!(
        commands(&plan(&desired, &bare(), &Ledger::default(), NOW, DRAIN)),
        ["ipvsadm --start-daemon backup --mcast-interface eth0 --syncid 7"]
    );
    assert_eq!(ledger.daemons, [SyncRole::Backup].into());
    // The standby becomes active: its VIP first, then stop the backup, start the master.
    let mut active = desired.clone();
    active.daemons.clear();
    active
        .daemons
        .insert(SyncRole::Master, daemon(SyncRole::Master));
    active
        .addresses
        .insert(HostAddress::vip("eth0", ip("10.10.24.88")));
    let p = plan(&active, &observed, &ledger, NOW, DRAIN);
    assert_eq!(
        commands(&p),
        [
            "ip addr add 10.10.24.88/32 broadcast 10.10.24.88 dev eth0",
            "ipvsadm --stop-daemon backup",
            "ipvsadm --start-daemon master --mcast-interface eth0 --syncid 7",
        ]
    );
    let now = apply(&observed, &p, &mut ledger);
    assert!(plan(&active, &now, &ledger, NOW, DRAIN).ops.is_empty());
    assert_eq!(ledger.daemons, [SyncRole::Master].into());
    // The kernel fills in what was left to it: still the daemon we want.
    let mut filled = now.clone();
    let m = filled.daemons.get_mut(&SyncRole::Master).unwrap();
    m.max_len = Some(1472);
    m.group = Some(ip("224.0.0.81"));
    m.port = Some(8848);
    m.ttl = Some(1);
    assert!(plan(&active, &filled, &ledger, NOW, DRAIN).ops.is_empty());
    // Someone else's master (keepalived's) is reported and never stopped, even when we want none.
    let mut foreign = bare();
    foreign.daemons.insert(
        SyncRole::Master,
        SyncDaemon::new(SyncRole::Master, "eth1", 3),
    );
    let p = plan(&active, &foreign, &Ledger::default(), NOW, DRAIN);
    assert!(
        p.ops
            .iter()
            .all(|op| !matches!(op, Op::StopDaemon { .. } | Op::StartDaemon { .. }))
    );
    assert_eq!(
        p.blocked,
        [Blocked::ForeignDaemon(SyncDaemon::new(
            SyncRole::Master,
            "eth1",
            3
        ))]
    );
    assert!(
        plan(
            &NodeState::default(),
            &foreign,
            &Ledger::default(),
            NOW,
            DRAIN
        )
        .ops
        .is_empty()
    );
}

#[test]
fn a_daemon_started_by_a_killed_run_is_adopted_from_the_written_ahead_intent() {
    let mut desired = NodeState::default();
    desired
        .daemons
        .insert(SyncRole::Master, daemon(SyncRole::Master));
    let mut ledger = Ledger::default();
    let p = plan(&desired, &bare(), &ledger, NOW, DRAIN);
    assert!(ledger.intend(&p.ops));
    // Killed after the kernel started it, before the ledger confirmed it.
    let mut kernel = bare();
    kernel
        .daemons
        .insert(SyncRole::Master, daemon(SyncRole::Master));
    ledger.settle(&kernel, &NodeState::default());
    assert_eq!(ledger.daemons, [SyncRole::Master].into());
    assert_eq!(
        commands(&plan(&NodeState::default(), &kernel, &ledger, NOW, DRAIN)),
        ["ipvsadm --stop-daemon master"]
    );
}

#[test]
fn a_vip_on_lo_that_clients_still_use_lingers_until_they_are_done_or_the_drain_timeout() {
    let want = real_server(&[reference()]);
    let (mut observed, mut ledger) = programmed(&want);
    let vip = ip("10.10.24.88");
    observed.connected.insert(vip);
    // No object wants it any more, and a client is still connected to it.
    let mut desired = Desired::default();
    assert_eq!(
        linger(&mut desired, &mut ledger, &observed, None, NOW, DRAIN),
        vec![vip]
    );
    assert_eq!(ledger.lingering.get(&vip), Some(&NOW));
    let kept = plan(&desired.state, &observed, &ledger, NOW, DRAIN);
    assert_eq!(
        commands(&kept),
        Vec::<String>::new(),
        "the VIP and the ARP sysctls stay"
    );
    // Past the drain timeout it goes, connection or not.
    let later = NOW + DRAIN;
    let mut desired = Desired::default();
    assert!(linger(&mut desired, &mut ledger, &observed, None, later, DRAIN).is_empty());
    let gone = plan(&desired.state, &observed, &ledger, later, DRAIN);
    assert!(
        commands(&gone).contains(&"ip addr del 10.10.24.88/32 dev lo".to_string()),
        "{:?}",
        commands(&gone)
    );
    // Once the client is done it goes at once.
    let (observed, mut ledger) = programmed(&want);
    let mut desired = Desired::default();
    assert!(linger(&mut desired, &mut ledger, &observed, None, NOW, DRAIN).is_empty());
    assert!(ledger.lingering.is_empty());
}

#[test]
fn a_vip_on_lo_whose_object_is_gone_does_not_linger_even_with_a_client_connected() {
    let want = real_server(&[reference()]);
    let (mut observed, mut ledger) = programmed(&want);
    let vip = ip("10.10.24.88");
    observed.connected.insert(vip);
    // The object still exists (this node left its selector): its director drains us, so we wait.
    let mut desired = Desired::default();
    let directed = BTreeSet::from([vip]);
    assert_eq!(
        linger(
            &mut desired,
            &mut ledger,
            &observed,
            Some(&directed),
            NOW,
            DRAIN
        ),
        vec![vip]
    );
    // The object is gone (deleted, or its VIP changed): no director sends its clients here.
    let mut desired = Desired::default();
    let none = BTreeSet::new();
    assert!(
        linger(
            &mut desired,
            &mut ledger,
            &observed,
            Some(&none),
            NOW,
            DRAIN
        )
        .is_empty()
    );
    assert!(ledger.lingering.is_empty());
    let gone = plan(&desired.state, &observed, &ledger, NOW, DRAIN);
    assert!(
        commands(&gone).contains(&"ip addr del 10.10.24.88/32 dev lo".to_string()),
        "{:?}",
        commands(&gone)
    );
}
