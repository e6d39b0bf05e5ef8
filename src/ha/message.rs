//! The heartbeat directors send each other over UDP: who the sender is, which VIPs it is active
//! or standby for, and the sequence numbers it last heard from each peer (so every director
//! measures the round trip without a second message).
//!
//! JSON, because a heartbeat is small (a few hundred bytes for tens of VIPs), an admin can read
//! one with `tcpdump -A`, and a newer agent can add fields an older one ignores during a rolling
//! upgrade. A datagram that is not one (another program on the port, a truncated packet) is
//! dropped with a reason; it never panics.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Marks our datagrams, and their version: a change that an older agent would misread gets a
/// new one.
pub const PROTOCOL: &str = "lvs-ha/1";

/// The largest datagram accepted or sent: a heartbeat that grows past it (thousands of VIPs on one
/// director) is refused at the sender, not truncated.
pub const MAX_DATAGRAM: usize = 60_000;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub proto: String,
    /// The sender's name: its node in a cluster, its hostname (or `--node-name`) standalone.
    pub node: String,
    /// Higher wins when no director is active for a VIP (`--priority`, default 100).
    pub priority: u8,
    /// Rises by one per heartbeat; a peer echoes the last one it heard.
    pub seq: u64,
    /// The MAC of the sender's interface for its VIPs, so others tell it from a foreign holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Every VIP the sender may direct, with its state there.
    #[serde(default)]
    pub vips: Vec<VipState>,
    /// The last heartbeat heard from each peer, and how long ago (microseconds) when this one
    /// left: the peer's round trip is now − its send time of `seq` − `held_us`.
    #[serde(default)]
    pub echo: Vec<Echo>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VipState {
    pub vip: IpAddr,
    /// Holds the VIP and serves it.
    pub active: bool,
    /// Has the VIP's IPVS services programmed (and, when active, its address): a standby that
    /// can take over without losing time.
    pub ready: bool,
    /// Rises at every takeover of the VIP (past every term the taker has seen): of two
    /// directors that both claim it after a partition, the later taker's claim is the newer.
    #[serde(default)]
    pub term: u64,
    /// The sender is letting go of the VIP on purpose (SIGTERM, or no longer a candidate): a
    /// ready standby takes it, then the sender drops it.
    #[serde(default)]
    pub leaving: bool,
    /// The sender has the VIP on its interface but has not announced it: the director handing
    /// it over serves it until it is `drained`.
    #[serde(default)]
    pub quiet: bool,
    /// The sender, handing the VIP over, sends its new connections to the one real server the
    /// taker does: the taker may announce (see `crate::ha::director`).
    #[serde(default)]
    pub drained: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Echo {
    pub node: String,
    pub seq: u64,
    pub held_us: u64,
}

/// Why a datagram is not a heartbeat.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadDatagram {
    #[error("{0} bytes, more than the {MAX_DATAGRAM} a heartbeat may have")]
    TooLong(usize),
    #[error("not a heartbeat: {0}")]
    NotJson(String),
    #[error("protocol {0:?}, this agent speaks {PROTOCOL:?}")]
    Protocol(String),
    #[error("empty node name")]
    NoNode,
}

impl Heartbeat {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a heartbeat always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, BadDatagram> {
        if bytes.len() > MAX_DATAGRAM {
            return Err(BadDatagram::TooLong(bytes.len()));
        }
        let hb: Heartbeat =
            serde_json::from_slice(bytes).map_err(|e| BadDatagram::NotJson(e.to_string()))?;
        if hb.proto != PROTOCOL {
            return Err(BadDatagram::Protocol(hb.proto));
        }
        if hb.node.is_empty() {
            return Err(BadDatagram::NoNode);
        }
        Ok(hb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Heartbeat {
        Heartbeat {
            proto: PROTOCOL.into(),
            node: "director".into(),
            priority: 100,
            seq: 7,
            mac: Some("02:00:0a:0a:18:0a".into()),
            vips: vec![VipState {
                vip: "10.10.24.88".parse().unwrap(),
                active: true,
                ready: true,
                term: 3,
                leaving: true,
                quiet: false,
                drained: true,
            }],
            echo: vec![Echo {
                node: "director2".into(),
                seq: 41,
                held_us: 1200,
            }],
        }
    }

    #[test]
    fn a_heartbeat_reads_back_as_sent() {
        let hb = sample();
        assert_eq!(Heartbeat::decode(&hb.encode()), Ok(hb));
    }

    #[test]
    fn the_wire_form_is_plain_json_an_admin_can_read() {
        let text = String::from_utf8(sample().encode()).unwrap();
        assert_eq!(
            text,
            r#"{"proto":"lvs-ha/1","node":"director","priority":100,"seq":7,"mac":"02:00:0a:0a:18:0a","vips":[{"vip":"10.10.24.88","active":true,"ready":true,"term":3,"leaving":true,"quiet":false,"drained":true}],"echo":[{"node":"director2","seq":41,"held_us":1200}]}"#
        );
    }

    #[test]
    fn fields_a_newer_agent_adds_are_ignored_and_missing_optional_ones_default() {
        let hb = Heartbeat::decode(
            br#"{"proto":"lvs-ha/1","node":"d","priority":1,"seq":1,"future":{"x":1}}"#,
        )
        .unwrap();
        assert!(hb.vips.is_empty() && hb.echo.is_empty() && hb.mac.is_none());
    }

    #[test]
    fn an_older_agent_s_vip_state_is_neither_quiet_nor_drained() {
        let hb = Heartbeat::decode(
            br#"{"proto":"lvs-ha/1","node":"d","priority":1,"seq":1,"vips":[{"vip":"10.10.24.88","active":true,"ready":true,"term":2,"leaving":true}]}"#,
        )
        .unwrap();
        assert_eq!((hb.vips[0].quiet, hb.vips[0].drained), (false, false));
    }

    #[test]
    fn datagrams_that_are_not_heartbeats_are_refused_with_the_reason() {
        assert!(matches!(
            Heartbeat::decode(b"GET / HTTP/1.1"),
            Err(BadDatagram::NotJson(_))
        ));
        assert_eq!(
            Heartbeat::decode(br#"{"proto":"vrrp","node":"d","priority":1,"seq":1}"#),
            Err(BadDatagram::Protocol("vrrp".into()))
        );
        assert_eq!(
            Heartbeat::decode(br#"{"proto":"lvs-ha/1","node":"","priority":1,"seq":1}"#),
            Err(BadDatagram::NoNode)
        );
        assert_eq!(
            Heartbeat::decode(&vec![b' '; MAX_DATAGRAM + 1]),
            Err(BadDatagram::TooLong(MAX_DATAGRAM + 1))
        );
    }
}
