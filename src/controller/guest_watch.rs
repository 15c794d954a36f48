//! One watch of ProxmoxGuests serves every controller that reacts to guests
//! (records, proxy hosts and monitors that target one; the policies a guest
//! belongs to). The guest controller's watch feeds the guest cache first and
//! then hands each change to the others, so a reconcile a guest's change
//! triggers already finds that change in the cache it reads guests from; and
//! the API server serves one watch of guests instead of six.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures::{
    Stream, StreamExt,
    channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded},
};
use kube::{ResourceExt, core::DeserializeGuard, runtime::watcher};

use crate::api::ProxmoxGuest;

/// A guest that was created, changed or deleted.
#[derive(Clone)]
pub struct Touched {
    pub guest: Arc<ProxmoxGuest>,
    pub deleted: bool,
}

/// The controllers that follow the guest controller's watch.
#[derive(Default)]
pub struct GuestWatch {
    subscribers: Vec<UnboundedSender<Touched>>,
}

impl GuestWatch {
    /// Every guest change from now on. Unbounded: a controller takes its
    /// triggers as they come (its reconciles are what waits), and a bounded
    /// channel would let one busy controller hold up the guest cache.
    pub fn subscribe(&mut self) -> UnboundedReceiver<Touched> {
        let (tx, rx) = unbounded();
        self.subscribers.push(tx);
        rx
    }

    /// Hand a watch event, after the cache applied it, to every subscriber.
    /// Guests that cannot be read are left to the guest controller's Warning.
    pub fn forward(&self, event: &watcher::Event<DeserializeGuard<ProxmoxGuest>>) {
        let (guard, deleted) = match event {
            watcher::Event::Apply(g) | watcher::Event::InitApply(g) => (g, false),
            watcher::Event::Delete(g) => (g, true),
            watcher::Event::Init | watcher::Event::InitDone => return,
        };
        let Ok(guest) = &guard.0 else { return };
        let touched = Touched {
            guest: Arc::new(guest.clone()),
            deleted,
        };
        for s in &self.subscribers {
            // A subscriber gone (its controller stopped) is no reason to stop the others.
            let _ = s.unbounded_send(touched.clone());
        }
    }
}

/// Every touched guest, for `Controller::watches_shared_stream`.
pub fn guests(rx: UnboundedReceiver<Touched>) -> impl Stream<Item = Arc<ProxmoxGuest>> + Send + 'static {
    rx.map(|t| t.guest)
}

/// Guests whose `key` changed, or that were created or deleted: what the
/// watching controller does not read (most status writes) must not cost it
/// a reconcile, and outside calls, each.
pub fn key_changes(
    rx: UnboundedReceiver<Touched>,
    key: fn(&ProxmoxGuest) -> u64,
) -> impl Stream<Item = Arc<ProxmoxGuest>> + Send + 'static {
    let keys = Mutex::new(KeyChanges::default());
    rx.filter_map(move |t| {
        let changed = keys.lock().expect("key changes lock").changed(&*t.guest, key(&t.guest), t.deleted);
        std::future::ready(changed.then_some(t.guest))
    })
}

/// The last key seen per object, by namespace and name.
#[derive(Default)]
pub struct KeyChanges(HashMap<(Option<String>, String), u64>);

impl KeyChanges {
    /// Whether this event of `obj`, whose key is now `key`, is news.
    pub fn changed<K: kube::Resource>(&mut self, obj: &K, key: u64, deleted: bool) -> bool {
        let name = (obj.namespace(), obj.name_any());
        if deleted {
            self.0.remove(&name);
            return true;
        }
        self.0.insert(name, key) != Some(key)
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use kube::{core::DeserializeGuard, runtime::watcher::Event};
    use serde_json::json;

    use super::*;

    /// A guest with these labels whose status shows `ip`.
    fn guest(labels: serde_json::Value, ip: &str) -> ProxmoxGuest {
        serde_json::from_value(json!({
            "apiVersion": "homelab.dev/v1alpha1", "kind": "ProxmoxGuest",
            "metadata": {"name": "web", "namespace": "homelab", "labels": labels},
            "spec": {
                "type": "lxc", "source": {"osTemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"},
                "memoryMiB": 512, "cpu": {"cores": 1}, "disks": [{"slot": "rootfs", "storage": "local-lvm", "sizeGiB": 8}]
            },
            "status": {"vmid": 100, "ips": [ip]}
        }))
        .unwrap()
    }

    fn ip(g: &ProxmoxGuest) -> String {
        g.status.as_ref().unwrap().ips[0].clone()
    }

    fn guard(g: ProxmoxGuest) -> DeserializeGuard<ProxmoxGuest> {
        DeserializeGuard(Ok(g))
    }

    #[tokio::test]
    async fn every_subscriber_sees_each_change_and_deletion_but_no_bookkeeping() {
        let mut watch = GuestWatch::default();
        let (mut a, b) = (watch.subscribe(), watch.subscribe());
        drop(b); // a stopped controller does not stop the others
        watch.forward(&Event::Init);
        watch.forward(&Event::InitApply(guard(guest(json!({}), "10.0.0.1"))));
        watch.forward(&Event::InitDone);
        watch.forward(&Event::Apply(guard(guest(json!({}), "10.0.0.2"))));
        watch.forward(&Event::Delete(guard(guest(json!({}), "10.0.0.2"))));
        drop(watch);
        let seen: Vec<_> = a.by_ref().map(|t| (ip(&t.guest), t.deleted)).collect().await;
        assert_eq!(
            seen,
            [("10.0.0.1".into(), false), ("10.0.0.2".into(), false), ("10.0.0.2".into(), true)]
        );
    }

    #[tokio::test]
    async fn membership_followers_see_label_changes_and_deletions_not_status_writes() {
        let mut watch = GuestWatch::default();
        let rx = watch.subscribe();
        watch.forward(&Event::Apply(guard(guest(json!({"tier": "a"}), "10.0.0.1"))));
        watch.forward(&Event::Apply(guard(guest(json!({"tier": "a"}), "10.0.0.2")))); // status only
        watch.forward(&Event::Apply(guard(guest(json!({"tier": "b"}), "10.0.0.3"))));
        watch.forward(&Event::Delete(guard(guest(json!({"tier": "b"}), "10.0.0.3"))));
        watch.forward(&Event::Apply(guard(guest(json!({"tier": "b"}), "10.0.0.4")))); // created again
        drop(watch);
        let key = crate::controller::backup_policy::membership_key;
        let seen: Vec<_> = key_changes(rx, key).map(|g| ip(&g)).collect().await;
        assert_eq!(seen, ["10.0.0.1", "10.0.0.3", "10.0.0.3", "10.0.0.4"]);
    }
}
