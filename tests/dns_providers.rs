//! The DNS providers against real servers: PowerDNS (HTTP API) and BIND
//! (RFC 2136 + TSIG). Results are checked with real DNS queries.

mod support {
    pub mod debian;
    pub mod dns_servers;
}

use std::time::Duration;

use homelab_operator::{
    api::RecordType,
    config::SecretSource,
    providers::dns::{
        DnsApi, RecordSet,
        powerdns::PowerDns,
        rfc2136::{self, Rfc2136},
    },
    reconcile::dns_record::plan::normalize,
};
use support::dns_servers::{self, ZONE, dig};

fn secret_file(dir: &std::path::Path, name: &str, value: &str) -> SecretSource {
    let p = dir.join(name);
    std::fs::write(&p, value).unwrap();
    SecretSource::File(p)
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

const MARK: &str = "managed-by: homelab-operator homelab/web01 uid=3f1c2b4a-9d8e-4f7a-b6c5-1d2e3f4a5b6c";

/// The same lifecycle against any provider: create, read back with the mark,
/// replace, other types, delete — each checked with dig.
/// After `lifecycle`: an unmarked record added, then the whole zone in one
/// listing (what export reads), marks included, the zone's own SOA/NS too.
async fn listing<D: DnsApi>(dns: &D) -> Vec<RecordSet> {
    dns.put(ZONE, &set("nas.home.arpa.", "A", 300, &["10.5.0.5"], None)).await.unwrap();
    let all = dns.list(ZONE).await.unwrap();
    let find = |n: &str, t: &str| all.iter().find(|s| s.name == n && s.rtype == t).cloned();
    assert_eq!(
        find("nas.home.arpa.", "A").map(|s| (s.values, s.mark)),
        Some((vec!["10.5.0.5".to_string()], None))
    );
    assert_eq!(find("www.home.arpa.", "CNAME").and_then(|s| s.mark).as_deref(), Some(MARK));
    all
}

async fn lifecycle<D: DnsApi>(dns: &D, port: u16) {
    let name = "web.home.arpa.";
    assert_eq!(dns.get(ZONE, name, "A").await.unwrap(), None);
    dns.put(ZONE, &set(name, "A", 300, &["10.5.0.21"], Some(MARK))).await.unwrap();
    assert_eq!(dig(port, name, "A"), vec!["10.5.0.21"]);
    let got = dns.get(ZONE, name, "A").await.unwrap().unwrap();
    assert_eq!(
        (got.values.clone(), got.ttl, got.mark.as_deref()),
        (vec!["10.5.0.21".to_string()], 300, Some(MARK))
    );

    dns.put(ZONE, &set(name, "A", 600, &["10.5.0.22", "10.5.0.23"], Some(MARK)))
        .await
        .unwrap();
    assert_eq!(dig(port, name, "A"), vec!["10.5.0.22", "10.5.0.23"]);
    assert_eq!(dns.get(ZONE, name, "A").await.unwrap().unwrap().ttl, 600);

    dns.put(ZONE, &set("www.home.arpa.", "CNAME", 300, &["web.home.arpa."], Some(MARK)))
        .await
        .unwrap();
    assert_eq!(dig(port, "www.home.arpa.", "CNAME"), vec!["web.home.arpa."]);
    dns.put(ZONE, &set(name, "AAAA", 300, &["fd00::21"], Some(MARK))).await.unwrap();
    assert_eq!(dig(port, name, "AAAA"), vec!["fd00::21"]);

    // Values as the operator normalizes them: a DKIM key longer than one
    // character-string (split into strings of 255), a CAA with its value quoted.
    let dkim = format!("v=DKIM1; k=rsa; p={}", "A".repeat(400));
    let txt = normalize(RecordType::TXT, std::slice::from_ref(&dkim)).unwrap();
    let key = "k1._domainkey.home.arpa.";
    dns.put(ZONE, &set(key, "TXT", 300, &[txt[0].as_str()], Some(MARK))).await.unwrap();
    let served = dig(port, key, "TXT").join("");
    assert_eq!(served.replace("\" \"", "").trim_matches('"'), dkim, "{served}");
    let read = dns.get(ZONE, key, "TXT").await.unwrap().unwrap().values;
    assert_eq!(normalize(RecordType::TXT, &read).unwrap(), txt, "read back as written: no drift");
    let caa = normalize(RecordType::CAA, &["0 issue letsencrypt.org".to_string()]).unwrap();
    dns.put(ZONE, &set("home.arpa.", "CAA", 300, &[caa[0].as_str()], Some(MARK)))
        .await
        .unwrap();
    assert_eq!(dig(port, "home.arpa.", "CAA"), vec!["0 issue \"letsencrypt.org\""]);
    let read = dns.get(ZONE, "home.arpa.", "CAA").await.unwrap().unwrap().values;
    assert_eq!(normalize(RecordType::CAA, &read).unwrap(), caa);

    dns.delete(ZONE, name, "A").await.unwrap();
    assert!(dig(port, name, "A").is_empty());
    assert_eq!(dns.get(ZONE, name, "A").await.unwrap(), None);
    assert_eq!(dig(port, name, "AAAA"), vec!["fd00::21"], "other types of the same name untouched");
}

#[tokio::test]
async fn powerdns_lifecycle_with_comment_marks() {
    let pdns = dns_servers::powerdns();
    let dir = tempfile::tempdir().unwrap();
    let url = url::Url::parse(&pdns.api_url).unwrap();
    let dns = PowerDns::new(
        &url,
        "localhost",
        secret_file(dir.path(), "key", &pdns.api_key),
        Duration::from_secs(5),
        None,
    )
    .unwrap();
    lifecycle(&dns, pdns.server.dns_port).await;

    // A record without our comment reads back without a mark.
    let all = listing(&dns).await;
    assert_eq!(dns.get(ZONE, "nas.home.arpa.", "A").await.unwrap().unwrap().mark, None);
    assert!(all.iter().any(|s| s.name == "home.arpa." && s.rtype == "SOA"), "{all:?}");

    // Wrong API key: a permission error that does not echo the key.
    let bad = PowerDns::new(
        &url,
        "localhost",
        secret_file(dir.path(), "bad", "wrong-key"),
        Duration::from_secs(5),
        None,
    )
    .unwrap();
    let e = bad.get(ZONE, "nas.home.arpa.", "A").await.unwrap_err();
    assert!(e.is_permission() && !e.is_transient(), "{e}");
    assert!(!e.to_string().contains("wrong-key"));
    // A zone that does not exist: a clear, permanent error.
    let e = dns
        .put("nope.arpa.", &set("x.nope.arpa.", "A", 300, &["10.0.0.1"], None))
        .await
        .unwrap_err();
    assert!(!e.is_transient() && e.to_string().contains("404"), "{e}");
    // Unreachable: transient.
    let down = PowerDns::new(
        &url::Url::parse("http://127.0.0.1:9").unwrap(),
        "localhost",
        secret_file(dir.path(), "k2", "k"),
        Duration::from_secs(2),
        None,
    )
    .unwrap();
    assert!(down.get(ZONE, "x.home.arpa.", "A").await.unwrap_err().is_transient());
}

#[tokio::test]
async fn rfc2136_lifecycle_with_txt_registry_marks() {
    let bind = dns_servers::bind();
    let dir = tempfile::tempdir().unwrap();
    let server = format!("127.0.0.1:{}", bind.server.dns_port);
    let alg = rfc2136::parse_algorithm("hmac-sha256").unwrap();
    let dns = Rfc2136::new(
        &server,
        &bind.key_name,
        alg.clone(),
        secret_file(dir.path(), "tsig", &bind.secret),
        Duration::from_secs(5),
        None,
    );
    lifecycle(&dns, bind.server.dns_port).await;
    // The mark lives in a TXT registry record beside the RRset.
    dns.put(ZONE, &set("api.home.arpa.", "A", 300, &["10.5.0.30"], Some(MARK)))
        .await
        .unwrap();
    assert_eq!(
        dig(bind.server.dns_port, "hlo-a.api.home.arpa.", "TXT"),
        vec![format!("\"{MARK}\"")]
    );
    dns.delete(ZONE, "api.home.arpa.", "A").await.unwrap();
    assert!(
        dig(bind.server.dns_port, "hlo-a.api.home.arpa.", "TXT").is_empty(),
        "registry removed with the RRset"
    );

    // The whole zone by transfer (what export reads): registry records folded in as marks.
    let all = listing(&dns).await;
    let find = |n: &str, t: &str| all.iter().find(|s| s.name == n && s.rtype == t).cloned();
    assert_eq!(find("web.home.arpa.", "AAAA").map(|s| s.values), Some(vec!["fd00::21".to_string()]));
    assert!(find("home.arpa.", "SOA").is_some_and(|s| s.values.len() == 1), "{all:?}");
    assert!(
        !all.iter().any(|s| s.name.starts_with("hlo-")),
        "registry records are marks, not records: {all:?}"
    );
    // A zone that refuses transfers says what to allow.
    let e = dns.list("closed.arpa.").await.unwrap_err();
    assert!(e.to_string().contains("REFUSED") && e.to_string().contains("allow-transfer"), "{e}");
    assert!(!e.is_transient());

    // A wrong TSIG secret is refused by the server: a permission error.
    let bad = Rfc2136::new(
        &server,
        &bind.key_name,
        alg,
        secret_file(dir.path(), "bad", "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="),
        Duration::from_secs(5),
        None,
    );
    let e = bad
        .put(ZONE, &set("evil.home.arpa.", "A", 300, &["10.6.6.6"], None))
        .await
        .unwrap_err();
    assert!(e.is_permission() && !e.is_transient(), "{e}");
    assert!(dig(bind.server.dns_port, "evil.home.arpa.", "A").is_empty());
    // Unreachable: transient.
    let down = Rfc2136::new(
        "127.0.0.1:9",
        "k",
        rfc2136::parse_algorithm("hmac-sha256").unwrap(),
        secret_file(dir.path(), "t2", &bind.secret),
        Duration::from_secs(2),
        None,
    );
    assert!(down.get(ZONE, "x.home.arpa.", "A").await.unwrap_err().is_transient());
}
