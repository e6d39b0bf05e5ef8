//! Node selectors of an LvsService, parsed once for the controller and the agent alike.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::Selector;

use super::{DEFAULT_DIRECTOR_LABEL, LvsService};

/// Why a selector in the spec could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError {
    pub field: &'static str,
    pub message: String,
}

/// `spec.directors.nodeSelector`, or nodes labelled `lvs-operator.io/director=true`.
pub fn director_selector(object: &LvsService) -> Result<Selector, SelectorError> {
    match object
        .spec
        .directors
        .as_ref()
        .and_then(|d| d.node_selector.as_ref())
    {
        Some(selector) => parse_selector("spec.directors.nodeSelector", selector),
        None => Ok(Selector::from_iter([(DEFAULT_DIRECTOR_LABEL, "true")])),
    }
}

/// A label selector as the API server reads it; an unknown operator is an error naming `field`.
pub fn parse_selector(
    field: &'static str,
    selector: &LabelSelector,
) -> Result<Selector, SelectorError> {
    Selector::try_from(selector.clone()).map_err(|e| SelectorError {
        field,
        message: e.to_string(),
    })
}
