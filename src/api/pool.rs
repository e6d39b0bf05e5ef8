//! `LvsAddressPool`: the addresses an administrator lets LvsServices claim, and who may.
//!
//! In a cluster an LvsService is served only when its VIP lies in a pool that admits the object's
//! namespace (MetalLB's IPAddressPool, for LVS). Without one the controller rejects the object
//! (Accepted=False, reason `VIPNotAllowed`, naming the pools) and no agent touches a node for it:
//! the agents read the pools too, so nothing is programmed even before the controller speaks.
//! A pool also says which nodes its objects may make real servers (VIP on `lo`, the ARP sysctls):
//! a tenant cannot change the sysctls of a node the pool does not allow. Standalone mode has no
//! pools: its files are the administrator's own.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};
use kube::{CustomResource, KubeSchema, ResourceExt};
use serde::{Deserialize, Serialize};

use super::selector::parse_selector;

/// Addresses LvsServices may claim as VIPs, the namespaces that may claim them, and the nodes
/// their real servers may be.
// kube-derive takes one `printcolumn(...)` per column, which clippy reads as repeated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "lvs-operator.io",
    version = "v1alpha1",
    kind = "LvsAddressPool",
    plural = "lvsaddresspools",
    shortname = "lvspool",
    derive = "PartialEq",
    doc = "Addresses LvsServices may use as VIPs, and which namespaces may use them.",
    printcolumn(name = "Addresses", type_ = "string", json_path = ".spec.addresses"),
    printcolumn(name = "Namespaces", type_ = "string", json_path = ".spec.namespaces"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct LvsAddressPoolSpec {
    /// The addresses: CIDRs (`10.10.24.80/28`), ranges (`10.10.24.80-10.10.24.95`) or single
    /// addresses, IPv4 or IPv6.
    // maxLength on each item keeps the rule's estimated cost within the API server's budget: the
    // longest form is an IPv6 range, 79 characters.
    #[schemars(length(min = 1, max = 64), inner(length(max = 90)))]
    #[x_kube(validation = Rule::new("self.all(a, isCIDR(a) || isIP(a) || (a.split('-').size() == 2 && isIP(a.split('-')[0]) && isIP(a.split('-')[1])))").message("each address must be a CIDR (10.10.24.80/28), a range (10.10.24.80-10.10.24.95) or an address"))]
    pub addresses: Vec<PoolAddress>,

    /// The namespaces whose LvsServices may use the pool. With neither this nor
    /// `namespaceSelector`, every namespace may.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 63)))]
    pub namespaces: Vec<NamespaceName>,

    /// The namespaces, by label, whose LvsServices may use the pool (besides `namespaces`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// The nodes that LvsServices with a VIP from this pool may make real servers (their agents
    /// put the VIP on `lo` and set the ARP sysctls), by label. Absent: every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_server_node_selector: Option<LabelSelector>,

    /// Whether the controller may pick a VIP from this pool for an LvsService without
    /// `spec.vip`. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_assign: Option<bool>,
}

/// A CIDR, a range `FIRST-LAST`, or one address.
pub type PoolAddress = String;
/// A namespace's name.
pub type NamespaceName = String;

/// One entry of `spec.addresses`, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    pub first: IpAddr,
    pub last: IpAddr,
}

impl AddressRange {
    pub fn parse(text: &str) -> Option<Self> {
        if let Some((addr, len)) = text.split_once('/') {
            let addr: IpAddr = addr.parse().ok()?;
            let len: u32 = len.parse().ok()?;
            let bits = if addr.is_ipv4() { 32 } else { 128 };
            if len > bits {
                return None;
            }
            let host = if len == bits {
                0
            } else {
                u128::MAX >> (128 - (bits - len))
            };
            let n = to_u128(addr) & !host;
            return Some(Self {
                first: from_u128(n, addr.is_ipv4()),
                last: from_u128(n | host, addr.is_ipv4()),
            });
        }
        if let Some((a, b)) = text.split_once('-') {
            let (first, last): (IpAddr, IpAddr) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            if first.is_ipv4() != last.is_ipv4() || to_u128(first) > to_u128(last) {
                return None;
            }
            return Some(Self { first, last });
        }
        let one: IpAddr = text.parse().ok()?;
        Some(Self {
            first: one,
            last: one,
        })
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        addr.is_ipv4() == self.first.is_ipv4()
            && (to_u128(self.first)..=to_u128(self.last)).contains(&to_u128(addr))
    }

    /// The addresses of the range in order, skipping a v4 network's network and broadcast
    /// addresses when it is larger than a /31 written as a CIDR (`cidr`).
    fn candidates(&self, cidr: bool) -> impl Iterator<Item = IpAddr> + '_ {
        let (mut lo, mut hi) = (to_u128(self.first), to_u128(self.last));
        if cidr && self.first.is_ipv4() && hi - lo >= 3 {
            lo += 1;
            hi -= 1;
        }
        let v4 = self.first.is_ipv4();
        // At most a few thousand are ever looked at: allocation stops at the first free one.
        (lo..=hi).take(65_536).map(move |n| from_u128(n, v4))
    }
}

fn to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(n: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(u32::try_from(n).unwrap_or(u32::MAX).into())
    } else {
        IpAddr::V6(n.into())
    }
}

/// One pool, read: its ranges and selectors parsed once.
#[derive(Debug, Clone)]
struct Pool {
    name: String,
    ranges: Vec<(AddressRange, bool)>,
    namespaces: Vec<String>,
    namespace_selector: Option<Selector>,
    real_servers: Option<Selector>,
    auto_assign: bool,
}

impl Pool {
    fn read(pool: &LvsAddressPool) -> Self {
        let spec = &pool.spec;
        // A selector that does not parse selects nothing (the CRD's schema keeps them sane).
        let parse = |field, s: &Option<LabelSelector>| {
            s.as_ref()
                .map(|s| parse_selector(field, s).unwrap_or_else(|_| nothing()))
        };
        Self {
            name: pool.name_any(),
            ranges: spec
                .addresses
                .iter()
                .filter_map(|a| Some((AddressRange::parse(a)?, a.contains('/'))))
                .collect(),
            namespaces: spec.namespaces.clone(),
            namespace_selector: parse("spec.namespaceSelector", &spec.namespace_selector),
            real_servers: parse(
                "spec.realServerNodeSelector",
                &spec.real_server_node_selector,
            ),
            auto_assign: spec.auto_assign.unwrap_or(true),
        }
    }

    fn contains(&self, vip: IpAddr) -> bool {
        self.ranges.iter().any(|(r, _)| r.contains(vip))
    }

    fn admits(&self, ns: &Namespace<'_>) -> bool {
        if self.namespaces.is_empty() && self.namespace_selector.is_none() {
            return true;
        }
        self.namespaces.iter().any(|n| n == ns.name)
            || self
                .namespace_selector
                .as_ref()
                .is_some_and(|s| ns.labels.is_some_and(|l| s.matches(l)))
    }
}

/// A selector no label set matches.
fn nothing() -> Selector {
    Selector::from_iter([("lvs-operator.io/invalid-selector", "\u{0}")])
}

/// A namespace as the pools see it: its name and, where known, its labels.
#[derive(Debug, Clone, Copy)]
pub struct Namespace<'a> {
    pub name: &'a str,
    pub labels: Option<&'a BTreeMap<String, String>>,
}

/// Every pool of the cluster, read.
#[derive(Debug, Clone, Default)]
pub struct Pools {
    pools: Vec<Pool>,
}

/// Why a VIP may not be used: the `VIPNotAllowed` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAllowed {
    pub vip: IpAddr,
    pub namespace: String,
    /// The pools that hold the VIP but do not admit the namespace.
    pub holding: Vec<String>,
    /// Every pool's name.
    pub all: Vec<String>,
}

impl NotAllowed {
    pub fn message(&self) -> String {
        if !self.holding.is_empty() {
            return format!(
                "spec.vip {} is in LvsAddressPool {}, which does not admit namespace {}: ask an administrator to add it to the pool's spec.namespaces",
                self.vip,
                self.holding.join(", "),
                self.namespace
            );
        }
        if self.all.is_empty() {
            return format!(
                "spec.vip {} is in no LvsAddressPool, and the cluster has none: an administrator must create one holding the address (kind LvsAddressPool)",
                self.vip
            );
        }
        format!(
            "spec.vip {} is in no LvsAddressPool (pools: {}): use an address from one that admits namespace {}",
            self.vip,
            self.all.join(", "),
            self.namespace
        )
    }
}

impl Pools {
    pub fn new<'a>(pools: impl IntoIterator<Item = &'a LvsAddressPool>) -> Self {
        let mut pools: Vec<Pool> = pools.into_iter().map(Pool::read).collect();
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        Self { pools }
    }

    /// The pools that hold `vip` and admit `ns`, by name; an error when there is none.
    pub fn admit(&self, ns: Namespace<'_>, vip: IpAddr) -> Result<Vec<&str>, NotAllowed> {
        let holding: Vec<&Pool> = self.pools.iter().filter(|p| p.contains(vip)).collect();
        let admitting: Vec<&str> = holding
            .iter()
            .filter(|p| p.admits(&ns))
            .map(|p| p.name.as_str())
            .collect();
        if admitting.is_empty() {
            return Err(NotAllowed {
                vip,
                namespace: ns.name.to_string(),
                holding: holding.iter().map(|p| p.name.clone()).collect(),
                all: self.pools.iter().map(|p| p.name.clone()).collect(),
            });
        }
        Ok(admitting)
    }

    /// Whether a node with `labels` may be a real server of an object of `ns` with `vip`: some
    /// pool holding the VIP and admitting the namespace allows it.
    pub fn allows_real_server(
        &self,
        ns: Namespace<'_>,
        vip: IpAddr,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        self.pools
            .iter()
            .filter(|p| p.contains(vip) && p.admits(&ns))
            .any(|p| p.real_servers.as_ref().is_none_or(|s| s.matches(labels)))
    }

    /// The first address, pool by pool in name order, that an auto-assigning pool admitting `ns`
    /// holds and `taken` does not: a VIP for an object without one.
    pub fn allocate(
        &self,
        ns: Namespace<'_>,
        taken: &dyn Fn(IpAddr) -> bool,
    ) -> Option<(IpAddr, String)> {
        self.pools
            .iter()
            .filter(|p| p.auto_assign && p.admits(&ns))
            .find_map(|p| {
                p.ranges
                    .iter()
                    .flat_map(|(r, cidr)| r.candidates(*cidr))
                    .find(|a| !taken(*a))
                    .map(|a| (a, p.name.clone()))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn pool(name: &str, addresses: &[&str], namespaces: &[&str]) -> LvsAddressPool {
        LvsAddressPool::new(
            name,
            LvsAddressPoolSpec {
                addresses: addresses.iter().map(|a| a.to_string()).collect(),
                namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
                ..Default::default()
            },
        )
    }

    fn ns(name: &str) -> Namespace<'_> {
        Namespace { name, labels: None }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_ranges_and_single_addresses_are_read() {
        let cidr = AddressRange::parse("10.10.24.80/28").unwrap();
        assert_eq!(
            (cidr.first, cidr.last),
            (ip("10.10.24.80"), ip("10.10.24.95"))
        );
        let range = AddressRange::parse("10.10.24.88-10.10.24.90").unwrap();
        assert!(range.contains(ip("10.10.24.89")) && !range.contains(ip("10.10.24.91")));
        let one = AddressRange::parse("2001:db8::88").unwrap();
        assert!(one.contains(ip("2001:db8::88")) && !one.contains(ip("10.10.24.88")));
        let v6 = AddressRange::parse("fd00:24::/120").unwrap();
        assert_eq!(v6.last, ip("fd00:24::ff"));
        for bad in ["10.0.0.0/33", "10.0.0.9-10.0.0.1", "10.0.0.1-::1", "nope"] {
            assert_eq!(AddressRange::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_vip_outside_every_pool_is_refused_naming_the_pools() {
        let pools = [pool("lan", &["10.10.24.80/28"], &[])];
        let pools = Pools::new(&pools);
        assert_eq!(
            pools.admit(ns("default"), ip("10.10.24.88")),
            Ok(vec!["lan"])
        );
        let refused = pools.admit(ns("default"), ip("10.10.24.1")).unwrap_err();
        assert_eq!(
            refused.message(),
            "spec.vip 10.10.24.1 is in no LvsAddressPool (pools: lan): use an address from one that admits namespace default"
        );
        let none = Pools::default();
        let refused = none.admit(ns("default"), ip("10.10.24.88")).unwrap_err();
        assert!(refused.message().contains("the cluster has none"));
    }

    #[test]
    fn a_pool_admits_only_its_namespaces() {
        let pools = [pool("team-a", &["10.10.24.88"], &["a"])];
        let pools = Pools::new(&pools);
        assert!(pools.admit(ns("a"), ip("10.10.24.88")).is_ok());
        let refused = pools.admit(ns("b"), ip("10.10.24.88")).unwrap_err();
        assert_eq!(
            refused.message(),
            "spec.vip 10.10.24.88 is in LvsAddressPool team-a, which does not admit namespace b: ask an administrator to add it to the pool's spec.namespaces"
        );
        let labels = BTreeMap::from([("team".to_string(), "b".to_string())]);
        let mut by_label = pool("by-label", &["10.10.24.89"], &[]);
        by_label.spec.namespace_selector = Some(LabelSelector {
            match_labels: Some(labels.clone()),
            ..Default::default()
        });
        let pools = [by_label];
        let pools = Pools::new(&pools);
        let labelled = Namespace {
            name: "b",
            labels: Some(&labels),
        };
        assert!(pools.admit(labelled, ip("10.10.24.89")).is_ok());
        assert!(pools.admit(ns("b"), ip("10.10.24.89")).is_err());
    }

    #[test]
    fn real_servers_must_be_nodes_the_pool_allows() {
        let mut lan = pool("lan", &["10.10.24.80/28"], &[]);
        lan.spec.real_server_node_selector = Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("role".into(), "web".into())])),
            ..Default::default()
        });
        let pools = [lan];
        let pools = Pools::new(&pools);
        let web = BTreeMap::from([("role".to_string(), "web".to_string())]);
        let db = BTreeMap::from([("role".to_string(), "db".to_string())]);
        assert!(pools.allows_real_server(ns("default"), ip("10.10.24.88"), &web));
        assert!(!pools.allows_real_server(ns("default"), ip("10.10.24.88"), &db));
        assert!(!pools.allows_real_server(ns("default"), ip("10.10.25.88"), &web));
    }

    #[test]
    fn allocation_takes_the_first_free_address_of_an_admitting_pool() {
        let mut manual = pool("a-manual", &["10.10.24.64/28"], &[]);
        manual.spec.auto_assign = Some(false);
        let pools = [manual, pool("lan", &["10.10.24.80/30"], &[])];
        let pools = Pools::new(&pools);
        let taken = |a: IpAddr| a == ip("10.10.24.81");
        assert_eq!(
            pools.allocate(ns("default"), &taken),
            Some((ip("10.10.24.82"), "lan".to_string())),
            "the network address .80 is skipped, .81 is taken"
        );
        let all = |_| true;
        assert_eq!(pools.allocate(ns("default"), &all), None);
    }
}
