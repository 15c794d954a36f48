//! Kubernetes Events (events.k8s.io/v1). The same event for the same object
//! within six minutes folds into a series (a PATCH of the first one's count)
//! instead of a new Event, as kube's Recorder does. Unlike that recorder,
//! which keeps a whole copy of every Event it published (12 MB for a few
//! thousand objects) until its next publish, this keeps a name, a count and a
//! time per event, and drops them once their series window has passed.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::Mutex,
    time::Duration,
};

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event as K8sEvent},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
    runtime::events::{Event, EventType, Reporter},
};
use serde_json::json;
// tokio's clock: a test with paused time can let a series window pass.
use tokio::time::Instant;

/// How long a repeat still joins the first event's series (kube's window).
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// An event published within the series window.
struct Sent {
    name: String,
    count: i32,
    last: Instant,
}

pub struct Events {
    client: Client,
    reporter: Reporter,
    /// By the hash of what makes two events the same (see `key`).
    sent: Mutex<HashMap<u64, Sent>>,
}

impl Events {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            sent: Mutex::default(),
        }
    }

    /// Publish `ev` about `reference`: a new Event, or the next of a series.
    pub async fn publish(&self, ev: &Event, reference: &ObjectReference) -> Result<(), kube::Error> {
        let namespace = reference.namespace.as_deref().unwrap_or("default");
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let key = key(ev, reference);
        let repeat = {
            let sent = self.sent.lock().expect("events lock");
            sent.get(&key)
                .filter(|s| s.last.elapsed() < SERIES_WINDOW)
                .map(|s| (s.name.clone(), s.count + 1))
        };
        let (name, count) = match repeat {
            Some((name, count)) => match api.patch(&name, &PatchParams::default(), &Patch::Merge(series(count))).await {
                Ok(_) => (name, count),
                // Deleted meanwhile (someone cleaned up Events): start a new one.
                Err(kube::Error::Api(s)) if s.code == 404 => (self.create(&api, ev, reference).await?, 1),
                Err(e) => return Err(e),
            },
            None => (self.create(&api, ev, reference).await?, 1),
        };
        let last = Instant::now();
        self.sent.lock().expect("events lock").insert(key, Sent { name, count, last });
        Ok(())
    }

    /// Drop what no repeat can join any more, and the room it took.
    pub fn forget_old(&self) {
        let mut sent = self.sent.lock().expect("events lock");
        sent.retain(|_, s| s.last.elapsed() < SERIES_WINDOW);
        sent.shrink_to_fit();
    }

    async fn create(&self, api: &Api<K8sEvent>, ev: &Event, reference: &ObjectReference) -> Result<String, kube::Error> {
        let now = Timestamp::now();
        let name = format!(
            "{}.{:x}",
            reference.name.as_deref().unwrap_or(&self.reporter.controller),
            now.as_nanosecond()
        );
        let event = K8sEvent {
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(reference.clone()),
            related: ev.secondary.clone(),
            note: ev.note.clone(),
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: reference.namespace.clone(),
                ..Default::default()
            },
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(self.reporter.instance.clone().unwrap_or_else(|| self.reporter.controller.clone())),
            type_: Some(match ev.type_ {
                EventType::Normal => "Normal".into(),
                EventType::Warning => "Warning".into(),
            }),
            ..Default::default()
        };
        api.create(&PostParams::default(), &event).await?;
        Ok(name)
    }
}

/// What makes a repeat: the same object, type, reason, action and note (a
/// different note is news, not a repeat of the old one).
fn key(ev: &Event, reference: &ObjectReference) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let r = reference;
    (&r.api_version, &r.kind, &r.namespace, &r.name, &r.uid).hash(&mut h);
    let related = ev.secondary.as_ref().map(|s| (&s.kind, &s.namespace, &s.name, &s.uid));
    (matches!(ev.type_, EventType::Warning), &ev.reason, &ev.action, &ev.note, related).hash(&mut h);
    h.finish()
}

fn series(count: i32) -> serde_json::Value {
    json!({"series": {"count": count, "lastObservedTime": MicroTime(Timestamp::now())}})
}
