//! Which of several objects claiming the same VIP:port/protocol keeps it: one rule, applied by
//! the controller (which reports the loser) and by every agent (which never touches a node for
//! the loser, even before the controller has spoken).
//!
//! Claims are granted in the order given, which callers make oldest first
//! (`metadata.creationTimestamp`, then `namespace/name`). An object that finds one of its ports
//! taken loses all of them: an object is programmed whole or not at all, so a loser cannot keep a
//! third object out either.

use std::collections::BTreeMap;

use super::model::ServiceKey;
use super::service::VirtualService;

/// The port an object lost, and to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The id (`namespace/name`) of the object that keeps the port.
    pub winner: String,
    pub key: ServiceKey,
}

impl Conflict {
    /// The condition message users read.
    pub fn message(&self) -> String {
        format!(
            "{} is already claimed by {}, which is older",
            self.key, self.winner
        )
    }
}

/// For each service, in the order given (oldest first), the conflict that keeps it out, if any.
pub fn claims(services: &[&VirtualService]) -> Vec<Option<Conflict>> {
    let mut granted: BTreeMap<ServiceKey, &str> = BTreeMap::new();
    services
        .iter()
        .map(|s| {
            let lost = s
                .keys()
                .find_map(|k| granted.get(&k).map(|winner| (k, *winner)));
            match lost {
                Some((key, winner)) => Some(Conflict {
                    winner: winner.to_string(),
                    key,
                }),
                None => {
                    for key in s.keys() {
                        granted.insert(key, &s.id);
                    }
                    None
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Port, Protocol, Scheduler, ServiceConfig};

    fn svc(id: &str, ports: &[(Protocol, u16)]) -> VirtualService {
        let vip = "10.10.24.88".parse().unwrap();
        VirtualService {
            id: id.into(),
            vip,
            ports: ports
                .iter()
                .map(|&(protocol, port)| Port { protocol, port })
                .collect(),
            config: ServiceConfig::new(Scheduler::Rr, vip),
            backends: None,
            interface: None,
            health: None,
        }
    }

    #[test]
    fn the_older_object_keeps_a_port_and_the_loser_keeps_none_of_its_ports() {
        let old = svc("default/old", &[(Protocol::Tcp, 80)]);
        let new = svc("default/new", &[(Protocol::Tcp, 443), (Protocol::Tcp, 80)]);
        let third = svc("default/third", &[(Protocol::Tcp, 443)]);
        let verdicts = claims(&[&old, &new, &third]);
        assert_eq!(verdicts[0], None);
        let lost = verdicts[1].as_ref().unwrap();
        assert_eq!(
            lost.message(),
            "TCP 10.10.24.88:80 is already claimed by default/old, which is older"
        );
        assert_eq!(verdicts[2], None, "a loser keeps no third object out");
    }

    #[test]
    fn other_protocols_on_the_same_port_do_not_conflict() {
        let tcp = svc("a", &[(Protocol::Tcp, 53)]);
        let udp = svc("b", &[(Protocol::Udp, 53)]);
        assert_eq!(claims(&[&tcp, &udp]), vec![None, None]);
    }
}
