//! The Technitium provider against the contract-checked simulator over HTTP,
//! and a DnsRecord published through it.

use std::{sync::Arc, time::Duration};

use homelab_operator::{
    api::{self, DnsRecord, ProxmoxGuestStatus},
    cli::oneshot::{Engine, Files, GuestAddresses},
    config::{Config, DnsEndpoint, SecretSource},
    metrics::Metrics,
    providers::dns::{DnsApi, RecordSet, technitium::Technitium},
    sim::{
        FaultKind, ScriptedFault, SimServer,
        technitium::{SimRecord, TechnitiumSim},
    },
};
use serde_json::json;

const TOKEN: &str = "3c9d0e7f5a1b2c4d6e8f0a1b3c5d7e9f1a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d";
const MARK: &str = "managed-by: homelab-operator homelab/web uid=1";

struct Fixture {
    sim: Arc<TechnitiumSim>,
    server: SimServer,
    dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let sim = TechnitiumSim::new(TOKEN, &["home.arpa"]).unwrap();
    let server = sim.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    Fixture { sim, server, dir }
}

impl Fixture {
    fn client(&self, token_file: &str) -> Technitium {
        Technitium::new(
            &url::Url::parse(&self.server.url).unwrap(),
            SecretSource::File(self.dir.path().join(token_file)),
            Duration::from_secs(3),
            None,
        )
        .unwrap()
    }
}

fn set(name: &str, rtype: &str, ttl: u32, values: &[&str], mark: Option<&str>) -> RecordSet {
    RecordSet {
        name: name.into(),
        rtype: rtype.into(),
        ttl,
        values: values.iter().map(|s| s.to_string()).collect(),
        mark: mark.map(str::to_string),
    }
}

#[tokio::test]
async fn rrsets_round_trip_with_comment_marks() {
    let f = fixture().await;
    let dns = f.client("token");
    let zone = "home.arpa.";
    assert_eq!(dns.get(zone, "web.home.arpa.", "A").await.unwrap(), None);
    dns.put(zone, &set("web.home.arpa.", "A", 120, &["10.5.0.21", "10.5.0.22"], Some(MARK)))
        .await
        .unwrap();
    let got = dns.get(zone, "web.home.arpa.", "A").await.unwrap().unwrap();
    assert_eq!(
        (got.values.clone(), got.ttl, got.mark.as_deref()),
        (vec!["10.5.0.21".into(), "10.5.0.22".into()], 120, Some(MARK))
    );
    // Replacing the RRset leaves exactly the new values (overwrite on the first value).
    dns.put(zone, &set("web.home.arpa.", "A", 300, &["10.5.0.30"], Some(MARK)))
        .await
        .unwrap();
    let recs = f.sim.records("web.home.arpa");
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (recs[0].ttl, recs[0].rdata.clone()),
        (300, json!({"ipAddress": "10.5.0.30"})),
        "TTL always sent"
    );
    // Other types in presentation format.
    for (name, rtype, value) in [
        ("www.home.arpa.", "CNAME", "web.home.arpa."),
        ("home.arpa.", "TXT", "\"v=spf1 -all\""),
        ("home.arpa.", "MX", "10 mail.home.arpa."),
        ("_https._tcp.home.arpa.", "SRV", "10 5 443 web.home.arpa."),
    ] {
        dns.put(zone, &set(name, rtype, 300, &[value], Some(MARK))).await.unwrap();
        assert_eq!(
            dns.get(zone, name, rtype).await.unwrap().unwrap().values,
            vec![value.to_string()],
            "{rtype}"
        );
    }
    // Delete removes every value; a release keeps the values without the mark.
    dns.delete(zone, "web.home.arpa.", "A").await.unwrap();
    assert!(f.sim.records("web.home.arpa").is_empty());
    dns.put(zone, &set("www.home.arpa.", "CNAME", 300, &["web.home.arpa."], None))
        .await
        .unwrap();
    assert_eq!(dns.get(zone, "www.home.arpa.", "CNAME").await.unwrap().unwrap().mark, None);
}

#[tokio::test]
async fn errors_keep_the_servers_words() {
    let f = fixture().await;
    std::fs::write(f.dir.path().join("bad"), "nope").unwrap();
    let e = f.client("bad").get("home.arpa.", "web.home.arpa.", "A").await.unwrap_err();
    assert!(
        e.is_permission() && e.to_string().contains("Invalid token or session expired."),
        "{e}"
    );
    assert!(!e.to_string().contains("nope"));
    let dns = f.client("token");
    let e = dns
        .put("nosuch.arpa.", &set("x.nosuch.arpa.", "A", 300, &["10.0.0.1"], None))
        .await
        .unwrap_err();
    assert!(
        !e.is_transient() && e.to_string().contains("No such zone was found: nosuch.arpa"),
        "{e}"
    );
    // The contract refuses what the server refuses: booleans are words, required values present.
    let http = reqwest::Client::new();
    let answer: serde_json::Value = http
        .post(format!("{}/api/zones/records/add", f.server.url))
        .bearer_auth(TOKEN)
        .form(&[
            ("domain", "x.home.arpa"),
            ("type", "A"),
            ("overwrite", "1"),
            ("ipAddress", "10.0.0.1"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["status"], "error");
    assert_eq!(answer["errorMessage"], "String '1' was not recognized as a valid Boolean.");
    let answer: serde_json::Value = http
        .post(format!("{}/api/zones/records/delete", f.server.url))
        .bearer_auth(TOKEN)
        .form(&[("domain", "x.home.arpa"), ("type", "A")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["errorMessage"], "Parameter 'ipAddress' missing.");
    assert_eq!(http.post(format!("{}/api/nope", f.server.url)).send().await.unwrap().status(), 404);
    // Faults: a 5xx is transient.
    f.sim.faults.lock().unwrap().scripted.push_back(ScriptedFault::new(
        "POST",
        "/records/get",
        FaultKind::Status(503, "unavailable".into()),
        1,
    ));
    assert!(dns.get("home.arpa.", "web.home.arpa.", "A").await.unwrap_err().is_transient());
}

#[tokio::test]
async fn dns_records_publish_through_technitium() {
    let f = fixture().await;
    let config = Config {
        path: "t".into(),
        dns: [(
            "default".to_string(),
            DnsEndpoint::Technitium {
                url: url::Url::parse(&f.server.url).unwrap(),
                token: SecretSource::File(f.dir.path().join("token")),
                timeout: Duration::from_secs(3),
            },
        )]
        .into(),
        ..Default::default()
    };
    let engine = Engine::new(&config, Arc::new(Metrics::default())).unwrap();
    let record = |spec: &str| -> DnsRecord {
        serde_yaml_ng::from_str(&format!("apiVersion: homelab.dev/v1alpha1\nkind: DnsRecord\nmetadata: {{name: web, namespace: homelab}}\nspec:\n  zone: home.arpa\n{spec}")).unwrap()
    };
    let r = record("  name: web\n  type: A\n  target: {name: web01}\n");
    let web01 = ProxmoxGuestStatus {
        ips: vec!["10.5.0.21".to_string()],
        ..Default::default()
    };
    let guests: GuestAddresses = [("homelab/web01".to_string(), web01)].into();
    let a = engine
        .apply(&r, &Files::with_statuses(&guests), Duration::from_secs(30), &|_| {})
        .await;
    assert!(
        api::find_condition(&a.status.conditions, "Ready").is_some_and(|c| c.status == "True"),
        "{:?} {:?}",
        a.error,
        a.status
    );
    assert_eq!(
        f.sim.records("web.home.arpa")[0]
            .comments
            .as_deref()
            .map(|c| c.starts_with("managed-by: homelab-operator homelab/web")),
        Some(true)
    );
    assert!(
        engine
            .plan(&r, &Files::with_statuses(&guests))
            .await
            .unwrap()
            .plan
            .actions
            .is_empty(),
        "converged: nothing to write"
    );
    // A foreign record elsewhere is a conflict and stays as it is.
    f.sim.add_record(
        "home.arpa",
        SimRecord {
            name: "nas.home.arpa".into(),
            rtype: "A".into(),
            ttl: 300,
            comments: None,
            rdata: json!({"ipAddress": "10.5.0.5"}),
        },
    );
    let c = engine
        .apply(
            &record("  name: nas\n  type: A\n  values: [10.5.0.6]\n"),
            &Files::with_statuses(&guests),
            Duration::from_secs(30),
            &|_| {},
        )
        .await;
    assert_eq!(
        api::find_condition(&c.status.conditions, api::CONDITION_STALLED).unwrap().reason,
        "Conflict"
    );
    assert_eq!(f.sim.records("nas.home.arpa")[0].rdata, json!({"ipAddress": "10.5.0.5"}));
    assert_eq!(engine.delete(&r).await.unwrap()[0].reason, "Deleted");
    assert!(f.sim.records("web.home.arpa").is_empty());
}
