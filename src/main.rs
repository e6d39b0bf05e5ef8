//! The `lvs-operator` binary: one image, one version, a subcommand per role.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use kube::CustomResourceExt;

use lvs_operator::agent::checks::HealthChecks;
use lvs_operator::agent::memory::MemoryDataPlane;
use lvs_operator::agent::{cluster, kernel::Kernel, ledger, metrics::AgentMetrics, standalone};
use lvs_operator::api::{LvsAddressPool, LvsNodeReport, LvsService};
use lvs_operator::controller;
use lvs_operator::http::{Health, serve};

/// LVS Direct Routing load balancing, declared with LvsService objects.
///
/// Run `controller` once per cluster and `agent` on every node (a DaemonSet); or run
/// `agent --standalone FILE --role director|backend` on machines without Kubernetes.
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

/// The kinds `lvs-operator crd` prints.
#[derive(Clone, Copy, clap::ValueEnum)]
enum CrdKind {
    Lvsservice,
    Lvsaddresspool,
    Lvsnodereport,
}

#[derive(Subcommand)]
enum Command {
    /// Program this node: IPVS and the VIP where it is a director, VIP on lo and ARP sysctls where
    /// it is a real server.
    Agent(Box<AgentArgs>),
    /// Print the CustomResourceDefinitions as YAML (`lvs-operator crd | kubectl apply -f -`):
    /// LvsService, LvsAddressPool and LvsNodeReport, or the one named.
    Crd {
        #[arg(value_enum)]
        kind: Option<CrdKind>,
    },
    /// Run the cluster-wide controller: resolve backends, settle VIP conflicts, report status.
    Controller(controller::Options),
    /// Print the version.
    Version,
}

#[derive(Args)]
struct AgentArgs {
    /// Run without Kubernetes: read LvsService objects from this YAML file (several documents
    /// allowed) or directory of YAML files.
    #[arg(long, value_name = "PATH", requires = "role")]
    standalone: Option<PathBuf>,
    /// With --standalone: what this machine is for every object in PATH.
    #[arg(long, value_enum)]
    role: Option<standalone::Role>,
    /// Converge once and exit: 0 when everything was applied, 1 when an object was invalid or a
    /// change failed (the valid objects are still served).
    #[arg(long)]
    once: bool,
    /// How often to re-read the objects and repair drift, e.g. `10s`, `2s`, `500ms`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, env = "LVS_RESYNC_PERIOD")]
    resync_period: Duration,
    /// Interface for director VIPs, in both modes (default: spec.directors.interface, else the
    /// interface holding an address in the VIP's subnet).
    #[arg(long)]
    interface: Option<String>,
    /// Print what would change as ipvsadm / ip addr / sysctl commands, change nothing, and exit.
    #[arg(long)]
    dry_run: bool,
    /// Where the agent records what it made, so that a restart adopts it and nothing else.
    #[arg(long, default_value = ledger::DEFAULT_STATE_DIR, env = "LVS_STATE_DIR")]
    state_dir: PathBuf,
    /// The firewall marks the health checks may use for probing through the VIP (one IPVS
    /// firewall-mark service per real server), as FIRST-LAST, e.g. 0x4c560001-0x4c56ffff. Marks
    /// someone else uses are skipped.
    #[arg(long, default_value = "0x4c560001-0x4c56ffff", value_parser = parse_mark_range, env = "LVS_HEALTH_CHECK_MARKS")]
    health_check_marks: (u32, u32),
    /// How long a removed real server keeps its connections (weight 0) before it is deleted.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration, env = "LVS_DRAIN_TIMEOUT")]
    drain_timeout: Duration,
    /// In a cluster: the name of this node (the DaemonSet passes spec.nodeName). Standalone: this
    /// director's name in its heartbeats to --peer (default: the hostname).
    #[arg(long, env = "NODE_NAME", required_unless_present = "standalone")]
    node_name: Option<String>,
    /// In a cluster: kubeconfig file (default: in-cluster config, else $KUBECONFIG).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// In a cluster: namespace of the agents' Leases (heartbeats, and the VIP Leases that record
    /// which director holds each VIP).
    #[arg(long, env = "POD_NAMESPACE", default_value = "lvs-operator")]
    lease_namespace: String,
    /// In a cluster: how often the agent renews its heartbeat Lease. The controller counts a node
    /// whose agent has not renewed within its --node-report-timeout (30 s) as not reporting, so
    /// keep this at most a third of that.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, env = "LVS_HEARTBEAT_PERIOD")]
    heartbeat_period: Duration,
    /// Where to serve /metrics (IPVS counters per LvsService), /healthz and /readyz. Default in a
    /// cluster 0.0.0.0:9090; standalone serves them only when this is given.
    #[arg(long, env = "LVS_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// In a cluster only (standalone has no API server to ask: its /metrics is plain HTTP).
    #[command(flatten)]
    metrics_security: lvs_operator::http::secure::MetricsSecurity,
    /// Benchmarks only (`make bench-cluster`): keep this node's state in memory, with one
    /// interface address `IF=ADDR/PREFIX` and a listener on port 80, and touch no kernel.
    #[arg(long, hide = true, conflicts_with = "standalone")]
    memory_data_plane: Option<String>,
    #[command(flatten)]
    failover: FailoverArgs,
}

/// Director failover: heartbeats between the directors of the same VIPs. In a cluster the
/// directors find each other through their heartbeat Leases; standalone, through --peer.
#[derive(Args)]
struct FailoverArgs {
    /// Standalone director: another director of the same VIPs (ADDRESS or ADDRESS:PORT, port
    /// 7408 by default); repeat for each. The directors elect one active director per VIP and
    /// a standby takes a VIP over within --peer-dead-after of the active one falling silent.
    /// Without --peer a standalone director holds its VIPs alone, as before.
    #[arg(long = "peer", value_name = "ADDRESS", value_parser = parse_peer)]
    peers: Vec<std::net::SocketAddr>,
    /// Among directors where none is active for a VIP, the higher priority takes it (1-255).
    /// An active director is never preempted.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u8).range(1..))]
    priority: u8,
    /// Where this director receives its peers' heartbeats.
    #[arg(long, default_value = "0.0.0.0:7408")]
    peer_listen: std::net::SocketAddr,
    /// How often a director sends its heartbeat to each peer.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    peer_interval: Duration,
    /// Silence after which a peer is dead and its VIPs are taken over.
    #[arg(long, default_value = "350ms", value_parser = humantime::parse_duration)]
    peer_dead_after: Duration,
    /// The --syncid of the IPVS connection-sync daemons directors with peers run (a master where
    /// a director holds a VIP, a backup where it stands by), so established connections survive
    /// a failover. Give each LVS cluster sharing a LAN its own.
    #[arg(long, default_value_t = 0)]
    sync_id: u8,
    /// How often a director announces the VIPs it holds again (gratuitous ARP / unsolicited NA),
    /// for switches and routers that missed the takeover's; 0s turns it off.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    garp_refresh: Duration,
}

/// `10.10.24.11` or `10.10.24.11:7408` (`[fd00::11]:7408` for IPv6).
fn parse_peer(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Ok((ip, lvs_operator::ha::Settings::PORT).into());
    }
    text.parse()
        .map_err(|_| format!("{text:?} is not an address or address:port"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    match cli.command {
        Command::Crd { kind } => {
            print!("{}", crd_yaml(kind));
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
        Command::Agent(args) => run_agent(*args),
    }
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let no_color = std::env::var_os("NO_COLOR");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(use_colour(
            std::io::stderr().is_terminal(),
            no_color.as_deref(),
        ));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Colour is for a person at a terminal: `kubectl logs`, journald and files would keep the escape
/// codes as noise. `NO_COLOR` set to anything but the empty string turns it off (no-color.org).
fn use_colour(is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    is_terminal && no_color.is_none_or(OsStr::is_empty)
}

fn run_agent(args: AgentArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let store = ledger::LedgerStore::new(&args.state_dir);
    let result = runtime.block_on(async {
        match args.standalone.as_deref() {
            Some(path) => {
                let mut kernel = Kernel::connect(args.dry_run)?;
                let opts = standalone::Options {
                    path,
                    role: args.role.expect("clap requires --role with --standalone"),
                    interface: args.interface.clone(),

                    dry_run: args.dry_run,
                    drain_timeout: args.drain_timeout,
                    marks: args.health_check_marks,
                    sync_id: args.failover.sync_id,
                };
                // A long-running director checks its real servers and fails over; one run does not.
                let long_running =
                    opts.role == standalone::Role::Director && !args.once && !args.dry_run;
                let mut beside = standalone::Beside::default();
                let mut ha_metrics = None;
                let metrics = AgentMetrics::new(|registry| {
                    beside.checks = long_running.then(|| HealthChecks::new(registry));
                    ha_metrics = (long_running && !args.failover.peers.is_empty())
                        .then(|| lvs_operator::ha::HaMetrics::new(registry));
                });
                if let Some(ha_metrics) = ha_metrics {
                    let f = &args.failover;
                    let settings = lvs_operator::ha::Settings {
                        node: args.node_name.clone().unwrap_or_else(hostname),
                        priority: f.priority,
                        listen: f.peer_listen,
                        interval: f.peer_interval,
                        dead_after: f.peer_dead_after,
                    };
                    let peers =
                        lvs_operator::ha::Peers::start(settings, f.peers.clone()).map_err(|e| {
                            anyhow::anyhow!("director heartbeats on {}: {e}", f.peer_listen)
                        })?;
                    beside.ha = Some(lvs_operator::ha::Ha::new(peers, ha_metrics));
                    // Every 2 s, 300 ms for the answers (a holder on the LAN answers within
                    // milliseconds).
                    match lvs_operator::ha::holders::Holders::start(
                        Duration::from_secs(2),
                        Duration::from_millis(300),
                    ) {
                        Ok(h) => beside.holders = Some(h),
                        Err(e) => {
                            tracing::warn!("cannot probe for a second holder of the VIPs: {e:#}")
                        }
                    }
                    beside.announcer =
                        lvs_operator::ha::announcer::Announcer::every(f.garp_refresh);
                }
                if let Some(addr) = args.metrics_addr {
                    serve(addr, metrics.clone(), Health::default(), None).await?;
                }
                let ok = standalone::run(
                    &mut kernel,
                    &store,
                    &opts,
                    args.once,
                    args.resync_period,
                    &metrics,
                    beside,
                )
                .await;
                Ok(ok)
            }
            None => {
                let client = lvs_operator::kube_client::connect(args.kubeconfig.as_deref()).await?;
                let opts = cluster::Options {
                    node: args.node_name.clone().expect("clap requires --node-name"),
                    lease_namespace: args.lease_namespace.clone(),
                    resync_period: args.resync_period,
                    drain_timeout: args.drain_timeout,
                    metrics_addr: args
                        .metrics_addr
                        .unwrap_or_else(|| ([0, 0, 0, 0], 9090).into()),
                    metrics_security: args.metrics_security.clone(),
                    interface: args.interface.clone(),
                    heartbeat_period: args.heartbeat_period,
                    marks: args.health_check_marks,
                    failover: cluster::Failover {
                        listen: args.failover.peer_listen,
                        interval: args.failover.peer_interval,
                        dead_after: args.failover.peer_dead_after,
                        priority: args.failover.priority,
                        sync_id: args.failover.sync_id,
                        garp_refresh: args.failover.garp_refresh,
                    },
                };
                match &args.memory_data_plane {
                    Some(spec) => {
                        let mut memory = MemoryDataPlane::with_interface(spec, &[80])?;
                        cluster::run(client, &mut memory, &store, opts).await
                    }
                    None => {
                        let mut kernel = Kernel::connect(args.dry_run)?;
                        cluster::run(client, &mut kernel, &store, opts).await
                    }
                }
                .map(|()| true)
            }
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

/// `FIRST-LAST`, each decimal or 0x-hexadecimal, FIRST <= LAST, 0 excluded (no mark).
fn parse_mark_range(text: &str) -> Result<(u32, u32), String> {
    let number = |t: &str| {
        let t = t.trim();
        match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(hex) => u32::from_str_radix(hex, 16),
            None => t.parse(),
        }
        .map_err(|e| format!("{t:?}: {e}"))
    };
    let (first, last) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not FIRST-LAST"))?;
    let (first, last) = (number(first)?, number(last)?);
    if first == 0 || first > last {
        return Err(format!(
            "{text:?}: the first mark must be at least 1 and at most the last"
        ));
    }
    Ok((first, last))
}

fn crd_yaml(kind: Option<CrdKind>) -> String {
    let yaml = |crd| serde_saphyr::to_string(&crd).expect("the CRD serializes to YAML");
    match kind {
        Some(CrdKind::Lvsservice) => yaml(LvsService::crd()),
        Some(CrdKind::Lvsaddresspool) => yaml(LvsAddressPool::crd()),
        Some(CrdKind::Lvsnodereport) => yaml(LvsNodeReport::crd()),
        None => format!(
            "{}---\n{}---\n{}",
            yaml(LvsService::crd()),
            yaml(LvsAddressPool::crd()),
            yaml(LvsNodeReport::crd())
        ),
    }
}

/// This machine's name, a standalone director's name in its heartbeats unless --node-name says.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "director".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_ranges_are_read_in_hex_or_decimal_and_checked() {
        assert_eq!(
            parse_mark_range("0x4c560001-0x4c56ffff"),
            Ok((0x4c56_0001, 0x4c56_ffff))
        );
        assert_eq!(parse_mark_range("10-20"), Ok((10, 20)));
        assert!(parse_mark_range("0-5").is_err());
        assert!(parse_mark_range("9-5").is_err());
        assert!(parse_mark_range("5").is_err());
    }

    #[test]
    fn logs_are_coloured_only_on_a_terminal() {
        assert!(use_colour(true, None));
        assert!(!use_colour(false, None));
    }

    #[test]
    fn no_color_turns_colour_off_unless_it_is_empty() {
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(true, Some(OsStr::new("0"))));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(false, Some(OsStr::new(""))));
    }
}
