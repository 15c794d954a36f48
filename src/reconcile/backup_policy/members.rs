//! Who a policy backs up: the ProxmoxGuests its selector matches, those that
//! name it in `spec.backup.policy`, and the VMIDs it lists. Pure.

use kube::{
    ResourceExt,
    core::{Selector, SelectorExt},
};

use super::freshness::Member;
use crate::{
    api::{BackupPolicy, ProxmoxGuest},
    providers::pve::ClusterResource,
};

/// Whether `guest` belongs to `policy` (same namespace assumed).
pub fn selects(policy: &BackupPolicy, guest: &ProxmoxGuest) -> Result<bool, String> {
    let named = guest
        .spec
        .backup
        .as_ref()
        .is_some_and(|b| Some(b.policy.as_str()) == policy.metadata.name.as_deref());
    let matched = match &policy.spec.selector {
        Some(s) => {
            let selector = Selector::try_from(s.clone()).map_err(|e| format!("spec.selector: {e}"))?;
            selector.matches(guest.labels())
        }
        None => false,
    };
    Ok(named || matched)
}

/// The members, by VMID order. Guests not created yet (no VMID) are left
/// out until they exist; a VMID listed and selected counts once.
pub fn members(policy: &BackupPolicy, guests: &[ProxmoxGuest]) -> Result<Vec<Member>, String> {
    let mut out: Vec<Member> = vec![];
    for g in guests {
        if !selects(policy, g)? {
            continue;
        }
        let Some(vmid) = known_vmid(g) else { continue };
        out.push(Member {
            name: Some(g.name_any()),
            vmid,
            node: g.status.as_ref().and_then(|s| s.node.clone()),
        });
    }
    for v in &policy.spec.vmids {
        if !out.iter().any(|m| m.vmid == *v) {
            out.push(Member {
                name: None,
                vmid: *v,
                node: None,
            });
        }
    }
    out.sort_by_key(|m| m.vmid);
    Ok(out)
}

/// The guest's VMID once it exists; an adopted guest's own before the
/// operator has looked at it (it names a guest that is there).
fn known_vmid(g: &ProxmoxGuest) -> Option<u32> {
    match &g.status {
        Some(s) if s.state.as_deref() == Some("absent") => None,
        Some(s) if s.vmid.is_some() => s.vmid,
        _ => g.spec.vmid.filter(|_| g.spec.adopt),
    }
}

/// The members of an `allGuests` or `pool` policy: the cluster's guests (not
/// templates) it covers, named after the ProxmoxGuest that has their VMID.
pub fn from_cluster(policy: &BackupPolicy, resources: &[ClusterResource], guests: &[ProxmoxGuest]) -> Vec<Member> {
    let spec = &policy.spec;
    let covers = |r: &&ClusterResource| match &spec.pool {
        _ if spec.all_guests => !spec.exclude.contains(&(r.vmid as u32)),
        Some(pool) => r.pool.as_ref() == Some(pool),
        None => false,
    };
    let mut out: Vec<Member> = resources
        .iter()
        .filter(|r| !r.template && matches!(r.kind.as_str(), "qemu" | "lxc"))
        .filter(covers)
        .map(|r| Member {
            name: guests.iter().find(|g| known_vmid(g) == Some(r.vmid as u32)).map(|g| g.name_any()),
            vmid: r.vmid as u32,
            node: Some(r.node.clone()),
        })
        .collect();
    out.sort_by_key(|m| m.vmid);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(name: &str, labels: &str, extra: &str, vmid: Option<u32>) -> ProxmoxGuest {
        let mut g: ProxmoxGuest = serde_yaml_ng::from_str(&format!(
            "apiVersion: homelab.dev/v1alpha1\nkind: ProxmoxGuest\nmetadata: {{name: {name}, namespace: homelab, labels: {labels}}}\n\
             spec:\n  type: lxc\n  memoryMiB: 512\n  source: {{osTemplate: 'local:vztmpl/x.tar.zst'}}\n{extra}"
        ))
        .unwrap();
        g.status = vmid.map(|v| crate::api::ProxmoxGuestStatus {
            vmid: Some(v),
            node: Some("pve1".into()),
            state: Some("running".into()),
            ..Default::default()
        });
        g
    }

    fn policy(spec: &str) -> BackupPolicy {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: homelab.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: nightly, namespace: homelab}}\n\
             spec:\n  schedule: '02:30'\n  storage: pbs1\n  retention: {{keepLast: 3}}\n{spec}"
        ))
        .unwrap()
    }

    #[test]
    fn selector_name_and_vmids_each_bring_members_once() {
        let guests = [
            guest("web01", "{backup: nightly}", "", Some(101)),
            guest("db01", "{backup: weekly}", "  backup: {policy: nightly}\n", Some(102)),
            guest("lab", "{backup: weekly}", "", Some(103)),
            guest("new", "{backup: nightly}", "", None),
            guest("gone", "{backup: nightly, tier: x}", "", Some(104)),
        ];
        let p = policy(
            "  selector: {matchLabels: {backup: nightly}, matchExpressions: [{key: tier, operator: DoesNotExist}]}\n  vmids: [101, 250]\n",
        );
        let m = members(&p, &guests).unwrap();
        let got: Vec<(Option<&str>, u32)> = m.iter().map(|m| (m.name.as_deref(), m.vmid)).collect();
        assert_eq!(got, [(Some("web01"), 101), (Some("db01"), 102), (None, 250)]);
        assert_eq!(m[0].node.as_deref(), Some("pve1"));
    }

    #[test]
    fn all_guests_and_pool_members_come_from_the_cluster() {
        let r = |vmid: u64, pool: Option<&str>, template: bool| ClusterResource {
            vmid,
            kind: "qemu".into(),
            node: "pve2".into(),
            pool: pool.map(str::to_string),
            template,
            ..Default::default()
        };
        let cluster = [
            r(100, Some("homelab"), false),
            r(101, None, false),
            r(102, Some("homelab"), false),
            r(9000, None, true),
        ];
        let guests = [guest("web01", "{}", "", Some(100))];
        let got = |spec: &str| -> Vec<(Option<String>, u32)> {
            from_cluster(&policy(spec), &cluster, &guests)
                .into_iter()
                .map(|m| (m.name, m.vmid))
                .collect()
        };
        // Templates are never members; a member the namespace has a ProxmoxGuest for is named.
        assert_eq!(
            got("  allGuests: true\n  exclude: [102]\n"),
            [(Some("web01".into()), 100), (None, 101)]
        );
        assert_eq!(got("  pool: homelab\n"), [(Some("web01".into()), 100), (None, 102)]);
    }

    #[test]
    fn an_adopted_guest_counts_by_its_own_vmid_before_its_first_status() {
        let mut g = guest("web", "{backup: nightly}", "  adopt: true\n  vmid: 120\n", None);
        let p = policy("  selector: {matchLabels: {backup: nightly}}\n");
        assert_eq!(members(&p, std::slice::from_ref(&g)).unwrap()[0].vmid, 120);
        g.spec.adopt = false;
        assert!(members(&p, &[g]).unwrap().is_empty(), "a guest not there yet waits for its VMID");
    }

    #[test]
    fn without_a_selector_only_named_guests_and_vmids_count() {
        let guests = [guest("web01", "{backup: nightly}", "", Some(101))];
        assert!(members(&policy("  vmids: [300]\n"), &guests).unwrap().iter().all(|m| m.vmid == 300));
    }
}
