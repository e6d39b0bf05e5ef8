//! The cluster-wide controller (`lvs-operator controller`): resolves each LvsService's real
//! servers, settles VIP conflicts, and aggregates the agents' reports into conditions.
//!
//! It programs no kernel: the agents do, each on its node, from the objects and the status this
//! controller writes (`status.backends`, and the Accepted condition that gates programming).
//! Neighbours: [`reconcile`] (one object: apply / cleanup / error policy), [`backends`]
//! (resolution), [`conflicts`], [`conditions`] (pure status), [`events`], [`triggers`] (what
//! wakes which object), [`metrics`] and [`http`], [`leader`] (only the Lease holder runs).
//!
//! [`run`] wires it: a kube-runtime Controller on LvsServices in all namespaces, with reflected
//! watches on Nodes, EndpointSlices, the agents' LvsNodeReports and heartbeat Leases, the
//! LvsAddressPools and Namespaces (read by the reconciler from their caches), an HTTP server for
//! metrics and probes, and leader election around the Controller. The reports are aggregated into
//! each object's status ([`reconcile::with_reports`]); the pools admit VIPs and allocate them.

pub mod backends;
pub mod conditions;
pub mod conflicts;
pub mod error;
pub mod events;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod reports;
pub mod triggers;

#[cfg(test)]
pub mod fixtures;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::{StreamExt, future};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{Controller, WatchStreamExt, controller, reflector, watcher};
use tracing::{debug, info, warn};

use crate::api::{LvsAddressPool, LvsNodeReport, LvsService};
use backends::SERVICE_NAME_LABEL;
use reconcile::{Context, FIELD_MANAGER, Settings, Stores, error_policy};
use triggers::{
    HeartbeatChanges, NodeChanges, VipSiblings, all_services, services_for_service,
    services_for_slice,
};

use crate::watch;

pub use reconcile::{FINALIZER, reconcile};

/// Flags of `lvs-operator controller`.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Kubeconfig file to use. Default: in-cluster config, else $KUBECONFIG or ~/.kube/config.
    #[arg(long, env = "LVS_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "LVS_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    #[command(flatten)]
    pub metrics_security: crate::http::secure::MetricsSecurity,

    /// Run the controller only while holding the Lease, so several replicas can run
    /// (`--leader-election=false` to run it unconditionally, e.g. one replica on a host).
    #[arg(long, env = "LVS_LEADER_ELECTION", default_value_t = true,
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "lvs-operator")]
    pub lease_namespace: String,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "LVS_LEASE_NAME",
        default_value = "lvs-operator-controller"
    )]
    pub lease_name: String,

    /// This replica's identity in the Lease and in Events. Default: the host name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// How long a deleted LvsService waits for its agents to clean up before it goes anyway
    /// (a dead node must not block deletion forever).
    #[arg(long, env = "LVS_CLEANUP_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub cleanup_timeout: Duration,

    /// How long a node's agent may go without renewing its heartbeat Lease before the node counts
    /// as not reporting: its real servers get weight 0 and the object is Degraded.
    #[arg(long, env = "LVS_NODE_REPORT_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub node_report_timeout: Duration,
}

impl Options {
    fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| FIELD_MANAGER.to_string())
        })
    }
}

/// Runs the controller until SIGTERM or SIGINT.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let client = crate::kube_client::connect(opts.kubeconfig.as_deref()).await?;
    let identity = opts.identity();
    let metrics = metrics::Metrics::default();
    let health = crate::http::Health::default();
    let secure = opts.metrics_security.secure(&client, &identity)?;
    crate::http::serve(opts.metrics_addr, metrics.clone(), health.clone(), secure)
        .await
        .with_context(|| format!("binding the metrics address {}", opts.metrics_addr))?;

    Api::<LvsService>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await
        .context("listing LvsServices failed; is the CRD installed? (lvs-operator crd | kubectl apply -f -)")?;
    health.set_ready(true);

    let settings = Settings {
        cleanup_timeout: opts.cleanup_timeout,
        report_timeout: opts.node_report_timeout,
    };
    let work = || {
        run_controller(
            client.clone(),
            identity.clone(),
            opts.lease_namespace.clone(),
            metrics.clone(),
            settings.clone(),
        )
    };
    if opts.leader_election {
        let lease = leader::LeaseSettings {
            namespace: opts.lease_namespace.clone(),
            name: opts.lease_name.clone(),
            identity: identity.clone(),
            duration: 15,
            grace: 5,
        };
        leader::while_leader(
            client.clone(),
            lease,
            metrics.clone(),
            work,
            crate::shutdown::requested(),
        )
        .await
    } else {
        metrics.leader.set(1);
        tokio::select! {
            () = work() => warn!("the controller stopped"),
            () = crate::shutdown::requested() => {}
        }
        Ok(())
    }
}

/// Builds the Controller and runs it until its streams end (or the future is dropped). Every
/// watch recovers on its own (see `crate::watch`), so none waits behind another's backoff.
pub async fn run_controller(
    client: Client,
    identity: String,
    agent_namespace: String,
    metrics: metrics::Metrics,
    settings: Settings,
) {
    let services_api = Api::<LvsService>::all(client.clone());
    let (services, service_writer) = reflector::store::<LvsService>();
    let main = watch::resilient(
        services_api.clone(),
        watcher::Config::default(),
        "LvsServices",
    )
    .reflect(service_writer)
    .applied_objects();
    let controller = Controller::for_stream(main, services.clone())
        // Agents report one after another; a short debounce folds a burst into one reconcile and
        // lets the caches catch up with the event that triggered it. At most 8 reconciles at
        // once: a thousand objects whose nodes all just reported would otherwise send a thousand
        // status writes at the API server together; queued, an object's later triggers fold
        // into the one reconcile it is waiting for.
        .with_config(
            controller::Config::default()
                .debounce(Duration::from_millis(500))
                .concurrency(8),
        );

    let (nodes, node_writer) = reflector::store::<Node>();
    let mut node_changes = NodeChanges::default();
    let node_triggers = watch::resilient(
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        "Nodes",
    )
    .reflect(node_writer)
    .filter_map(move |event| {
        future::ready(event.ok().and_then(|e| node_changes.relevant(e)).map(Ok))
    });

    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let slice_triggers = watch::resilient(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(SERVICE_NAME_LABEL),
        "EndpointSlices",
    )
    .reflect(slice_writer)
    .touched_objects();

    let (k8s_services, k8s_service_writer) = reflector::store();
    // Metadata only: existence is all that is read, and a cluster may have many Services.
    let k8s_service_triggers = watch::resilient(
        Api::<PartialObjectMeta<Service>>::all(client.clone()),
        watcher::Config::default(),
        "Services",
    )
    .reflect(k8s_service_writer)
    .touched_objects();

    let (heartbeats, heartbeat_writer) = reflector::store::<Lease>();
    let heartbeats_blind = watch::Blind::default();
    let mut heartbeat_changes = HeartbeatChanges::new(settings.report_timeout);
    let heartbeat_triggers = watch::resilient_noting(
        Api::<Lease>::namespaced(client.clone(), &agent_namespace),
        watcher::Config::default().labels(crate::heartbeat::LABEL),
        "agent heartbeat Leases",
        heartbeats_blind.clone(),
    )
    .reflect(heartbeat_writer)
    .filter_map(move |event| {
        future::ready(
            event
                .ok()
                .and_then(|e| heartbeat_changes.relevant(e))
                .map(Ok),
        )
    });

    // A report wakes the objects it names now or named before.
    let (reports, report_writer) = reflector::store::<LvsNodeReport>();
    let report_triggers = watch::resilient(
        Api::<LvsNodeReport>::all(client.clone()),
        watcher::Config::default(),
        "LvsNodeReports",
    )
    .reflect(report_writer)
    .filter_map(|event| {
        // A deleted report reaches the index marked as deleted: every object it named wakes.
        future::ready(match event {
            Ok(watcher::Event::Apply(r) | watcher::Event::InitApply(r)) => Some(Ok(r)),
            Ok(watcher::Event::Delete(mut r)) => {
                r.metadata.deletion_timestamp.get_or_insert_with(|| {
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::now(),
                    )
                });
                Some(Ok(r))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => Some(Err(e)),
        })
    });

    // Pools and namespaces change rarely, and a change may admit or refuse any object.
    let (pools, pool_writer) = reflector::store::<LvsAddressPool>();
    let pool_triggers = watch::resilient(
        Api::<LvsAddressPool>::all(client.clone()),
        watcher::Config::default(),
        "LvsAddressPools",
    )
    .reflect(pool_writer)
    .touched_objects();
    let (namespaces, namespace_writer) = reflector::store();
    let namespace_triggers = watch::resilient(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default(),
        "Namespaces",
    )
    .reflect(namespace_writer)
    .touched_objects();

    let sibling_triggers = watch::resilient(
        services_api,
        watcher::Config::default(),
        "LvsService siblings",
    )
    .touched_objects();

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(identity),
        },
    );
    let ctx = Arc::new(Context::new(
        client,
        recorder,
        metrics,
        Stores {
            services: services.clone(),
            nodes,
            slices,
            k8s_services,
            heartbeats,
            heartbeats_blind,
            pools,
            namespaces,
            reports,
        },
        settings,
    ));

    let report_index = ctx.reports.clone();
    let (for_nodes, for_slices, for_siblings) =
        (services.clone(), services.clone(), services.clone());
    let (for_k8s_services, for_heartbeats) = (services.clone(), services.clone());
    let (for_pools, for_namespaces) = (services.clone(), services);
    let siblings = VipSiblings::default();
    info!("starting the LvsService controller");
    controller
        .watches_stream(node_triggers, move |_node| all_services(&for_nodes))
        .watches_stream(slice_triggers, move |slice| {
            services_for_slice(&for_slices.state(), &slice)
        })
        .watches_stream(sibling_triggers, move |object| {
            siblings.siblings(&for_siblings.state(), &object)
        })
        .watches_stream(k8s_service_triggers, move |service| {
            services_for_service(&for_k8s_services.state(), &service)
        })
        .watches_stream(heartbeat_triggers, move |_lease| {
            all_services(&for_heartbeats)
        })
        .watches_stream(report_triggers, move |report| report_index.changed(&report))
        .watches_stream(pool_triggers, move |_pool| all_services(&for_pools))
        .watches_stream(namespace_triggers, move |_ns| all_services(&for_namespaces))
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            match result {
                Ok((object, _)) => debug!(object = %object, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile did not complete"),
            }
            future::ready(())
        })
        .await;
}
