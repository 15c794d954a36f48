//! Where one object's whole status goes: its status subresource under `run`
//! (`controller::status::StatusWriter`), memory or the console under the
//! one-shot commands. Reconciles save through it mid-way (VMID before create,
//! UPID after a task starts), so a restart at any instant finds its work
//! again; the monitor scheduler writes each monitor's status through one.

use std::sync::Mutex;

use futures::future::BoxFuture;

pub trait StatusSink<S>: Send + Sync {
    fn save<'a>(&'a self, status: &'a S) -> BoxFuture<'a, Result<(), String>>;
}

/// Status kept in memory (a one-shot run has no API server).
#[derive(Default)]
pub struct MemoryStatus<S = crate::api::ProxmoxGuestStatus>(pub Mutex<S>);

impl<S: Clone> MemoryStatus<S> {
    pub fn new(status: S) -> Self {
        Self(Mutex::new(status))
    }

    /// The newest status saved.
    pub fn get(&self) -> S {
        self.0.lock().expect("status lock").clone()
    }

    pub fn set(&self, status: S) {
        *self.0.lock().expect("status lock") = status;
    }
}

impl<S: Clone + Send + Sync> StatusSink<S> for MemoryStatus<S> {
    fn save<'a>(&'a self, status: &'a S) -> BoxFuture<'a, Result<(), String>> {
        self.set(status.clone());
        Box::pin(async { Ok(()) })
    }
}
