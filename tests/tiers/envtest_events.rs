//! Events on a real API server: a repeat within the series window is a PATCH
//! of the first Event's series, which events.k8s.io validates; a new note is
//! a new Event.

use k8s_openapi::api::{core::v1::ObjectReference, events::v1::Event as K8sEvent};
use kube::{
    Api,
    runtime::events::{Event, EventType, Reporter},
};

use super::support::envtest_world::*;
use homelab_operator::controller::events::Events;

fn published(note: &str) -> Event {
    Event {
        type_: EventType::Warning,
        reason: "Unreachable".into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_events_become_a_series_the_api_server_accepts() {
    let plane = installed();
    let client = plane.admin().await;
    let ns = namespace(&client, "events").await;
    let reporter = Reporter {
        controller: "homelab-operator".into(),
        instance: Some("envtest".into()),
    };
    let events = Events::new(client.clone(), reporter);
    let reference = ObjectReference {
        api_version: Some("homelab.dev/v1alpha1".into()),
        kind: Some("DnsRecord".into()),
        name: Some("web".into()),
        namespace: Some(ns.clone()),
        uid: Some("8f1c2a36-0000-4000-8000-000000000001".into()),
        ..Default::default()
    };
    for _ in 0..3 {
        events.publish(&published("dns1: connection refused"), &reference).await.unwrap();
    }
    events.publish(&published("dns1: timed out"), &reference).await.unwrap();
    let api: Api<K8sEvent> = Api::namespaced(client, &ns);
    let mut list = api.list(&Default::default()).await.unwrap().items;
    list.sort_by_key(|e| e.note.clone());
    let seen: Vec<_> = list
        .iter()
        .map(|e| (e.note.clone().unwrap_or_default(), e.series.as_ref().map(|s| s.count)))
        .collect();
    assert_eq!(
        seen,
        [
            ("dns1: connection refused".to_string(), Some(3)),
            ("dns1: timed out".to_string(), None)
        ],
        "one Event per note, repeats counted in its series"
    );
}
