//! Leader election: of several controller replicas, only the holder of a Lease runs the
//! Controller, so two never write the same status.
//!
//! kube-lease-manager keeps trying to take the Lease and renews it while held, reporting changes
//! on a watch channel. [`while_leader`] starts the work when we become leader and drops it (which
//! stops its watches and reconciles) when we lose the Lease; it releases the Lease on shutdown so a
//! standby takes over without waiting for it to expire.

use std::future::Future;

use kube::Client;
use kube_lease_manager::{DurationSeconds, LeaseManagerBuilder};
use tracing::{info, warn};

use super::metrics::Metrics;

/// Where the Lease lives and who we are.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// Seconds a Lease stays valid after its last renewal.
    pub duration: DurationSeconds,
    /// Seconds before expiry at which the holder renews.
    pub grace: DurationSeconds,
}

/// Runs `work()` whenever this replica holds the Lease, until `shutdown` completes.
pub async fn while_leader<W, F>(
    client: Client,
    lease: LeaseSettings,
    metrics: Metrics,
    mut work: W,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    W: FnMut() -> F,
    F: Future<Output = ()>,
{
    let manager = LeaseManagerBuilder::new(client, &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(lease.duration)
        .with_grace(lease.grace)
        .build()
        .await?;
    let (mut leading, task) = manager.watch().await;
    tokio::pin!(shutdown);
    info!(lease = %format!("{}/{}", lease.namespace, lease.name), identity = %lease.identity, "waiting for the lease");

    'outer: loop {
        while !*leading.borrow_and_update() {
            tokio::select! {
                changed = leading.changed() => {
                    if changed.is_err() {
                        break 'outer;
                    }
                }
                () = &mut shutdown => break 'outer,
            }
        }
        info!(identity = %lease.identity, "leading: starting the controller");
        metrics.leader.set(1);
        let lost = async {
            loop {
                if leading.changed().await.is_err() || !*leading.borrow_and_update() {
                    return;
                }
            }
        };
        let stop = tokio::select! {
            () = work() => {
                warn!("the controller stopped by itself; starting it again while leading");
                false
            }
            () = lost => {
                warn!("lost the lease: stopping the controller");
                false
            }
            () = &mut shutdown => true,
        };
        metrics.leader.set(0);
        if stop {
            break;
        }
    }

    // Closing the channel makes the manager release the Lease and finish.
    drop(leading);
    match task.await {
        Ok(Ok(_)) => info!("released the lease"),
        Ok(Err(e)) => warn!(error = %e, "releasing the lease failed"),
        Err(e) => warn!(error = %e, "the lease task failed"),
    }
    Ok(())
}
