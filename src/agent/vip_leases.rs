//! The API server's record of which director holds each VIP, in a cluster: one Lease per VIP,
//! `lvs-vip-10-10-24-88` in the agents' namespace, annotated with the VIP.
//!
//! The directors decide among themselves who holds a VIP (`crate::ha`); the Lease arbitrates
//! what they cannot see. A director that takes a VIP writes the Lease (one write per takeover,
//! none while nothing changes: liveness is the heartbeats' job, not the Lease's), and a director
//! that holds a VIP whose Lease another director took lets go: when two directors cannot hear
//! each other but both reach the API server, the later taker wins and there is one holder. Where
//! the API server cannot be reached the takeover happens anyway and the Lease is written once it
//! can be.

use std::net::IpAddr;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};

use super::roles::{LEASE_PREFIX, lease_name};

/// The VIP a Lease is for.
pub const VIP_ANNOTATION: &str = "lvs-operator.io/vip";
/// Every agent writes the VIP Leases under this one field manager, so a takeover needs no
/// conflict resolution: the last writer holds the Lease.
const MANAGER: &str = "lvs-operator-agent-vip";

/// Records that `node` holds `vip` from now on.
pub async fn claim(client: &Client, namespace: &str, vip: IpAddr, node: &str) -> kube::Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let name = lease_name(vip);
    let now = MicroTime(Timestamp::now());
    let patch = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "annotations": {VIP_ANNOTATION: vip.to_string()}},
        "spec": {"holderIdentity": node, "acquireTime": now, "renewTime": now},
    });
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// The VIP of a VIP Lease and the director it names. Leases of older agents, written without
/// the annotation, are recognised by their name.
pub fn holder(lease: &Lease, vips: &[IpAddr]) -> Option<(IpAddr, String)> {
    // Most Leases here are heartbeats: recognised by their name before any VIP is formatted.
    if !lease.name_any().starts_with(LEASE_PREFIX) {
        return None;
    }
    let holder = lease.spec.as_ref()?.holder_identity.clone()?;
    let vip = match lease.annotations().get(VIP_ANNOTATION) {
        Some(text) => text.parse().ok()?,
        None => *vips.iter().find(|v| lease_name(**v) == lease.name_any())?,
    };
    (lease.name_any() == lease_name(vip)).then_some((vip, holder))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::coordination::v1::LeaseSpec;

    use super::*;

    fn lease(name: &str, vip: Option<&str>, holder: &str) -> Lease {
        let mut l = Lease::default();
        l.metadata.name = Some(name.into());
        if let Some(vip) = vip {
            l.metadata.annotations = Some([(VIP_ANNOTATION.into(), vip.into())].into());
        }
        l.spec = Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            ..Default::default()
        });
        l
    }

    #[test]
    fn a_vip_lease_names_its_vip_and_holder_and_an_old_one_is_known_by_its_name() {
        let vip: IpAddr = "10.10.24.88".parse().unwrap();
        assert_eq!(
            holder(
                &lease("lvs-vip-10-10-24-88", Some("10.10.24.88"), "d2"),
                &[]
            ),
            Some((vip, "d2".into()))
        );
        assert_eq!(
            holder(&lease("lvs-vip-10-10-24-88", None, "d1"), &[vip]),
            Some((vip, "d1".into()))
        );
        // Another Lease (a heartbeat), or an annotation that does not match the name.
        assert_eq!(holder(&lease("lvs-agent-d1", None, "d1"), &[vip]), None);
        assert_eq!(
            holder(
                &lease("lvs-vip-10-10-24-89", Some("10.10.24.88"), "d1"),
                &[]
            ),
            None
        );
    }
}
