//! `ipvsadm` command-line rendering of services and destinations, for
//! dry-run output and logs.
//!
//! The add forms reproduce what `ipvsadm -Sn` (ipvsadm 1.31) prints, so a
//! plan can be diffed against a saved rule file; the edit/delete forms are the
//! matching `-E`/`-D`/`-e`/`-d` commands. Rules followed from ipvsadm.c:
//! * `-b` scheduler flags come right after `-s`, named per scheduler
//!   (`sh-fallback,sh-port`, `mh-…`, otherwise `flag-1..3`);
//! * `-p TIMEOUT` only when persistent, `-M` only when not the default mask;
//! * `-o` for one-packet scheduling;
//! * real servers print `-g`/`-m`/`-i` and `-w`, then `-x`/`-y` when set.

use std::net::Ipv4Addr;

use crate::ipvs::types::{
    AF_INET6, DestKey, Destination, Forward, Protocol, SVC_F_ONEPACKET, SVC_F_PERSISTENT,
    SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3, Service, ServiceKey, SockAddr,
};

impl ServiceKey {
    /// The `-t VIP:PORT` / `-u …` / `--sctp-service …` service selector.
    pub fn to_ipvsadm_selector(&self) -> String {
        let switch = match self.protocol {
            Protocol::Tcp => "-t",
            Protocol::Udp => "-u",
            Protocol::Sctp => "--sctp-service",
        };
        format!("{switch} {}", SockAddr(self.addr, self.port))
    }

    /// `-D -t VIP:PORT` (delete service).
    pub fn to_ipvsadm_delete(&self) -> String {
        format!("-D {}", self.to_ipvsadm_selector())
    }
}

impl Service {
    /// `-A -t 10.10.24.88:80 -s rr`, exactly as `ipvsadm -Sn` prints it.
    pub fn to_ipvsadm_add(&self) -> String {
        format!("-A {}", self.ipvsadm_body())
    }

    /// `-E …` (edit service) with the same options as the add form.
    pub fn to_ipvsadm_edit(&self) -> String {
        format!("-E {}", self.ipvsadm_body())
    }

    /// `-D -t VIP:PORT` (delete service).
    pub fn to_ipvsadm_delete(&self) -> String {
        self.key().to_ipvsadm_delete()
    }

    fn ipvsadm_body(&self) -> String {
        let mut out = format!("{} -s {}", self.key().to_ipvsadm_selector(), self.scheduler);
        let sched_flags = sched_flag_names(&self.scheduler, self.flags);
        if !sched_flags.is_empty() {
            out.push_str(" -b ");
            out.push_str(&sched_flags.join(","));
        }
        if self.flags & SVC_F_PERSISTENT != 0 {
            out.push_str(&format!(" -p {}", self.timeout));
            if self.family() == AF_INET6 {
                if self.netmask != 128 {
                    out.push_str(&format!(" -M {}", self.netmask));
                }
            } else if self.netmask != 0xFFFF_FFFF {
                out.push_str(&format!(" -M {}", Ipv4Addr::from(self.netmask)));
            }
        }
        if self.flags & SVC_F_ONEPACKET != 0 {
            out.push_str(" -o");
        }
        out
    }
}

/// ipvsadm's `print_sched_flags`: names depend on the scheduler.
fn sched_flag_names(scheduler: &str, flags: u32) -> Vec<&'static str> {
    let names: [&'static str; 3] = match scheduler {
        "sh" => ["sh-fallback", "sh-port", "flag-3"],
        "mh" => ["mh-fallback", "mh-port", "flag-3"],
        _ => ["flag-1", "flag-2", "flag-3"],
    };
    [SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3]
        .iter()
        .zip(names)
        .filter(|(bit, _)| flags & **bit != 0)
        .map(|(_, name)| name)
        .collect()
}

/// ipvsadm's `fwd_switch` (it prints `-g` for local-node too).
fn fwd_switch(fwd: Forward) -> &'static str {
    match fwd {
        Forward::Masq => "-m",
        Forward::Tunnel => "-i",
        Forward::DirectRoute | Forward::Local => "-g",
        Forward::Bypass => "ERROR",
    }
}

impl Destination {
    /// `-a -t 10.10.24.88:80 -r 10.10.24.21:80 -g -w 1`, as `ipvsadm -Sn`.
    pub fn to_ipvsadm_add(&self, service: &Service) -> String {
        format!("-a {}", self.ipvsadm_body(&service.key()))
    }

    /// `-e …` (edit real server) with the same options as the add form.
    pub fn to_ipvsadm_edit(&self, service: &Service) -> String {
        format!("-e {}", self.ipvsadm_body(&service.key()))
    }

    /// `-d -t VIP:PORT -r RIP:PORT` (delete real server).
    pub fn to_ipvsadm_delete(&self, service: &Service) -> String {
        self.key().to_ipvsadm_delete(&service.key())
    }

    fn ipvsadm_body(&self, service: &ServiceKey) -> String {
        let mut out = format!(
            "{} -r {} {} -w {}",
            service.to_ipvsadm_selector(),
            SockAddr(self.addr, self.port),
            fwd_switch(self.fwd),
            self.weight
        );
        if self.upper_threshold != 0 {
            out.push_str(&format!(" -x {}", self.upper_threshold));
        }
        if self.lower_threshold != 0 {
            out.push_str(&format!(" -y {}", self.lower_threshold));
        }
        out
    }
}

impl DestKey {
    /// `-d -t VIP:PORT -r RIP:PORT` (delete real server).
    pub fn to_ipvsadm_delete(&self, service: &ServiceKey) -> String {
        format!(
            "-d {} -r {}",
            service.to_ipvsadm_selector(),
            SockAddr(self.addr, self.port)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipvs::types::SVC_F_HASHED;

    fn vip() -> Service {
        Service::new("10.10.24.88".parse().unwrap(), Protocol::Tcp, 80, "rr")
    }

    #[test]
    fn reference_service_renders_like_ipvsadm_save() {
        assert_eq!(vip().to_ipvsadm_add(), "-A -t 10.10.24.88:80 -s rr");
        assert_eq!(vip().to_ipvsadm_edit(), "-E -t 10.10.24.88:80 -s rr");
        assert_eq!(vip().to_ipvsadm_delete(), "-D -t 10.10.24.88:80");
    }

    #[test]
    fn direct_route_dest_renders_like_ipvsadm_save() {
        let d = Destination::direct_route("10.10.24.21".parse().unwrap(), 80, 1);
        assert_eq!(
            d.to_ipvsadm_add(&vip()),
            "-a -t 10.10.24.88:80 -r 10.10.24.21:80 -g -w 1"
        );
        assert_eq!(
            d.to_ipvsadm_edit(&vip()),
            "-e -t 10.10.24.88:80 -r 10.10.24.21:80 -g -w 1"
        );
        assert_eq!(
            d.to_ipvsadm_delete(&vip()),
            "-d -t 10.10.24.88:80 -r 10.10.24.21:80"
        );
    }

    #[test]
    fn persistent_sh_service_renders_flags_timeout_and_netmask() {
        let mut s = vip();
        s.scheduler = "sh".into();
        s.flags = SVC_F_PERSISTENT | SVC_F_SCHED1 | SVC_F_SCHED2;
        s.timeout = 300;
        s.netmask = 0xFFFF_FF00;
        assert_eq!(
            s.to_ipvsadm_add(),
            "-A -t 10.10.24.88:80 -s sh -b sh-fallback,sh-port -p 300 -M 255.255.255.0"
        );
    }

    #[test]
    fn persistent_service_with_default_netmask_omits_m() {
        let mut s = vip();
        s.flags = SVC_F_PERSISTENT | SVC_F_HASHED;
        s.timeout = 60;
        assert_eq!(s.to_ipvsadm_add(), "-A -t 10.10.24.88:80 -s rr -p 60");
    }

    #[test]
    fn ipv6_udp_and_sctp_services_use_brackets_and_their_switches() {
        let mut u = Service::new("2001:db8::1".parse().unwrap(), Protocol::Udp, 53, "mh");
        u.flags = SVC_F_SCHED2 | SVC_F_PERSISTENT | SVC_F_ONEPACKET;
        u.timeout = 10;
        u.netmask = 64;
        assert_eq!(
            u.to_ipvsadm_add(),
            "-A -u [2001:db8::1]:53 -s mh -b mh-port -p 10 -M 64 -o"
        );
        let s = Service::new("10.0.0.1".parse().unwrap(), Protocol::Sctp, 3868, "wlc");
        assert_eq!(s.to_ipvsadm_add(), "-A --sctp-service 10.0.0.1:3868 -s wlc");
        let d = Destination {
            addr: "2001:db8::21".parse().unwrap(),
            port: 53,
            weight: 0,
            fwd: Forward::Masq,
            upper_threshold: 100,
            lower_threshold: 10,
        };
        assert_eq!(
            d.to_ipvsadm_add(&u),
            "-a -u [2001:db8::1]:53 -r [2001:db8::21]:53 -m -w 0 -x 100 -y 10"
        );
    }
}
