//! What a spec needs on the node it is created on (storages that take its
//! volumes, the ISO or container template, the bridges of its NICs), checked
//! against one listing of the node before anything is created. Pure.

use super::plan::ResolvedSource;
use crate::api::{GuestType, ProxmoxGuestSpec};
pub use crate::reconcile::inventory::NodeInventory;

/// A storage the spec puts something on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageUse {
    pub storage: String,
    /// Content type it must accept (`images`, `rootdir`, `iso`, `vztmpl`).
    pub content: &'static str,
    /// The spec field that asks, for the message.
    pub by: String,
}

/// Everything a new guest references on its node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct References {
    pub storages: Vec<StorageUse>,
    /// Volume ids that must exist, with their content type (`local:iso/x.iso`, `iso`).
    pub volumes: Vec<(String, &'static str)>,
    /// `(bridge, NIC slot)`.
    pub bridges: Vec<(String, String)>,
}

impl References {
    /// `(storage, content)` listings the volume checks need.
    pub fn listings(&self) -> Vec<(String, &'static str)> {
        let mut out: Vec<(String, &'static str)> = self
            .volumes
            .iter()
            .filter_map(|(v, c)| Some((v.split_once(':')?.0.to_string(), *c)))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

pub fn references(spec: &ProxmoxGuestSpec, source: &ResolvedSource) -> References {
    let mut r = References::default();
    let volume_content = match spec.guest_type {
        GuestType::Qemu => "images",
        GuestType::Lxc => "rootdir",
    };
    let mut uses = |storage: &str, content: &'static str, by: String| {
        r.storages.push(StorageUse {
            storage: storage.to_string(),
            content,
            by,
        })
    };
    // A clone copies the template's disks; only a full clone's target storage is ours to check.
    if !matches!(source, ResolvedSource::Clone { .. }) {
        for d in &spec.disks {
            uses(&d.storage, volume_content, format!("disk {}", d.slot));
        }
        for m in &spec.mounts {
            if let Some(s) = &m.storage {
                uses(s, "rootdir", format!("mount {}", m.slot));
            }
        }
    }
    if let (Some(c), ResolvedSource::Clone { .. }) = (&spec.source.clone, source)
        && let Some(s) = &c.storage
    {
        uses(s, volume_content, "source.clone.storage".into());
    }
    let image = match source {
        ResolvedSource::Iso(v) => Some((v, "iso", "source.iso.image")),
        ResolvedSource::OsTemplate(v) => Some((v, "vztmpl", "source.osTemplate")),
        ResolvedSource::Clone { .. } => None,
    };
    if let Some((volume, content, by)) = image
        && let Some((storage, _)) = volume.split_once(':')
    {
        uses(storage, content, by.into());
        r.volumes.push((volume.clone(), content));
    }
    r.bridges = spec.network.iter().map(|n| (n.bridge.clone(), n.slot.clone())).collect();
    r
}

/// The spec's disks that the template has bigger: a clone of it would be
/// stuck at once (disks never shrink), so it is not made. `template` is the
/// template's config (`scsi0` → `local-lvm:base-9000-disk-0,size=32G`).
pub fn shrunk_by_clone(spec: &ProxmoxGuestSpec, template: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    use crate::providers::pve::codec::{PropertyString, parse_size_bytes};
    spec.disks
        .iter()
        .filter_map(|d| {
            let props = PropertyString::parse(template.get(&d.slot)?, "file");
            let size_text = props.get("size")?;
            let size = parse_size_bytes(size_text)?;
            ((u64::from(d.size_gib) << 30) < size).then(|| {
                format!(
                    "disk {} asks for {} GiB but the template's {} is {size_text}; disks never shrink: set sizeGiB to at least {}",
                    d.slot,
                    d.size_gib,
                    d.slot,
                    size.div_ceil(1 << 30)
                )
            })
        })
        .collect()
}

/// What the node lacks, one line each (empty when everything is there).
pub fn missing(node: &str, refs: &References, inv: &NodeInventory) -> Vec<String> {
    let mut out = Vec::new();
    for u in &refs.storages {
        match inv.storages.iter().find(|s| s.storage == u.storage) {
            None => out.push(format!("storage '{}' ({}) does not exist on node {node}", u.storage, u.by)),
            Some(s) if !s.accepts(u.content) => out.push(format!(
                "storage '{}' ({}) does not take content '{}' (it takes {})",
                u.storage, u.by, u.content, s.content
            )),
            Some(s) if !s.active => out.push(format!("storage '{}' ({}) is not active on node {node}", u.storage, u.by)),
            Some(_) => {}
        }
    }
    for (volume, content) in &refs.volumes {
        let Some((storage, _)) = volume.split_once(':') else { continue };
        let listed = inv.volumes.get(&(storage.to_string(), content.to_string()));
        if let Some(list) = listed
            && !list.contains(volume)
        {
            let what = if *content == "iso" { "ISO image" } else { "container template" };
            out.push(format!("{what} '{volume}' is not on storage '{storage}' of node {node}"));
        }
    }
    for (bridge, slot) in &refs.bridges {
        if !inv.bridges.contains(bridge) {
            out.push(format!("bridge '{bridge}' ({slot}) does not exist on node {node}"));
        }
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::pve::StorageInfo;

    fn spec(yaml: &str) -> ProxmoxGuestSpec {
        serde_yaml_ng::from_str(&format!("memoryMiB: 1024\n{yaml}")).expect("spec")
    }

    fn storage(id: &str, content: &str) -> StorageInfo {
        StorageInfo {
            storage: id.into(),
            kind: "dir".into(),
            content: content.into(),
            active: true,
            shared: false,
        }
    }

    fn node() -> NodeInventory {
        NodeInventory {
            storages: vec![storage("local", "iso,vztmpl,backup"), storage("local-lvm", "images,rootdir")],
            bridges: vec!["vmbr0".into()],
            volumes: [
                (("local".into(), "iso".into()), vec!["local:iso/debian-13.iso".into()]),
                (("local".into(), "vztmpl".into()), vec!["local:vztmpl/debian-12.tar.zst".into()]),
            ]
            .into(),
        }
    }

    const VM: &str = "type: qemu\nname: vm\nsource: {iso: {image: 'local:iso/debian-13.iso'}}\n\
        disks: [{slot: scsi0, storage: local-lvm, sizeGiB: 8}]\nnetwork: [{slot: net0, bridge: vmbr0}]\n";

    #[test]
    fn a_spec_whose_references_exist_passes() {
        let s = spec(VM);
        let src = ResolvedSource::Iso("local:iso/debian-13.iso".into());
        let refs = references(&s, &src);
        assert_eq!(refs.listings(), [("local".to_string(), "iso")]);
        assert!(missing("pve1", &refs, &node()).is_empty());
    }

    #[test]
    fn each_missing_reference_is_named() {
        let s = spec(
            "type: qemu\nname: vm\nsource: {iso: {image: 'local:iso/nope.iso'}}\n\
             disks: [{slot: scsi0, storage: local, sizeGiB: 8}, {slot: scsi1, storage: fast, sizeGiB: 8}]\n\
             network: [{slot: net0, bridge: vmbr0}, {slot: net1, bridge: vmbr9}]\n",
        );
        let refs = references(&s, &ResolvedSource::Iso("local:iso/nope.iso".into()));
        let m = missing("pve1", &refs, &node());
        assert_eq!(
            m,
            [
                "storage 'local' (disk scsi0) does not take content 'images' (it takes iso,vztmpl,backup)",
                "storage 'fast' (disk scsi1) does not exist on node pve1",
                "ISO image 'local:iso/nope.iso' is not on storage 'local' of node pve1",
                "bridge 'vmbr9' (net1) does not exist on node pve1",
            ]
        );
    }

    #[test]
    fn a_container_needs_its_template_and_rootdir_storages() {
        let s = spec(
            "type: lxc\nname: ct\nsource: {osTemplate: 'local:vztmpl/alpine.tar.xz'}\n\
             disks: [{slot: rootfs, storage: local-lvm, sizeGiB: 4}]\n\
             mounts: [{slot: mp0, path: /data, storage: local, sizeGiB: 2}]\nnetwork: [{slot: net0, bridge: vmbr0}]\n",
        );
        let refs = references(&s, &ResolvedSource::OsTemplate("local:vztmpl/alpine.tar.xz".into()));
        assert_eq!(
            missing("pve2", &refs, &node()),
            [
                "storage 'local' (mount mp0) does not take content 'rootdir' (it takes iso,vztmpl,backup)",
                "container template 'local:vztmpl/alpine.tar.xz' is not on storage 'local' of node pve2",
            ]
        );
    }

    #[test]
    fn a_linked_clone_checks_only_bridges() {
        let s = spec(
            "type: qemu\nname: vm\nsource: {clone: {templateVmid: 9000}}\n\
             disks: [{slot: scsi0, storage: gone, sizeGiB: 8}]\nnetwork: [{slot: net0, bridge: vmbr0}]\n",
        );
        let src = ResolvedSource::Clone {
            template_node: "pve1".into(),
            template_vmid: 9000,
        };
        let refs = references(&s, &src);
        assert!(refs.storages.is_empty() && refs.volumes.is_empty());
        assert!(missing("pve1", &refs, &node()).is_empty());
    }
}
