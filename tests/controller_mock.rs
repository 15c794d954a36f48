//! The controller glue against a mocked apiserver (tower-test), with Proxmox
//! served by the simulator: finalizer, status by server-side apply with our
//! field manager, Events, and cleanup that keeps the finalizer until the
//! guest is gone.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use homelab_operator::{
    api::{GUEST_FINALIZER, ProxmoxGuest},
    controller::{context::Context, driver, shared},
    metrics::Metrics,
    providers::{Providers, pve::PveClient},
    sim::pve::{PveSim, PveSimConfig, endpoint_for},
};
use http::{Request, Response};
use http_body_util::BodyExt;
use kube::{Client, client::Body, core::DeserializeGuard};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    body: Value,
}

/// Answers like an apiserver would and records every request.
fn mock_apiserver(object: Value) -> (Client, Arc<Mutex<Vec<Seen>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(vec![]));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut object = object;
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().to_string();
            let uri = req.uri().to_string();
            let bytes = req.into_body().collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            log.lock().unwrap().push(Seen {
                method: method.clone(),
                uri: uri.clone(),
                body: body.clone(),
            });
            let answer = if uri.contains("/events") {
                body.clone()
            } else if method == "GET" && uri.contains("/proxmoxguests?") {
                // A policy's member lookup: the guests of the namespace.
                json!({"apiVersion": "homelab.dev/v1alpha1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []})
            } else if method == "GET" && (uri.contains("/dnsrecords?") || uri.contains("/proxyhosts?") || uri.contains("/monitortargets?"))
            {
                // Listing a guest's children: none yet.
                json!({"apiVersion": "homelab.dev/v1alpha1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []})
            } else if method == "GET" && uri.contains("/updatepolicies/") {
                // The UpdatePolicy the example guest names (spec.updates) exists.
                json!({"apiVersion": "homelab.dev/v1alpha1", "kind": "UpdatePolicy",
                       "metadata": {"name": "weekly", "namespace": "homelab", "resourceVersion": "1"}, "spec": {}})
            } else if method == "PATCH"
                && (uri.contains("/dnsrecords/") || uri.contains("/proxyhosts/") || uri.contains("/monitortargets/"))
                && body.is_object()
                && body.get("spec").is_some()
            {
                // Server-side apply of a child record: the apiserver answers with the object.
                let mut child = body.clone();
                child["metadata"]["uid"] = json!("child-uid");
                child["metadata"]["resourceVersion"] = json!("1");
                child
            } else if method == "PATCH" && uri.contains("/status?") {
                object["status"] = body["status"].clone();
                object.clone()
            } else if method == "PATCH" {
                // JSON patch of the finalizers.
                for op in body.as_array().cloned().unwrap_or_default() {
                    match op["op"].as_str() {
                        Some("add") | Some("replace") => object["metadata"]["finalizers"] = op["value"].clone(),
                        Some("remove") => object["metadata"]["finalizers"] = json!([]),
                        _ => {}
                    }
                }
                object.clone()
            } else {
                object.clone()
            };
            send.send_response(
                Response::builder()
                    .status(200)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
    });
    (Client::new(service, "default"), seen)
}

fn web01(extra_meta: Value) -> Value {
    let g = homelab_operator::cli::resources::load(&[
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/examples/vm-cloudinit.yaml")
    ])
    .unwrap()
    .guests
    .remove(0);
    let mut v = serde_json::to_value(&g).unwrap();
    v["metadata"]["uid"] = json!("3f1c2b4a-9d8e-4f7a-b6c5-1d2e3f4a5b6c");
    v["metadata"]["generation"] = json!(1);
    v["metadata"]["resourceVersion"] = json!("1");
    for (k, val) in extra_meta.as_object().unwrap() {
        v["metadata"][k] = val.clone();
    }
    v
}

struct Setup {
    sim: Arc<PveSim>,
    pve: std::collections::BTreeMap<String, PveClient>,
    _server: homelab_operator::sim::SimServer,
    _dir: tempfile::TempDir,
}

/// Tasks finish at the next look (zero duration): convergence takes a fixed
/// number of reconciles whatever the machine's load.
async fn setup() -> Setup {
    setup_with(Duration::ZERO).await
}

async fn setup_with(task_duration: Duration) -> Setup {
    let sim = PveSim::with_defaults(PveSimConfig {
        task_duration,
        ..Default::default()
    })
    .unwrap();
    let server = sim.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ep = endpoint_for("default", &sim, &server, dir.path()).unwrap();
    let pve = [("default".to_string(), PveClient::new(&ep, None).unwrap())].into();
    Setup {
        sim,
        pve,
        _server: server,
        _dir: dir,
    }
}

/// (api group, resource, verb) a request needs, read off its method and URL.
fn permission(r: &Seen) -> (String, String, String) {
    let path = r.uri.split('?').next().unwrap();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /apis/{group}/{version}/namespaces/{ns}/{resource}[/{name}[/{sub}]]
    let group = parts[1].to_string();
    let resource = match parts.get(7) {
        Some(sub) => format!("{}/{sub}", parts[5]),
        None => parts[5].to_string(),
    };
    let verb = match (r.method.as_str(), parts.len()) {
        ("GET", 6) if r.uri.contains("watch=") => "watch",
        ("GET", 6) => "list",
        ("GET", _) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        (m, _) => panic!("unexpected method {m}"),
    };
    (group, resource, verb.to_string())
}

/// The ClusterRole the chart installs (from the rendered kustomize base) grants it.
fn assert_rbac_allows(seen: &[Seen]) {
    let rendered =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/install/rendered.yaml")).unwrap();
    let mut granted = std::collections::BTreeSet::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&rendered) {
        let v = <serde_yaml_ng::Value as serde::Deserialize>::deserialize(doc).unwrap();
        if v["kind"].as_str() != Some("ClusterRole") {
            continue;
        }
        for rule in v["rules"].as_sequence().unwrap() {
            for g in rule["apiGroups"].as_sequence().unwrap() {
                for res in rule["resources"].as_sequence().unwrap() {
                    for verb in rule["verbs"].as_sequence().unwrap() {
                        granted.insert((
                            g.as_str().unwrap().to_string(),
                            res.as_str().unwrap().to_string(),
                            verb.as_str().unwrap().to_string(),
                        ));
                    }
                }
            }
        }
    }
    for r in seen {
        let p = permission(r);
        assert!(
            granted.contains(&p),
            "the chart's ClusterRole does not grant {p:?} needed by {} {}",
            r.method,
            r.uri
        );
    }
}

async fn reconcile_once(ctx: &Arc<Context>, obj: Value) -> Result<kube::runtime::controller::Action, String> {
    let g: ProxmoxGuest = serde_json::from_value(obj).unwrap();
    let guarded = Arc::new(DeserializeGuard(Ok(g)));
    tokio::time::timeout(Duration::from_secs(10), driver::reconcile(guarded, ctx.clone()))
        .await
        .expect("reconcile finished in time")
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn adds_the_finalizer_first() {
    let s = setup().await;
    let (client, seen) = mock_apiserver(web01(json!({})));
    let ctx = Arc::new(Context::new(
        client,
        Providers {
            pve: s.pve.clone(),
            ..Default::default()
        },
        Arc::new(Metrics::default()),
    ));
    reconcile_once(&ctx, web01(json!({}))).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "PATCH");
    assert!(
        seen[0]
            .uri
            .starts_with("/apis/homelab.dev/v1alpha1/namespaces/homelab/proxmoxguests/web01?"),
        "{}",
        seen[0].uri
    );
    assert!(seen[0].body.to_string().contains(GUEST_FINALIZER));
    assert!(s.sim.guests().is_empty(), "nothing outside Kubernetes before the finalizer is on");
    assert_rbac_allows(&seen);
}

#[tokio::test]
async fn applies_status_with_our_field_manager_and_publishes_events() {
    // The clone task must still run at the second reconcile below.
    let s = setup_with(Duration::from_secs(3600)).await;
    let mut obj = web01(json!({"finalizers": [GUEST_FINALIZER]}));
    obj["spec"]["monitor"] = json!({"http": {"port": 80}, "notify": {"channels": ["telegram"]}});
    let (client, seen) = mock_apiserver(obj.clone());
    let ctx = Arc::new(Context::new(
        client,
        Providers {
            pve: s.pve.clone(),
            ..Default::default()
        },
        Arc::new(Metrics::default()),
    ));
    reconcile_once(&ctx, obj.clone()).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let status_patches: Vec<&Seen> = seen.iter().filter(|r| r.uri.contains("/status?")).collect();
    assert!(!status_patches.is_empty(), "{seen:?}");
    for p in &status_patches {
        assert_eq!(p.method, "PATCH");
        assert_eq!(
            p.uri,
            "/apis/homelab.dev/v1alpha1/namespaces/homelab/proxmoxguests/web01/status?&force=true&fieldManager=homelab-operator"
        );
        assert_eq!(p.body["apiVersion"], "homelab.dev/v1alpha1");
        assert_eq!(p.body["kind"], "ProxmoxGuest");
        assert!(p.body.get("spec").is_none(), "the operator never writes spec");
    }
    // VMID recorded before the clone, then the task.
    assert_eq!(status_patches[0].body["status"]["vmid"], 100);
    assert!(
        status_patches.last().unwrap().body["status"]["currentTask"]["upid"]
            .as_str()
            .unwrap()
            .starts_with("UPID:pve1:")
    );
    let events: Vec<&Seen> = seen
        .iter()
        .filter(|r| r.uri.contains("/apis/events.k8s.io/v1/namespaces/homelab/events"))
        .collect();
    assert!(
        events.iter().any(|e| e.method == "POST" && e.body["reason"] == "Cloning"),
        "{events:?}"
    );
    assert_eq!(events[0].body["reportingController"], "homelab-operator");
    assert_eq!(s.sim.guests().len(), 1);
    assert_rbac_allows(&seen);
    // spec.dns: an owned DnsRecord applied server-side, pointing at the guest.
    let child = seen
        .iter()
        .find(|r| r.method == "PATCH" && r.uri.contains("/dnsrecords/web01-dns?"))
        .expect("child record applied");
    assert!(
        child.uri.contains("fieldManager=homelab-operator") && child.uri.contains("force=true"),
        "{}",
        child.uri
    );
    assert_eq!(child.body["spec"]["target"]["name"], "web01");
    assert_eq!(child.body["metadata"]["ownerReferences"][0]["kind"], "ProxmoxGuest");
    assert_eq!(
        child.body["metadata"]["ownerReferences"][0]["uid"],
        "3f1c2b4a-9d8e-4f7a-b6c5-1d2e3f4a5b6c"
    );
    let status = &seen.iter().rev().find(|r| r.uri.contains("/status?")).unwrap().body["status"];
    assert_eq!(status["children"], json!(["web01-dns", "web01-proxy", "web01-monitor"]));
    // spec.monitor: an owned MonitorTarget aimed at the guest.
    let monitor = seen
        .iter()
        .find(|r| r.method == "PATCH" && r.uri.contains("/monitortargets/web01-monitor?"))
        .expect("child monitor applied");
    assert_eq!(monitor.body["spec"]["target"], json!({"kind": "ProxmoxGuest", "name": "web01"}));
    assert_eq!(monitor.body["metadata"]["ownerReferences"][0]["kind"], "ProxmoxGuest");
    let proxy = seen
        .iter()
        .find(|r| r.method == "PATCH" && r.uri.contains("/proxyhosts/web01-proxy?"))
        .expect("child proxy host applied");
    assert_eq!(proxy.body["spec"]["target"], json!({"name": "web01", "port": 80, "scheme": "http"}));
    let metrics = ctx.metrics.render();
    assert!(metrics.contains("homelab_operator_tasks_in_flight{system=\"pve\"} 1"), "{metrics}");
    assert!(
        metrics.contains("homelab_operator_reconciles_total{kind=\"ProxmoxGuest\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("homelab_operator_outside_calls_total") || metrics.contains("reconcile_duration_seconds"),
        "{metrics}"
    );

    // Same status again: no write at all.
    let mut settled = obj.clone();
    settled["status"] = status_patches.last().unwrap().body["status"].clone();
    let (client, seen) = mock_apiserver(settled.clone());
    let ctx = Arc::new(Context::new(
        client,
        Providers {
            pve: s.pve.clone(),
            ..Default::default()
        },
        Arc::new(Metrics::default()),
    ));
    reconcile_once(&ctx, settled).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(
        !seen.iter().any(|r| r.uri.contains("/status?") || r.uri.contains("/events")),
        "task still running: status unchanged, no status write and no event: {seen:?}"
    );
}

#[tokio::test]
async fn errors_become_conditions_and_warning_events() {
    let s = setup().await;
    let mut obj = web01(json!({"finalizers": [GUEST_FINALIZER]}));
    obj["spec"]["cluster"] = json!("elsewhere");
    let (client, seen) = mock_apiserver(obj.clone());
    let ctx = Arc::new(Context::new(
        client,
        Providers {
            pve: s.pve.clone(),
            ..Default::default()
        },
        Arc::new(Metrics::default()),
    ));
    let err = reconcile_once(&ctx, obj.clone()).await.unwrap_err();
    assert!(err.contains("names no endpoint"), "{err}");
    let seen = seen.lock().unwrap().clone();
    let status = seen.iter().find(|r| r.uri.contains("/status?")).expect("status written");
    let stalled = status.body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Stalled")
        .unwrap()
        .clone();
    assert_eq!(stalled["status"], "True");
    assert_eq!(stalled["reason"], "ConfigError");
    assert!(seen.iter().any(|r| r.uri.contains("/events") && r.body["type"] == "Warning"));
    let g: ProxmoxGuest = serde_json::from_value(obj).unwrap();
    let action = shared::error_policy(
        Arc::new(DeserializeGuard(Ok(g))),
        &shared::Error::Reconcile(homelab_operator::reconcile::ReconcileError::Config("x".into())),
        ctx,
    );
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(600)),
        "permanent: slow requeue, no hot loop"
    );
}

#[tokio::test]
async fn cleanup_keeps_the_finalizer_until_the_guest_is_gone() {
    let s = setup().await;
    // Create the guest first.
    let obj = web01(json!({"finalizers": [GUEST_FINALIZER]}));
    let mut status = Value::Null;
    // Bounded only against a bug: with instant tasks each pass makes progress.
    for _ in 0..1000 {
        let mut o = obj.clone();
        o["status"] = status.clone();
        let (client, seen) = mock_apiserver(o.clone());
        let ctx = Arc::new(Context::new(
            client,
            Providers {
                pve: s.pve.clone(),
                ..Default::default()
            },
            Arc::new(Metrics::default()),
        ));
        reconcile_once(&ctx, o).await.unwrap();
        if let Some(last) = seen.lock().unwrap().iter().rev().find(|r| r.uri.contains("/status?")) {
            status = last.body["status"].clone();
        }
        if status["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        {
            break;
        }
    }
    assert_eq!(s.sim.guests().len(), 1);
    // Now delete it (deletionPolicy: Delete in the example).
    let mut removed = false;
    // Bounded only against a bug: with instant tasks each pass makes progress.
    for _ in 0..1000 {
        let mut o = web01(json!({"finalizers": [GUEST_FINALIZER], "deletionTimestamp": "2026-11-22T00:00:00Z"}));
        o["status"] = status.clone();
        let (client, seen) = mock_apiserver(o.clone());
        let ctx = Arc::new(Context::new(
            client,
            Providers {
                pve: s.pve.clone(),
                ..Default::default()
            },
            Arc::new(Metrics::default()),
        ));
        let r = reconcile_once(&ctx, o).await;
        let seen = seen.lock().unwrap().clone();
        if let Some(last) = seen.iter().rev().find(|r| r.uri.contains("/status?")) {
            status = last.body["status"].clone();
        }
        let finalizer_removed = seen
            .iter()
            .any(|r| r.method == "PATCH" && !r.uri.contains("/status") && r.body.to_string().contains("remove"));
        if finalizer_removed {
            assert!(r.is_ok());
            removed = true;
            break;
        }
        assert!(r.unwrap_err().contains("deletion in progress"));
        assert!(!s.sim.guests().is_empty() || seen.iter().all(|r| !r.body.to_string().contains("remove")));
    }
    assert!(removed, "finalizer removed at the end");
    assert!(s.sim.guests().is_empty(), "guest destroyed before the finalizer went");
}

#[tokio::test]
async fn an_object_that_fails_to_deserialize_gets_an_event_and_waits_for_a_change() {
    let s = setup().await;
    let (client, seen) = mock_apiserver(json!({}));
    let ctx = Arc::new(Context::new(
        client,
        Providers {
            pve: s.pve.clone(),
            ..Default::default()
        },
        Arc::new(Metrics::default()),
    ));
    let invalid = kube::core::error_boundary::InvalidObject {
        error: "spec.memoryMiB: invalid type: string \"lots\", expected u32".into(),
        metadata: kube::api::ObjectMeta {
            name: Some("bad".into()),
            namespace: Some("homelab".into()),
            ..Default::default()
        },
    };
    let obj = Arc::new(DeserializeGuard::<ProxmoxGuest>(Err(invalid)));
    let err = driver::reconcile(obj.clone(), ctx.clone()).await.unwrap_err();
    assert_eq!(
        shared::error_policy(obj, &err, ctx),
        kube::runtime::controller::Action::await_change()
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body["type"], "Warning");
    assert_eq!(seen[0].body["reason"], "InvalidObject");
    assert!(seen[0].body["note"].as_str().unwrap().contains("memoryMiB"));
}

mod support {
    pub mod debian;
    pub mod dns_servers;
}

#[tokio::test]
async fn dns_record_controller_publishes_reports_and_cleans_up() {
    use homelab_operator::{
        api::{DNS_FINALIZER, DnsRecord},
        config::SecretSource,
        providers::dns::{DnsClient, powerdns::PowerDns},
    };
    let pdns = support::dns_servers::powerdns();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key"), &pdns.api_key).unwrap();
    let client = PowerDns::new(
        &url::Url::parse(&pdns.api_url).unwrap(),
        "localhost",
        SecretSource::File(dir.path().join("key")),
        Duration::from_secs(5),
        None,
    )
    .unwrap();
    let dns: std::collections::BTreeMap<String, DnsClient> = [("default".to_string(), DnsClient::PowerDns(client))].into();
    let obj = |meta: Value| {
        let mut v = json!({
            "apiVersion": "homelab.dev/v1alpha1", "kind": "DnsRecord",
            "metadata": {"name": "web", "namespace": "homelab", "uid": "9a1c2b4a-9d8e-4f7a-b6c5-1d2e3f4a5b6c", "generation": 1, "resourceVersion": "1"},
            "spec": {"zone": "home.arpa", "name": "web", "type": "A", "values": ["10.5.0.21"]},
        });
        for (k, val) in meta.as_object().unwrap() {
            v["metadata"][k] = val.clone();
        }
        v
    };
    let run = |o: Value| {
        let dns = dns.clone();
        async move {
            let (api, seen) = mock_apiserver(o.clone());
            let ctx = Arc::new(Context::new(
                api,
                Providers { dns, ..Default::default() },
                Arc::new(Metrics::default()),
            ));
            let r: DnsRecord = serde_json::from_value(o).unwrap();
            let res = tokio::time::timeout(Duration::from_secs(10), driver::reconcile(Arc::new(DeserializeGuard(Ok(r))), ctx))
                .await
                .unwrap();
            let seen = seen.lock().unwrap().clone();
            assert_rbac_allows(&seen);
            (res, seen)
        }
    };
    let (_, seen) = run(obj(json!({}))).await;
    assert!(
        seen[0]
            .uri
            .starts_with("/apis/homelab.dev/v1alpha1/namespaces/homelab/dnsrecords/web?")
            && seen[0].body.to_string().contains(DNS_FINALIZER)
    );

    let (res, seen) = run(obj(json!({"finalizers": [DNS_FINALIZER]}))).await;
    assert!(res.is_ok(), "{res:?}");
    assert_eq!(
        support::dns_servers::dig(pdns.server.dns_port, "web.home.arpa.", "A"),
        vec!["10.5.0.21"]
    );
    let status = seen.iter().find(|r| r.uri.contains("/status?")).unwrap();
    assert_eq!(
        status.uri,
        "/apis/homelab.dev/v1alpha1/namespaces/homelab/dnsrecords/web/status?&force=true&fieldManager=homelab-operator"
    );
    assert_eq!(status.body["status"]["fqdn"], "web.home.arpa.");
    assert_eq!(status.body["status"]["values"], json!(["10.5.0.21"]));
    assert!(seen.iter().any(|r| r.uri.contains("/events") && r.body["reason"] == "Created"));

    let (res, seen) = run(obj(
        json!({"finalizers": [DNS_FINALIZER], "deletionTimestamp": "2026-11-22T00:00:00Z"}),
    ))
    .await;
    assert!(res.is_ok(), "{res:?}");
    assert!(
        seen.iter()
            .any(|r| r.method == "PATCH" && !r.uri.contains("/status") && r.body.to_string().contains("remove")),
        "finalizer removed"
    );
    assert!(
        support::dns_servers::dig(pdns.server.dns_port, "web.home.arpa.", "A").is_empty(),
        "record deleted first"
    );
}

#[tokio::test]
async fn proxy_host_controller_publishes_reports_and_cleans_up() {
    use homelab_operator::{
        api::{PROXY_FINALIZER, ProxyHost},
        config::SecretSource,
        providers::npm::Npm,
        sim::npm::NpmSim,
    };
    let sim = NpmSim::new("admin@example.com", "pw-123456").unwrap();
    let server = sim.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "pw-123456").unwrap();
    let npm = || {
        Npm::new(
            &url::Url::parse(&server.url).unwrap(),
            "admin@example.com",
            SecretSource::File(dir.path().join("pw")),
            Duration::from_secs(3),
            None,
        )
        .unwrap()
    };
    let obj = |meta: Value| {
        let mut v = json!({
            "apiVersion": "homelab.dev/v1alpha1", "kind": "ProxyHost",
            "metadata": {"name": "media", "namespace": "homelab", "uid": "7a1c2b4a-9d8e-4f7a-b6c5-1d2e3f4a5b6c", "generation": 1, "resourceVersion": "1"},
            "spec": {"domains": ["media.home.arpa"], "forward": {"host": "10.5.0.50", "port": 8096}},
        });
        for (k, val) in meta.as_object().unwrap() {
            v["metadata"][k] = val.clone();
        }
        v
    };
    let run = |o: Value| {
        let client = npm();
        async move {
            let (api, seen) = mock_apiserver(o.clone());
            let ctx = Arc::new(Context::new(
                api,
                Providers {
                    proxy: [("default".to_string(), client)].into(),
                    ..Default::default()
                },
                Arc::new(Metrics::default()),
            ));
            let p: ProxyHost = serde_json::from_value(o).unwrap();
            let res = tokio::time::timeout(Duration::from_secs(10), driver::reconcile(Arc::new(DeserializeGuard(Ok(p))), ctx))
                .await
                .unwrap();
            let seen = seen.lock().unwrap().clone();
            assert_rbac_allows(&seen);
            (res, seen)
        }
    };
    let (_, seen) = run(obj(json!({}))).await;
    assert!(seen[0].body.to_string().contains(PROXY_FINALIZER));
    let (res, seen) = run(obj(json!({"finalizers": [PROXY_FINALIZER]}))).await;
    assert!(res.is_ok(), "{res:?}");
    assert_eq!(sim.hosts().len(), 1);
    let status = seen.iter().find(|r| r.uri.contains("/status?")).unwrap();
    assert_eq!(
        status.uri,
        "/apis/homelab.dev/v1alpha1/namespaces/homelab/proxyhosts/media/status?&force=true&fieldManager=homelab-operator"
    );
    assert_eq!(status.body["status"]["upstream"], "http://10.5.0.50:8096");
    assert_eq!(status.body["status"]["nginxOnline"], true);
    assert!(seen.iter().any(|r| r.uri.contains("/events") && r.body["reason"] == "Created"));
    let (res, _) = run(obj(
        json!({"finalizers": [PROXY_FINALIZER], "deletionTimestamp": "2026-11-22T00:00:00Z"}),
    ))
    .await;
    assert!(res.is_ok(), "{res:?}");
    assert!(sim.hosts().is_empty(), "proxy host deleted before the finalizer went");
}

#[tokio::test]
async fn backup_policy_controller_reports_freshness_and_cleans_up() {
    use homelab_operator::{
        api::{BACKUP_FINALIZER, BackupPolicy},
        sim::pve::{SimBackup, SimGuest},
    };
    let s = setup().await;
    s.sim.add_guest(SimGuest::new(
        250,
        "lxc",
        "pve1",
        [("hostname".to_string(), json!("legacy"))].into(),
        false,
    ));
    s.sim.add_backup(SimBackup {
        storage: "pbs1".into(),
        vmid: 250,
        kind: "lxc".into(),
        ctime: jiff::Timestamp::now().as_second() as u64 - 600,
        size: 1 << 30,
        verified: Some("ok".into()),
        ..Default::default()
    });
    let obj = |meta: Value| {
        let mut v = json!({
            "apiVersion": "homelab.dev/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "nightly", "namespace": "homelab", "uid": "5b1c2b4a-9d8e-4f7a-b6c5-1d2e3f4a5b6c", "generation": 1, "resourceVersion": "1"},
            "spec": {"vmids": [250], "schedule": "02:30", "storage": "pbs1", "retention": {"keepDaily": 7}},
        });
        for (k, val) in meta.as_object().unwrap() {
            v["metadata"][k] = val.clone();
        }
        v
    };
    let run = |o: Value| {
        let pve = s.pve.clone();
        async move {
            let (api, seen) = mock_apiserver(o.clone());
            let ctx = Arc::new(Context::new(
                api,
                Providers { pve, ..Default::default() },
                Arc::new(Metrics::default()),
            ));
            let p: BackupPolicy = serde_json::from_value(o).unwrap();
            let res = tokio::time::timeout(Duration::from_secs(10), driver::reconcile(Arc::new(DeserializeGuard(Ok(p))), ctx))
                .await
                .unwrap();
            let seen = seen.lock().unwrap().clone();
            assert_rbac_allows(&seen);
            (res, seen)
        }
    };
    let (_, seen) = run(obj(json!({}))).await;
    assert!(
        seen[0].body.to_string().contains(BACKUP_FINALIZER),
        "finalizer first: {:?}",
        seen[0]
    );
    let (res, seen) = run(obj(json!({"finalizers": [BACKUP_FINALIZER]}))).await;
    assert!(res.is_ok(), "{res:?}");
    let status = seen.iter().find(|r| r.uri.contains("/status?")).expect("status written");
    assert!(
        status
            .uri
            .ends_with("/backuppolicies/nightly/status?&force=true&fieldManager=homelab-operator"),
        "{}",
        status.uri
    );
    assert_eq!(status.body["status"]["fresh"], "1/1");
    assert_eq!(status.body["status"]["members"][0]["newest"]["verified"], "ok");
    assert!(seen.iter().any(|r| r.uri.contains("/events") && r.body["reason"] == "JobCreated"));
    assert_eq!(s.sim.backup_jobs().len(), 1);
    let (res, seen) = run(obj(
        json!({"finalizers": [BACKUP_FINALIZER], "deletionTimestamp": "2026-12-03T00:00:00Z"}),
    ))
    .await;
    assert!(res.is_ok(), "{res:?}");
    assert!(s.sim.backup_jobs().is_empty(), "its job is deleted");
    assert!(
        seen.iter()
            .any(|r| r.method == "PATCH" && !r.uri.contains("/status") && r.body.to_string().contains("remove"))
    );
    assert_eq!(s.sim.backups_on("pbs1").len(), 1, "the backup stays");
}

/// Events of the same kind fold into a series (a PATCH of the first's count);
/// a different note is a new Event; once the series window has passed the
/// publisher holds nothing of them and a repeat starts a new Event.
#[tokio::test(start_paused = true)]
async fn events_fold_into_series_and_are_forgotten_after_the_window() {
    use homelab_operator::controller::events::Events;
    use k8s_openapi::api::core::v1::ObjectReference;
    use kube::runtime::events::{Event, EventType, Reporter};
    let (client, seen) = mock_apiserver(json!({}));
    let events = Events::new(
        client,
        Reporter {
            controller: "homelab-operator".into(),
            instance: None,
        },
    );
    let reference = ObjectReference {
        api_version: Some("homelab.dev/v1alpha1".into()),
        kind: Some("DnsRecord".into()),
        name: Some("web".into()),
        namespace: Some("homelab".into()),
        uid: Some("uid-1".into()),
        ..Default::default()
    };
    let published = |note: &str| Event {
        type_: EventType::Normal,
        reason: "Published".into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    let ev = published("web.home.arpa. A 10.0.0.1");
    let methods = || seen.lock().unwrap().iter().map(|s| s.method.clone()).collect::<Vec<_>>();
    events.publish(&ev, &reference).await.unwrap();
    events.publish(&ev, &reference).await.unwrap();
    events.publish(&ev, &reference).await.unwrap();
    assert_eq!(methods(), ["POST", "PATCH", "PATCH"], "repeats join the series");
    let (first, last) = {
        let seen = seen.lock().unwrap();
        (seen[0].clone(), seen[2].clone())
    };
    assert_eq!(first.body["note"], "web.home.arpa. A 10.0.0.1");
    assert_eq!(first.body["type"], "Normal");
    let name = first.body["metadata"]["name"].as_str().unwrap();
    assert!(last.uri.contains(&format!("/namespaces/homelab/events/{name}")), "{}", last.uri);
    assert_eq!(last.body["series"]["count"], 3, "{}", last.body);
    events.publish(&published("web.home.arpa. A 10.0.0.2"), &reference).await.unwrap();
    assert_eq!(methods()[3], "POST", "a new note is news");
    events.forget_old();
    events.publish(&ev, &reference).await.unwrap();
    assert_eq!(methods()[4], "PATCH", "within the window: still the series");
    tokio::time::advance(Duration::from_secs(7 * 60)).await;
    events.forget_old();
    events.publish(&ev, &reference).await.unwrap();
    assert_eq!(methods()[5], "POST", "after the window a repeat is a new Event");
}
