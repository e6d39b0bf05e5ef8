//! What can go wrong in one reconcile, named for the step that failed.
//!
//! Each variant carries the object (`namespace/name`) and a short [`Error::category`] that labels
//! the `reconcile_errors_total` metric, so a dashboard tells a failing status patch from a failing
//! finalizer without parsing messages.

use kube::runtime::finalizer;

/// A failed reconcile of one LvsService.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("adding the finalizer to {name}: {source}")]
    AddFinalizer {
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("removing the finalizer from {name}: {source}")]
    RemoveFinalizer {
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("the finalizer of {name} cannot be handled: {message}")]
    Finalizer { name: String, message: String },

    #[error("applying the status of {name}: {source}")]
    PatchStatus {
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("waiting for the {store} cache before reconciling {name}: its watch stopped")]
    StoreNotReady { name: String, store: &'static str },
}

impl Error {
    /// Metric label: which step failed.
    pub fn category(&self) -> &'static str {
        match self {
            Error::AddFinalizer { .. } => "add_finalizer",
            Error::RemoveFinalizer { .. } => "remove_finalizer",
            Error::Finalizer { .. } => "finalizer",
            Error::PatchStatus { .. } => "patch_status",
            Error::StoreNotReady { .. } => "store_not_ready",
        }
    }

    /// Unwraps the finalizer helper's error into the step that failed.
    pub fn from_finalizer(name: String, e: finalizer::Error<Error>) -> Self {
        match e {
            finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
            finalizer::Error::AddFinalizer(source) => Error::AddFinalizer { name, source },
            finalizer::Error::RemoveFinalizer(source) => Error::RemoveFinalizer { name, source },
            other @ (finalizer::Error::UnnamedObject | finalizer::Error::InvalidFinalizer) => {
                Error::Finalizer {
                    name,
                    message: other.to_string(),
                }
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
