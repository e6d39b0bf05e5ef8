//! The board: every check's current verdict, shared by the engine, its probers and the gauge
//! that counts healthy real servers.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::watch;

use super::{Check, Verdict};

/// The verdicts, shared by the engine, its probers and the gauge.
#[derive(Debug)]
pub(super) struct Board {
    pub(super) verdicts: Mutex<BTreeMap<Check, Entry>>,
    /// Counts transitions, so `changed()` can tell whether one happened since it last returned.
    pub(super) version: watch::Sender<u64>,
}

#[derive(Debug)]
pub(super) struct Entry {
    /// The prober that owns it.
    pub(super) prober: u64,
    pub(super) verdict: Verdict,
}

impl Board {
    pub(super) fn new() -> Self {
        Self {
            verdicts: Mutex::default(),
            version: watch::Sender::new(0),
        }
    }

    /// Calls `f` with every check and its verdict, under the lock.
    pub(super) fn each(&self, mut f: impl FnMut(&Check, &Verdict)) {
        for (check, entry) in self.verdicts.lock().expect("board lock").iter() {
            f(check, &entry.verdict);
        }
    }

    /// Records a transition of `prober`; false when its check was removed or replaced meanwhile.
    pub(super) fn publish(&self, check: &Check, prober: u64, verdict: Verdict) -> bool {
        let mut verdicts = self.verdicts.lock().expect("board lock");
        match verdicts.get_mut(check) {
            Some(entry) if entry.prober == prober => entry.verdict = verdict,
            _ => return false,
        }
        drop(verdicts);
        self.version.send_modify(|v| *v += 1);
        true
    }
}
