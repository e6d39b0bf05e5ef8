//! Unknown fields in a manifest, found the way the API server's strict field validation finds them.
//!
//! serde drops keys it does not know, and our API types must keep doing so: objects read from the
//! API server have to stay readable when a newer CRD adds fields. A hand-written file has no API
//! server in front of it, though, and a typo there (`sheduler: rr`) would silently become the
//! default. So [`manifest`](super::manifest) walks each parsed document against the CRD's own
//! OpenAPI schema, as generated from the types, before deserializing it: the rule cannot drift
//! from the CRD, and each unknown key is named by its full path, with the closest known sibling
//! as a suggestion.

use std::sync::LazyLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::CustomResourceExt;
use serde_json::{Map, Value, json};

use super::{FieldError, LvsService};

/// The schema of a whole LvsService document: the CRD's `openAPIV3Schema` (spec and status) plus
/// what the API server adds to every object (apiVersion, kind, and metadata as ObjectMeta).
static DOCUMENT_SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    let crd = LvsService::crd();
    let schema = crd
        .spec
        .versions
        .into_iter()
        .next()
        .and_then(|v| v.schema)
        .and_then(|s| s.open_api_v3_schema)
        .expect("the CRD has one version with a schema");
    let mut schema = serde_json::to_value(schema).expect("the CRD schema serializes to JSON");
    // Inlined, so that nested types (ownerReferences, managedFields) are walked like the rest.
    let metadata = schemars::generate::SchemaSettings::default()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<ObjectMeta>()
        .to_value();
    let properties = schema
        .get_mut("properties")
        .and_then(Value::as_object_mut)
        .expect("the CRD schema has properties");
    properties.insert("apiVersion".into(), json!({"type": "string"}));
    properties.insert("kind".into(), json!({"type": "string"}));
    properties.insert("metadata".into(), metadata);
    schema
});

/// Every key of `document` that its schema does not declare, each named by its full path
/// (`spec.ports[0].protocl`). Values of the wrong type are left to serde, which names them too.
pub fn unknown_fields(document: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    walk(&DOCUMENT_SCHEMA, document, "", &mut errors);
    errors
}

fn walk(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(map) => walk_object(schema, map, path, errors),
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

fn walk_object(schema: &Value, map: &Map<String, Value>, path: &str, errors: &mut Vec<FieldError>) {
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    // A schema that declares neither properties nor additionalProperties says nothing about its
    // keys (FieldsV1 in managedFields is such a free-form object), so it cannot call one unknown.
    if properties.is_none() && additional.is_none() {
        return;
    }
    for (key, child) in map {
        let child_path = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match (properties.and_then(|p| p.get(key)), additional) {
            (Some(child_schema), _) => walk(child_schema, child, &child_path, errors),
            (None, Some(Value::Bool(true))) => {}
            (None, Some(child_schema @ Value::Object(_))) => {
                walk(child_schema, child, &child_path, errors)
            }
            (None, _) => {
                let known = properties
                    .into_iter()
                    .flat_map(|p| p.keys().map(String::as_str));
                let message = match closest(key, known) {
                    Some(guess) => format!("unknown field {key:?}, did you mean {guess:?}?"),
                    None => format!("unknown field {key:?}"),
                };
                errors.push(FieldError::new(child_path, message));
            }
        }
    }
}

/// The known field `unknown` most likely misspells: equal but for case, or within an edit distance
/// of a third of its length (at least 1), as rustc's and cargo's "did you mean" do.
fn closest<'a>(unknown: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = unknown.chars().count().max(3) / 3;
    known
        .filter_map(|k| {
            let distance = if k.eq_ignore_ascii_case(unknown) {
                0
            } else {
                edit_distance(unknown, k)
            };
            (distance <= limit).then_some((distance, k))
        })
        .min()
        .map(|(_, k)| k)
}

/// Optimal string alignment distance: insertions, deletions, substitutions, and swaps of two
/// neighbours (`nmae` is one edit from `name`, the commonest typo).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between the first i chars of a and the first j chars of b.
    let mut d = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(doc: Value) -> Vec<String> {
        unknown_fields(&doc)
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    fn web(spec: Value) -> Value {
        json!({
            "apiVersion": "lvs-operator.io/v1alpha1",
            "kind": "LvsService",
            "metadata": {"name": "web"},
            "spec": spec,
        })
    }

    #[test]
    fn a_misspelt_field_is_named_with_the_field_it_resembles() {
        assert_eq!(
            fields(web(json!({"vip": "10.10.24.88", "sheduler": "rr"}))),
            ["spec.sheduler: unknown field \"sheduler\", did you mean \"scheduler\"?"]
        );
    }

    #[test]
    fn swapped_letters_and_wrong_case_still_find_the_field() {
        assert_eq!(
            closest("nmae", ["name", "namespace"].into_iter()),
            Some("name")
        );
        assert_eq!(
            closest("BackendService", ["backends", "backendService"].into_iter()),
            Some("backendService")
        );
        assert_eq!(closest("vp", ["vip", "ports"].into_iter()), Some("vip"));
    }

    #[test]
    fn a_field_like_none_of_its_siblings_gets_no_suggestion() {
        assert_eq!(
            closest("colour", ["vip", "ports", "scheduler"].into_iter()),
            None
        );
        assert_eq!(
            fields(web(json!({"vip": "10.10.24.88", "colour": "blue"}))),
            ["spec.colour: unknown field \"colour\""]
        );
    }

    #[test]
    fn unknown_fields_are_found_in_lists_and_nested_objects() {
        let doc = web(json!({
            "ports": [{"port": 80}, {"port": 53, "protocl": "UDP"}],
            "backends": [{"address": "10.10.24.21", "wieght": 2}],
            "persistence": {"timeoutSeconds": 300, "netmsak": "255.255.255.0"},
            "schedulerFlags": {"fallback": true, "ports": true},
            "directors": {"interface": "eth0", "nodeSelector": {"matchLabel": {}}},
            "backendService": {"name": "web", "namespace": "other"},
        }));
        assert_eq!(
            fields(doc),
            [
                "spec.backendService.namespace: unknown field \"namespace\"",
                "spec.backends[0].wieght: unknown field \"wieght\", did you mean \"weight\"?",
                "spec.directors.nodeSelector.matchLabel: unknown field \"matchLabel\", did you mean \"matchLabels\"?",
                "spec.persistence.netmsak: unknown field \"netmsak\", did you mean \"netmask\"?",
                "spec.ports[1].protocl: unknown field \"protocl\", did you mean \"protocol\"?",
                "spec.schedulerFlags.ports: unknown field \"ports\", did you mean \"port\"?",
            ]
        );
    }

    #[test]
    fn label_maps_take_any_key() {
        let mut doc = web(json!({
            "vip": "10.10.24.88",
            "backendNodeSelector": {"matchLabels": {"role": "web", "example.com/tier": "front"}},
        }));
        doc["metadata"]["labels"] = json!({"app.kubernetes.io/name": "web"});
        doc["metadata"]["annotations"] = json!({"note": "hand-written"});
        assert_eq!(fields(doc), Vec::<String>::new());
    }

    #[test]
    fn metadata_takes_the_object_meta_fields_and_no_others() {
        let mut doc = web(json!({"vip": "10.10.24.88"}));
        doc["metadata"] = json!({
            "nmae": "web",
            "namespace": "lb",
            "uid": "4f1c",
            "resourceVersion": "7",
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "finalizers": ["lvs-operator.io/cleanup"],
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "1", "controler": true}],
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:vip": {}}}}],
        });
        assert_eq!(
            fields(doc),
            [
                "metadata.nmae: unknown field \"nmae\", did you mean \"name\"?",
                "metadata.ownerReferences[0].controler: unknown field \"controler\", did you mean \"controller\"?",
            ]
        );
    }

    #[test]
    fn the_top_level_takes_api_version_kind_metadata_spec_and_status() {
        let mut doc = web(json!({"vip": "10.10.24.88"}));
        doc["status"] = json!({"director": "node-1"});
        doc["specs"] = json!({});
        assert_eq!(
            fields(doc),
            ["specs: unknown field \"specs\", did you mean \"spec\"?"]
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_is_left_to_serde() {
        assert_eq!(
            fields(web(json!({"ports": "80", "persistence": [1]}))),
            Vec::<String>::new()
        );
    }

    #[test]
    fn edit_distance_counts_a_swap_as_one_edit() {
        assert_eq!(edit_distance("nmae", "name"), 1);
        assert_eq!(edit_distance("sheduler", "scheduler"), 1);
        assert_eq!(edit_distance("", "vip"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
