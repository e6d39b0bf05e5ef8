//! The `lvs-operator` binary: one image, one version, a subcommand per role.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kube::CustomResourceExt;

use lvs_operator::api::LvsService;
use lvs_operator::controller;

/// LVS Direct Routing load balancing, declared with LvsService objects.
///
/// Run `controller` once per cluster and `agent` on every node (a DaemonSet); or run `agent
/// --standalone FILE` on a machine without Kubernetes.
#[derive(Parser)]
#[command(name = "lvs-operator", version, about, long_about)]
struct Cli {
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text", env = "LVS_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `lvs_operator=debug`.
    #[arg(long, global = true, default_value = "info", env = "LVS_LOG_LEVEL")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Print the LvsService CustomResourceDefinition as YAML (`lvs-operator crd | kubectl apply -f -`).
    Crd,
    /// Run the cluster-wide controller: resolve backends, settle VIP conflicts, report status.
    Controller(controller::Options),
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    match cli.command {
        Command::Crd => {
            print!("{}", crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Controller(options) => {
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

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn crd_yaml() -> String {
    serde_saphyr::to_string(&LvsService::crd()).expect("the CRD serializes to YAML")
}
