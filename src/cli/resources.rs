//! Reading resources from YAML files and directories.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use super::oneshot::Files;
use crate::{
    api::{BackupPolicy, DnsRecord, MonitorTarget, ProxmoxGuest, ProxyHost, UpdatePolicy},
    reconcile::proxmox_guest::children,
};

/// Every resource file under the given paths (directories are read recursively, sorted).
pub fn files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = vec![];
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            for e in entries {
                if e.is_dir() {
                    out.extend(files(&[e])?);
                } else if matches!(e.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
                    out.push(e);
                }
            }
        } else if p.exists() {
            out.push(p.clone());
        } else {
            bail!("{}: no such file or directory", p.display());
        }
    }
    Ok(out)
}

/// The resources in the files, by kind. Other kinds are listed in `skipped`.
pub struct Loaded {
    pub guests: Vec<ProxmoxGuest>,
    pub records: Vec<DnsRecord>,
    pub proxies: Vec<ProxyHost>,
    pub policies: Vec<BackupPolicy>,
    pub monitors: Vec<MonitorTarget>,
    pub updates: Vec<UpdatePolicy>,
    pub skipped: Vec<String>,
}

impl Loaded {
    /// The DnsRecords of the files plus those guests ask for in `spec.dns`
    /// (what the controller would create as owned children).
    pub fn records(&self) -> Vec<DnsRecord> {
        with_children(&self.guests, &self.records, children::dns_records)
    }

    /// The ProxyHosts of the files plus those guests ask for in `spec.proxy`.
    pub fn proxies(&self) -> Vec<ProxyHost> {
        with_children(&self.guests, &self.proxies, children::proxy_hosts)
    }

    /// The MonitorTargets of the files plus those guests ask for in `spec.monitor`.
    pub fn monitors(&self) -> Vec<MonitorTarget> {
        with_children(&self.guests, &self.monitors, children::monitors)
    }

    /// What the resources refer to, for the one-shot engine.
    pub fn files(&self) -> Files {
        Files::new(&self.guests, &self.proxies()).with_monitors(self.monitors())
    }

    /// Kinds these commands do not handle, one line each on stderr.
    pub fn report_skipped(&self) {
        for s in &self.skipped {
            eprintln!("skipped (kind not handled yet): {s}");
        }
    }
}

fn with_children<K: Clone>(guests: &[ProxmoxGuest], objs: &[K], children: fn(&ProxmoxGuest) -> Vec<K>) -> Vec<K> {
    let mut out = objs.to_vec();
    out.extend(guests.iter().flat_map(children));
    out
}

pub fn load(paths: &[PathBuf]) -> anyhow::Result<Loaded> {
    let mut guests = vec![];
    let mut records = vec![];
    let mut proxies = vec![];
    let mut policies = vec![];
    let mut monitors = vec![];
    let mut updates = vec![];
    let mut skipped = vec![];
    for file in files(paths)? {
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let value = serde_yaml_ng::Value::deserialize(doc).with_context(|| format!("{}: document {}", file.display(), i + 1))?;
            if value.is_null() {
                continue;
            }
            let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("").to_string();
            let api_version = value.get("apiVersion").and_then(|k| k.as_str()).unwrap_or("").to_string();
            match (api_version.as_str(), kind.as_str()) {
                ("homelab.dev/v1alpha1", "ProxmoxGuest") => {
                    let mut g: ProxmoxGuest = parse(&file, i, value)?;
                    g.metadata.namespace.get_or_insert_with(|| "default".into());
                    guests.push(g);
                }
                ("homelab.dev/v1alpha1", "ProxyHost") => {
                    let mut p: ProxyHost = parse(&file, i, value)?;
                    p.metadata.namespace.get_or_insert_with(|| "default".into());
                    proxies.push(p);
                }
                ("homelab.dev/v1alpha1", "DnsRecord") => {
                    let mut r: DnsRecord = parse(&file, i, value)?;
                    r.metadata.namespace.get_or_insert_with(|| "default".into());
                    records.push(r);
                }
                ("homelab.dev/v1alpha1", "BackupPolicy") => {
                    let mut b: BackupPolicy = parse(&file, i, value)?;
                    b.metadata.namespace.get_or_insert_with(|| "default".into());
                    policies.push(b);
                }
                ("homelab.dev/v1alpha1", "MonitorTarget") => {
                    let mut m: crate::api::MonitorTarget = parse(&file, i, value)?;
                    m.metadata.namespace.get_or_insert_with(|| "default".into());
                    monitors.push(m);
                }
                ("homelab.dev/v1alpha1", "UpdatePolicy") => {
                    let mut u: UpdatePolicy = parse(&file, i, value)?;
                    u.metadata.namespace.get_or_insert_with(|| "default".into());
                    updates.push(u);
                }
                _ => skipped.push(format!("{}: {api_version} {kind}", file.display())),
            }
        }
    }
    Ok(Loaded {
        guests,
        records,
        proxies,
        policies,
        monitors,
        updates,
        skipped,
    })
}

fn parse<T: serde::de::DeserializeOwned>(file: &Path, i: usize, value: serde_yaml_ng::Value) -> anyhow::Result<T> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| anyhow::anyhow!("{}: document {}: {} at {}", file.display(), i + 1, e.inner(), e.path()))
}
