//! The on-disk ledger of what this agent made (`/var/lib/lvs-operator/ledger.json` by default).
//!
//! It is what lets a restarted agent adopt its own IPVS services, addresses and sysctls, and keep
//! its hands off everybody else's. Written atomically (temporary file, then rename) after every
//! resync that changed something, so a crash never leaves half a ledger. Only this agent writes
//! it, so after the first read the store answers from memory: a resync touches the disk only
//! when the ledger changed.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::core::Ledger;

/// Where the agent keeps its ledger unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/lvs-operator";

pub struct LedgerStore {
    path: PathBuf,
    /// The ledger as last read or written.
    cached: Mutex<Option<Ledger>>,
}

impl LedgerStore {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("ledger.json"),
            cached: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved ledger, or an empty one on first start.
    pub fn load(&self) -> io::Result<Ledger> {
        let mut cached = self.cached.lock().expect("ledger lock");
        if let Some(ledger) = cached.as_ref() {
            return Ok(ledger.clone());
        }
        let ledger = self.read()?;
        *cached = Some(ledger.clone());
        Ok(ledger)
    }

    fn read(&self) -> io::Result<Ledger> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", self.path.display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Ledger::default()),
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, ledger: &Ledger) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(ledger)?)?;
        std::fs::rename(&tmp, &self.path)?;
        *self.cached.lock().expect("ledger lock") = Some(ledger.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ledger_is_empty_and_saved_ledger_loads_back() {
        let dir = std::env::temp_dir().join(format!("lvs-ledger-{}", std::process::id()));
        let store = LedgerStore::new(&dir);
        assert_eq!(store.load().unwrap(), Ledger::default());
        let mut ledger = Ledger::default();
        ledger.addresses.insert(crate::core::HostAddress::vip(
            "lo",
            "10.10.24.88".parse().unwrap(),
        ));
        store.save(&ledger).unwrap();
        assert_eq!(store.load().unwrap(), ledger);
        assert_eq!(
            LedgerStore::new(&dir).load().unwrap(),
            ledger,
            "a new process reads it back"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
