//! The spec an NPM proxy host says, for `export`. Pure: planning it against
//! the same host changes nothing but the ownership mark.

use crate::{
    api::{DeletionPolicy, Forward, ProxyHostSpec, ProxyTls, Scheme},
    providers::npm::ProxyHost,
};

/// The spec, with `adopt: true` and `Retain` (deleting the resource keeps the host).
pub fn spec_of(provider: &str, h: &ProxyHost) -> ProxyHostSpec {
    let certificate = h.certificate_id.as_u64().filter(|id| *id > 0);
    let tls = (certificate.is_some() || h.ssl_forced || h.http2_support || h.hsts_enabled).then_some(ProxyTls {
        certificate_id: certificate,
        lets_encrypt: None,
        force_ssl: h.ssl_forced,
        http2: h.http2_support,
        hsts: h.hsts_enabled,
    });
    let mut domains = h.domain_names.clone();
    domains.sort();
    ProxyHostSpec {
        provider: provider.to_string(),
        domains,
        forward: Some(Forward {
            scheme: if h.forward_scheme == "https" { Scheme::Https } else { Scheme::Http },
            host: h.forward_host.clone(),
            port: h.forward_port,
        }),
        target: None,
        tls,
        websockets: h.allow_websocket_upgrade,
        block_exploits: h.block_exploits,
        caching: h.caching_enabled,
        access_list_id: Some(h.access_list_id).filter(|id| *id > 0),
        advanced_config: Some(h.advanced_config.clone()).filter(|c| !c.is_empty()),
        enabled: h.enabled,
        deletion_policy: DeletionPolicy::Retain,
        adopt: true,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::reconcile::proxy_host::plan::{ProxyAction, desired, plan};

    #[test]
    fn a_hand_made_host_exports_to_a_spec_that_only_adds_the_mark() {
        let h: ProxyHost = serde_json::from_value(json!({
            "id": 7, "domain_names": ["photos.home.arpa", "fotos.home.arpa"], "forward_scheme": "https",
            "forward_host": "10.0.0.20", "forward_port": 8443, "certificate_id": 3, "ssl_forced": true,
            "hsts_enabled": false, "http2_support": true, "block_exploits": true, "caching_enabled": false,
            "allow_websocket_upgrade": true, "access_list_id": 2, "advanced_config": "client_max_body_size 0;",
            "enabled": true, "meta": {"letsencrypt_agree": false, "dns_challenge": false}
        }))
        .unwrap();
        let spec = spec_of("default", &h);
        let want = desired(&spec, ("https", "10.0.0.20", 8443), "m1");
        let p = plan(&want, std::slice::from_ref(&h), "m1", spec.adopt);
        assert!(
            matches!(p.actions.as_slice(), [ProxyAction::Update { id: 7, why: "Adopted", .. }]),
            "{p:?}"
        );
        // Whatever else the host carries in meta stays.
        let ProxyAction::Update { spec: sent, .. } = &p.actions[0] else {
            unreachable!()
        };
        assert_eq!(sent.meta["letsencrypt_agree"], json!(false), "{:?}", sent.meta);
    }
}
