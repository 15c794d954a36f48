//! ProxyHost end to end through `apply`'s engine on the NPM simulator.

use std::{sync::Arc, time::Duration};

use homelab_operator::{
    api::{self, ProxyHost},
    cli::oneshot::{Engine, Files, GuestAddresses},
    config::{Config, ProxyEndpoint, SecretSource},
    metrics::Metrics,
    sim::{SimServer, npm::NpmSim},
};
use serde_json::json;

struct World {
    sim: Arc<NpmSim>,
    engine: Engine,
    config: Config,
    _server: SimServer,
    dir: tempfile::TempDir,
}

async fn world() -> World {
    let sim = NpmSim::new("admin@example.com", "s3cret-pass").unwrap();
    let server = sim.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "s3cret-pass").unwrap();
    let config = Config {
        path: "t".into(),
        proxy: [(
            "default".to_string(),
            ProxyEndpoint {
                url: url::Url::parse(&server.url).unwrap(),
                identity: "admin@example.com".into(),
                secret: SecretSource::File(dir.path().join("secret")),
                timeout: Duration::from_secs(3),
            },
        )]
        .into(),
        ..Default::default()
    };
    World {
        sim,
        engine: Engine::new(&config, Arc::new(Metrics::default())).unwrap(),
        config,
        _server: server,
        dir,
    }
}

fn proxy(name: &str, spec: &str) -> ProxyHost {
    serde_yaml_ng::from_str(&format!(
        "apiVersion: homelab.dev/v1alpha1\nkind: ProxyHost\nmetadata: {{name: {name}, namespace: homelab}}\nspec:\n{spec}"
    ))
    .unwrap()
}

fn ready(s: &api::ProxyHostStatus) -> bool {
    api::find_condition(&s.conditions, api::CONDITION_READY).is_some_and(|c| c.status == "True")
}

#[tokio::test]
async fn hosts_follow_the_spec() {
    let w = world().await;
    let none = GuestAddresses::new();
    let mut p = proxy(
        "grafana",
        "  domains: [grafana.home.arpa]\n  forward: {host: 10.5.0.21, port: 3000}\n  websockets: true\n",
    );
    let a = w
        .engine
        .apply(&p, &Files::with_statuses(&none), Duration::from_secs(30), &|_| {})
        .await;
    assert!(ready(&a.status), "{:?} {:?}", a.error, a.status);
    assert_eq!(a.status.upstream.as_deref(), Some("http://10.5.0.21:3000"));
    assert_eq!(a.status.nginx_online, Some(true));
    let h = &w.sim.hosts()[0];
    assert_eq!(
        (
            h["forward_port"].clone(),
            h["allow_websocket_upgrade"].clone(),
            h["block_exploits"].clone()
        ),
        (json!(3000), json!(true), json!(true))
    );
    assert!(
        h["meta"]["homelab_operator"]
            .as_str()
            .unwrap()
            .starts_with("managed-by: homelab-operator homelab/grafana")
    );
    // Converged: nothing to write.
    assert!(
        w.engine
            .plan(&p, &Files::with_statuses(&none))
            .await
            .unwrap()
            .plan
            .actions
            .is_empty()
    );
    // Edits converge in place (same host id).
    p.spec.forward.as_mut().unwrap().port = 3001;
    p.spec.tls = Some(serde_yaml_ng::from_str("{letsEncrypt: {email: a@home.arpa}, forceSsl: true}").unwrap());
    let b = w
        .engine
        .apply(&p, &Files::with_statuses(&none), Duration::from_secs(30), &|_| {})
        .await;
    assert!(ready(&b.status) && b.status.host_id == a.status.host_id, "{:?}", b.status);
    assert_eq!(w.sim.hosts()[0]["forward_port"], json!(3001));
    assert!(
        b.status.tls.unwrap().starts_with("certificate "),
        "Let's Encrypt certificate requested"
    );
    assert!(
        w.engine
            .plan(&p, &Files::with_statuses(&none))
            .await
            .unwrap()
            .plan
            .actions
            .is_empty(),
        "an issued certificate satisfies letsEncrypt"
    );
    // nginx refusing the config is a Stalled condition with nginx's words.
    p.spec.advanced_config = Some("invalid_directive on;".into());
    let c = w
        .engine
        .apply(&p, &Files::with_statuses(&none), Duration::from_secs(30), &|_| {})
        .await;
    let s = api::find_condition(&c.status.conditions, api::CONDITION_STALLED).unwrap();
    assert_eq!((s.status.as_str(), s.reason.as_str()), ("True", "NginxRejected"));
    assert!(s.message.contains("unknown directive"), "{}", s.message);
    // Delete policy: gone. Retain: kept, mark dropped.
    assert_eq!(w.engine.delete(&p).await.unwrap()[0].reason, "Deleted");
    assert!(w.sim.hosts().is_empty());
    let mut keep = proxy(
        "keep",
        "  domains: [keep.home.arpa]\n  forward: {host: 10.5.0.9, port: 80}\n  deletionPolicy: Retain\n",
    );
    assert!(ready(
        &w.engine
            .apply(&keep, &Files::with_statuses(&none), Duration::from_secs(30), &|_| {})
            .await
            .status
    ));
    assert_eq!(w.engine.delete(&keep).await.unwrap()[0].reason, "Retained");
    let kept = &w.sim.hosts()[0];
    assert!(kept["meta"].get("homelab_operator").is_none() && kept["forward_host"] == json!("10.5.0.9"));
    keep.spec.adopt = false;
}

#[tokio::test]
async fn target_guests_foreign_hosts_and_errors() {
    let w = world().await;
    let p = proxy("media", "  domains: [media.home.arpa]\n  target: {name: jellyfin, port: 8096}\n");
    let a = w
        .engine
        .apply(&p, &Files::with_statuses(&GuestAddresses::new()), Duration::from_secs(30), &|_| {})
        .await;
    let c = api::find_condition(&a.status.conditions, "Ready").unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "TargetNotFound"));
    assert!(w.sim.hosts().is_empty(), "nothing written while the guest is missing");
    let status = api::ProxmoxGuestStatus {
        ips: vec!["fd00::50".to_string(), "10.5.0.50".to_string()],
        ..Default::default()
    };
    let guests: GuestAddresses = [("homelab/jellyfin".to_string(), status)].into();
    let b = w
        .engine
        .apply(&p, &Files::with_statuses(&guests), Duration::from_secs(30), &|_| {})
        .await;
    assert_eq!(b.status.upstream.as_deref(), Some("http://10.5.0.50:8096"), "IPv4 preferred");
    // A host someone made in the NPM UI for the same domain: conflict, untouched; adopt takes it over.
    w.sim
        .add_host(json!({"domain_names": ["nas.home.arpa"], "forward_scheme": "http", "forward_host": "10.5.0.5", "forward_port": 5000}));
    let mut nas = proxy("nas", "  domains: [nas.home.arpa]\n  forward: {host: 10.5.0.6, port: 5001}\n");
    let c = w
        .engine
        .apply(
            &nas,
            &Files::with_statuses(&GuestAddresses::new()),
            Duration::from_secs(30),
            &|_| {},
        )
        .await;
    assert_eq!(
        api::find_condition(&c.status.conditions, api::CONDITION_STALLED).unwrap().reason,
        "Conflict"
    );
    assert!(w.sim.hosts().iter().any(|h| h["forward_host"] == json!("10.5.0.5")));
    assert_eq!(
        w.engine.delete(&nas).await.unwrap()[0].reason,
        "Released",
        "a foreign host is never deleted"
    );
    nas.spec.adopt = true;
    assert!(ready(
        &w.engine
            .apply(
                &nas,
                &Files::with_statuses(&GuestAddresses::new()),
                Duration::from_secs(30),
                &|_| {}
            )
            .await
            .status
    ));
    assert!(w.sim.hosts().iter().any(|h| h["forward_host"] == json!("10.5.0.6")));
    // Bad credentials: a clear error.
    std::fs::write(w.dir.path().join("secret"), "wrong").unwrap();
    let fresh = Engine::new(
        &Config {
            path: "t".into(),
            proxy: [(
                "default".to_string(),
                ProxyEndpoint {
                    url: url::Url::parse(&w._server.url).unwrap(),
                    identity: "admin@example.com".into(),
                    secret: SecretSource::File(w.dir.path().join("secret")),
                    timeout: Duration::from_secs(3),
                },
            )]
            .into(),
            ..Default::default()
        },
        Arc::new(Metrics::default()),
    )
    .unwrap();
    let e = fresh
        .apply(
            &proxy("x", "  domains: [x.home.arpa]\n  forward: {host: 10.0.0.1, port: 80}\n"),
            &Files::default(),
            Duration::from_secs(30),
            &|_| {},
        )
        .await
        .error
        .unwrap();
    assert!(e.contains("Invalid email or password") && !e.contains("wrong"), "{e}");
}

/// Every ProxyHost of an endpoint, in the steady state: one listing of the
/// hosts answers for all of them, and drift is still put right host by host.
#[tokio::test]
async fn one_listing_serves_every_host_and_drift_is_still_corrected() {
    let w = world().await;
    let none = GuestAddresses::new();
    let mut hosts: Vec<ProxyHost> = (0..10)
        .map(|i| {
            let mut p = proxy(
                &format!("app{i}"),
                &format!("  domains: [app{i}.home.arpa]\n  forward: {{host: 10.5.0.{i}, port: 8080}}\n"),
            );
            p.metadata.generation = Some(1);
            p
        })
        .collect();
    for p in hosts.iter_mut() {
        let a = w
            .engine
            .apply(p, &Files::with_statuses(&none), Duration::from_secs(30), &|_| {})
            .await;
        assert!(ready(&a.status), "{:?}", a.error);
        p.status = Some(a.status);
    }
    let lists = || w.sim.calls().get("GET /nginx/proxy-hosts").copied().unwrap_or(0);
    let puts = || {
        w.sim
            .calls()
            .iter()
            .filter(|(k, _)| k.starts_with("PUT "))
            .map(|(_, v)| v)
            .sum::<u64>()
    };
    // A new resync interval (a new process): every host reconciled once.
    let steady = || async {
        let engine = Engine::new(&w.config, Arc::new(Metrics::default())).unwrap();
        for p in &hosts {
            let a = engine
                .apply(p, &Files::with_statuses(&none), Duration::from_secs(30), &|_| {})
                .await;
            assert!(ready(&a.status), "{:?}", a.error);
        }
    };
    let before = lists();
    steady().await;
    assert_eq!(lists() - before, 1, "one listing for 10 hosts: {:?}", w.sim.calls());
    // Someone edits one host in NPM's UI: the next interval's listing shows it and only it is put back.
    let npm = &w.engine.providers.proxy["default"];
    let mut edited = npm
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|h| h.domain_names == ["app3.home.arpa"])
        .unwrap();
    edited.forward_port = 9999;
    let spec = homelab_operator::providers::npm::HostSpec {
        domain_names: edited.domain_names.clone(),
        forward_scheme: edited.forward_scheme.clone(),
        forward_host: edited.forward_host.clone(),
        forward_port: 9999,
        certificate_id: edited.certificate_id.clone(),
        ssl_forced: edited.ssl_forced,
        hsts_enabled: edited.hsts_enabled,
        http2_support: edited.http2_support,
        block_exploits: edited.block_exploits,
        caching_enabled: edited.caching_enabled,
        allow_websocket_upgrade: edited.allow_websocket_upgrade,
        access_list_id: edited.access_list_id,
        advanced_config: edited.advanced_config.clone(),
        enabled: edited.enabled,
        meta: edited.meta.clone(),
    };
    npm.update(edited.id, &spec).await.unwrap();
    let (lists0, puts0) = (lists(), puts());
    steady().await;
    assert_eq!((lists() - lists0, puts() - puts0), (1, 1), "one listing, one write");
    let fixed = npm.list().await.unwrap().into_iter().find(|h| h.id == edited.id).unwrap();
    assert_eq!(fixed.forward_port, 8080, "drift corrected");
}
