//! Agent heartbeats: how the controller tells a silent node from an idle one.
//!
//! Agents write their node's entry of an object's status only when it changes, so a node whose
//! agent died looks exactly like a node with nothing new to say. Each agent therefore renews one
//! Lease of its own, `lvs-agent-NODE` in its namespace, every [`PERIOD`] by default (as the kubelet
//! renews its node Lease): one API write per node per 10 s, whatever the number of objects. The
//! controller watches these Leases and counts a node whose Lease is older than its report
//! deadline (30 s by default, three periods: one late renewal is no silence) as not reporting.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};

/// How often an agent renews its heartbeat, unless told otherwise (`--heartbeat-period`).
pub const PERIOD: Duration = Duration::from_secs(10);
/// The label every heartbeat Lease carries, for the controller's watch.
pub const LABEL: &str = "lvs-operator.io/heartbeat";
/// On the heartbeat of an agent that may direct some VIP: where its director heartbeats go
/// (`10.10.24.10:7408`), so the other directors find it (see `crate::ha`).
pub const PEER_ANNOTATION: &str = "lvs-operator.io/peer";

/// The heartbeat Lease of `node`.
pub fn lease_name(node: &str) -> String {
    format!("lvs-agent-{node}")
}

/// Renews `node`'s heartbeat now (server-side apply, field manager `lvs-operator-agent-NODE`);
/// `period` is how often it does, written as a third of the Lease's duration. `peer` is where a
/// director receives its peers' heartbeats (none when the node directs nothing).
pub async fn renew(
    client: &Client,
    namespace: &str,
    node: &str,
    period: Duration,
    peer: Option<std::net::SocketAddr>,
) -> kube::Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let name = lease_name(node);
    let annotations: serde_json::Map<String, serde_json::Value> = peer
        .map(|p| (PEER_ANNOTATION.to_string(), p.to_string().into()))
        .into_iter()
        .collect();
    let patch = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "labels": {LABEL: "agent"}, "annotations": annotations},
        "spec": {
            "holderIdentity": node,
            "leaseDurationSeconds": (period.as_secs() * 3).max(1),
            "renewTime": MicroTime(Timestamp::now()),
        },
    });
    let manager = format!("lvs-operator-agent-{node}");
    api.patch(
        &name,
        &PatchParams::apply(&manager).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// The node of a heartbeat Lease and where its director heartbeats go, when it directs.
pub fn peer(lease: &Lease) -> Option<(String, std::net::SocketAddr)> {
    let (node, _) = read(lease)?;
    let addr = lease.annotations().get(PEER_ANNOTATION)?.parse().ok()?;
    Some((node, addr))
}

/// The node a heartbeat Lease speaks for, and when it last renewed.
pub fn read(lease: &Lease) -> Option<(String, Timestamp)> {
    let spec = lease.spec.as_ref()?;
    let node = spec.holder_identity.clone()?;
    if lease.name_any() != lease_name(&node) {
        return None;
    }
    Some((node, spec.renew_time.as_ref()?.0))
}

/// When the controller counts `node`'s agent as last heard of: when it renewed its heartbeat,
/// or, for a node still heard of when the controller's watch of the heartbeats went blind
/// (`blind`: the first and the last failure of the watch's latest outage), the end of that
/// blindness, whichever is later. An API outage stops the agents' renewals as it stops the
/// watch, so its end must not read as every node going silent at once (their real servers
/// would get weight 0 until each agent renewed); a node already silent before it stays so.
pub fn heard(
    renewed: Timestamp,
    blind: Option<(Timestamp, Timestamp)>,
    timeout: Duration,
) -> Timestamp {
    match blind {
        Some((began, ended)) if ended > renewed => {
            let alive_when_blind = Duration::try_from(began.duration_since(renewed))
                .map_or(true, |age| age <= timeout);
            if alive_when_blind { ended } else { renewed }
        }
        _ => renewed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_000_000 + s).unwrap()
    }

    const TIMEOUT: Duration = Duration::from_secs(30);

    #[test]
    fn a_node_renewing_before_an_outage_is_heard_of_until_its_end() {
        // Renewed at 0, the watch failed from 5 to 40: heard of at 40, not 0.
        assert_eq!(heard(at(0), Some((at(5), at(40))), TIMEOUT), at(40));
    }

    #[test]
    fn a_node_silent_before_the_outage_stays_silent() {
        // Renewed at 0, silent by 30; the outage came at 50.
        assert_eq!(heard(at(0), Some((at(50), at(90))), TIMEOUT), at(0));
    }

    #[test]
    fn a_renewal_after_the_outage_counts_as_it_is() {
        assert_eq!(heard(at(100), Some((at(5), at(40))), TIMEOUT), at(100));
        assert_eq!(heard(at(7), None, TIMEOUT), at(7));
    }
}
