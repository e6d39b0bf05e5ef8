//! The IPVS connection-sync daemons driven through the crate's own netlink client
//! (`lvs_operator::ipvs`), for the VM proof `tests/vm/sync.sh`: a standby director learns the
//! active one's connections. Not part of the product binary; each subcommand matches one
//! ipvsadm command.
//!
//!     ipvs_sync start master eth0 --syncid 1 [--sync-maxlen N] [--mcast-group G]
//!                                            [--mcast-port P] [--mcast-ttl T]
//!     ipvs_sync stop backup       # ipvsadm --stop-daemon backup
//!     ipvs_sync list              # ipvsadm -L --daemon, line for line
//!     ipvs_sync commands          # each running daemon as the ipvsadm command that starts it

use std::net::IpAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use lvs_operator::ipvs::{IpvsError, IpvsHandle, SyncDaemon, SyncRole};

#[derive(Parser)]
#[command(about = "IPVS connection-sync daemons through lvs-operator's netlink client")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// ipvsadm --start-daemon ROLE --mcast-interface INTERFACE --syncid ID [...]
    Start {
        role: Role,
        interface: String,
        #[arg(long)]
        syncid: u8,
        #[arg(long)]
        sync_maxlen: Option<u16>,
        #[arg(long)]
        mcast_group: Option<IpAddr>,
        #[arg(long)]
        mcast_port: Option<u16>,
        #[arg(long)]
        mcast_ttl: Option<u8>,
    },
    /// ipvsadm --stop-daemon ROLE
    Stop { role: Role },
    /// ipvsadm -L --daemon
    List,
    /// The running daemons as the commands that start them.
    Commands,
}

#[derive(Clone, Copy, ValueEnum)]
enum Role {
    Master,
    Backup,
}

impl From<Role> for SyncRole {
    fn from(r: Role) -> Self {
        match r {
            Role::Master => SyncRole::Master,
            Role::Backup => SyncRole::Backup,
        }
    }
}

/// One line of `ipvsadm -L --daemon` (ipvsadm 1.31 prints each newer setting the kernel reports).
fn listing(d: &SyncDaemon) -> String {
    let mut line = format!(
        "{} sync daemon (mcast={}, syncid={}",
        d.role, d.interface, d.sync_id
    );
    if let Some(n) = d.max_len {
        line += &format!(", maxlen={n}");
    }
    if let Some(g) = d.group {
        line += &format!(", group={g}");
    }
    if let Some(p) = d.port {
        line += &format!(", port={p}");
    }
    if let Some(t) = d.ttl {
        line += &format!(", ttl={t}");
    }
    line + ")"
}

fn run(command: Command) -> Result<(), IpvsError> {
    let mut ipvs = IpvsHandle::connect()?;
    match command {
        Command::Start {
            role,
            interface,
            syncid,
            sync_maxlen,
            mcast_group,
            mcast_port,
            mcast_ttl,
        } => {
            let daemon = SyncDaemon {
                max_len: sync_maxlen,
                group: mcast_group,
                port: mcast_port,
                ttl: mcast_ttl,
                ..SyncDaemon::new(role.into(), interface, syncid)
            };
            ipvs.start_daemon(&daemon)?;
            eprintln!("started: {daemon}");
        }
        Command::Stop { role } => {
            let role = SyncRole::from(role);
            ipvs.stop_daemon(role)?;
            eprintln!("stopped: {}", role.stop_command());
        }
        Command::List => ipvs
            .daemons()?
            .iter()
            .for_each(|d| println!("{}", listing(d))),
        Command::Commands => ipvs.daemons()?.iter().for_each(|d| println!("{d}")),
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipvs_sync: {e}");
            ExitCode::FAILURE
        }
    }
}
