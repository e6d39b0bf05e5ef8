//! The CRD's validation rules, and the API server's own rules for object names, enforced again
//! in Rust; and the one place the spec is parsed.
//!
//! The API server enforces the schema and CEL rules of the CRD; the agent enforces these, because
//! in standalone mode nothing stands between a YAML file and the kernel. Messages repeat the CEL
//! rules' wording where the two can say the same thing. Every error names the object and the field.
//!
//! A valid object comes out as a [`VirtualService`]: addresses parsed, ports as `u16`, the IPVS
//! settings computed. Everything downstream reads that value and never the strings again.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use kube::ResourceExt;

use super::{HealthCheckType, LvsService, LvsServiceSpec, Scheduler};
use crate::core::{HealthSpec, Port, Probe, RealServer, VirtualService};
use crate::ipvs::ServiceConfig;
use crate::ipvs::types::{SVC_F_PERSISTENT, SVC_F_SCHED1, SVC_F_SCHED2};

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, as the API server names it (`spec.ports[0].port`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// An object rejected as a whole, with every reason found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InvalidObject {
    /// `namespace/name`, or just `name` when the object has no namespace (standalone files).
    pub object: String,
    pub errors: Vec<FieldError>,
}

impl fmt::Display for InvalidObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {e}", self.object)?;
        }
        Ok(())
    }
}

/// How users see an object's identity in messages: `namespace/name` or `name`.
pub fn object_ref(obj: &LvsService) -> String {
    match obj.namespace() {
        Some(ns) => format!("{ns}/{}", obj.name_any()),
        None => obj.name_any(),
    }
}

/// Checks everything the CRD checks and returns the object as the data plane reads it.
pub fn validate(obj: &LvsService) -> Result<VirtualService, InvalidObject> {
    let mut errors = Vec::new();
    check_metadata(obj, &mut errors);
    let vip = check_spec(obj, &mut errors);
    match vip {
        Some(vip) if errors.is_empty() => Ok(typed(obj, vip)),
        _ => Err(InvalidObject {
            object: object_ref(obj),
            errors,
        }),
    }
}

/// The typed value of a spec that passed every check (so no conversion here can fail).
fn typed(obj: &LvsService, vip: IpAddr) -> VirtualService {
    let spec = &obj.spec;
    VirtualService {
        id: object_ref(obj),
        vip,
        ports: spec
            .ports
            .iter()
            .map(|p| Port {
                protocol: p.protocol,
                port: u16::try_from(p.port).unwrap_or_default(),
            })
            .collect(),
        config: service_config(spec, vip),
        backends: spec.backends.as_ref().map(|backends| {
            backends
                .iter()
                .filter_map(|b| {
                    Some(RealServer {
                        addr: b.address.parse().ok()?,
                        weight: u32::try_from(b.weight).ok()?,
                    })
                })
                .collect()
        }),
        interface: spec.directors.as_ref().and_then(|d| d.interface.clone()),
        // Validation has already reported any error this could find. An IPv6 VIP's real
        // servers are checked at their own addresses: IPv6 has no accept_local, so the active
        // director cannot take the answer of a real server sent from the VIP it holds itself.
        health: health_spec(spec).unwrap_or(None).map(|h| HealthSpec {
            through_vip: h.through_vip && vip.is_ipv4(),
            ..h
        }),
    }
}

/// `spec.healthCheck` as the directors run it: `None` for `type: None`, the default TCP check
/// when absent; or every field that is wrong.
fn health_spec(spec: &LvsServiceSpec) -> Result<Option<HealthSpec>, Vec<FieldError>> {
    let Some(h) = &spec.health_check else {
        return Ok(Some(HealthSpec::default_tcp()));
    };
    let mut errors = Vec::new();
    let mut duration = |field: &str, text: &str| {
        let parsed = parse_duration(text);
        if parsed.is_none() {
            errors.push(FieldError::new(
                format!("spec.healthCheck.{field}"),
                format!("{text:?} must be a duration such as 2s, 500ms or 1m (Gateway API format)"),
            ));
        }
        parsed.unwrap_or_default()
    };
    let interval = duration("interval", &h.interval);
    let timeout = duration("timeout", &h.timeout);
    let slow_start = duration("slowStart", &h.slow_start);
    if !interval.is_zero() && interval < Duration::from_millis(100) {
        errors.push(FieldError::new(
            "spec.healthCheck.interval",
            format!(
                "{:?} is shorter than the minimum interval of 100ms",
                h.interval
            ),
        ));
    }
    if !timeout.is_zero() && !interval.is_zero() && timeout > interval {
        errors.push(FieldError::new(
            "spec.healthCheck.timeout",
            format!(
                "timeout {:?} must be at most the interval {:?}",
                h.timeout, h.interval
            ),
        ));
    }
    let port = match h.port {
        Some(p) => match u16::try_from(p) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                errors.push(FieldError::new(
                    "spec.healthCheck.port",
                    format!("{p} is out of range 1..65535"),
                ));
                None
            }
        },
        None => None,
    };
    for (field, value) in [
        ("failureThreshold", h.failure_threshold),
        ("successThreshold", h.success_threshold),
    ] {
        if !(1..=100).contains(&value) {
            errors.push(FieldError::new(
                format!("spec.healthCheck.{field}"),
                format!("{value} is out of range 1..100"),
            ));
        }
    }
    let path = h.path.clone().unwrap_or_else(|| "/".into());
    if h.path.is_some() && !matches!(h.type_, HealthCheckType::Http | HealthCheckType::Https) {
        errors.push(FieldError::new(
            "spec.healthCheck.path",
            "path is only for HTTP and HTTPS checks",
        ));
    }
    if !path.starts_with('/') || path.len() > 1024 || path.chars().any(char::is_whitespace) {
        errors.push(FieldError::new(
            "spec.healthCheck.path",
            format!("{path:?} must be a path starting with / and without spaces"),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let probe = match h.type_ {
        HealthCheckType::None => return Ok(None),
        HealthCheckType::Tcp => Probe::Tcp,
        HealthCheckType::Http => Probe::Http { path },
        HealthCheckType::Https => Probe::Https { path },
    };
    Ok(Some(HealthSpec {
        probe,
        port,
        interval,
        timeout,
        fall: h.failure_threshold.unsigned_abs(),
        rise: h.success_threshold.unsigned_abs(),
        through_vip: h.through_vip,
        slow_start,
    }))
}

/// A Gateway API duration (GEP-2257): 1 to 4 groups of 1 to 5 digits and a unit, h, m, s or ms,
/// e.g. `2s`, `500ms`, `1h30m`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut total = Duration::ZERO;
    let mut groups = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if !(1..=5).contains(&digits) {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total += unit * u32::try_from(value).ok()?;
        groups += 1;
    }
    (1..=4).contains(&groups).then_some(total)
}

/// The IPVS settings of every port of an object, as ipvsadm would send them: the netmask is
/// always set (255.255.255.255 or /128 unless persistence groups clients), which is what the
/// kernel reports back, so an unchanged service compares equal.
fn service_config(spec: &LvsServiceSpec, vip: IpAddr) -> ServiceConfig {
    let mut config = ServiceConfig::new(spec.scheduler, vip);
    if let Some(p) = &spec.persistence {
        config.flags |= SVC_F_PERSISTENT;
        config.timeout = u32::try_from(p.timeout_seconds).unwrap_or(u32::MAX);
        if let Some(mask) = p.netmask.as_deref().and_then(|m| parse_netmask(vip, m)) {
            config.netmask = mask;
        }
    }
    if let Some(f) = &spec.scheduler_flags
        && matches!(spec.scheduler, Scheduler::Sh | Scheduler::Mh)
    {
        if f.fallback {
            config.flags |= SVC_F_SCHED1;
        }
        if f.port {
            config.flags |= SVC_F_SCHED2;
        }
    }
    config
}

/// The API server's rules for a namespaced custom resource's identity, in its words, so that a
/// file the agent accepts is one `kubectl apply` accepts too.
fn check_metadata(obj: &LvsService, errors: &mut Vec<FieldError>) {
    match obj.metadata.name.as_deref() {
        None | Some("") => errors.push(FieldError::new("metadata.name", "must be set")),
        Some(name) => {
            for problem in dns1123_subdomain_problems(name) {
                errors.push(FieldError::new(
                    "metadata.name",
                    format!("{name:?} is invalid: {problem}"),
                ));
            }
        }
    }
    // An empty namespace is no namespace: the API server puts the object in the default one.
    if let Some(ns) = obj
        .metadata
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
    {
        for problem in dns1123_label_problems(ns) {
            errors.push(FieldError::new(
                "metadata.namespace",
                format!("{ns:?} is invalid: {problem}"),
            ));
        }
    }
}

/// Checks the spec, pushing every error found; returns the VIP when it parses.
fn check_spec(obj: &LvsService, errors: &mut Vec<FieldError>) -> Option<IpAddr> {
    let spec = &obj.spec;
    let allocated = obj.status.as_ref().and_then(|s| s.vip.as_deref());
    let vip = match (spec.vip.as_deref(), allocated) {
        (Some(vip), _) => check_address("spec.vip", vip, "10.10.24.88 or 2001:db8::88", errors),
        (None, Some(vip)) => check_address("status.vip", vip, "10.10.24.88", errors),
        (None, None) => {
            errors.push(FieldError::new(
                "spec.vip",
                "is required: set it (in a cluster the controller allocates one from an LvsAddressPool when it is left out)",
            ));
            None
        }
    };

    if spec.ports.is_empty() {
        errors.push(FieldError::new("spec.ports", "must have at least 1 item"));
    }
    if spec.ports.len() > 64 {
        errors.push(FieldError::new("spec.ports", "must have at most 64 items"));
    }
    let mut seen = BTreeSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        if !(1..=65535).contains(&p.port) {
            errors.push(FieldError::new(
                format!("spec.ports[{i}].port"),
                format!("{} is out of range 1..65535", p.port),
            ));
        }
        if !seen.insert((p.port, p.protocol)) {
            errors.push(FieldError::new(
                format!("spec.ports[{i}]"),
                format!("duplicate port {}/{}", p.port, p.protocol),
            ));
        }
    }

    if spec.scheduler_flags.is_some() && !matches!(spec.scheduler, Scheduler::Sh | Scheduler::Mh) {
        errors.push(FieldError::new(
            "spec.schedulerFlags",
            "scheduler flags exist only for the sh and mh schedulers",
        ));
    }

    if let Some(p) = &spec.persistence {
        if !(1..=31_536_000).contains(&p.timeout_seconds) {
            errors.push(FieldError::new(
                "spec.persistence.timeoutSeconds",
                format!("{} is out of range 1..31536000", p.timeout_seconds),
            ));
        }
        if let (Some(mask), Some(vip)) = (&p.netmask, vip)
            && parse_netmask(vip, mask).is_none()
        {
            let wanted = if vip.is_ipv4() {
                "must be a dotted netmask such as 255.255.255.0 for an IPv4 vip"
            } else {
                "must be a prefix length 1..128 for an IPv6 vip"
            };
            errors.push(FieldError::new(
                "spec.persistence.netmask",
                format!("{mask:?} {wanted}"),
            ));
        }
    }

    let sources = [
        spec.backends.is_some(),
        spec.backend_node_selector.is_some(),
        spec.backend_service.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        errors.push(FieldError::new(
            "spec",
            "exactly one of spec.backends, spec.backendNodeSelector or spec.backendService must be set",
        ));
    }

    if let Some(backends) = &spec.backends {
        if backends.is_empty() {
            errors.push(FieldError::new(
                "spec.backends",
                "must have at least 1 item",
            ));
        }
        if backends.len() > 1024 {
            errors.push(FieldError::new(
                "spec.backends",
                "must have at most 1024 items",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, b) in backends.iter().enumerate() {
            let field = format!("spec.backends[{i}].address");
            if let Some(addr) = check_address(&field, &b.address, "10.10.24.21", errors) {
                if let Some(vip) = vip
                    && vip.is_ipv4() != addr.is_ipv4()
                {
                    errors.push(FieldError::new(
                        format!("spec.backends[{i}]"),
                        "every backend address must be of the same address family as spec.vip",
                    ));
                }
                if !seen.insert(addr) {
                    errors.push(FieldError::new(
                        format!("spec.backends[{i}]"),
                        format!("duplicate backend address {addr}"),
                    ));
                }
            }
            if !(0..=65535).contains(&b.weight) {
                errors.push(FieldError::new(
                    format!("spec.backends[{i}].weight"),
                    format!("{} is out of range 0..65535", b.weight),
                ));
            }
        }
    }

    if let Some(svc) = &spec.backend_service
        && !is_dns1035_label(&svc.name)
    {
        errors.push(FieldError::new(
            "spec.backendService.name",
            format!("{:?} must be a DNS-1035 label, such as web", svc.name),
        ));
    }

    if let Some(ifname) = spec.directors.as_ref().and_then(|d| d.interface.as_deref())
        && !is_interface_name(ifname)
    {
        errors.push(FieldError::new(
            "spec.directors.interface",
            format!(
                "{ifname:?} must be a network interface name of 1 to 15 characters, such as eth0"
            ),
        ));
    }
    if let Err(found) = health_spec(spec) {
        errors.extend(found);
    }
    vip
}

/// Parses an address the way the CRD's CEL rule accepts it: unicast, in canonical form.
fn check_address(
    field: &str,
    text: &str,
    example: &str,
    errors: &mut Vec<FieldError>,
) -> Option<IpAddr> {
    let parsed = text.parse::<IpAddr>().ok();
    match parsed {
        Some(addr) if addr.to_string() == text && is_global_unicast(addr) => Some(addr),
        _ => {
            errors.push(FieldError::new(
                field,
                format!(
                    "{text:?} must be a unicast IPv4 or IPv6 address in canonical form, such as {example}"
                ),
            ));
            None
        }
    }
}

/// Go's `net.IP.IsGlobalUnicast`, which the API server's CEL `ip().isGlobalUnicast()` uses:
/// private ranges count as global; loopback, link-local, multicast and unspecified do not.
pub fn is_global_unicast(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_multicast()
                || a.is_broadcast())
        }
        IpAddr::V6(a) => {
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || a.is_unicast_link_local())
        }
    }
}

/// The persistence netmask (`IPVS_SVC_ATTR_NETMASK`): for IPv4 the mask as a number
/// (255.255.255.0 is 0xffffff00; the netlink layer sends it in network byte order, as ipvsadm
/// does), for IPv6 the prefix length. `None` when invalid.
pub fn parse_netmask(vip: IpAddr, text: &str) -> Option<u32> {
    match vip {
        IpAddr::V4(_) => text.parse::<std::net::Ipv4Addr>().ok().map(u32::from),
        IpAddr::V6(_) => match text.parse::<u32>() {
            Ok(plen) if (1..=128).contains(&plen) && !text.starts_with('0') => Some(plen),
            _ => None,
        },
    }
}

fn is_dns1035_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

/// Kubernetes' `IsDNS1123Subdomain`, whose messages these are: at most 253 characters of
/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`.
fn dns1123_subdomain_problems(s: &str) -> Vec<&'static str> {
    let mut problems = Vec::new();
    if s.len() > 253 {
        problems.push("must be no more than 253 characters");
    }
    if !s.split('.').all(is_dns1123_label_text) {
        problems.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        );
    }
    problems
}

/// Kubernetes' `IsDNS1123Label`, whose messages these are: at most 63 characters of
/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn dns1123_label_problems(s: &str) -> Vec<&'static str> {
    let mut problems = Vec::new();
    if s.len() > 63 {
        problems.push("must be no more than 63 characters");
    }
    if !is_dns1123_label_text(s) {
        problems.push(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
        );
    }
    problems
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, without the length limit.
fn is_dns1123_label_text(s: &str) -> bool {
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = s.as_bytes();
    b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

fn is_interface_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_.:@-".contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Backend, LvsServiceSpec, ServicePort};

    fn named(name: &str, namespace: Option<&str>) -> LvsService {
        let mut obj = LvsService::new(
            name,
            LvsServiceSpec {
                vip: Some("10.10.24.88".into()),
                ports: vec![ServicePort {
                    port: 80,
                    protocol: Default::default(),
                }],
                scheduler: Default::default(),
                scheduler_flags: None,
                persistence: None,
                backends: Some(vec![Backend {
                    address: "10.10.24.21".into(),
                    weight: 1,
                }]),
                backend_node_selector: None,
                backend_service: None,
                directors: None,
                health_check: None,
            },
        );
        obj.metadata.namespace = namespace.map(str::to_string);
        obj
    }

    fn errors(obj: &LvsService) -> Vec<String> {
        match validate(obj) {
            Ok(_) => Vec::new(),
            Err(e) => e.to_string().lines().map(str::to_string).collect(),
        }
    }

    #[test]
    fn a_vip_comes_from_the_spec_or_else_from_the_controllers_allocation() {
        let mut obj = named("web", Some("default"));
        obj.spec.vip = None;
        let err = validate(&obj).unwrap_err();
        assert_eq!(
            err.errors[0].to_string(),
            "spec.vip: is required: set it (in a cluster the controller allocates one from an LvsAddressPool when it is left out)"
        );
        obj.status = Some(crate::api::LvsServiceStatus {
            vip: Some("10.10.24.81".into()),
            ..Default::default()
        });
        assert_eq!(validate(&obj).unwrap().vip.to_string(), "10.10.24.81");
        obj.spec.vip = Some("10.10.24.88".into());
        assert_eq!(validate(&obj).unwrap().vip.to_string(), "10.10.24.88");
    }

    #[test]
    fn durations_are_read_in_the_gateway_api_format() {
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        for bad in [
            "",
            "2",
            "1.5s",
            "2 s",
            "123456s",
            "1h1m1s1ms1h",
            "-1s",
            "1d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_name_with_capitals_or_underscores_is_refused_in_the_api_servers_words() {
        assert_eq!(
            errors(&named("Web_1", None)),
            [
                "Web_1: metadata.name: \"Web_1\" is invalid: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ]
        );
    }

    #[test]
    fn a_dotted_lowercase_name_of_253_characters_is_accepted() {
        assert_eq!(
            errors(&named("web.example-1.lb", None)),
            Vec::<String>::new()
        );
        let longest = format!("{}.{}", "a".repeat(126), "b".repeat(126));
        assert_eq!(errors(&named(&longest, None)), Vec::<String>::new());
    }

    #[test]
    fn a_name_longer_than_253_characters_is_refused() {
        let name = "a".repeat(254);
        let errs = errors(&named(&name, None));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].ends_with("is invalid: must be no more than 253 characters"));
    }

    #[test]
    fn names_that_start_or_end_badly_or_have_empty_labels_are_refused() {
        for name in ["-web", "web-", "web.", ".web", "web..lb", "web.-lb", "wéb"] {
            assert!(validate(&named(name, None)).is_err(), "{name}");
        }
    }

    #[test]
    fn a_namespace_must_be_a_dns_label_without_dots() {
        assert_eq!(errors(&named("web", Some("lb-1"))), Vec::<String>::new());
        assert_eq!(errors(&named("web", Some(""))), Vec::<String>::new());
        assert_eq!(
            errors(&named("web", Some("lb.prod"))),
            [
                "lb.prod/web: metadata.namespace: \"lb.prod\" is invalid: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
            ]
        );
        let long = "n".repeat(64);
        assert!(
            errors(&named("web", Some(&long)))[0]
                .ends_with("is invalid: must be no more than 63 characters")
        );
    }
}
