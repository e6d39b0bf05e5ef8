//! The Kubernetes client both the controller and the in-cluster agent use.

use anyhow::Context;
use kube::Client;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};

/// A client from `--kubeconfig`, or inferred (in-cluster, then $KUBECONFIG / ~/.kube/config).
pub async fn connect(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None => Config::infer()
            .await
            .context("no in-cluster config and no kubeconfig found")?,
    };
    Client::try_from(config).context("building the Kubernetes client")
}
