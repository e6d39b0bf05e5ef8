//! What the in-cluster agent reports: its node's `LvsNodeReport` (one object, named after the
//! node, with an entry per LvsService it has a part in), written with server-side apply only
//! when it changed. The controller aggregates the reports into each object's status; the agent
//! writes nothing else.
//!
//! The writes run in their own task ([`Reporter`]): the resync loop hands it what each object's
//! entry should be and goes on, so a slow or absent API server never delays the data plane (a
//! takeover waits for no status write). The task writes the latest wish, skips what it already
//! wrote, and retries every second while the API server refuses. A change after a quiet spell
//! is written at once; a burst (a thousand objects applied together) is written when it pauses
//! for three seconds (or every thirty while it goes on), so it costs a node a few writes, not
//! one per object.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Agent, Object};
use crate::agent::converge::Resynced;
use crate::agent::metrics::AgentMetrics;
use crate::agent::roles::{DirectorReport, Roles, node_status};
use crate::api::{LvsNodeReport, LvsNodeReportSpec, NodeStatus, ServiceReport, TakeoverStatus};
use crate::core::selfcheck;

/// One object's entry of this node's report, as the last resync wants it.
#[derive(Clone, PartialEq)]
pub(super) struct Wanted {
    id: String,
    uid: String,
    /// Keep whatever was written last (the node's state for the object is not gone yet).
    keep: bool,
    /// `None`: no entry.
    entry: Option<NodeStatus>,
}

/// What the last resync wants the report to say, numbered; with the Node's uid, its owner.
#[derive(Clone, Default)]
struct Wish {
    seq: u64,
    wanted: Vec<Wanted>,
    node_uid: Option<String>,
    /// The agent is stopping: write it now, burst or not.
    now: bool,
}

/// The task that writes this node's report.
pub(super) struct Reporter {
    /// The latest wish, numbered.
    wanted: watch::Sender<Wish>,
    /// The number of the last wish written in full.
    written: watch::Receiver<u64>,
    task: AbortHandle,
}

/// How long the writer waits before trying again after the API server refused a write.
const RETRY: Duration = Duration::from_secs(1);

/// A change this soon after the last write is part of a burst, written when the burst pauses;
/// a change after a longer quiet spell is written at once.
const STORM: Duration = Duration::from_secs(10);

/// How long a burst of changes must pause before it is written: longer than a resync waits for
/// more changes while they keep coming (a second), so that a thousand objects changing over a
/// minute cost a node a few writes, not one per resync.
const QUIET: Duration = Duration::from_secs(3);

/// The longest a change waits while a burst goes on: a minute, so that a thousand objects applied
/// one by one (about a minute for kubectl on a busy API server) cost each node two writes, one as
/// the burst starts and one when it is over. Liveness is the heartbeat Lease's business, not
/// this report's.
const BURST: Duration = Duration::from_secs(60);

/// Waits for the wishes to pause for [`QUIET`], or [`BURST`] at most. False when the agent is
/// gone.
async fn settle(rx: &mut watch::Receiver<Wish>) -> bool {
    let give_up = Instant::now() + BURST;
    loop {
        match tokio::time::timeout(QUIET, rx.changed()).await {
            Err(_quiet) => return true,
            Ok(Err(_gone)) => return false,
            Ok(Ok(())) if Instant::now() >= give_up || rx.borrow().now => return true,
            Ok(Ok(())) => {}
        }
    }
}

impl Reporter {
    pub(super) fn start(
        client: Client,
        node: String,
        manager: String,
        metrics: AgentMetrics,
    ) -> Self {
        let (wanted, mut rx) = watch::channel(Wish::default());
        let (done, written_rx) = watch::channel(0);
        let task = tokio::spawn(async move {
            // What the report holds, as this run last wrote it (nothing yet: the first wish is
            // written whatever an earlier run left).
            let mut written: Option<Vec<ServiceReport>> = None;
            let mut written_owner: Option<String> = None;
            let mut failing = false;
            let mut last_write: Option<Instant> = None;
            loop {
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(RETRY), if failing => {}
                }
                // A change after a quiet spell is written at once; one close behind a write
                // is part of a burst, written when it pauses.
                if last_write.is_some_and(|at| at.elapsed() < STORM)
                    && !rx.borrow().now
                    && !settle(&mut rx).await
                {
                    return;
                }
                let Wish {
                    seq,
                    wanted: now,
                    node_uid,
                    ..
                } = rx.borrow_and_update().clone();
                let services: Vec<ServiceReport> = now
                    .into_iter()
                    .filter_map(|w| {
                        let status = if w.keep {
                            let mut last = written.iter().flatten();
                            last.find(|s| s.object == w.id).map(|s| s.status.clone())
                        } else {
                            w.entry
                        }?;
                        Some(ServiceReport {
                            object: w.id,
                            uid: w.uid,
                            status,
                        })
                    })
                    .collect();
                if written.as_ref() != Some(&services) || written_owner != node_uid {
                    match apply(&client, &node, node_uid.as_deref(), &manager, &services).await {
                        Ok(()) => {
                            debug!("reported {} entries", services.len());
                            if failing {
                                info!("reporting status works again");
                            }
                            failing = false;
                            written = Some(services);
                            written_owner = node_uid;
                            last_write = Some(Instant::now());
                        }
                        Err(e) => {
                            metrics.error("report");
                            if !failing {
                                warn!("writing the LvsNodeReport {node}: {e}; retrying every {RETRY:?}");
                            }
                            failing = true;
                        }
                    }
                }
                if !failing {
                    done.send_replace(seq);
                }
            }
        })
        .abort_handle();
        Self {
            wanted,
            written: written_rx,
            task,
        }
    }

    /// A new wish, when it differs from the last: every resync hands one over, and a director
    /// resyncs at every change of its peers, so that identical wishes would keep a burst from
    /// ever pausing.
    fn want(&self, wanted: Vec<Wanted>, node_uid: Option<String>) {
        self.wanted.send_if_modified(|wish| {
            // The first is sent whatever it says: it replaces what an earlier run left.
            if wish.seq > 0 && wish.wanted == wanted && wish.node_uid == node_uid {
                return false;
            }
            wish.seq += 1;
            wish.wanted = wanted;
            wish.node_uid = node_uid;
            true
        });
    }

    /// Waits (at most `limit`) until the latest wish is written: a stopping agent's last word.
    pub(super) async fn flush(&mut self, limit: Duration) {
        self.wanted.send_modify(|wish| wish.now = true);
        let seq = self.wanted.borrow().seq;
        let caught_up = self.written.wait_for(|w| *w >= seq);
        if tokio::time::timeout(limit, caught_up).await.is_err() {
            debug!("the last status report was not written within {limit:?}");
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Applies this node's report: every entry, under the agent's field manager, owned by the Node
/// (when its uid is known) so that deleting the Node deletes its report.
async fn apply(
    client: &Client,
    node: &str,
    node_uid: Option<&str>,
    manager: &str,
    services: &[ServiceReport],
) -> kube::Result<()> {
    let api: Api<LvsNodeReport> = Api::all(client.clone());
    let patch = serde_json::json!({
        "apiVersion": "lvs-operator.io/v1alpha1",
        "kind": "LvsNodeReport",
        "metadata": {
            "name": node,
            "ownerReferences": node_uid.map(|uid| vec![serde_json::json!({
                "apiVersion": "v1", "kind": "Node", "name": node, "uid": uid,
            })]).unwrap_or_default(),
        },
        "spec": LvsNodeReportSpec::of(services.to_vec()),
    });
    api.patch(
        node,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

impl Agent {
    /// Hands the writer this node's entry of every object, and no entry for the objects it no
    /// longer has a part in (only once its state there is really gone: the controller's finalizer
    /// waits for that).
    pub(super) fn report(
        &self,
        objects: &[Object],
        roles: &[Roles],
        r: &Resynced,
        macs: &BTreeMap<IpAddr, String>,
        foreign: &BTreeMap<IpAddr, Vec<String>>,
    ) {
        let mut wanted = Vec::with_capacity(objects.len());
        let own_setup = selfcheck::SelfCheck::new(&r.after, &r.after.listeners);
        for (o, role) in objects.iter().zip(roles) {
            let vip = o.service().map(|s| s.vip);
            let holds = vip.is_some_and(|v| self.ha.holds(v));
            let selfcheck = o
                .service()
                .filter(|_| role.real_server)
                .and_then(|s| own_setup.verify(s));
            let checks = match o.service() {
                Some(s) if role.director => {
                    passing_on_nodes_dropped(&o.object, self.checks.reports(&s.id))
                }
                _ => Vec::new(),
            };
            let director = DirectorReport {
                holds_vip: holds,
                checks,
                mac: vip.and_then(|v| macs.get(&v).cloned()),
                takeover: vip
                    .and_then(|v| self.ha.takeover(v))
                    .map(|t| TakeoverStatus {
                        from: t.from.clone(),
                        silent_ms: t
                            .silent_for
                            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                        at: humantime::format_rfc3339_seconds(t.at).to_string(),
                    }),
                foreign_holders: vip
                    .and_then(|v| foreign.get(&v).cloned())
                    .unwrap_or_default(),
                unreachable_peers: vip
                    .map(|v| {
                        let peers = self.ha.peer_reports(v);
                        peers
                            .into_iter()
                            .filter(|p| !p.alive)
                            .map(|p| p.node)
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            let entry = node_status(&o.object, &self.opts.node, *role, r, director, selfcheck);
            // Not gone yet: keep the entry until the removal succeeds, and, for an object being
            // deleted, while its VIP lingers on lo for clients still connected (its finalizer
            // waits for both).
            let deleted = o.object.metadata.deletion_timestamp.is_some();
            let lingers = deleted && o.service().is_some_and(|s| r.lingering.contains(&s.vip));
            let keep = entry.is_none() && (!r.converged.failed.is_empty() || lingers);
            wanted.push(Wanted {
                id: o.derived.id.clone(),
                uid: o.object.metadata.uid.clone().unwrap_or_default(),
                keep,
                entry,
            });
        }
        let node_uid = (self.nodes)
            .get(&kube::runtime::reflector::ObjectRef::new(&self.opts.node))
            .and_then(|n| n.metadata.uid.clone());
        self.reporter.want(wanted, node_uid);
    }
}

/// The checks worth reporting: a passing check of a real server on a node says nothing the
/// controller does not take for granted (its node's own verification stands), and a thousand
/// objects with fifty real servers each would make a report of megabytes.
fn passing_on_nodes_dropped(
    object: &crate::api::LvsService,
    checks: Vec<crate::api::RealServerCheck>,
) -> Vec<crate::api::RealServerCheck> {
    let on_nodes: std::collections::HashSet<&str> = (object.status.iter())
        .flat_map(|s| &s.backends)
        .filter(|b| b.node.is_some())
        .map(|b| b.address.as_str())
        .collect();
    checks
        .into_iter()
        .filter(|c| !c.healthy || !on_nodes.contains(c.address.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;
    use tower_test::mock;

    /// An API server that answers every report write with what it was sent, and tells the
    /// test when each write came.
    fn api_server() -> (Client, tokio::sync::mpsc::UnboundedReceiver<Instant>) {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let bytes = request.into_body().collect_bytes().await.unwrap();
                let _ = tx.send(Instant::now());
                send.send_response(
                    Response::builder()
                        .body(Body::from(bytes.to_vec()))
                        .unwrap(),
                );
            }
        });
        (Client::new(service, "default"), rx)
    }

    fn wish(generation: i64) -> Vec<Wanted> {
        vec![Wanted {
            id: "default/web".into(),
            uid: "u1".into(),
            keep: false,
            entry: Some(NodeStatus {
                node: "rs1".into(),
                observed_generation: generation,
                ..Default::default()
            }),
        }]
    }

    #[tokio::test]
    async fn a_change_behind_a_write_waits_for_the_burst_to_pause_but_not_when_stopping() {
        let (client, mut writes) = api_server();
        let metrics = AgentMetrics::new(|_| {});
        let mut reporter = Reporter::start(client, "rs1".into(), "test".into(), metrics);
        reporter.want(wish(1), None);
        let first = tokio::time::timeout(Duration::from_secs(2), writes.recv()).await;
        assert!(first.is_ok(), "the first wish is written at once");
        reporter.want(wish(2), None);
        let soon = tokio::time::timeout(Duration::from_secs(1), writes.recv()).await;
        assert!(
            soon.is_err(),
            "a change close behind a write waits for a pause"
        );
        let asked = Instant::now();
        reporter.flush(Duration::from_secs(2)).await;
        let written = writes
            .try_recv()
            .expect("flushed while the burst had not paused");
        assert!(written - asked < QUIET, "written at once when stopping");
    }
}
