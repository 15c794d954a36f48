//! What the apiserver refuses, checked locally with kube's CEL evaluator, plus
//! generated-file freshness and the examples.

use std::path::Path;

use homelab_operator::api::{self, ProxmoxGuest};

fn guest(yaml: &str) -> ProxmoxGuest {
    serde_yaml_ng::from_str(&format!(
        "apiVersion: homelab.dev/v1alpha1\nkind: ProxmoxGuest\nmetadata: {{name: g, namespace: default}}\nspec:\n{yaml}"
    ))
    .expect("parses")
}

mod support {
    pub mod admission_cases;
}
use support::admission_cases::{BASE_LXC, By, admitted_guests, refused_guests};

#[test]
fn valid_guests_pass() {
    for yaml in admitted_guests() {
        guest(&yaml).validate_cel().unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    }
}

/// The CEL half of the shared table (the schema half needs the real apiserver: tests/envtest.rs).
#[test]
fn cross_field_rules_refuse_bad_combinations() {
    for (yaml, needle, by) in refused_guests() {
        if by == By::Cel {
            let err = guest(&yaml).validate_cel().expect_err(needle).to_string();
            assert!(err.contains(needle), "expected {needle:?} in {err:?}");
        }
    }
}

#[test]
fn type_source_and_vmid_are_immutable() {
    let old = guest(&format!("{BASE_LXC}  vmid: 120\n"));
    let mut new = old.clone();
    new.spec.vmid = Some(121);
    assert!(new.validate_cel_update(&old).unwrap_err().to_string().contains("vmid is immutable"));
    let mut new = old.clone();
    new.spec.source.os_template = Some("local:vztmpl/alpine.tar.xz".into());
    assert!(
        new.validate_cel_update(&old)
            .unwrap_err()
            .to_string()
            .contains("source is immutable")
    );
    let mut new = old.clone();
    new.spec.memory_mib = 1024;
    new.validate_cel_update(&old).unwrap();
}

#[test]
fn schema_refuses_out_of_range_and_bad_patterns() {
    let crd = serde_json::to_value(&api::all_crds()[0]).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(spec["properties"]["vmid"]["minimum"], 100.0);
    assert_eq!(spec["properties"]["type"]["enum"], serde_json::json!(["qemu", "lxc"]));
    assert!(spec["properties"]["name"]["pattern"].is_string());
    assert!(spec["properties"]["tags"]["items"]["pattern"].is_string());
    assert!(spec["required"].as_array().unwrap().contains(&serde_json::json!("source")));
    // `kubectl explain` shows a description for every spec field.
    for (name, field) in spec["properties"].as_object().unwrap() {
        assert!(
            field["description"].as_str().is_some_and(|d| !d.is_empty()),
            "spec.{name} has no description"
        );
    }
    // No schemars-only formats reach the apiserver.
    assert!(!crd.to_string().contains("\"uint32\""));
}

#[test]
fn crds_directory_is_fresh() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let crds = api::all_crds();
    for crd in &crds {
        let file = dir.join(api::crd_file_name(crd));
        let on_disk = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            on_disk == api::crd_yaml(crd),
            "{} is stale: run `cargo run -- crds --dir crds`",
            file.display()
        );
    }
    // `kubectl apply -f crds/` applies every file there: only CRDs may live in it.
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), crds.len(), "crds/ holds only the CRD files: {files:?}");
    // The kustomize base carries its own copy (kustomize reads no files outside its root).
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/install/crds.yaml");
    let all: String = crds.iter().map(api::crd_yaml).collect();
    assert!(
        std::fs::read_to_string(&base).unwrap_or_default() == all,
        "manifests/install/crds.yaml is stale: run `cargo run -- crds > manifests/install/crds.yaml`"
    );
}

/// `kubectl explain` shows a field's description: every property of every CRD has one.
#[test]
fn every_crd_property_is_described() {
    fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, sub) in props {
                let here = format!("{path}.{name}");
                let top = path.matches('.').count() == 0 && matches!(name.as_str(), "apiVersion" | "kind" | "metadata");
                if !top && sub.get("description").and_then(|d| d.as_str()).is_none_or(|d| d.trim().is_empty()) {
                    missing.push(here.clone());
                }
                walk(&here, sub, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let mut missing = vec![];
    for crd in api::all_crds() {
        for v in &crd.spec.versions {
            let schema = serde_json::to_value(&v.schema.as_ref().unwrap().open_api_v3_schema).unwrap();
            walk(&crd.spec.names.kind, &schema, &mut missing);
        }
    }
    assert!(missing.is_empty(), "properties without a description: {missing:#?}");
}

#[test]
fn every_example_parses_and_is_admitted() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/examples");
    let loaded = homelab_operator::cli::resources::load(&[dir]).unwrap();
    assert!(loaded.guests.len() >= 3);
    assert!(loaded.records.len() >= 2);
    assert!(loaded.skipped.is_empty(), "{:?}", loaded.skipped);
    for g in &loaded.guests {
        g.validate_cel().unwrap_or_else(|e| panic!("{:?}: {e}", g.metadata.name));
    }
    for r in &loaded.records {
        r.validate_cel().unwrap_or_else(|e| panic!("{:?}: {e}", r.metadata.name));
    }
    assert!(!loaded.proxies.is_empty());
    for p in &loaded.proxies {
        p.validate_cel().unwrap_or_else(|e| panic!("{:?}: {e}", p.metadata.name));
    }
    assert!(!loaded.policies.is_empty());
    for b in &loaded.policies {
        b.validate_cel().unwrap_or_else(|e| panic!("{:?}: {e}", b.metadata.name));
    }
    assert!(!loaded.monitors.is_empty());
    for m in &loaded.monitors {
        m.validate_cel().unwrap_or_else(|e| panic!("{:?}: {e}", m.metadata.name));
    }
}

fn record(yaml: &str) -> homelab_operator::api::DnsRecord {
    serde_yaml_ng::from_str(&format!(
        "apiVersion: homelab.dev/v1alpha1\nkind: DnsRecord\nmetadata: {{name: r, namespace: default}}\nspec:\n  zone: home.arpa\n{yaml}"
    ))
    .expect("parses")
}

#[test]
fn dns_record_rules() {
    record("  name: web\n  type: A\n  values: [10.0.0.1]\n").validate_cel().unwrap();
    record("  name: web\n  type: AAAA\n  target: {name: web01}\n")
        .validate_cel()
        .unwrap();
    let refused = |yaml: &str, needle: &str| {
        let e = record(yaml).validate_cel().expect_err(yaml).to_string();
        assert!(e.contains(needle), "expected {needle:?} in {e:?}");
    };
    refused(
        "  name: web\n  type: A\n  values: [10.0.0.1]\n  target: {name: web01}\n",
        "set exactly one of values or target",
    );
    refused("  name: web\n  type: A\n", "set exactly one of values or target");
    refused(
        "  name: www\n  type: CNAME\n  target: {name: web01}\n",
        "target is only valid with type A or AAAA",
    );
    refused(
        "  name: www\n  type: CNAME\n  values: [a.home.arpa, b.home.arpa]\n",
        "a CNAME has exactly one value",
    );
    refused(
        "  name: \"@\"\n  type: CNAME\n  values: [a.home.arpa]\n",
        "a CNAME cannot be at the zone apex",
    );
    refused(
        "  name: web\n  type: A\n  values: [\"10.0.0.300\"]\n",
        "A values must be IPv4 addresses",
    );
    refused(
        "  name: mail\n  type: MX\n  values: [mail.home.arpa]\n",
        "MX values are 'PRIORITY HOST'",
    );
    // Values of the wrong shape for their type (the same table runs on the real apiserver).
    for (yaml, words, _) in support::admission_cases::refused_records() {
        refused(&yaml, words);
    }
    for (t, good) in [
        ("MX", "10 mail.home.arpa."),
        ("SRV", "10 5 443 web.home.arpa"),
        ("SRV", "0 0 0 ."),
        ("CAA", "0 issue \\\"letsencrypt.org\\\""),
        ("CAA", "128 iodef mailto:ca@home.arpa"),
    ] {
        record(&format!("  name: x\n  type: {t}\n  values: [\"{good}\"]\n"))
            .validate_cel()
            .unwrap_or_else(|e| panic!("{t} {good}: {e}"));
    }
    // Names where a name belongs, for every type whose value is one.
    for (t, bad) in [
        ("CNAME", "10.0.0.5 web"),
        ("NS", "ns1 .home.arpa"),
        ("PTR", "http://web.home.arpa/"),
    ] {
        refused(
            &format!("  name: x\n  type: {t}\n  values: [\"{bad}\"]\n"),
            "CNAME, NS and PTR values must be host names",
        );
        record(&format!("  name: x\n  type: {t}\n  values: [web.home.arpa.]\n"))
            .validate_cel()
            .unwrap();
    }
    let old = record("  name: web\n  type: A\n  values: [10.0.0.1]\n");
    let mut new = old.clone();
    new.spec.name = "web2".into();
    assert!(
        new.validate_cel_update(&old)
            .unwrap_err()
            .to_string()
            .contains("zone, name and type are immutable")
    );
}

#[test]
fn proxy_host_rules() {
    let proxy = |yaml: &str| -> homelab_operator::api::ProxyHost {
        serde_yaml_ng::from_str(&format!("apiVersion: homelab.dev/v1alpha1\nkind: ProxyHost\nmetadata: {{name: p, namespace: default}}\nspec:\n  domains: [a.home.arpa]\n{yaml}")).unwrap()
    };
    proxy("  forward: {host: 10.0.0.1, port: 80}\n").validate_cel().unwrap();
    let refused = |yaml: &str, needle: &str| {
        let e = proxy(yaml).validate_cel().expect_err(yaml).to_string();
        assert!(e.contains(needle), "expected {needle:?} in {e:?}");
    };
    refused(
        "  forward: {host: 10.0.0.1, port: 80}\n  target: {name: g, port: 80}\n",
        "set exactly one of forward or target",
    );
    refused("", "set exactly one of forward or target");
    refused(
        "  forward: {host: h, port: 80}\n  tls: {certificateId: 3, letsEncrypt: {email: a@b.c}}\n",
        "set at most one of certificateId or letsEncrypt",
    );
    refused(
        "  forward: {host: h, port: 80}\n  tls: {forceSsl: true}\n",
        "forceSsl needs a certificate",
    );
}

fn policy(yaml: &str) -> homelab_operator::api::BackupPolicy {
    serde_yaml_ng::from_str(&format!(
        "apiVersion: homelab.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: nightly, namespace: homelab}}\nspec:\n{yaml}"
    ))
    .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

#[test]
fn backup_policy_rules() {
    for yaml in support::admission_cases::admitted_policies() {
        policy(&yaml).validate_cel().unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    }
    for (yaml, needle, by) in support::admission_cases::refused_policies() {
        if by != support::admission_cases::By::Cel {
            continue;
        }
        let e = policy(&yaml).validate_cel().expect_err(needle).to_string();
        assert!(e.contains(needle), "expected {needle:?} in {e}\n{yaml}");
    }
    let p = policy(support::admission_cases::BASE_POLICY);
    assert_eq!(
        (p.spec.cluster.as_str(), p.spec.max_age.as_str(), p.spec.notes_template.as_str()),
        ("default", "26h", "{{guestname}}")
    );
    assert_eq!(p.spec.deletion_policy, homelab_operator::api::DeletionPolicy::Delete);
    let mut moved = p.clone();
    moved.spec.cluster = "lab".into();
    assert!(
        moved
            .validate_cel_update(&p)
            .unwrap_err()
            .to_string()
            .contains("cluster is immutable")
    );
}

fn monitor(yaml: &str) -> homelab_operator::api::MonitorTarget {
    serde_yaml_ng::from_str(&format!(
        "apiVersion: homelab.dev/v1alpha1\nkind: MonitorTarget\nmetadata: {{name: web, namespace: homelab}}\nspec:\n{yaml}"
    ))
    .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

#[test]
fn monitor_target_rules() {
    for yaml in support::admission_cases::admitted_monitors() {
        monitor(&yaml).validate_cel().unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    }
    for (yaml, needle, by) in support::admission_cases::refused_monitors() {
        if by != support::admission_cases::By::Cel {
            continue;
        }
        let e = monitor(&yaml).validate_cel().expect_err(needle).to_string();
        assert!(e.contains(needle), "expected {needle:?} in {e}\n{yaml}");
    }
    let m = monitor(support::admission_cases::BASE_MONITOR);
    assert_eq!(
        (
            m.spec.policy.timeout_seconds,
            m.spec.policy.failure_threshold,
            m.spec.policy.success_threshold
        ),
        (10, 3, 1)
    );
}
