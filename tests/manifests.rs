//! Every manifest under tests/invalid is rejected by the Rust validation with the field its
//! `# expect:` header names; every manifest under tests/valid is accepted. The control-plane e2e
//! applies the same files to a real API server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use kube::CustomResourceExt;
use lvs_operator::api::{LvsService, manifest, validate};
use serde_json::Value;

fn expected_field(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("# expect: "))
        .expect("an invalid manifest names the field its error must name")
        .trim()
        .to_string()
}

/// An object is named after its file (`07-port-70000.yaml` holds `port-70000`), unless its name is
/// what is wrong with it: a file name cannot be an invalid object name, so `# object:` gives it.
fn expected_object(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("# object: "))
        .map(|n| n.trim().to_string())
}

/// An error on `spec.backends[1]` names `spec.backends`; only the whole-spec rules name `spec` itself.
fn names_field(actual: &str, expected: &str) -> bool {
    actual == expected
        || (expected != "spec"
            && (actual.starts_with(&format!("{expected}."))
                || actual.starts_with(&format!("{expected}["))))
}

#[test]
fn every_invalid_manifest_is_rejected_naming_its_field() {
    let files = invalid_manifests();
    assert!(
        files.len() >= 20,
        "at least 20 invalid manifests, found {}",
        files.len()
    );
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let field = expected_field(&text);
        let docs = manifest::parse_documents(&file.display().to_string(), &text);
        assert_eq!(docs.len(), 1, "{}", file.display());
        let err = match &docs[0] {
            Err(e) => e.clone(),
            Ok(obj) => validate(obj).expect_err(&format!("{} must be rejected", file.display())),
        };
        let name = expected_object(&text).unwrap_or_else(|| {
            file.file_stem()
                .unwrap()
                .to_str()
                .unwrap()
                .split_once('-')
                .unwrap()
                .1
                .to_string()
        });
        assert_eq!(
            err.object,
            name,
            "{}: the error names the object",
            file.display()
        );
        let text = err.to_string();
        assert!(
            err.errors.iter().any(|e| names_field(&e.field, &field)),
            "{}: expected an error on {field}, got:\n{text}",
            file.display()
        );
    }
}

#[test]
fn out_of_range_port_reads_as_the_standalone_agent_prints_it() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid/07-port-70000.yaml"),
    )
    .unwrap();
    let mut text = text.replace("port-70000", "web");
    text.push('\n');
    let obj = manifest::parse_documents("x", &text).remove(0).unwrap();
    assert_eq!(
        validate(&obj).unwrap_err().to_string(),
        "web: spec.ports[0].port: 70000 is out of range 1..65535"
    );
}

#[test]
fn unknown_scheduler_names_the_field_and_the_choices() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid/11-unknown-scheduler.yaml"),
    )
    .unwrap();
    let err = manifest::parse_documents("x", &text).remove(0).unwrap_err();
    let line = err.to_string();
    assert!(
        line.starts_with("unknown-scheduler: spec.scheduler: unknown variant `random`"),
        "{line}"
    );
    assert!(line.contains("`wlc`") && line.contains("`twos`"), "{line}");
}

#[test]
fn misspelt_field_is_rejected_with_the_field_it_resembles() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid/28-unknown-field.yaml"),
    )
    .unwrap()
    .replace("unknown-field", "web");
    let err = manifest::parse_documents("x", &text).remove(0).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"web: spec.sheduler: unknown field "sheduler", did you mean "scheduler"?"#
    );
}

#[test]
fn misspelt_vip_is_an_unknown_field_and_a_missing_vip() {
    let text = "apiVersion: lvs-operator.io/v1alpha1\nkind: LvsService\nmetadata: {name: web}\n\
                spec: {vp: 10.10.24.88, ports: [{port: 80}], backends: [{address: 10.10.24.21}]}\n";
    let err = manifest::parse_documents("x", text).remove(0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "web: spec.vp: unknown field \"vp\", did you mean \"vip\"?"
    );
    // Without the misspelling's field, the object reads as having no VIP, which the standalone
    // agent (no controller to allocate one) refuses.
    let text = text.replace("vp: 10.10.24.88, ", "");
    let obj = manifest::parse_documents("x", &text).remove(0).unwrap();
    let err = validate(&obj).unwrap_err().to_string();
    assert!(err.starts_with("web: spec.vip: is required"), "{err}");
}

fn invalid_manifests() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// The CRD's messageExpressions of the form `'"' + self + '" TEXT'`, as TEXT by the path of their
/// field without list indexes (`spec.backends.address`).
fn value_messages(schema: &Value, path: &str, out: &mut BTreeMap<String, String>) {
    for rule in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(text) = rule["messageExpression"]
            .as_str()
            .and_then(|e| e.strip_prefix(r#"'"' + self + '" "#))
            .and_then(|e| e.strip_suffix('\''))
        {
            out.insert(path.to_string(), text.to_string());
        }
    }
    for (key, child) in schema["properties"].as_object().into_iter().flatten() {
        let child_path = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        value_messages(child, &child_path, out);
    }
    if let Some(items) = schema.get("items") {
        value_messages(items, path, out);
    }
}

/// `spec.backends[0].address` as a JSON pointer, and without its indexes.
fn pointer_and_key(field: &str) -> (String, String) {
    let pointer = format!("/{}", field.replace(['.', '['], "/").replace(']', ""));
    let key = field
        .split('.')
        .map(|part| part.split('[').next().unwrap())
        .collect::<Vec<_>>()
        .join(".");
    (pointer, key)
}

#[test]
fn rust_messages_repeat_the_crds_message_expressions_with_the_value() {
    let crd = serde_json::to_value(LvsService::crd()).unwrap();
    let mut expected = BTreeMap::new();
    value_messages(
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
        "",
        &mut expected,
    );
    assert!(expected.contains_key("spec.vip"), "{expected:?}");
    let mut compared = BTreeSet::new();
    for file in invalid_manifests() {
        let text = std::fs::read_to_string(&file).unwrap();
        let document: Value = serde_saphyr::from_str(&text).unwrap();
        let Ok(obj) = manifest::parse_documents("x", &text).remove(0) else {
            continue;
        };
        let Err(err) = validate(&obj) else { continue };
        for e in err.errors {
            let (pointer, key) = pointer_and_key(&e.field);
            let Some(text) = expected.get(&key) else {
                continue;
            };
            let value = document.pointer(&pointer).and_then(Value::as_str).unwrap();
            assert_eq!(
                e.message,
                format!("\"{value}\" {text}"),
                "{}: {}",
                file.display(),
                e.field
            );
            compared.insert(key);
        }
    }
    assert_eq!(
        compared,
        expected.keys().cloned().collect(),
        "an invalid manifest for every field whose CEL message names the value"
    );
}

#[test]
fn netmask_message_asks_for_what_the_vips_family_takes() {
    let message = |file: &str| {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/invalid")
                .join(file),
        )
        .unwrap();
        let obj = manifest::parse_documents("x", &text).remove(0).unwrap();
        validate(&obj).unwrap_err().errors[0].to_string()
    };
    assert_eq!(
        message("22-persistence-bad-netmask.yaml"),
        r#"spec.persistence.netmask: "24" must be a dotted netmask such as 255.255.255.0 for an IPv4 vip"#
    );
    assert_eq!(
        message("23-ipv6-netmask-dotted.yaml"),
        r#"spec.persistence.netmask: "255.255.255.0" must be a prefix length 1..128 for an IPv6 vip"#
    );
}

#[test]
fn every_valid_manifest_is_accepted() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/valid");
    let docs = manifest::read_path(&dir).unwrap();
    assert_eq!(docs.len(), 5);
    for doc in docs {
        let obj = doc.unwrap();
        validate(&obj).unwrap();
    }
}

#[test]
fn one_bad_document_does_not_hide_the_good_ones_in_the_same_file() {
    let text = "apiVersion: lvs-operator.io/v1alpha1\nkind: LvsService\nmetadata: {name: bad}\nspec: {vip: 10.10.24.88, ports: [{port: x}], backends: [{address: 10.10.24.21}]}\n---\n\
                apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\n---\n\
                apiVersion: lvs-operator.io/v1alpha1\nkind: LvsService\nmetadata: {name: good}\nspec: {vip: 10.10.24.88, ports: [{port: 80}], backends: [{address: 10.10.24.21}]}\n";
    let docs = manifest::parse_documents("mixed.yaml", text);
    assert_eq!(docs.len(), 2, "the ConfigMap is skipped");
    assert_eq!(docs[0].as_ref().unwrap_err().object, "bad");
    assert_eq!(
        docs[1].as_ref().unwrap().metadata.name.as_deref(),
        Some("good")
    );
}
