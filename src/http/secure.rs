//! `/metrics` behind the API server's authentication and authorization, the kubebuilder way:
//! HTTPS, and a scrape is served only when its bearer token passes a TokenReview and the user it
//! names may `get` the non-resource URL `/metrics` (a SubjectAccessReview), so Prometheus needs a
//! ClusterRole such as the chart's `metrics-reader`. `/healthz` and `/readyz` stay open (the
//! kubelet's probes carry no token). Verdicts are cached for a minute per token, so a scrape every
//! few seconds costs the API server two requests a minute.
//!
//! The certificate is the one in `--metrics-cert-dir` (`tls.crt`, `tls.key`), or else one made at
//! start, self-signed (Prometheus scrapes such endpoints with `insecure_skip_verify`, as it does
//! kubebuilder's).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Client;
use kube::api::{Api, PostParams};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tracing::{debug, warn};

use crate::fingerprint::fingerprint;

/// How long a verdict on a token is kept.
const ALLOWED_FOR: Duration = Duration::from_secs(60);
const REFUSED_FOR: Duration = Duration::from_secs(10);

/// The flags of secure `/metrics`, the controller's and the in-cluster agent's.
#[derive(clap::Args, Debug, Clone)]
pub struct MetricsSecurity {
    /// Serve /metrics over HTTPS, only to bearer tokens the API server authenticates and allows to
    /// get the non-resource URL /metrics (TokenReview + SubjectAccessReview).
    /// `--metrics-secure=false` serves it over plain HTTP to anyone who reaches the port.
    #[arg(long, env = "LVS_METRICS_SECURE", default_value_t = true,
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub metrics_secure: bool,
    /// A directory with tls.crt and tls.key for the secure /metrics; without it, a self-signed
    /// certificate is made at start.
    #[arg(long, env = "LVS_METRICS_CERT_DIR")]
    pub metrics_cert_dir: Option<std::path::PathBuf>,
}

impl MetricsSecurity {
    /// What `serve` needs, or `None` for plain HTTP. `name` goes into a self-signed certificate.
    pub fn secure(&self, client: &Client, name: &str) -> anyhow::Result<Option<Secure>> {
        if !self.metrics_secure {
            return Ok(None);
        }
        let names = vec![name.to_string(), "localhost".to_string()];
        Secure::new(client.clone(), self.metrics_cert_dir.as_deref(), names).map(Some)
    }
}

/// What the server needs to serve `/metrics` securely.
#[derive(Clone)]
pub struct Secure {
    pub tls: Arc<rustls::ServerConfig>,
    pub auth: Arc<Authorizer>,
}

impl Secure {
    /// TLS from `cert_dir`, or self-signed for `names`; authorization by the API server.
    pub fn new(
        client: Client,
        cert_dir: Option<&Path>,
        names: Vec<String>,
    ) -> anyhow::Result<Self> {
        let (certs, key) = match cert_dir {
            Some(dir) => {
                let certs = CertificateDer::pem_file_iter(dir.join("tls.crt"))
                    .and_then(|c| c.collect::<Result<Vec<_>, _>>())
                    .with_context(|| format!("reading {}", dir.join("tls.crt").display()))?;
                let key = PrivateKeyDer::from_pem_file(dir.join("tls.key"))
                    .with_context(|| format!("reading {}", dir.join("tls.key").display()))?;
                (certs, key)
            }
            None => {
                let made = rcgen::generate_simple_self_signed(names)
                    .context("making a self-signed certificate for /metrics")?;
                let key = PrivatePkcs8KeyDer::from(made.signing_key.serialize_der());
                (vec![made.cert.der().clone()], PrivateKeyDer::Pkcs8(key))
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("the /metrics certificate and key")?;
        Ok(Self {
            tls: Arc::new(tls),
            auth: Arc::new(Authorizer {
                client,
                verdicts: Mutex::default(),
            }),
        })
    }
}

/// A scrape's fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No token, or one the API server does not know: 401.
    Unauthenticated(String),
    /// A known user without `get` on `/metrics`: 403.
    Forbidden(String),
}

/// Asks the API server about bearer tokens, and remembers its answers for a while.
pub struct Authorizer {
    client: Client,
    verdicts: Mutex<HashMap<u64, (Instant, Verdict)>>,
}

impl Authorizer {
    /// The verdict on a request with this `Authorization` header.
    pub async fn check(&self, authorization: Option<&str>) -> Verdict {
        let Some(token) = authorization.and_then(|h| h.strip_prefix("Bearer ")) else {
            return Verdict::Unauthenticated("a bearer token is required".into());
        };
        let key = fingerprint(&token);
        if let Some((at, verdict)) = self.verdicts.lock().expect("never poisoned").get(&key) {
            let keep = if *verdict == Verdict::Allowed {
                ALLOWED_FOR
            } else {
                REFUSED_FOR
            };
            if at.elapsed() < keep {
                return verdict.clone();
            }
        }
        let verdict = match self.review(token).await {
            Ok(v) => v,
            Err(e) => {
                // Not cached: the next scrape asks again.
                warn!("reviewing a /metrics token: {e}");
                return Verdict::Unauthenticated(format!(
                    "the API server could not review the token: {e}"
                ));
            }
        };
        debug!(?verdict, "/metrics token reviewed");
        let mut verdicts = self.verdicts.lock().expect("never poisoned");
        verdicts.retain(|_, (at, _)| at.elapsed() < ALLOWED_FOR);
        verdicts.insert(key, (Instant::now(), verdict.clone()));
        verdict
    }

    async fn review(&self, token: &str) -> kube::Result<Verdict> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let status = reviewed.status.unwrap_or_default();
        let Some(user) = status.user.filter(|_| status.authenticated == Some(true)) else {
            return Ok(Verdict::Unauthenticated(
                status
                    .error
                    .unwrap_or_else(|| "the token is not valid".into()),
            ));
        };
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                uid: user.uid.clone(),
                groups: user.groups.clone(),
                extra: user.extra.clone(),
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some("/metrics".into()),
                    verb: Some("get".into()),
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let decided = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access)
            .await?;
        let allowed = decided.status.as_ref().is_some_and(|s| s.allowed);
        Ok(if allowed {
            Verdict::Allowed
        } else {
            Verdict::Forbidden(format!(
                "{} may not get /metrics: bind it to a ClusterRole allowing that non-resource URL (the chart's metrics-reader)",
                user.username.unwrap_or_default()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::{Value, json};
    use tower_test::mock;

    /// An API server that knows one token, `good` (user `prometheus`, allowed) and `nosy`
    /// (user `nosy`, not allowed); counts the requests it gets.
    fn api_server() -> (Client, tokio::task::JoinHandle<usize>) {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let served = tokio::spawn(async move {
            let mut requests = 0;
            while let Some((request, send)) = handle.next_request().await {
                requests += 1;
                let uri = request.uri().path().to_string();
                let bytes = request.into_body().collect_bytes().await.unwrap();
                let body: Value = serde_json::from_slice(&bytes).unwrap();
                let reply = if uri.ends_with("/tokenreviews") {
                    let user = match body["spec"]["token"].as_str() {
                        Some("good") => Some("prometheus"),
                        Some("nosy") => Some("nosy"),
                        _ => None,
                    };
                    let mut reply = body.clone();
                    reply["status"] = match user {
                        Some(u) => json!({"authenticated": true, "user": {"username": u}}),
                        None => json!({"authenticated": false, "error": "token not found"}),
                    };
                    reply
                } else {
                    assert!(uri.ends_with("/subjectaccessreviews"), "{uri}");
                    assert_eq!(body["spec"]["nonResourceAttributes"]["path"], "/metrics");
                    let allowed = body["spec"]["user"] == "prometheus";
                    let mut reply = body.clone();
                    reply["status"] = json!({"allowed": allowed});
                    reply
                };
                send.send_response(
                    Response::builder()
                        .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                        .unwrap(),
                );
            }
            requests
        });
        (client, served)
    }

    #[tokio::test]
    async fn a_scrape_needs_a_token_the_api_server_knows_and_allows() {
        let (client, served) = api_server();
        let auth = Authorizer {
            client,
            verdicts: Mutex::default(),
        };
        assert!(matches!(
            auth.check(None).await,
            Verdict::Unauthenticated(_)
        ));
        assert_eq!(
            auth.check(Some("Bearer forged")).await,
            Verdict::Unauthenticated("token not found".into())
        );
        assert!(matches!(
            auth.check(Some("Bearer nosy")).await,
            Verdict::Forbidden(m) if m.starts_with("nosy may not get /metrics")
        ));
        assert_eq!(auth.check(Some("Bearer good")).await, Verdict::Allowed);
        // Asked again within the minute: from the cache, no request.
        assert_eq!(auth.check(Some("Bearer good")).await, Verdict::Allowed);
        drop(auth);
        // forged: 1 review; nosy: 2; good: 2 (the second check is cached).
        assert_eq!(served.await.unwrap(), 5);
    }
}
