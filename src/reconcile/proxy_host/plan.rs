//! desired proxy host + the hosts NPM has → actions. Pure.

use serde_json::{Value, json};

use crate::{
    api::ProxyHostSpec,
    providers::npm::{HostSpec, META_MARK, ProxyHost},
    reconcile::Blocked,
};

/// The host NPM should have. `upstream` is (scheme, host, port).
pub fn desired(spec: &ProxyHostSpec, upstream: (&str, &str, u16), mark: &str) -> HostSpec {
    let tls = spec.tls.clone().unwrap_or_default();
    let mut meta = json!({ META_MARK: mark });
    let certificate_id = match (&tls.certificate_id, &tls.lets_encrypt) {
        (Some(id), _) => json!(id),
        (None, Some(le)) => {
            meta["letsencrypt_email"] = json!(le.email);
            meta["letsencrypt_agree"] = json!(true);
            json!("new")
        }
        (None, None) => json!(0),
    };
    let mut domains = spec.domains.clone();
    domains.sort();
    HostSpec {
        domain_names: domains,
        forward_scheme: upstream.0.to_string(),
        forward_host: upstream.1.to_string(),
        forward_port: upstream.2,
        certificate_id,
        ssl_forced: tls.force_ssl,
        hsts_enabled: tls.hsts,
        http2_support: tls.http2,
        block_exploits: spec.block_exploits,
        caching_enabled: spec.caching,
        allow_websocket_upgrade: spec.websockets,
        access_list_id: spec.access_list_id.unwrap_or(0),
        advanced_config: spec.advanced_config.clone().unwrap_or_default(),
        enabled: spec.enabled,
        meta,
    }
}

/// Does the host NPM has already match what we want? A requested Let's
/// Encrypt certificate matches any certificate NPM issued for the host.
pub fn matches(want: &HostSpec, have: &ProxyHost) -> bool {
    let mut domains = have.domain_names.clone();
    domains.sort();
    let cert_ok = match (&want.certificate_id, have.certificate_id.as_u64()) {
        (Value::String(s), Some(id)) if s == "new" => id > 0,
        (w, Some(id)) => w.as_u64() == Some(id),
        (w, None) => w.as_u64() == Some(0),
    };
    domains == want.domain_names
        && have.forward_scheme == want.forward_scheme
        && have.forward_host == want.forward_host
        && have.forward_port == want.forward_port
        && cert_ok
        && have.ssl_forced == want.ssl_forced
        && have.hsts_enabled == want.hsts_enabled
        && have.http2_support == want.http2_support
        && have.block_exploits == want.block_exploits
        && have.caching_enabled == want.caching_enabled
        && have.allow_websocket_upgrade == want.allow_websocket_upgrade
        && have.access_list_id == want.access_list_id
        && have.advanced_config == want.advanced_config
        && have.enabled == want.enabled
        && have.mark() == want.meta.get(META_MARK).and_then(|v| v.as_str())
}

#[derive(Clone, Debug, PartialEq)]
pub enum ProxyAction {
    Create(HostSpec),
    Update { id: u64, spec: HostSpec, why: &'static str },
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProxyPlan {
    pub actions: Vec<ProxyAction>,
    /// The host of ours that exists now, if any.
    pub current: Option<u64>,
    pub blocked: Option<Blocked>,
}

/// `want`, keeping what else the host stores in `meta` (Let's Encrypt and
/// DNS-challenge settings) but NPM's own nginx state, and its order of the same domains.
fn keeping_meta(want: &HostSpec, have: &ProxyHost) -> HostSpec {
    let mut spec = want.clone();
    let mut domains = have.domain_names.clone();
    domains.sort();
    if domains == want.domain_names {
        spec.domain_names = have.domain_names.clone();
    }
    if let (Some(w), Some(h)) = (spec.meta.as_object_mut(), have.meta.as_object()) {
        for (k, v) in h.iter().filter(|(k, _)| !matches!(k.as_str(), "nginx_online" | "nginx_err")) {
            w.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    spec
}

/// The host as it would be with our mark.
fn marked(have: &ProxyHost, want: &HostSpec) -> ProxyHost {
    let mut h = have.clone();
    if let (Some(m), Some(mark)) = (h.meta.as_object_mut(), want.meta.get(META_MARK)) {
        m.insert(META_MARK.to_string(), mark.clone());
    } else {
        h.meta = json!({ META_MARK: want.meta.get(META_MARK).cloned().unwrap_or_default() });
    }
    h
}

/// Find our host (by mark), else a host serving one of our domains (conflict or adopt).
pub fn plan(want: &HostSpec, hosts: &[ProxyHost], mark: &str, adopt: bool) -> ProxyPlan {
    if let Some(ours) = hosts.iter().find(|h| h.mark() == Some(mark)) {
        let actions = if matches(want, ours) {
            vec![]
        } else {
            vec![ProxyAction::Update {
                id: ours.id,
                spec: keeping_meta(want, ours),
                why: "Updated",
            }]
        };
        return ProxyPlan {
            actions,
            current: Some(ours.id),
            blocked: None,
        };
    }
    let clash = hosts.iter().find(|h| h.domain_names.iter().any(|d| want.domain_names.contains(d)));
    match clash {
        None => ProxyPlan {
            actions: vec![ProxyAction::Create(want.clone())],
            current: None,
            blocked: None,
        },
        Some(h) if adopt => ProxyPlan {
            actions: vec![ProxyAction::Update {
                id: h.id,
                spec: keeping_meta(want, h),
                // Only the mark to add, or more.
                why: if matches(want, &marked(h, want)) {
                    "Adopted"
                } else {
                    "AdoptedAndUpdated"
                },
            }],
            current: Some(h.id),
            blocked: None,
        },
        Some(h) => {
            let owner = h.mark().map(|m| format!(" (marked by {m})")).unwrap_or_default();
            ProxyPlan {
                actions: vec![],
                current: None,
                blocked: Some(Blocked::new(
                    "Conflict",
                    format!(
                        "proxy host {} already serves {}{owner} and the operator does not own it; set adopt: true to take it over",
                        h.id,
                        h.domain_names.join(", ")
                    ),
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ProxyHostSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn host(id: u64, want: &HostSpec) -> ProxyHost {
        serde_json::from_value(
            serde_json::to_value(want)
                .map(|mut v| {
                    v["id"] = json!(id);
                    if v["certificate_id"] == json!("new") {
                        v["certificate_id"] = json!(7);
                    }
                    v
                })
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn table() {
        let s = spec(
            "domains: [media.home.arpa]\nforward: {host: 10.5.0.50, port: 8096}\ntls: {letsEncrypt: {email: a@b.c}, forceSsl: true}\n",
        );
        let want = desired(&s, ("http", "10.5.0.50", 8096), "m1");
        assert_eq!(want.certificate_id, json!("new"));
        // create
        assert_eq!(plan(&want, &[], "m1", false).actions, vec![ProxyAction::Create(want.clone())]);
        // no-op, the issued certificate counts as the requested one
        let ours = host(3, &want);
        assert!(plan(&want, std::slice::from_ref(&ours), "m1", false).actions.is_empty());
        // update on drift
        let mut drifted = ours.clone();
        drifted.forward_port = 9000;
        assert!(matches!(
            plan(&want, &[drifted], "m1", false).actions[0],
            ProxyAction::Update { id: 3, why: "Updated", .. }
        ));
        // foreign host serving our domain: conflict, or adopt
        let mut foreign = ours.clone();
        foreign.meta = json!({});
        let p = plan(&want, std::slice::from_ref(&foreign), "m1", false);
        assert!(
            p.actions.is_empty()
                && p.blocked
                    .as_ref()
                    .unwrap()
                    .message
                    .contains("proxy host 3 already serves media.home.arpa")
        );
        assert!(matches!(
            plan(&want, &[foreign], "m1", true).actions[0],
            ProxyAction::Update { why: "Adopted", .. }
        ));
    }
}
