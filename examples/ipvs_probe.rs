//! Live smoke test of the IPVS client, for a VM/host that has `ip_vs`.
//!
//! Connects, prints the IPVS version, creates the reference service
//! `-A -t 10.10.24.88:80 -s rr` with direct-routing real servers .21/.22/.23
//! in one batch, dumps everything in `ipvsadm -Sn` form (compare with the
//! real `ipvsadm -Sn`), then deletes the service again.
//!
//! Run as root: `cargo run --example ipvs_probe`. Exits non-zero on failure.

use std::process::ExitCode;

use lvs_operator::ipvs::{Destination, IpvsError, IpvsHandle, Op, Protocol, Service, ServiceEntry};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipvs_probe: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), IpvsError> {
    let mut h = IpvsHandle::connect()?;
    let info = h.info()?;
    println!("# {info} (genl family id {})", h.family_id());

    let svc = Service::new([10, 10, 24, 88].into(), Protocol::Tcp, 80, "rr");
    let dests: Vec<Destination> = [21u8, 22, 23]
        .iter()
        .map(|&last| Destination::direct_route([10, 10, 24, last].into(), 80, 1))
        .collect();

    let mut ops = vec![Op::NewService(svc.clone())];
    ops.extend(dests.iter().map(|d| Op::NewDest(svc.clone(), d.clone())));
    println!("# applying:");
    for op in &ops {
        println!("#   ipvsadm {}", op.to_ipvsadm());
    }
    let mut failed = false;
    for (op, res) in ops.iter().zip(h.apply(&ops)) {
        if let Err(e) = res {
            eprintln!("ipvs_probe: {} failed: {e}", op.to_ipvsadm());
            failed = true;
        }
    }

    println!("# ipvsadm -Sn equivalent:");
    for obs in h.services()? {
        match &obs.entry {
            ServiceEntry::Service(s) => {
                println!("{}", s.to_ipvsadm_add());
                for d in h.dests(s)? {
                    println!("{}", d.dest.to_ipvsadm_add(s));
                }
            }
            ServiceEntry::Foreign(f) => println!("# foreign service {f} (not managed)"),
        }
    }

    // Exercise the single-op path on the way out.
    h.del_service(&svc)?;
    println!("# deleted {svc}");
    if failed {
        return Err(IpvsError::Malformed(
            "some operations failed, see above".into(),
        ));
    }
    Ok(())
}
