//! The agents' reports, indexed by the LvsService each entry names.
//!
//! Every node's report names every object the node has a part in: with a thousand objects and
//! fifty nodes, reading the reports afresh for each reconcile is fifty thousand entries parsed a
//! thousand times per change. The index parses a report once per version and answers "which
//! nodes report on this object" with one lookup per report; it also tells which objects a new
//! version of a report changed, so a write that changes one entry wakes one object.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::report::{At, Entry};
use crate::api::{LvsNodeReport, LvsService, NodeStatus};
use crate::fingerprint::fingerprint;

/// Where one version of a report holds each object's entries, by a hash of the object's
/// `namespace/name`: the entries themselves are read from the report when asked for (fifty
/// reports of a thousand entries each, kept read, were most of the controller's memory).
struct Parsed {
    version: Option<String>,
    at: HashMap<u64, Vec<At>>,
}

impl Parsed {
    fn of(report: &LvsNodeReport) -> Self {
        let mut at: HashMap<u64, Vec<At>> = HashMap::new();
        for (object, place) in report.index() {
            at.entry(key(object)).or_default().push(place);
        }
        Self {
            version: report.resource_version(),
            at,
        }
    }
}

fn key(object: &str) -> u64 {
    fingerprint(&object)
}

/// Reports indexed once per version, by node.
#[derive(Default)]
pub struct ReportIndex {
    /// For reading: the reports as the store holds them.
    read: Mutex<HashMap<String, Parsed>>,
    /// For waking: a digest of each object's entries in each report as its last event carried
    /// it (the store may already hold a newer version than the event being handled).
    seen: Mutex<HashMap<String, HashMap<String, u64>>>,
}

impl ReportIndex {
    /// The entries of `reports` that name `object` (`namespace/name`) with `uid`, each under
    /// the name of the node whose report holds it.
    pub fn nodes(
        &self,
        reports: &[Arc<LvsNodeReport>],
        object: &str,
        uid: &str,
    ) -> Vec<NodeStatus> {
        let mut read = self.read.lock().expect("never poisoned");
        if read.len() > reports.len() {
            let names: std::collections::HashSet<String> =
                reports.iter().map(|r| r.name_any()).collect();
            read.retain(|name, _| names.contains(name));
        }
        let wanted = key(object);
        let mut nodes = Vec::new();
        for report in reports {
            let parsed = read
                .entry(report.name_any())
                .or_insert_with(|| Parsed::of(report));
            if parsed.version != report.resource_version() {
                *parsed = Parsed::of(report);
            }
            let places = parsed.at.get(&wanted).into_iter().flatten();
            nodes.extend(
                places
                    .filter_map(|at| report.entry_at(*at))
                    .filter(|e| e.names(object, uid))
                    .map(|e| e.status),
            );
        }
        nodes
    }

    /// The objects whose entries `report` (a new version of it, or its deletion) changed.
    /// A report deleted (its watch event) comes with `deletionTimestamp` set.
    pub fn changed(&self, report: &LvsNodeReport) -> Vec<ObjectRef<LvsService>> {
        let mut now: HashMap<String, u64> = HashMap::new();
        if report.metadata.deletion_timestamp.is_none() {
            let mut by_object: HashMap<&str, Vec<Entry>> = HashMap::new();
            for (object, at) in report.index() {
                let entries = by_object.entry(object).or_default();
                entries.extend(report.entry_at(at));
            }
            now = (by_object.into_iter())
                .map(|(object, entries)| (object.to_string(), digest(&entries)))
                .collect();
        }
        let mut seen = self.seen.lock().expect("never poisoned");
        let before = seen.remove(&report.name_any()).unwrap_or_default();
        let mut ids: Vec<&String> = (now.iter())
            .filter(|(id, entries)| before.get(*id) != Some(entries))
            .map(|(id, _)| id)
            .chain(before.keys().filter(|id| !now.contains_key(*id)))
            .collect();
        ids.sort();
        ids.dedup();
        let changed = (ids.into_iter())
            .filter_map(|id| {
                let (ns, name) = id.split_once('/')?;
                Some(ObjectRef::new(name).within(ns))
            })
            .collect();
        if !now.is_empty() {
            seen.insert(report.name_any(), now);
        }
        changed
    }
}

fn digest(entries: &[Entry]) -> u64 {
    fingerprint(&entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{LvsNodeReportSpec, NodeRole, ServiceReport};

    fn report(node: &str, version: &str, generations: &[(&str, i64)]) -> LvsNodeReport {
        let services = generations
            .iter()
            .map(|(object, generation)| ServiceReport {
                object: format!("default/{object}"),
                uid: format!("uid-of-{object}"),
                status: NodeStatus {
                    node: node.into(),
                    roles: vec![NodeRole::Backend],
                    observed_generation: *generation,
                    programmed: true,
                    arp_verified: true,
                    ..Default::default()
                },
            });
        let mut r = LvsNodeReport::new(node, LvsNodeReportSpec::of(services.collect()));
        r.metadata.resource_version = Some(version.into());
        r
    }

    fn names(refs: Vec<ObjectRef<LvsService>>) -> Vec<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn a_new_version_wakes_only_the_objects_whose_entries_it_changed() {
        let index = ReportIndex::default();
        let first = report("rs1", "1", &[("a", 1), ("b", 1), ("c", 1)]);
        assert_eq!(names(index.changed(&first)), ["a", "b", "c"]);
        let second = report("rs1", "2", &[("a", 1), ("b", 2)]);
        assert_eq!(
            names(index.changed(&second)),
            ["b", "c"],
            "b moved on, c is gone"
        );
        let mut gone = second.clone();
        gone.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        assert_eq!(names(index.changed(&gone)), ["a", "b"]);
    }

    #[test]
    fn nodes_follow_each_reports_latest_version() {
        let index = ReportIndex::default();
        let rs1 = Arc::new(report("rs1", "1", &[("a", 1)]));
        let rs2 = Arc::new(report("rs2", "1", &[("a", 1), ("b", 1)]));
        let generations = |reports: &[Arc<LvsNodeReport>], object: &str| -> Vec<(String, i64)> {
            let uid = format!("uid-of-{object}");
            let nodes = index.nodes(reports, &format!("default/{object}"), &uid);
            nodes
                .into_iter()
                .map(|n| (n.node, n.observed_generation))
                .collect()
        };
        let both = [rs1.clone(), rs2.clone()];
        assert_eq!(
            generations(&both, "a"),
            [("rs1".into(), 1), ("rs2".into(), 1)]
        );
        assert_eq!(generations(&both, "b"), [("rs2".into(), 1)]);
        let rs1 = Arc::new(report("rs1", "2", &[("a", 2)]));
        assert_eq!(
            generations(&[rs1], "a"),
            [("rs1".into(), 2)],
            "rs2 gone, rs1 newer"
        );
        assert!(
            index.read.lock().unwrap().len() == 1,
            "a deleted report is forgotten"
        );
    }
}
