//! Test helpers: object builders and a mocked API server that asserts each request.
//!
//! [`ApiServerVerifier::run`] answers the requests of one scenario, in order, asserting the
//! method, path and body shape of each, and hands the request bodies back for closer checks. A
//! request the scenario does not expect gets no answer, so the reconcile under test hangs and the
//! test's timeout names it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeStatus as K8sNodeStatus, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::Value;
use tokio::task::JoinHandle;
use tower_test::mock::{self, Handle};

use super::backends::SERVICE_NAME_LABEL;
use super::metrics::Metrics;
use super::reconcile::{Context, FIELD_MANAGER, FINALIZER, Settings, Stores};
use crate::api::{
    Backend, LvsAddressPool, LvsAddressPoolSpec, LvsNodeReport, LvsNodeReportSpec, LvsService,
    LvsServiceSpec, LvsServiceStatus, NodeRole, NodeStatus, ServicePort, ServiceReport,
};

/// `default/<name>` on `vip`, port 80/TCP, one explicit backend 10.0.0.11.
pub fn lvs(name: &str, vip: &str) -> LvsService {
    let mut o = LvsService::new(
        name,
        LvsServiceSpec {
            vip: Some(vip.into()),
            ports: vec![ServicePort {
                port: 80,
                protocol: Default::default(),
            }],
            scheduler: Default::default(),
            scheduler_flags: None,
            persistence: None,
            backends: Some(vec![Backend {
                address: if vip.contains(':') {
                    "2001:db8::11".into()
                } else {
                    "10.0.0.11".into()
                },
                weight: 1,
            }]),
            backend_node_selector: None,
            backend_service: None,
            directors: None,
            health_check: None,
        },
    );
    o.metadata.namespace = Some("default".into());
    o.metadata.uid = Some(format!("uid-{name}"));
    o.metadata.generation = Some(1);
    o.metadata.creation_timestamp = Some(Time(Timestamp::from_second(1_700_000_000).unwrap()));
    o
}

/// `object` created `secs` seconds after a fixed epoch.
pub fn created_at(mut object: LvsService, secs: i64) -> LvsService {
    object.metadata.creation_timestamp =
        Some(Time(Timestamp::from_second(1_700_000_000 + secs).unwrap()));
    object
}

/// `object` with our finalizer.
pub fn finalized(mut object: LvsService) -> LvsService {
    object.finalizers_mut().push(FINALIZER.into());
    object
}

/// `object` deleted `ago` before now.
pub fn deleted(mut object: LvsService, ago: Duration) -> LvsService {
    let at = Timestamp::now() - ago;
    object.metadata.deletion_timestamp = Some(Time(at));
    object
}

/// `object` with these agent reports in `status.nodes`.
pub fn reported(mut object: LvsService, nodes: Vec<NodeStatus>) -> LvsService {
    object.status.get_or_insert_with(Default::default).nodes = nodes;
    object
}

/// A report of `node` at `generation`, programmed; builder methods set the rest.
pub fn report(node: &str, role: NodeRole, generation: i64) -> NodeStatus {
    NodeStatus {
        node: node.into(),
        roles: vec![role],
        observed_generation: generation,
        active: false,
        programmed: true,
        arp_verified: role == NodeRole::Backend,
        error: None,
        ..Default::default()
    }
}

/// A Node with one InternalIP and these labels.
pub fn node(name: &str, internal_ip: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: None,
        status: Some(K8sNodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "Hostname".into(),
                    address: name.into(),
                },
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: internal_ip.into(),
                },
            ]),
            ..Default::default()
        }),
    }
}

/// An EndpointSlice `name` of Service `service` in `namespace`.
pub fn slice(
    namespace: &str,
    service: &str,
    name: &str,
    address_type: &str,
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                SERVICE_NAME_LABEL.to_string(),
                service.to_string(),
            )])),
            ..Default::default()
        },
        address_type: address_type.into(),
        endpoints,
        ports: None,
    }
}

fn endpoint(
    address: &str,
    node: Option<&str>,
    ready: bool,
    serving: bool,
    terminating: bool,
) -> Endpoint {
    Endpoint {
        addresses: vec![address.into()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        node_name: node.map(String::from),
        ..Default::default()
    }
}

/// A ready endpoint.
pub fn ready(address: &str, node: Option<&str>) -> Endpoint {
    endpoint(address, node, true, true, false)
}

/// A terminating endpoint that still serves.
pub fn serving_terminating(address: &str, node: Option<&str>) -> Endpoint {
    endpoint(address, node, false, true, true)
}

/// An endpoint that does not serve.
pub fn not_serving(address: &str, node: Option<&str>) -> Endpoint {
    endpoint(address, node, false, false, false)
}

/// A ready store holding `objects`.
pub fn store<K>(objects: Vec<K>) -> Store<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, mut writer) = reflector::store::<K>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(o));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    reader
}

/// What the cluster holds besides the object under test.
#[derive(Default)]
pub struct World {
    pub services: Vec<LvsService>,
    pub nodes: Vec<Node>,
    pub slices: Vec<EndpointSlice>,
    pub k8s_services: Vec<PartialObjectMeta<Service>>,
    /// The agents' heartbeat Leases.
    pub heartbeats: Vec<Lease>,
    pub pools: Vec<LvsAddressPool>,
    /// The agents' reports (see [`reports_of`]).
    pub reports: Vec<LvsNodeReport>,
}

/// The reports the agents would write for the `status.nodes` entries the fixtures put in these
/// objects: one per node, an entry per object.
pub fn reports_of(objects: &[&LvsService]) -> Vec<LvsNodeReport> {
    let mut by_node: std::collections::BTreeMap<String, Vec<ServiceReport>> = Default::default();
    for o in objects {
        for n in o.status.iter().flat_map(|s| &s.nodes) {
            by_node
                .entry(n.node.clone())
                .or_default()
                .push(ServiceReport {
                    object: crate::api::validate::object_ref(o),
                    uid: o.metadata.uid.clone().unwrap_or_default(),
                    status: n.clone(),
                });
        }
    }
    by_node
        .into_iter()
        .map(|(node, services)| {
            LvsNodeReport::new(
                &node,
                LvsNodeReportSpec {
                    services,
                    ..Default::default()
                },
            )
        })
        .collect()
}

/// A pool admitting every namespace to every address.
pub fn open_pool() -> LvsAddressPool {
    LvsAddressPool::new(
        "everything",
        LvsAddressPoolSpec {
            addresses: vec!["0.0.0.0/0".into(), "::/0".into()],
            ..Default::default()
        },
    )
}

/// The heartbeat Lease of `node`, renewed now.
pub fn heartbeat(node: &str) -> Lease {
    let mut lease = Lease::default();
    lease.metadata.name = Some(crate::heartbeat::lease_name(node));
    lease.spec = Some(LeaseSpec {
        holder_identity: Some(node.into()),
        renew_time: Some(MicroTime(Timestamp::now())),
        ..Default::default()
    });
    lease
}

impl World {
    /// Directors d1 (10.0.0.1) and d2 (10.0.0.2), real server n1 (10.0.0.11).
    pub fn two_directors_one_backend() -> Self {
        Self {
            services: Vec::new(),
            nodes: vec![
                node("d1", "10.0.0.1", &[("lvs-operator.io/director", "true")]),
                node("d2", "10.0.0.2", &[("lvs-operator.io/director", "true")]),
                node("n1", "10.0.0.11", &[]),
            ],
            slices: Vec::new(),
            k8s_services: Vec::new(),
            heartbeats: ["d1", "d2", "n1"].into_iter().map(heartbeat).collect(),
            pools: vec![open_pool()],
            reports: Vec::new(),
        }
    }
}

/// A context whose client talks to the returned verifier.
pub fn test_context(world: World, settings: Settings) -> (Arc<Context>, ApiServerVerifier) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some("test".into()),
        },
    );
    let stores = Stores {
        services: store(world.services),
        nodes: store(world.nodes),
        slices: store(world.slices),
        k8s_services: store(world.k8s_services),
        heartbeats: store(world.heartbeats),
        heartbeats_blind: crate::watch::Blind::default(),
        pools: store(world.pools),
        namespaces: store(Vec::new()),
        reports: store(world.reports),
    };
    let ctx = Context::new(client, recorder, Metrics::default(), stores, settings);
    (Arc::new(ctx), ApiServerVerifier(handle))
}

/// One request a scenario expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// JSON patch adding our finalizer to the object.
    AddFinalizer,
    /// JSON patch removing our finalizer.
    RemoveFinalizer,
    /// Server-side apply of the status, as `lvs-operator-controller`, forced.
    ApplyStatus,
    /// An Event with this reason.
    Event(&'static str),
}

/// The request body of each call, in order.
pub type Bodies = Vec<Value>;

pub struct ApiServerVerifier(Handle<Request<Body>, Response<Body>>);

impl ApiServerVerifier {
    /// Answers `calls` in order for `object`, asserting each; returns the bodies.
    pub fn run(self, object: &LvsService, calls: Vec<Call>) -> JoinHandle<Bodies> {
        let mut handle = self.0;
        let object = object.clone();
        tokio::spawn(async move {
            let mut bodies = Vec::new();
            for call in calls {
                let (request, send) = handle
                    .next_request()
                    .await
                    .unwrap_or_else(|| panic!("expected {call:?}, but no request came"));
                let method = request.method().clone();
                let uri = request.uri().to_string();
                let content_type = request
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                let bytes = request.into_body().collect_bytes().await.unwrap();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let path = format!(
                    "/apis/lvs-operator.io/v1alpha1/namespaces/{}/lvsservices/{}",
                    object.namespace().unwrap(),
                    object.name_any()
                );
                let response = match &call {
                    Call::AddFinalizer => {
                        assert_eq!(method, Method::PATCH, "{call:?}: {uri}");
                        assert_eq!(uri, format!("{path}?"), "{call:?}");
                        assert_eq!(content_type, "application/json-patch+json");
                        let ops = body.as_array().expect("a JSON patch");
                        assert!(
                            ops.iter().any(|op| op["op"] == "add"
                                && (op["value"] == serde_json::json!([FINALIZER])
                                    || op["value"] == FINALIZER)),
                            "{body}"
                        );
                        serde_json::to_vec(&finalized(object.clone())).unwrap()
                    }
                    Call::RemoveFinalizer => {
                        assert_eq!(method, Method::PATCH, "{call:?}: {uri}");
                        assert_eq!(uri, format!("{path}?"), "{call:?}");
                        let ops = body.as_array().expect("a JSON patch");
                        assert!(ops.iter().any(|op| op["op"] == "remove"), "{body}");
                        let mut gone = object.clone();
                        gone.finalizers_mut().retain(|f| f != FINALIZER);
                        serde_json::to_vec(&gone).unwrap()
                    }
                    Call::ApplyStatus => {
                        assert_eq!(method, Method::PATCH, "{call:?}: {uri}");
                        assert!(uri.starts_with(&format!("{path}/status?")), "{uri}");
                        assert!(
                            uri.contains("fieldManager=lvs-operator-controller"),
                            "{uri}"
                        );
                        assert!(uri.contains("force=true"), "{uri}");
                        assert_eq!(content_type, "application/apply-patch+yaml");
                        assert_eq!(body["apiVersion"], "lvs-operator.io/v1alpha1");
                        assert_eq!(body["kind"], "LvsService");
                        assert!(
                            body["status"].get("nodes").is_none(),
                            "the controller never applies status.nodes: {body}"
                        );
                        let status: LvsServiceStatus =
                            serde_json::from_value(body["status"].clone()).unwrap();
                        let mut updated = object.clone();
                        updated.status = Some(status);
                        serde_json::to_vec(&updated).unwrap()
                    }
                    Call::Event(reason) => {
                        assert_eq!(method, Method::POST, "{call:?}: {uri}");
                        assert_eq!(
                            uri,
                            format!(
                                "/apis/events.k8s.io/v1/namespaces/{}/events?",
                                object.namespace().unwrap()
                            )
                        );
                        assert_eq!(body["reason"], *reason, "{body}");
                        assert_eq!(body["regarding"]["name"], object.name_any());
                        bytes.to_vec()
                    }
                };
                send.send_response(Response::builder().body(Body::from(response)).unwrap());
                bodies.push(body);
            }
            bodies
        })
    }
}

impl ApiServerVerifier {
    /// Answers the next request (the status patch of `object`) with an error `code`.
    pub fn fail(self, object: &LvsService, code: u16) -> JoinHandle<()> {
        let mut handle = self.0;
        let name = object.name_any();
        tokio::spawn(async move {
            let (request, send) = handle.next_request().await.expect("a request");
            assert!(request.uri().path().ends_with(&format!("/{name}/status")));
            let status = serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "etcd is having a bad day", "reason": "InternalError", "code": code,
            });
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&status).unwrap()))
                    .unwrap(),
            );
        })
    }
}

/// Awaits the verifier, failing the test if it does not finish within a second.
pub async fn verified(handle: JoinHandle<Bodies>) -> Bodies {
    tokio::time::timeout(Duration::from_secs(1), handle)
        .await
        .expect("the scenario's requests did not all arrive within 1 s")
        .expect("the verifier panicked")
}
