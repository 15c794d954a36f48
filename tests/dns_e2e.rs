//! DnsRecord end to end through `apply`'s engine: records on real PowerDNS and
//! BIND, a record that follows a ProxmoxGuest's address, edits, foreign
//! records, adoption, deletion policies, errors as conditions.

mod support {
    pub mod debian;
    pub mod dns_servers;
}

use std::{sync::Arc, time::Duration};

use homelab_operator::{
    api::{self, DnsRecord},
    cli::oneshot::{self, Engine, Files, GuestAddresses},
    config::{Config, DnsEndpoint, SecretSource},
    metrics::Metrics,
    providers::dns::{DnsApi, RecordSet},
};
use support::dns_servers::{self, ZONE, dig};

struct World {
    engine: Engine,
    config: Config,
    pdns: dns_servers::PowerDns,
    bind: dns_servers::Bind,
    _dir: tempfile::TempDir,
}

fn world() -> World {
    let pdns = dns_servers::powerdns();
    let bind = dns_servers::bind();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pdns-key"), &pdns.api_key).unwrap();
    std::fs::write(dir.path().join("tsig"), &bind.secret).unwrap();
    let config = Config {
        path: "test".into(),
        dns: [
            (
                "pdns".to_string(),
                DnsEndpoint::PowerDns {
                    url: url::Url::parse(&pdns.api_url).unwrap(),
                    api_key: SecretSource::File(dir.path().join("pdns-key")),
                    server_id: "localhost".into(),
                    timeout: Duration::from_secs(5),
                },
            ),
            (
                "bind".to_string(),
                DnsEndpoint::Rfc2136 {
                    server: format!("127.0.0.1:{}", bind.server.dns_port),
                    tsig_key_name: bind.key_name.clone(),
                    tsig_algorithm: "hmac-sha256".into(),
                    tsig_secret: SecretSource::File(dir.path().join("tsig")),
                    timeout: Duration::from_secs(5),
                },
            ),
        ]
        .into(),
        ..Default::default()
    };
    World {
        engine: Engine::new(&config, Arc::new(Metrics::default())).unwrap(),
        config,
        pdns,
        bind,
        _dir: dir,
    }
}

fn record(name: &str, provider: &str, spec: &str) -> DnsRecord {
    serde_yaml_ng::from_str(&format!(
        "apiVersion: homelab.dev/v1alpha1\nkind: DnsRecord\nmetadata: {{name: {name}, namespace: homelab}}\nspec:\n  provider: {provider}\n  zone: home.arpa\n{spec}"
    ))
    .unwrap()
}

fn ready(s: &api::DnsRecordStatus) -> bool {
    api::find_condition(&s.conditions, api::CONDITION_READY).is_some_and(|c| c.status == "True")
}

async fn apply(w: &World, r: &DnsRecord, guests: &GuestAddresses) -> oneshot::Applied<api::DnsRecordStatus> {
    w.engine
        .apply(r, &Files::with_statuses(guests), Duration::from_secs(30), &|_| {})
        .await
}

#[tokio::test]
async fn records_follow_the_spec_on_both_servers() {
    let w = world();
    for (provider, port) in [("pdns", w.pdns.server.dns_port), ("bind", w.bind.server.dns_port)] {
        let mut r = record("web", provider, "  name: web\n  type: A\n  ttl: 120\n  values: [10.5.0.21]\n");
        let a = apply(&w, &r, &GuestAddresses::new()).await;
        assert!(ready(&a.status), "{provider}: {:?} {:?}", a.error, a.status.conditions);
        assert_eq!(a.status.fqdn.as_deref(), Some("web.home.arpa."));
        assert_eq!(dig(port, "web.home.arpa.", "A"), vec!["10.5.0.21"]);
        // Second apply: nothing to write.
        assert!(w.engine.plan(&r, &Files::default()).await.unwrap().plan.actions.is_empty());
        // Edit converges.
        r.spec.values = vec!["10.5.0.22".into(), "10.5.0.23".into()];
        assert!(ready(&apply(&w, &r, &GuestAddresses::new()).await.status));
        assert_eq!(dig(port, "web.home.arpa.", "A"), vec!["10.5.0.22", "10.5.0.23"]);
        // Other types.
        let c = record("www", provider, "  name: www\n  type: CNAME\n  values: [web.home.arpa]\n");
        assert!(ready(&apply(&w, &c, &GuestAddresses::new()).await.status));
        assert_eq!(dig(port, "www.home.arpa.", "CNAME"), vec!["web.home.arpa."]);
        let t = record("spf", provider, "  name: \"@\"\n  type: TXT\n  values: [\"v=spf1 -all\"]\n");
        let ta = apply(&w, &t, &GuestAddresses::new()).await;
        assert!(ready(&ta.status), "{provider}: {:?}", ta.error);
        assert_eq!(dig(port, "home.arpa.", "TXT"), vec!["\"v=spf1 -all\""]);
        assert!(
            w.engine.plan(&t, &Files::default()).await.unwrap().plan.actions.is_empty(),
            "{provider}: TXT compares equal after a round trip"
        );
        // Delete policy: gone; Retain: kept without our mark.
        assert_eq!(w.engine.delete(&r).await.unwrap()[0].reason, "Deleted");
        assert!(dig(port, "web.home.arpa.", "A").is_empty());
        let mut keep = c.clone();
        keep.spec.deletion_policy = api::DeletionPolicy::Retain;
        assert_eq!(w.engine.delete(&keep).await.unwrap()[0].reason, "Retained");
        assert_eq!(dig(port, "www.home.arpa.", "CNAME"), vec!["web.home.arpa."]);
        let left = w.engine.providers.dns[provider]
            .get(ZONE, "www.home.arpa.", "CNAME")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(left.mark, None, "{provider}: mark released");
    }
}

#[tokio::test]
async fn a_record_follows_its_guests_addresses() {
    let w = world();
    let r = record("jellyfin", "pdns", "  name: jellyfin\n  type: A\n  target: {name: jellyfin}\n");
    // Guest not there yet: waiting, not stalled, nothing written.
    let a = apply(&w, &r, &GuestAddresses::new()).await;
    let c = api::find_condition(&a.status.conditions, "Ready").unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "TargetNotFound"));
    assert!(dig(w.pdns.server.dns_port, "jellyfin.home.arpa.", "A").is_empty());
    // The guest reports addresses on its two NICs: the first NIC's are
    // published (the storage network's are not); the IPv6 one goes to AAAA only.
    let guests = guest("jellyfin", &[("net0", &["10.5.0.50", "fd00::50"]), ("net1", &["10.10.0.50"])]);
    assert!(ready(&apply(&w, &r, &guests).await.status));
    assert_eq!(dig(w.pdns.server.dns_port, "jellyfin.home.arpa.", "A"), vec!["10.5.0.50"]);
    let six = record("jellyfin6", "pdns", "  name: jellyfin\n  type: AAAA\n  target: {name: jellyfin}\n");
    assert!(ready(&apply(&w, &six, &guests).await.status));
    assert_eq!(dig(w.pdns.server.dns_port, "jellyfin.home.arpa.", "AAAA"), vec!["fd00::50"]);
    // A record for the NIC named publishes that NIC's address.
    let storage = record(
        "jellyfin-san",
        "pdns",
        "  name: jellyfin-san\n  type: A\n  target: {name: jellyfin, nic: net1}\n",
    );
    assert!(ready(&apply(&w, &storage, &guests).await.status));
    assert_eq!(dig(w.pdns.server.dns_port, "jellyfin-san.home.arpa.", "A"), vec!["10.10.0.50"]);
    // Its address changes: the record follows.
    let moved = guest("jellyfin", &[("net0", &["10.5.0.51"]), ("net1", &["10.10.0.50"])]);
    assert!(ready(&apply(&w, &r, &moved).await.status));
    assert_eq!(dig(w.pdns.server.dns_port, "jellyfin.home.arpa.", "A"), vec!["10.5.0.51"]);
}

/// What `apply` knows of a guest in `homelab`: its NICs and their addresses.
fn guest(name: &str, nics: &[(&str, &[&str])]) -> GuestAddresses {
    let interfaces: Vec<api::GuestInterface> = nics
        .iter()
        .map(|(slot, ips)| api::GuestInterface {
            slot: slot.to_string(),
            mac: None,
            ips: ips.iter().map(|s| s.to_string()).collect(),
        })
        .collect();
    let status = api::ProxmoxGuestStatus {
        ips: interfaces.iter().flat_map(|i| i.ips.clone()).collect(),
        interfaces,
        ..Default::default()
    };
    [(format!("homelab/{name}"), status)].into()
}

#[tokio::test]
async fn foreign_records_are_untouched_unless_adopted() {
    let w = world();
    for (provider, port) in [("pdns", w.pdns.server.dns_port), ("bind", w.bind.server.dns_port)] {
        let foreign = RecordSet {
            name: "nas.home.arpa.".into(),
            rtype: "A".into(),
            ttl: 300,
            values: vec!["10.5.0.5".into()],
            mark: None,
        };
        w.engine.providers.dns[provider].put(ZONE, &foreign).await.unwrap();
        let mut r = record("nas", provider, "  name: nas\n  type: A\n  values: [10.5.0.6]\n");
        let a = apply(&w, &r, &GuestAddresses::new()).await;
        let s = api::find_condition(&a.status.conditions, api::CONDITION_STALLED).unwrap();
        assert_eq!((s.status.as_str(), s.reason.as_str()), ("True", "Conflict"), "{provider}");
        assert!(s.message.contains("nas.home.arpa. A already exists with 10.5.0.5"), "{}", s.message);
        assert_eq!(
            dig(port, "nas.home.arpa.", "A"),
            vec!["10.5.0.5"],
            "{provider}: foreign record untouched"
        );
        // Deleting the resource leaves the foreign record alone.
        assert_eq!(w.engine.delete(&r).await.unwrap()[0].reason, "Released");
        assert_eq!(dig(port, "nas.home.arpa.", "A"), vec!["10.5.0.5"]);
        r.spec.adopt = true;
        assert!(ready(&apply(&w, &r, &GuestAddresses::new()).await.status));
        assert_eq!(dig(port, "nas.home.arpa.", "A"), vec!["10.5.0.6"], "{provider}: adopted");
    }
}

#[tokio::test]
async fn errors_are_clear() {
    let w = world();
    // Unknown provider name.
    let r = record("x", "nope", "  name: x\n  type: A\n  values: [10.0.0.1]\n");
    let e = apply(&w, &r, &GuestAddresses::new()).await.error.unwrap();
    assert!(e.contains("spec.provider \"nope\" is not in the config's dns: section"), "{e}");
    // Bad credentials: the error names the server's refusal.
    std::fs::write(w._dir.path().join("pdns-key"), "wrong").unwrap();
    let r = record("y", "pdns", "  name: y\n  type: A\n  values: [10.0.0.1]\n");
    let e = apply(&w, &r, &GuestAddresses::new()).await.error.unwrap();
    assert!(e.contains("401"), "{e}");
    std::fs::write(w._dir.path().join("tsig"), "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=").unwrap();
    let r = record("z", "bind", "  name: z\n  type: A\n  values: [10.0.0.1]\n");
    let e = apply(&w, &r, &GuestAddresses::new()).await.error.unwrap();
    assert!(e.contains("NOTAUTH") || e.contains("BADSIG") || e.contains("BADKEY"), "{e}");
    // Refused at admission: A value that is not IPv4.
    let bad = record("b", "pdns", "  name: b\n  type: A\n  values: [\"fd00::1\"]\n");
    assert!(
        bad.validate_cel()
            .unwrap_err()
            .to_string()
            .contains("A values must be IPv4 addresses")
    );
}

/// Every DnsRecord of a zone, in the steady state: one listing of the zone
/// answers for all of them (on each server type), and drift is still found
/// and corrected record by record.
#[tokio::test]
async fn one_listing_of_the_zone_serves_every_record_and_drift_is_still_corrected() {
    let w = world();
    let tech = homelab_operator::sim::technitium::TechnitiumSim::new("tech-token", &["home.arpa"]).unwrap();
    let tech_server = tech.serve().await.unwrap();
    std::fs::write(w._dir.path().join("tech-token"), "tech-token").unwrap();
    let mut config = w.config.clone();
    config.dns.insert(
        "tech".into(),
        DnsEndpoint::Technitium {
            url: url::Url::parse(&tech_server.url).unwrap(),
            token: SecretSource::File(w._dir.path().join("tech-token")),
            timeout: Duration::from_secs(5),
        },
    );
    for (provider, system) in [("pdns", "powerdns"), ("bind", "rfc2136"), ("tech", "technitium")] {
        let metrics = Arc::new(Metrics::default());
        let engine = Engine::new(&config, metrics.clone()).unwrap();
        let mut records: Vec<DnsRecord> = (0..10)
            .map(|i| {
                let mut r = record(
                    &format!("z{i}"),
                    provider,
                    &format!("  name: z{i}\n  type: A\n  values: [10.7.0.{i}]\n"),
                );
                r.metadata.generation = Some(1);
                r
            })
            .collect();
        for r in records.iter_mut() {
            let a = engine.apply(r, &Files::default(), Duration::from_secs(30), &|_| {}).await;
            assert!(ready(&a.status), "{provider}: {:?}", a.error);
            r.status = Some(a.status);
        }
        // A new resync interval (a new process): every record reconciled once.
        let steady = |engine: Engine, records: Vec<DnsRecord>| async move {
            let before = metrics_total(&engine, system);
            for r in &records {
                let a = engine.apply(r, &Files::default(), Duration::from_secs(30), &|_| {}).await;
                assert!(ready(&a.status), "{provider}: {:?}", a.error);
            }
            metrics_total(&engine, system) - before
        };
        let calls = steady(Engine::new(&config, metrics.clone()).unwrap(), records.clone()).await;
        assert_eq!(calls, 1, "{provider}: one zone listing for 10 records, no read of its own");
        // Someone changes one record by hand: the next interval's listing shows it and only it is put back.
        let mut changed = engine.providers.dns[provider]
            .get(ZONE, "z3.home.arpa.", "A")
            .await
            .unwrap()
            .unwrap();
        changed.values = vec!["10.9.9.9".into()];
        let before_put = metrics_total(&engine, system);
        engine.providers.dns[provider].put(ZONE, &changed).await.unwrap();
        let put = metrics_total(&engine, system) - before_put;
        let calls = steady(Engine::new(&config, metrics.clone()).unwrap(), records.clone()).await;
        let fixed = engine.providers.dns[provider]
            .get(ZONE, "z3.home.arpa.", "A")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fixed.values, vec!["10.7.0.3"], "{provider}: drift corrected");
        assert_eq!(
            calls,
            1 + put,
            "{provider}: one listing, and the write of the one record that drifted"
        );
    }
}

fn metrics_total(engine: &Engine, system: &str) -> u64 {
    engine.metrics.outside_call_total(system)
}
