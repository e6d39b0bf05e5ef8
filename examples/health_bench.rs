//! The health-check engine at scale, over loopback: 1,000 real servers (listeners on 127.0.0.1,
//! a tenth of them refusing), 100,000 IPVS destinations (100 service ports on each) handed to
//! `Engine::set`, TCP checks at interval 1 s, timeout 500 ms, fall 2, rise 2.
//!
//! Prints what it measured (nothing is asserted: the numbers depend on the machine): the probers
//! the destinations dedup to, probes per second, CPU per second of wall time (the process, and
//! the engine's own thread: the listeners run on another), RSS growth, and how long the refusing
//! servers took to be marked Unhealthy (the target: interval x fall + 100 ms).
//!
//!     cargo run --release --example health_bench [-- SECONDS]    (or: make bench-health)

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::time::{Duration, Instant};

use lvs_operator::health::{Check, CheckKind, Engine, Health};
use nix::sys::resource::{Resource, UsageWho, getrlimit, getrusage, setrlimit};
use nix::unistd::{SysconfVar, sysconf};
use prometheus_client::registry::Registry;

const ENDPOINTS: usize = 1_000;
const REFUSING: usize = ENDPOINTS / 10;
const SERVICE_PORTS: u16 = 100;
const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_millis(500);
const FALL: u32 = 2;
const RISE: u32 = 2;
/// Probes in the first seconds include the spread first round; the rate is measured after.
const WARM_UP: Duration = Duration::from_secs(2);

/// One IPVS destination: a real server behind one service port.
struct Destination {
    service_port: u16,
    real_server: SocketAddr,
}

fn check(target: SocketAddr) -> Check {
    Check {
        kind: CheckKind::Tcp,
        target,
        via: None,
        source: None,
        interval: INTERVAL,
        timeout: TIMEOUT,
        fall: FALL,
        rise: RISE,
    }
}

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("SECONDS"))
        .unwrap_or(20);
    raise_open_files();
    let listening = listen(ENDPOINTS - REFUSING);
    let refusing = closed_ports(REFUSING);
    // As the agent runs it: a current-thread runtime.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(listening, refusing, Duration::from_secs(seconds)));
}

async fn run(listening: Vec<SocketAddr>, refusing: Vec<SocketAddr>, run_for: Duration) {
    let destinations: Vec<Destination> = (0..SERVICE_PORTS)
        .flat_map(|port| {
            listening
                .iter()
                .chain(&refusing)
                .map(move |&real_server| Destination {
                    service_port: 8000 + port,
                    real_server,
                })
        })
        .collect();

    // Distinct as IPVS sees them; the checks do not depend on the service port, which is the point.
    let distinct = destinations
        .iter()
        .map(|d| (d.service_port, d.real_server))
        .collect::<std::collections::BTreeSet<_>>()
        .len();

    let rss_before = rss_bytes();
    let mut registry = Registry::default();
    let mut engine = Engine::new(&mut registry);
    let start = Instant::now();
    engine.set(destinations.iter().map(|d| check(d.real_server)));
    let set_took = start.elapsed();

    tokio::time::sleep(WARM_UP).await;
    let (probes_a, cpu_a, at_a) = (probes(&registry), Cpu::now(), Instant::now());
    tokio::time::sleep(run_for.saturating_sub(WARM_UP)).await;
    let (probes_b, cpu_b, at_b) = (probes(&registry), Cpu::now(), Instant::now());
    let rss_after = rss_bytes();

    let wall = (at_b - at_a).as_secs_f64();
    let verdicts = engine.verdicts();
    let mut ejected: Vec<Duration> = refusing
        .iter()
        .filter_map(|&t| {
            let v = &verdicts[&check(t)];
            (v.health == Health::Unhealthy).then(|| v.since - start)
        })
        .collect();
    ejected.sort();
    let wrongly = listening
        .iter()
        .filter(|&&t| verdicts[&check(t)].health == Health::Unhealthy)
        .count();
    let rss_growth = rss_after.saturating_sub(rss_before) as f64;

    let rows: Vec<(String, String)> = vec![
        (
            "distinct destinations given to set".into(),
            distinct.to_string(),
        ),
        ("probers running".into(), engine.probers().to_string()),
        (
            "set() of all destinations".into(),
            format!("{set_took:.1?}"),
        ),
        (
            "probes per second".into(),
            format!("{:.1}", (probes_b - probes_a) as f64 / wall),
        ),
        (
            "CPU, whole process".into(),
            format!(
                "{:.1} % of one core",
                100.0 * cpu_b.process.saturating_sub(cpu_a.process).as_secs_f64() / wall
            ),
        ),
        (
            "CPU, engine thread".into(),
            format!(
                "{:.1} % of one core",
                100.0 * cpu_b.engine.saturating_sub(cpu_a.engine).as_secs_f64() / wall
            ),
        ),
        (
            "RSS growth".into(),
            format!(
                "{:.1} MiB ({:.1} KiB per prober)",
                rss_growth / (1 << 20) as f64,
                rss_growth / 1024.0 / engine.probers().max(1) as f64
            ),
        ),
        (
            "refusing servers marked Unhealthy".into(),
            format!("{} of {}", ejected.len(), refusing.len()),
        ),
        (
            "time to Unhealthy p50 / p99 / max".into(),
            format!(
                "{} / {} / {} (target {:.1?})",
                quantile(&ejected, 0.50),
                quantile(&ejected, 0.99),
                quantile(&ejected, 1.0),
                INTERVAL * FALL + Duration::from_millis(100)
            ),
        ),
        (
            "listening servers marked Unhealthy".into(),
            wrongly.to_string(),
        ),
    ];
    println!(
        "health_bench: {} real servers on 127.0.0.1 ({} refusing), {} destinations, TCP every {:?} \
         (timeout {:?}, fall {FALL}, rise {RISE}), {:?} run, rates over the last {:.1} s",
        ENDPOINTS,
        REFUSING,
        destinations.len(),
        INTERVAL,
        TIMEOUT,
        run_for,
        wall
    );
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("  {k:<width$}  {v}");
    }
}

/// The nearest-rank quantile of sorted durations.
fn quantile(sorted: &[Duration], q: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    format!("{:.3?}", sorted[rank - 1])
}

/// Probes run so far: the sum of the duration histograms' counts.
fn probes(registry: &Registry) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .filter(|l| l.starts_with("lvs_health_check_duration_seconds_count{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

struct Cpu {
    process: Duration,
    /// The thread running the engine's runtime (this one): the listeners run on another.
    engine: Duration,
}

impl Cpu {
    fn now() -> Self {
        let used = |who| {
            let u = getrusage(who).expect("getrusage");
            let secs = |t: nix::sys::time::TimeVal| {
                Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
            };
            secs(u.user_time()) + secs(u.system_time())
        };
        Self {
            process: used(UsageWho::RUSAGE_SELF),
            engine: used(UsageWho::RUSAGE_THREAD),
        }
    }
}

/// Resident set size, from /proc/self/statm (in pages).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm resident");
    let page = sysconf(SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    pages * page
}

/// 1,000 listeners and up to 1,000 probe sockets (and their accepted ends) pass the usual
/// soft limit of 1,024 open files.
fn raise_open_files() {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let want = hard.min(65_536);
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).expect("setrlimit NOFILE");
    }
}

/// `n` listeners on 127.0.0.1 accepting and closing, on their own thread and runtime so the
/// engine's thread is measured alone.
fn listen(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<StdListener> = (0..n)
        .map(|_| {
            let l = StdListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a listener");
            l.set_nonblocking(true).unwrap();
            l
        })
        .collect();
    let addrs = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for l in listeners {
                let l = tokio::net::TcpListener::from_std(l).unwrap();
                tasks.spawn(async move {
                    loop {
                        let _ = l.accept().await;
                    }
                });
            }
            tasks.join_all().await;
        });
    });
    addrs
}

/// `n` ports on 127.0.0.1 nothing listens on. Below the ephemeral range (32768 and up on
/// Linux), so no probe's own source port can ever be one of them and connect to itself.
fn closed_ports(n: usize) -> Vec<SocketAddr> {
    let mut ports = BTreeMap::new();
    for port in 20_000..32_768u16 {
        if ports.len() == n {
            break;
        }
        // Free now (it binds), and let go at once: connecting to it is refused.
        if let Ok(l) = StdListener::bind((Ipv4Addr::LOCALHOST, port)) {
            ports.insert(port, l.local_addr().unwrap());
        }
    }
    assert_eq!(ports.len(), n, "free ports below the ephemeral range");
    ports.into_values().collect()
}
