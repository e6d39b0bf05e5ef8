//! [`IpvsWorker`]: the IPVS socket on a thread of its own, for async callers.
//!
//! [`IpvsHandle`] is synchronous: a dump of ten thousand services is real work, and the agent's
//! runtime also renews Leases, answers `/healthz` and runs health checks. So the handle lives on
//! one dedicated thread (created by the caller's thread, so it shares its network namespace) and
//! async code hands it jobs. A job that does not come back within [`JOB_TIMEOUT`] is abandoned:
//! the caller gets [`IpvsError::Timeout`], the thread is left to finish on its own, and the next
//! job starts a fresh thread with a fresh socket. The handle's own exchange deadline makes a stuck
//! thread unlikely; this is the backstop that keeps the runtime free whatever the kernel does.

use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::ipvs::{IpvsError, IpvsHandle};

/// How long one job may take before the caller stops waiting for it.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(60);

type Job = Box<dyn FnOnce(Result<&mut IpvsHandle, IpvsError>) + Send>;

/// How the worker opens its socket: [`IpvsHandle::connect`], or that with a `modprobe ip_vs`
/// retry where the caller may load modules.
pub type Connect = fn() -> Result<IpvsHandle, IpvsError>;

/// An async front to an [`IpvsHandle`] on its own thread.
pub struct IpvsWorker {
    connect: Connect,
    jobs: Option<mpsc::Sender<Job>>,
}

impl IpvsWorker {
    /// No thread yet: the first job starts it, so that a node with no IPVS work (a real server)
    /// never opens the socket.
    pub fn new(connect: Connect) -> Self {
        Self {
            connect,
            jobs: None,
        }
    }

    /// Runs `f` on the worker's thread with the connected handle. A connection failure (ip_vs not
    /// loaded, no privilege) is the job's result, and the next job tries to connect again.
    pub async fn run<R, F>(&mut self, f: F) -> Result<R, IpvsError>
    where
        R: Send + 'static,
        F: FnOnce(&mut IpvsHandle) -> Result<R, IpvsError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |handle| {
            let _ = reply.send(handle.and_then(f));
        });
        let jobs = self.jobs.get_or_insert_with(|| spawn(self.connect));
        if jobs.send(job).is_err() {
            // The thread died (a panic in a job): start over on the next call.
            self.jobs = None;
            return Err(IpvsError::malformed("the IPVS worker thread stopped"));
        }
        match tokio::time::timeout(JOB_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => {
                self.jobs = None;
                Err(IpvsError::malformed("the IPVS worker thread stopped"))
            }
            Err(_) => {
                self.jobs = None;
                Err(IpvsError::Timeout(JOB_TIMEOUT))
            }
        }
    }
}

/// Starts the thread; it connects first, and reconnects before a job whenever the last attempt
/// failed, so that loading ip_vs later is picked up without a restart.
fn spawn(connect: Connect) -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("ipvs".into())
        .spawn(move || {
            let mut handle: Option<IpvsHandle> = None;
            for job in rx {
                if handle.is_none() {
                    match connect() {
                        Ok(h) => handle = Some(h),
                        Err(e) => {
                            job(Err(e));
                            continue;
                        }
                    }
                }
                if let Some(h) = handle.as_mut() {
                    job(Ok(h));
                }
            }
        })
        .expect("spawning the IPVS thread");
    tx
}
