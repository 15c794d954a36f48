//! The ArgoCD health script, run by a real Lua 5.1 interpreter (ArgoCD uses
//! gopher-lua, a Lua 5.1) against sample resources in every state, and the
//! argocd-cm patch kept in step with it and with the CRDs.

use std::path::Path;

use mlua::{Lua, LuaSerdeExt};
use serde_json::{Value, json};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn script() -> String {
    std::fs::read_to_string(root().join("manifests/argocd/health/health.lua")).unwrap()
}

fn health(obj: Value) -> (String, String) {
    let lua = Lua::new();
    lua.globals().set("obj", lua.to_value(&obj).unwrap()).unwrap();
    let hs: mlua::Table = lua.load(format!("return (function()\n{}\nend)()", script())).eval().unwrap();
    (hs.get::<String>("status").unwrap(), hs.get::<String>("message").unwrap_or_default())
}

fn guest(generation: i64, observed: Option<i64>, conditions: Value) -> Value {
    let mut status = json!({ "conditions": conditions });
    if let Some(o) = observed {
        status["observedGeneration"] = json!(o);
    }
    json!({
        "apiVersion": "homelab.dev/v1alpha1", "kind": "ProxmoxGuest",
        "metadata": {"name": "web01", "namespace": "homelab", "generation": generation},
        "spec": {}, "status": status,
    })
}

fn cond(t: &str, s: &str, reason: &str, message: &str) -> Value {
    json!({"type": t, "status": s, "reason": reason, "message": message, "lastTransitionTime": "2026-11-22T00:00:00Z"})
}

#[test]
fn every_state_maps_to_the_right_health() {
    let none =
        json!({"apiVersion": "homelab.dev/v1alpha1", "kind": "ProxmoxGuest", "metadata": {"name": "x", "generation": 1}, "spec": {}});
    assert_eq!(health(none).0, "Progressing");

    let ready = guest(
        2,
        Some(2),
        json!([
            cond("Ready", "True", "Reconciled", "guest matches the spec (running)"),
            cond("Reconciling", "False", "Reconciled", ""),
            cond("Stalled", "False", "AsExpected", "")
        ]),
    );
    assert_eq!(health(ready), ("Healthy".into(), "guest matches the spec (running)".into()));

    let stale = guest(3, Some(2), json!([cond("Ready", "True", "Reconciled", "ok")]));
    assert_eq!(
        health(stale),
        ("Progressing".into(), "Waiting for the operator to observe generation 3".into())
    );

    let working = guest(
        1,
        Some(1),
        json!([
            cond("Ready", "False", "TaskRunning", "waiting for clone"),
            cond("Reconciling", "True", "TaskRunning", "clone in progress"),
            cond("Stalled", "False", "AsExpected", "")
        ]),
    );
    assert_eq!(health(working), ("Progressing".into(), "clone in progress".into()));

    let stalled = guest(
        1,
        Some(1),
        json!([
            cond("Ready", "False", "TemplateNotFound", "no qemu template 9000"),
            cond("Reconciling", "False", "TemplateNotFound", ""),
            cond(
                "Stalled",
                "True",
                "TemplateNotFound",
                "no qemu template 9000 in the cluster; check source.clone"
            )
        ]),
    );
    assert_eq!(
        health(stalled),
        ("Degraded".into(), "no qemu template 9000 in the cluster; check source.clone".into())
    );

    let degraded = guest(
        1,
        Some(1),
        json!([
            cond("Ready", "False", "ProxmoxUnavailable", "x"),
            cond("Degraded", "True", "ProxmoxUnavailable", "GET /cluster/resources: timed out"),
            cond("Stalled", "False", "ProxmoxUnavailable", "")
        ]),
    );
    assert_eq!(health(degraded), ("Degraded".into(), "GET /cluster/resources: timed out".into()));

    let pending = guest(
        1,
        Some(1),
        json!([
            cond(
                "Ready",
                "False",
                "PendingReboot",
                "cores take effect after a reboot (updatePolicy: Manual)"
            ),
            cond("Reconciling", "False", "PendingReboot", ""),
            cond("Stalled", "False", "AsExpected", "")
        ]),
    );
    assert_eq!(
        health(pending),
        (
            "Progressing".into(),
            "cores take effect after a reboot (updatePolicy: Manual)".into()
        )
    );
}

/// The argocd-cm patch: one health entry per kind, each the script verbatim,
/// and per kind the status left out of what makes ArgoCD refresh the app (a
/// health change still does): the operator's status writes are no app events.
fn expected_patch() -> String {
    let mut out = String::from(
        "# Generated from manifests/argocd/health/health.lua by tests/argocd_health.rs\n# (HOMELAB_WRITE=1 cargo test --test argocd_health); do not edit.\n# Merge into argocd-cm: kubectl -n argocd patch configmap argocd-cm --patch-file manifests/argocd/argocd-cm-patch.yaml\ndata:\n  resource.ignoreResourceUpdatesEnabled: \"true\"\n",
    );
    for crd in homelab_operator::api::all_crds() {
        out.push_str(&format!(
            "  resource.customizations.ignoreResourceUpdates.{}_{}: |\n    jsonPointers:\n    - /status\n",
            crd.spec.group, crd.spec.names.kind
        ));
    }
    for crd in homelab_operator::api::all_crds() {
        out.push_str(&format!(
            "  resource.customizations.health.{}_{}: |\n",
            crd.spec.group, crd.spec.names.kind
        ));
        for line in script().lines() {
            if line.is_empty() {
                out.push('\n');
            } else {
                out.push_str(&format!("    {line}\n"));
            }
        }
    }
    out
}

#[test]
fn argocd_cm_patch_is_fresh() {
    let path = root().join("manifests/argocd/argocd-cm-patch.yaml");
    if std::env::var_os("HOMELAB_WRITE").is_some() {
        std::fs::write(&path, expected_patch()).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == expected_patch(),
        "{} is stale: run HOMELAB_WRITE=1 cargo test --test argocd_health",
        path.display()
    );
    let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&on_disk).unwrap();
    assert!(
        parsed["data"]["resource.customizations.health.homelab.dev_ProxmoxGuest"]
            .as_str()
            .unwrap()
            .contains("hs.status = \"Healthy\"")
    );
    // Status-only churn of every kind refreshes no app.
    assert_eq!(parsed["data"]["resource.ignoreResourceUpdatesEnabled"].as_str(), Some("true"));
    for crd in homelab_operator::api::all_crds() {
        let key = format!(
            "resource.customizations.ignoreResourceUpdates.{}_{}",
            crd.spec.group, crd.spec.names.kind
        );
        let rule: serde_yaml_ng::Value = serde_yaml_ng::from_str(parsed["data"][key.as_str()].as_str().unwrap()).unwrap();
        assert_eq!(rule["jsonPointers"][0].as_str(), Some("/status"), "{key}");
    }
}

#[test]
fn a_down_monitor_degrades_the_app_while_the_monitor_itself_stays_ready() {
    let monitor = |healthy: Value| {
        guest(
            1,
            Some(1),
            json!([
                cond("Ready", "True", "Checking", "http check of http://10.5.0.21/ every 30s"),
                healthy,
                cond("Stalled", "False", "AsExpected", "")
            ]),
        )
    };
    assert_eq!(
        health(monitor(cond("Healthy", "False", "Down", "HTTP 502"))),
        ("Degraded".into(), "Target Down: HTTP 502".into())
    );
    assert_eq!(
        health(monitor(cond("Healthy", "False", "Unknown", "no result yet"))).0,
        "Progressing"
    );
    assert_eq!(health(monitor(cond("Healthy", "True", "Up", "HTTP 200"))).0, "Healthy");
    assert_eq!(
        health(monitor(cond("Healthy", "False", "Paused", "paused: no checks run"))).0,
        "Healthy",
        "paused on purpose: not forever Progressing"
    );
    assert_eq!(
        health(monitor(cond("Healthy", "True", "Maintenance", "in a maintenance window"))).0,
        "Healthy"
    );
}
