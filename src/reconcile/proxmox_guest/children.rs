//! The resources a ProxmoxGuest asks for in its own spec (`dns`, `proxy`,
//! `monitor`), built as owned children. Pure: the controller applies them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use kube::api::ObjectMeta;

use crate::api::{
    self, DeletionPolicy, DnsRecord, DnsRecordSpec, GuestTarget, MonitorTarget, ProxmoxGuest, ProxyHost, ProxyHostSpec, ProxyTarget,
    RecordPolicy, RecordType,
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
                // DNS names are case-insensitive; records are kept in lower case.
                name: dns.name.clone().unwrap_or_else(|| guest.effective_spec().name.to_ascii_lowercase()),
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

/// The MonitorTarget `spec.monitor` asks for (none when it is unset).
pub fn monitors(guest: &ProxmoxGuest) -> Vec<MonitorTarget> {
    let Some(m) = &guest.spec.monitor else { return vec![] };
    let name = guest.metadata.name.clone().unwrap_or_default();
    vec![MonitorTarget {
        metadata: child_meta(guest, format!("{name}-monitor")),
        spec: m.target_spec(&name),
        status: None,
    }]
}

/// The guest's Ready condition rolled up with its children's: the guest is
/// Ready only when it and every child it asked for are. Its `Healthy`
/// condition is its monitor's (gone when it has none), so `kubectl wait` and
/// ArgoCD see a Down guest on the guest itself.
pub fn roll_up(conditions: &mut Vec<Condition>, children: &[(String, Vec<Condition>)], generation: Option<i64>, now: &Time) {
    mirror_health(conditions, children, generation);
    let waiting: Vec<String> = children
        .iter()
        .map(|(name, c)| (name, api::find_condition(c, api::CONDITION_READY)))
        .filter(|(_, ready)| ready.is_none_or(|c| c.status != "True"))
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

fn mirror_health(conditions: &mut Vec<Condition>, children: &[(String, Vec<Condition>)], generation: Option<i64>) {
    let health = children.iter().find_map(|(name, c)| {
        // The failure in words only when it is one: an Up message carries the
        // latency, which would rewrite the guest's status at each resync.
        api::find_condition(c, api::CONDITION_HEALTHY).map(|h| Condition {
            message: match h.status.as_str() {
                "True" => format!("MonitorTarget {name} is {}", h.reason),
                _ => format!("MonitorTarget {name} is {}: {}", h.reason, h.message),
            },
            observed_generation: generation,
            ..h.clone()
        })
    });
    conditions.retain(|c| c.type_ != api::CONDITION_HEALTHY);
    conditions.extend(health);
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

    #[test]
    fn monitor_section_becomes_an_owned_monitor_of_the_guest() {
        assert!(monitors(&guest("")).is_empty());
        let m = monitors(&guest(
            "  monitor: {http: {port: 8080, path: /health}, nic: net1, failureThreshold: 2, notify: {channels: [telegram]}}\n",
        ));
        assert_eq!(m[0].metadata.name.as_deref(), Some("web01-monitor"));
        assert_eq!(m[0].metadata.labels.as_ref().unwrap()[GUEST_LABEL], "web01");
        let target = m[0].spec.target.as_ref().unwrap();
        assert_eq!(
            (target.kind.as_str(), target.name.as_str(), target.nic.as_deref()),
            ("ProxmoxGuest", "web01", Some("net1"))
        );
        assert_eq!(m[0].spec.http.as_ref().unwrap().port, Some(8080));
        assert_eq!((m[0].spec.policy.failure_threshold, m[0].spec.policy.interval_seconds), (2, 60));
        assert_eq!(m[0].metadata.owner_references.as_ref().unwrap()[0].uid, "u-1");
        m[0].validate_cel().unwrap();
    }

    #[test]
    fn the_monitors_health_is_mirrored_on_the_guest_and_goes_with_it() {
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
        let healthy = |status: &str, reason: &str, message: &str| Condition {
            type_: "Healthy".into(),
            reason: reason.into(),
            ..ready(status, message).unwrap()
        };
        let mut conds = vec![ready("True", "ok").unwrap()];
        let child = |h: Condition| vec![("web01-monitor".to_string(), vec![ready("True", "checking").unwrap(), h])];
        roll_up(&mut conds, &child(healthy("False", "Down", "HTTP 503")), Some(1), &now);
        let h = api::find_condition(&conds, "Healthy").unwrap();
        assert_eq!((h.status.as_str(), h.reason.as_str()), ("False", "Down"));
        assert_eq!(h.message, "MonitorTarget web01-monitor is Down: HTTP 503");
        assert_eq!(h.observed_generation, Some(1), "the guest's generation, like its other conditions");
        assert_eq!(
            api::find_condition(&conds, "Ready").unwrap().status,
            "True",
            "a Down target is not a broken guest"
        );
        roll_up(&mut conds, &child(healthy("True", "Up", "200 in 3ms")), Some(1), &now);
        assert_eq!(
            api::find_condition(&conds, "Healthy").unwrap().message,
            "MonitorTarget web01-monitor is Up"
        );
        roll_up(&mut conds, &[], Some(1), &now);
        assert!(api::find_condition(&conds, "Healthy").is_none(), "no monitor, no Healthy condition");
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
        roll_up(
            &mut conds,
            &[("web01-dns".into(), ready("True", "").into_iter().collect())],
            Some(1),
            &now,
        );
        assert_eq!(conds[0].status, "True");
        roll_up(
            &mut conds,
            &[("web01-dns".into(), ready("False", "Conflict").into_iter().collect())],
            Some(1),
            &now,
        );
        assert_eq!((conds[0].status.as_str(), conds[0].reason.as_str()), ("False", "ChildNotReady"));
        assert!(conds[0].message.contains("web01-dns: Conflict"));
    }
}
