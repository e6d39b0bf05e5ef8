//! `LvsNodeReport`: what one node's agent did, for every LvsService it has a part in.
//!
//! Each agent writes exactly one object, its node's report (named after the node and owned by
//! the Node, so that deleting the Node deletes it), and nothing else: no LvsService status. A ValidatingAdmissionPolicy in the chart holds it to that (the
//! node comes from the agent's Pod-bound token, as NodeRestriction does for kubelets), so one
//! compromised node cannot rewrite what the directors program from. The controller reads every
//! report and aggregates the entries naming an object into that object's status: counts, the
//! active director, per-backend health, the nodes that lag or fail. An object's status thus
//! stays the size of its backends however many nodes report, and a change on one node rewrites
//! one small report instead of every object.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{NodeRole, NodeStatus, TakeoverStatus};

/// One node's account of every LvsService it has a part in, written by that node's agent only.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "lvs-operator.io",
    version = "v1alpha1",
    kind = "LvsNodeReport",
    plural = "lvsnodereports",
    shortname = "lvsreport",
    derive = "PartialEq",
    doc = "What one node's agent programmed for each LvsService, written by that agent alone."
)]
#[serde(rename_all = "camelCase")]
pub struct LvsNodeReportSpec {
    /// One entry per LvsService this node has a part in and something to say about beyond the
    /// short forms of `realServers` and `directors`: an error, a failing check, a takeover, a
    /// node that is both director and real server. Always written, empty or not: server-side
    /// apply takes an empty `spec` for none at all, which the schema refuses.
    #[serde(default)]
    #[schemars(length(max = 10000))]
    pub services: Vec<ServiceReport>,

    /// The LvsServices this node serves as a real server with everything in place (programmed,
    /// the VIP on `lo` and the ARP sysctls verified), one short string each:
    /// `namespace/name@generation#uid-prefix`. Kept apart so that a node selected by a thousand
    /// objects writes a report of tens of kilobytes, not hundreds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000))]
    pub real_servers: Vec<String>,

    /// The LvsServices this node directs with everything in place (programmed, no failing check),
    /// one short string each: `namespace/name@generation#uid-prefix`, then ` active MAC` on the
    /// director holding the VIP (MAC: its interface's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000))]
    pub directors: Vec<String>,

    /// The connection-sync daemons this node runs (`master eth0 syncid 0`, ...): the same for
    /// every object it directs, so said once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync: Vec<String>,

    /// The takeovers the active entries of `directors` name (` tN`: the Nth here), each said
    /// once however many VIPs it moved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000))]
    pub takeovers: Vec<TakeoverStatus>,
}

/// How many characters of an object's uid a short entry carries: enough to tell an object from
/// an earlier one of the same name.
const UID_PREFIX: usize = 8;

impl LvsNodeReportSpec {
    /// The report of `services` (one node's entries): each in its short form where it has one, the
    /// sync daemons said once.
    pub fn of(services: Vec<ServiceReport>) -> Self {
        let mut spec = Self::default();
        for mut s in services {
            if s.status.roles.contains(&NodeRole::Director) {
                let sync = std::mem::take(&mut s.status.sync);
                if spec.sync.is_empty() {
                    spec.sync = sync;
                }
            }
            let short = |uid: &str| {
                let uid: String = uid.chars().take(UID_PREFIX).collect();
                format!("{}@{}#{uid}", s.object, s.status.observed_generation)
            };
            let plain = NodeStatus {
                node: s.status.node.clone(),
                observed_generation: s.status.observed_generation,
                programmed: true,
                ..Default::default()
            };
            let real_server = NodeStatus {
                roles: vec![NodeRole::Backend],
                arp_verified: true,
                ..plain.clone()
            };
            let director = NodeStatus {
                roles: vec![NodeRole::Director],
                active: s.status.active,
                mac: s.status.mac.clone().filter(|_| s.status.active),
                takeover: s.status.takeover.clone().filter(|_| s.status.active),
                ..plain
            };
            if s.status == real_server {
                spec.real_servers.push(short(&s.uid));
            } else if s.status == director && (!director.active || director.mac.is_some()) {
                let mut entry = short(&s.uid);
                if let Some(mac) = &director.mac {
                    entry = format!("{entry} active {mac}");
                }
                if let Some(takeover) = director.takeover {
                    let n = match spec.takeovers.iter().position(|t| *t == takeover) {
                        Some(n) => n,
                        None => {
                            spec.takeovers.push(takeover);
                            spec.takeovers.len() - 1
                        }
                    };
                    entry = format!("{entry} t{n}");
                }
                spec.directors.push(entry);
            } else {
                spec.services.push(s);
            }
        }
        spec
    }
}

/// This node's part in one LvsService.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceReport {
    /// The LvsService, `namespace/name`.
    pub object: String,
    /// Its `metadata.uid`: an entry for an earlier object of the same name counts for nothing.
    pub uid: String,
    /// What this node did for it.
    pub status: NodeStatus,
}

/// One entry of a report as read back, whichever form it was written in.
#[derive(Clone, Debug, PartialEq, Hash)]
pub struct Entry {
    /// The LvsService, `namespace/name`.
    pub object: String,
    /// Its uid, or the first characters of it in a short entry.
    uid: String,
    short: bool,
    pub status: NodeStatus,
}

impl Entry {
    /// Whether this entry is about the object `object` with `uid`.
    pub fn names(&self, object: &str, uid: &str) -> bool {
        self.object == object
            && if self.short {
                uid.starts_with(&self.uid)
            } else {
                self.uid == uid
            }
    }

    /// A short entry, `namespace/name@generation#uid-prefix` and what follows (` active MAC`,
    /// then ` tN`: the Nth of `takeovers`).
    fn parse(
        text: &str,
        node: &str,
        status: NodeStatus,
        takeovers: &[TakeoverStatus],
    ) -> Option<Self> {
        let mut words = text.split(' ');
        let (object, rest) = words.next()?.rsplit_once('@')?;
        let (generation, uid) = rest.split_once('#')?;
        let mut status = NodeStatus {
            node: node.to_string(),
            observed_generation: generation.parse().ok()?,
            programmed: true,
            ..status
        };
        if words.next() == Some("active") {
            status.active = true;
            status.mac = words.next().map(str::to_string);
            let n = words
                .next()
                .and_then(|t| t.strip_prefix('t')?.parse::<usize>().ok());
            status.takeover = n.and_then(|n| takeovers.get(n).cloned());
        }
        Some(Self {
            object: object.to_string(),
            uid: uid.to_string(),
            short: true,
            status,
        })
    }
}

/// The object (`namespace/name`) of a short entry.
fn short_object(text: &str) -> Option<&str> {
    let (object, _) = text.split(' ').next()?.rsplit_once('@')?;
    Some(object)
}

/// Where an entry is in a report: which of its lists, at which index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    Service(usize),
    RealServer(usize),
    Director(usize),
}

impl LvsNodeReport {
    /// Every entry, with this report's node as each one's `node`.
    pub fn entries(&self) -> Vec<Entry> {
        let at = self.index().map(|(_, at)| at);
        at.filter_map(|at| self.entry_at(at)).collect()
    }

    /// The object (`namespace/name`) of every entry, and where the entry is, without reading
    /// the entries: a report of a thousand objects read whole for every change would be a
    /// thousand entries built each time.
    pub fn index(&self) -> impl Iterator<Item = (&str, At)> {
        let full = (self.spec.services.iter().enumerate())
            .map(|(i, s)| (s.object.as_str(), At::Service(i)));
        let real_servers = (self.spec.real_servers.iter().enumerate())
            .filter_map(|(i, e)| Some((short_object(e)?, At::RealServer(i))));
        let directors = (self.spec.directors.iter().enumerate())
            .filter_map(|(i, e)| Some((short_object(e)?, At::Director(i))));
        full.chain(real_servers).chain(directors)
    }

    /// The entry at `at`, with this report's node as its `node`.
    pub fn entry_at(&self, at: At) -> Option<Entry> {
        let node = self.metadata.name.as_deref().unwrap_or_default();
        let with_sync = |mut status: NodeStatus| {
            if status.roles.contains(&NodeRole::Director) && status.sync.is_empty() {
                status.sync.clone_from(&self.spec.sync);
            }
            status
        };
        match at {
            At::Service(i) => {
                let s = self.spec.services.get(i)?;
                Some(Entry {
                    object: s.object.clone(),
                    uid: s.uid.clone(),
                    short: false,
                    status: with_sync(NodeStatus {
                        node: node.to_string(),
                        ..s.status.clone()
                    }),
                })
            }
            At::RealServer(i) => {
                let real_server = NodeStatus {
                    roles: vec![NodeRole::Backend],
                    arp_verified: true,
                    ..Default::default()
                };
                Entry::parse(self.spec.real_servers.get(i)?, node, real_server, &[])
            }
            At::Director(i) => {
                let director = with_sync(NodeStatus {
                    roles: vec![NodeRole::Director],
                    ..Default::default()
                });
                let text = self.spec.directors.get(i)?;
                Entry::parse(text, node, director, &self.spec.takeovers)
            }
        }
    }

    /// The entry for the object `object` (`namespace/name`) with `uid`.
    pub fn entry(&self, object: &str, uid: &str) -> Option<NodeStatus> {
        let mut at = self.index().filter(|(o, _)| *o == object);
        let entry = at.find_map(|(_, at)| self.entry_at(at).filter(|e| e.names(object, uid)));
        entry.map(|e| e.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_report_still_has_a_spec_server_side_apply_keeps() {
        let empty = serde_json::to_value(LvsNodeReportSpec::of(Vec::new())).unwrap();
        assert_eq!(empty, serde_json::json!({"services": []}));
    }

    const UID: &str = "8c6f1a2b-0000-4000-8000-000000000000";

    fn report(entries: &[NodeStatus]) -> LvsNodeReport {
        let services = entries.iter().enumerate().map(|(i, status)| ServiceReport {
            object: format!("default/web-{i}"),
            uid: UID.into(),
            status: status.clone(),
        });
        LvsNodeReport::new("n1", LvsNodeReportSpec::of(services.collect()))
    }

    #[test]
    fn entries_with_everything_in_place_are_short_strings_and_read_back_the_same() {
        let real_server = NodeStatus {
            node: "n1".into(),
            roles: vec![NodeRole::Backend],
            observed_generation: 3,
            programmed: true,
            arp_verified: true,
            ..Default::default()
        };
        let sync = vec!["master eth0 syncid 0".to_string()];
        let standby = NodeStatus {
            roles: vec![NodeRole::Director],
            arp_verified: false,
            sync: sync.clone(),
            ..real_server.clone()
        };
        let active = NodeStatus {
            active: true,
            mac: Some("52:54:00:12:34:56".into()),
            takeover: Some(TakeoverStatus {
                from: Some("director-2".into()),
                silent_ms: Some(350),
                at: "2026-11-26T20:34:36Z".into(),
            }),
            ..standby.clone()
        };
        let failing = NodeStatus {
            arp_verified: false,
            error: Some("VIP not on lo".into()),
            ..real_server.clone()
        };
        let all = [real_server, standby, active, failing];
        let r = report(&all);
        assert_eq!(r.spec.real_servers, ["default/web-0@3#8c6f1a2b"]);
        assert_eq!(
            r.spec.directors,
            [
                "default/web-1@3#8c6f1a2b",
                "default/web-2@3#8c6f1a2b active 52:54:00:12:34:56 t0"
            ]
        );
        assert_eq!(r.spec.sync, sync);
        assert_eq!(r.spec.takeovers.len(), 1);
        assert_eq!(r.spec.services.len(), 1, "the failing one in full");
        assert!(r.spec.services[0].status.sync.is_empty());
        for (i, status) in all.iter().enumerate() {
            let object = format!("default/web-{i}");
            assert_eq!(r.entry(&object, UID).as_ref(), Some(status), "{object}");
            let by_prefix = r.entry(&object, "8c6f1a2b-but-another-uid");
            assert_eq!(
                by_prefix.is_some(),
                i < 3,
                "short entries match by uid prefix"
            );
            assert_eq!(r.entry(&object, "another-uid"), None);
        }
    }
}
