//! Label selectors (`matchLabels`, `matchExpressions`) evaluated against a node's labels, as the
//! API server would evaluate them in a list call.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` satisfy `selector`. An empty selector matches everything, as in Kubernetes.
/// An unknown operator matches nothing: a selector we cannot read selects no node.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expression = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_label && by_expression
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn selectors_match_like_the_api_server() {
        let node = labels(&[("lvs-operator.io/director", "true"), ("zone", "a")]);
        let by_label = LabelSelector {
            match_labels: Some(labels(&[("lvs-operator.io/director", "true")])),
            ..Default::default()
        };
        assert!(matches(&by_label, &node));
        assert!(!matches(&by_label, &labels(&[("zone", "a")])));
        assert!(
            matches(&LabelSelector::default(), &node),
            "empty selects all"
        );
        let sel = |e| LabelSelector {
            match_expressions: Some(vec![e]),
            ..Default::default()
        };
        assert!(matches(&sel(expr("zone", "In", &["a", "b"])), &node));
        assert!(!matches(&sel(expr("zone", "NotIn", &["a"])), &node));
        assert!(
            matches(&sel(expr("rack", "NotIn", &["a"])), &node),
            "NotIn holds for a missing label"
        );
        assert!(matches(&sel(expr("zone", "Exists", &[])), &node));
        assert!(matches(&sel(expr("rack", "DoesNotExist", &[])), &node));
        assert!(!matches(&sel(expr("zone", "Gt", &["1"])), &node));
    }
}
