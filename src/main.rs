//! The `lvs-operator` binary: one image, one version, a subcommand per role.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kube::CustomResourceExt;

use lvs_operator::api::LvsService;
use lvs_operator::{controller, logging::LogOptions};

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
    /// Run the cluster-wide controller: resolve backends, settle VIP conflicts, report status.
    Controller {
        #[command(flatten)]
        options: controller::Options,
        #[command(flatten)]
        log: LogOptions,
    },
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
        Command::Controller { options, log } => {
            if let Err(e) = log.init() {
                eprintln!("lvs-operator: {e:#}");
                return ExitCode::FAILURE;
            }
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("lvs-operator: starting the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(controller::run(options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
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
