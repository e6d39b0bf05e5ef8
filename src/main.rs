//! The `lvs-operator` binary: one image, one version, a subcommand per role.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kube::CustomResourceExt;

use lvs_operator::api::LvsService;

/// LVS Direct Routing load balancing, declared with LvsService objects.
///
/// Run `controller` once per cluster and `agent` on every node (a DaemonSet); or run `agent
/// --standalone FILE` on a machine without Kubernetes.
#[derive(Parser)]
#[command(name = "lvs-operator", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the LvsService CustomResourceDefinition as YAML (`lvs-operator crd | kubectl apply -f -`).
    Crd,
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("lvs-operator {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}

fn crd_yaml() -> String {
    serde_saphyr::to_string(&LvsService::crd()).expect("the CRD serializes to YAML")
}
