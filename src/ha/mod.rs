//! Director failover: which director holds each VIP, decided by the directors themselves.
//!
//! Directors exchange heartbeats over UDP ([`peers`], every 100 ms by default) and each runs the
//! same election ([`elect`]) on what it hears, so an unplanned failover takes `dead_after`
//! (350 ms by default) plus one resync, with or without the API server. In a cluster the API
//! server's VIP Lease arbitrates between directors that cannot hear each other. [`Ha`] is what
//! the agent talks to: it keeps this director's claims, runs the election for the VIPs it may
//! direct, and tells the agent which to hold.

pub mod announcer;
pub mod director;
pub mod elect;
pub mod holders;
pub mod message;
pub mod metrics;
pub mod peers;
pub use director::{Ha, PeerReport, Takeover};
pub use metrics::HaMetrics;
pub use peers::{Peers, Settings};
