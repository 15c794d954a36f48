//! The resources a ProxmoxGuest asks for in its own spec (`dns`), built as
//! owned children. Pure: the controller applies them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use kube::api::ObjectMeta;

use crate::api::{
    self, DeletionPolicy, DnsRecord, DnsRecordSpec, GuestTarget, ProxmoxGuest, ProxyHost, ProxyHostSpec, ProxyTarget, RecordPolicy,
    RecordType,
};

/// Label on every child, naming its guest.
pub const GUEST_LABEL: &str = "homelab.dev/guest";

/// Metadata of a child: in the guest's namespace, labelled with it, owned by it.
fn child_meta(guest: &ProxmoxGuest, child: String) -> ObjectMeta {
    let name = guest.metadata.name.clone().unwrap_or_default();
    ObjectMeta {
        name: Some(child),
        namespace: guest.metadata.namespace.clone(),
        labels: Some([(GUEST_LABEL.to_string(), name.clone())].into()),
        owner_references: Some(vec![OwnerReference {
            api_version: format!("{}/{}", api::GROUP, api::VERSION),
            kind: "ProxmoxGuest".into(),
            name,
            uid: guest.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]),
        ..Default::default()
    }
}

/// The ProxyHost `spec.proxy` asks for (none when it is unset).
pub fn proxy_hosts(guest: &ProxmoxGuest) -> Vec<ProxyHost> {
    let Some(p) = &guest.spec.proxy else { return vec![] };
    let name = guest.metadata.name.clone().unwrap_or_default();
    vec![ProxyHost {
        metadata: child_meta(guest, format!("{name}-proxy")),
        spec: ProxyHostSpec {
            provider: p.provider.clone(),
            domains: p.domains.clone(),
            forward: None,
            target: Some(ProxyTarget {
                name,
                port: p.port,
                scheme: p.scheme,
                nic: p.nic.clone(),
            }),
            tls: p.tls.clone(),
            websockets: p.websockets,
            block_exploits: true,
            caching: false,
            access_list_id: None,
            advanced_config: None,
            enabled: true,
            deletion_policy: DeletionPolicy::Delete,
            adopt: false,
        },
        status: None,
    }]
}

/// The DnsRecords `spec.dns` asks for (none when it is unset).
pub fn dns_records(guest: &ProxmoxGuest) -> Vec<DnsRecord> {
    let Some(dns) = &guest.spec.dns else { return vec![] };
    let name = guest.metadata.name.clone().unwrap_or_default();
    let mut types = vec![(RecordType::A, format!("{name}-dns"))];
    if dns.ipv6 {
        types.push((RecordType::AAAA, format!("{name}-dns6")));
    }
    types
        .into_iter()
        .map(|(record_type, child)| DnsRecord {
            metadata: child_meta(guest, child),
            spec: DnsRecordSpec {
                provider: dns.provider.clone(),
                zone: dns.zone.clone(),
                name: dns.name.clone().unwrap_or_else(|| guest.effective_spec().name),
                record_type,
                ttl: dns.ttl.unwrap_or(300),
                values: vec![],
                target: Some(GuestTarget {
                    name: name.clone(),
                    nic: dns.nic.clone(),
                }),
                policy: RecordPolicy::Sync,
                deletion_policy: DeletionPolicy::Delete,
                adopt: false,
            },
            status: None,
        })
        .collect()
}

/// The guest's Ready condition rolled up with its children's: the guest is
/// Ready only when it and every child it asked for are.
pub fn roll_up(conditions: &mut [Condition], children: &[(String, Option<Condition>)], now: &Time) {
    let waiting: Vec<String> = children
        .iter()
        .filter(|(_, ready)| ready.as_ref().is_none_or(|c| c.status != "True"))
        .map(|(name, ready)| match ready {
            Some(c) if !c.message.is_empty() => format!("{name}: {}", c.message),
            _ => format!("{name}: not reconciled yet"),
        })
        .collect();
    if waiting.is_empty() {
        return;
    }
    if let Some(ready) = conditions
        .iter_mut()
        .find(|c| c.type_ == api::CONDITION_READY && c.status == "True")
    {
        ready.status = "False".into();
        ready.reason = "ChildNotReady".into();
        ready.message = format!("waiting for {}", waiting.join("; "));
        ready.last_transition_time = now.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(dns: &str) -> ProxmoxGuest {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: homelab.dev/v1alpha1\nkind: ProxmoxGuest\nmetadata: {{name: web01, namespace: homelab, uid: u-1}}\nspec:\n  type: lxc\n  name: web01\n  source: {{osTemplate: \"local:vztmpl/x.tar.zst\"}}\n  memoryMiB: 512\n  disks: [{{slot: rootfs, storage: local-lvm, sizeGiB: 8}}]\n{dns}"
        ))
        .unwrap()
    }

    #[test]
    fn dns_section_becomes_owned_records_that_target_the_guest() {
        assert!(dns_records(&guest("")).is_empty());
        let r = dns_records(&guest("  dns: {zone: home.arpa, ipv6: true}\n"));
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].metadata.name.as_deref(), Some("web01-dns"));
        assert_eq!((r[0].spec.record_type, r[1].spec.record_type), (RecordType::A, RecordType::AAAA));
        assert_eq!(r[0].spec.name, "web01");
        assert_eq!(
            r[0].spec.target,
            Some(GuestTarget {
                name: "web01".into(),
                nic: None
            })
        );
        let owner = &r[0].metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("ProxmoxGuest", "u-1", Some(true))
        );
        r[0].validate_cel().unwrap();
    }

    #[test]
    fn proxy_section_becomes_an_owned_proxy_host() {
        assert!(proxy_hosts(&guest("")).is_empty());
        let p = proxy_hosts(&guest("  proxy: {domains: [web.home.arpa], port: 8080, websockets: true}\n"));
        assert_eq!(p[0].metadata.name.as_deref(), Some("web01-proxy"));
        assert_eq!(
            p[0].spec.target,
            Some(ProxyTarget {
                name: "web01".into(),
                port: 8080,
                scheme: api::Scheme::Http,
                nic: None,
            })
        );
        assert!(p[0].spec.websockets);
        assert_eq!(p[0].metadata.owner_references.as_ref().unwrap()[0].uid, "u-1");
        p[0].validate_cel().unwrap();
    }

    fn ready(status: &str, message: &str) -> Option<Condition> {
        Some(Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: "R".into(),
            message: message.into(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
            observed_generation: None,
        })
    }

    #[test]
    fn ready_rolls_up_children() {
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
        let mut conds = vec![ready("True", "ok").unwrap()];
        roll_up(&mut conds, &[("web01-dns".into(), ready("True", ""))], &now);
        assert_eq!(conds[0].status, "True");
        roll_up(&mut conds, &[("web01-dns".into(), ready("False", "Conflict"))], &now);
        assert_eq!((conds[0].status.as_str(), conds[0].reason.as_str()), ("False", "ChildNotReady"));
        assert!(conds[0].message.contains("web01-dns: Conflict"));
    }
}
