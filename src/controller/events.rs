//! Kubernetes Events through kube's Recorder, which folds repeats of an event
//! into a series for six minutes and keeps every event it published until
//! its next publish. In a quiet homelab there is no next publish: a thousand
//! "Created" events would stay in memory for good. After a quiet spell longer
//! than the series window the recorder is replaced by an empty one.

use std::{sync::Mutex, time::Duration};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Client,
    runtime::events::{Event, Recorder, Reporter},
};
// tokio's clock: a test with paused time can let the recorder go quiet.
use tokio::time::Instant;

/// Longer than kube's series window (six minutes), so no series is cut short.
const QUIET: Duration = Duration::from_secs(7 * 60);

pub struct Events {
    client: Client,
    reporter: Reporter,
    current: Mutex<(Recorder, Instant)>,
}

impl Events {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        let recorder = Recorder::new(client.clone(), reporter.clone());
        Self {
            client,
            reporter,
            current: Mutex::new((recorder, Instant::now())),
        }
    }

    pub async fn publish(&self, ev: &Event, reference: &ObjectReference) -> Result<(), kube::Error> {
        let recorder = {
            let mut current = self.current.lock().expect("recorder lock");
            current.1 = Instant::now();
            current.0.clone()
        };
        recorder.publish(ev, reference).await
    }

    /// Start over with an empty recorder when nothing was published for a while.
    pub fn forget_if_quiet(&self) {
        let mut current = self.current.lock().expect("recorder lock");
        if current.1.elapsed() > QUIET {
            *current = (Recorder::new(self.client.clone(), self.reporter.clone()), Instant::now());
        }
    }
}
