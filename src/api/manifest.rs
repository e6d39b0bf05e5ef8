//! Reading LvsService objects from YAML files, for the standalone agent and the tests.
//!
//! A file may hold several documents; a directory is read file by file (`*.yaml`, `*.yml`) in
//! name order. A document that is not an LvsService is skipped; one that does not parse, or that
//! holds a field the CRD does not declare (as the API server's strict field validation would
//! refuse it), is an [`InvalidObject`] naming the field, and never stops the others from loading.

use std::path::{Path, PathBuf};

use super::unknown_fields::unknown_fields;
use super::{FieldError, InvalidObject, LvsService};

/// One document of a manifest: a parsed object, or why it could not be read.
pub type Document = Result<LvsService, InvalidObject>;

/// Parses every LvsService document of one YAML text. `source` names the text in errors.
pub fn parse_documents(source: &str, text: &str) -> Vec<Document> {
    let values: Vec<serde_json::Value> = match serde_saphyr::from_multiple(text) {
        Ok(v) => v,
        Err(e) => {
            return vec![Err(InvalidObject {
                object: source.to_string(),
                errors: vec![FieldError::new("(yaml)", e.to_string())],
            })];
        }
    };
    values
        .into_iter()
        .filter(|v| !v.is_null())
        .filter(|v| v.get("kind").and_then(|k| k.as_str()) == Some("LvsService"))
        .map(|v| parse_object(source, v))
        .collect()
}

fn parse_object(source: &str, value: serde_json::Value) -> Document {
    let name = value
        .pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .map(|n| {
            match value
                .pointer("/metadata/namespace")
                .and_then(|n| n.as_str())
            {
                Some(ns) => format!("{ns}/{n}"),
                None => n.to_string(),
            }
        })
        .unwrap_or_else(|| source.to_string());
    if let Some(api_version) = value.get("apiVersion").and_then(|v| v.as_str())
        && api_version != "lvs-operator.io/v1alpha1"
    {
        return Err(InvalidObject {
            object: name,
            errors: vec![FieldError::new(
                "apiVersion",
                format!("{api_version:?} is not served; use lvs-operator.io/v1alpha1"),
            )],
        });
    }
    // Both at once: a misspelt required field (`vp:`) is unknown and leaves `vip` missing.
    let mut errors = unknown_fields(&value);
    match serde_path_to_error::deserialize::<_, LvsService>(value) {
        Ok(obj) if errors.is_empty() => Ok(obj),
        Ok(_) => Err(InvalidObject {
            object: name,
            errors,
        }),
        Err(e) => {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            errors.push(field_error(path, message));
            Err(InvalidObject {
                object: name,
                errors,
            })
        }
    }
}

/// serde reports a missing field at its parent (`spec: missing field `vip``); the API server,
/// and so our users, name the field itself (`spec.vip: Required value`).
fn field_error(path: String, message: String) -> FieldError {
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.strip_suffix('`'))
    {
        let full = if path == "." || path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        };
        return FieldError::new(full, "Required value");
    }
    FieldError::new(path, message)
}

/// A file, or every `*.yaml`/`*.yml` file of a directory in name order.
fn files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    files.sort();
    Ok(files)
}

/// How long ago the most recently modified of the files [`read_path`] reads was modified, if
/// any can tell. A file written in place (`cat > web.yaml`) is empty or partial for a moment.
pub fn youngest(path: &Path) -> Option<std::time::Duration> {
    files(path)
        .ok()?
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok()?.modified().ok()?.elapsed().ok())
        .min()
}

/// Reads a file, or every `*.yaml`/`*.yml` file of a directory in name order.
pub fn read_path(path: &Path) -> std::io::Result<Vec<Document>> {
    let mut docs = Vec::new();
    for file in files(path)? {
        let text = std::fs::read_to_string(&file)?;
        docs.extend(parse_documents(&file.display().to_string(), &text));
    }
    Ok(docs)
}
