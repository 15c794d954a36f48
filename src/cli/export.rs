//! `export`: what already runs, read read-only from the live systems, as
//! manifests with `adopt: true` that `plan` finds unchanged (but for the
//! ownership marks adopting adds): the guests of every Proxmox VE cluster of
//! the config under `OUT/<cluster>/guests/`, the hosts of every Nginx Proxy
//! Manager under `OUT/<endpoint>/proxy-hosts/`, one file each.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;

use super::oneshot::Engine;
use crate::{
    api::{GuestType, ProxmoxGuest},
    config::{Config, ConfigArg},
    metrics::Metrics,
    providers::pve::{ClusterResource, PveApi, PveClient},
    reconcile::{
        ownership::is_mark_tag,
        proxmox_guest::{
            exported::{Exported, GuestFacts, spec_of},
            observed_from, read_config, read_firewall,
        },
    },
};

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Namespace of the exported resources.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// Directory the manifests are written to (created when missing).
    #[arg(long, default_value = "exported")]
    pub out: PathBuf,
    /// Only this Proxmox VE endpoint of the config (default: every one).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only these VMIDs (repeatable).
    #[arg(long)]
    pub vmid: Vec<u32>,
    /// Only guests on this node.
    #[arg(long)]
    pub node: Option<String>,
    /// Only guests with this Proxmox tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// Only guests in this resource pool.
    #[arg(long)]
    pub pool: Option<String>,
    /// Only guests whose name contains this text.
    #[arg(long)]
    pub name: Option<String>,
    /// Export the records of this DNS zone (`ZONE` on every `dns:` endpoint that can list a
    /// zone, or `ENDPOINT/ZONE`); repeatable. Without it no records are exported.
    #[arg(long)]
    pub zone: Vec<String>,
    /// Print the summary only; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl ExportArgs {
    fn selects(&self, r: &ClusterResource) -> bool {
        let name = r.name.as_deref().unwrap_or("");
        (self.vmid.is_empty() || self.vmid.contains(&(r.vmid as u32)))
            && self.node.as_ref().is_none_or(|n| &r.node == n)
            && self.tag.as_ref().is_none_or(|t| r.tag_list().contains(t))
            && self.pool.as_ref().is_none_or(|p| r.pool.as_ref() == Some(p))
            && self.name.as_ref().is_none_or(|n| name.contains(n.as_str()))
    }
}

/// One exported guest, as the summary reports it.
struct Written {
    file: PathBuf,
    name: String,
    vmid: u32,
    exported: Exported,
}

/// Exit 0 when everything selected was exported, 1 on an error.
pub async fn run(a: ExportArgs) -> anyhow::Result<i32> {
    let config = Config::load(&a.config.config)?;
    let engine = Engine::new(&config, Arc::new(Metrics::default()))?;
    let mut names = BTreeSet::new();
    let mut written = vec![];
    for (cluster, client) in &engine.providers.pve {
        if a.cluster.as_ref().is_some_and(|c| c != cluster) {
            continue;
        }
        let resources = client
            .cluster_resources()
            .await
            .with_context(|| format!("cluster {cluster}: listing guests"))?;
        // Templates are sources, not guests; a guest the operator already marks has its resource.
        let unmanaged = |r: &&ClusterResource| !r.template && !r.tag_list().iter().any(|t| is_mark_tag(t));
        let mut guests: Vec<&ClusterResource> = resources.iter().filter(unmanaged).filter(|r| a.selects(r)).collect();
        guests.sort_by_key(|r| r.vmid);
        // Names first (in VMID order, so a clash always resolves the same way), then the reads, a few at once.
        let named: Vec<(&ClusterResource, String)> = guests.into_iter().map(|r| (r, unique_name(r, &mut names))).collect();
        let reads = named.into_iter().map(|(r, name)| export_guest(&a, cluster, client, r, name));
        let done: Vec<anyhow::Result<Written>> = futures::stream::iter(reads).buffered(EXPORT_CONCURRENCY).collect().await;
        written.extend(done.into_iter().collect::<anyhow::Result<Vec<_>>>()?);
    }
    let hosts = export_proxy_hosts(&a, &engine).await?;
    let records = export_records(&a, &engine).await?;
    summary(&a, &written, &hosts, &records);
    Ok(if records.failed.is_empty() { 0 } else { 1 })
}

/// The records exported, and what was not (with why).
#[derive(Default)]
struct Records {
    files: Vec<PathBuf>,
    skipped: Vec<String>,
    failed: Vec<String>,
}

/// The RRsets of every `--zone`, except those the operator already marks and the zone's own SOA/NS.
async fn export_records(a: &ExportArgs, engine: &Engine) -> anyhow::Result<Records> {
    use crate::{
        providers::dns::{DnsApi, DnsClient},
        reconcile::{dns_record::exported, ownership::is_mark_line},
    };
    let mut out = Records::default();
    let mut names = BTreeSet::new();
    for z in &a.zone {
        let (only, zone) = z.split_once('/').map_or((None, z.as_str()), |(p, z)| (Some(p), z));
        for (provider, client) in engine.providers.dns.iter().filter(|(p, _)| only.is_none_or(|o| o == p.as_str())) {
            if only.is_none() && matches!(client, DnsClient::Rfc2136(_)) {
                out.skipped
                    .push(format!("dns {provider}: an RFC 2136 server cannot list zone {zone}"));
                continue;
            }
            let sets = match client.list(zone).await {
                Ok(s) => s,
                Err(e) => {
                    out.failed.push(format!("dns {provider}: zone {zone}: {e}"));
                    continue;
                }
            };
            for set in sets.iter().filter(|s| !s.mark.as_deref().is_some_and(is_mark_line)) {
                let spec = match exported::spec_of(provider, zone, set) {
                    Ok(spec) => spec,
                    Err(why) => {
                        out.skipped.push(why);
                        continue;
                    }
                };
                let label = dns_label(
                    &format!("{}-{}", spec.name.replace('@', "apex"), spec.record_type.as_str()),
                    "record",
                );
                let name = unique(&label, zone.replace('.', "-"), &mut names);
                let mut record = crate::api::DnsRecord::new(&name, spec);
                record.metadata.namespace = Some(a.namespace.clone());
                let file = a.out.join(provider).join("dns").join(zone).join(format!("{name}.yaml"));
                if !a.dry_run {
                    write_manifest(&file, &serde_yaml_ng::to_string(&record)?)?;
                }
                out.files.push(file);
            }
        }
    }
    Ok(out)
}

/// Every proxy host of every `proxy:` endpoint (none with `--cluster`, `--vmid`… filters: those select guests).
async fn export_proxy_hosts(a: &ExportArgs, engine: &Engine) -> anyhow::Result<Vec<PathBuf>> {
    let guest_filters = !a.vmid.is_empty() || a.node.is_some() || a.tag.is_some() || a.pool.is_some() || a.name.is_some();
    if guest_filters || a.cluster.is_some() {
        return Ok(vec![]);
    }
    let mut names = BTreeSet::new();
    let mut written = vec![];
    for (provider, client) in &engine.providers.proxy {
        let hosts = client
            .list()
            .await
            .with_context(|| format!("proxy {provider}: listing proxy hosts"))?;
        for h in hosts.iter().filter(|h| h.mark().is_none()) {
            let spec = crate::reconcile::proxy_host::exported::spec_of(provider, h);
            let first = spec.domains.first().cloned().unwrap_or_else(|| format!("host-{}", h.id));
            let name = unique(&dns_label(&first, &format!("host-{}", h.id)), h.id.to_string(), &mut names);
            let mut host = crate::api::ProxyHost::new(&name, spec);
            host.metadata.namespace = Some(a.namespace.clone());
            let file = a.out.join(provider).join("proxy-hosts").join(format!("{name}.yaml"));
            if !a.dry_run {
                write_manifest(&file, &serde_yaml_ng::to_string(&host)?)?;
            }
            written.push(file);
        }
    }
    Ok(written)
}

/// Guests read at once (each costs three reads: config, firewall options and rules).
const EXPORT_CONCURRENCY: usize = 8;

async fn export_guest(a: &ExportArgs, cluster: &str, client: &PveClient, r: &ClusterResource, name: String) -> anyhow::Result<Written> {
    let guest_type = if r.kind == "lxc" { GuestType::Lxc } else { GuestType::Qemu };
    let g = observed_from(r, guest_type);
    let what = || format!("cluster {cluster}: guest {}", r.vmid);
    let config = read_config(client, &g).await.with_context(what)?;
    let firewall = read_firewall(client, &g).await.ok();
    let facts = GuestFacts {
        cluster,
        vmid: g.vmid,
        node: &g.node,
        guest_type,
        running: g.running,
        pool: r.pool.clone(),
        config: &config,
        firewall: firewall.as_ref(),
        password_secret: format!("{name}-cloud-init"),
    };
    let exported = spec_of(&facts);
    let file = a.out.join(cluster).join("guests").join(format!("{name}.yaml"));
    if !a.dry_run {
        write_manifest(&file, &manifest(&a.namespace, &name, &exported)?)?;
    }
    Ok(Written {
        file,
        name,
        vmid: g.vmid,
        exported,
    })
}

/// A DNS-label name from the guest's name, unique among those exported (`-VMID` on a clash).
fn unique_name(r: &ClusterResource, taken: &mut BTreeSet<String>) -> String {
    let name = dns_label(r.name.as_deref().unwrap_or(""), &format!("guest-{}", r.vmid));
    unique(&name, r.vmid.to_string(), taken)
}

/// `text` as a Kubernetes name (lower case, `-` for anything else), or `fallback`.
fn dns_label(text: &str, fallback: &str) -> String {
    let name: String = text
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let name: String = name.trim_matches('-').chars().take(50).collect();
    let name = name.trim_end_matches('-').to_string();
    if name.is_empty() { fallback.to_string() } else { name }
}

/// `name`, or `name-suffix` when it is taken.
fn unique(name: &str, suffix: String, taken: &mut BTreeSet<String>) -> String {
    let name = if taken.contains(name) {
        format!("{name}-{suffix}")
    } else {
        name.to_string()
    };
    taken.insert(name.clone());
    name
}

/// The manifest: what the spec cannot say first, as comments a reader sees before the spec.
fn manifest(namespace: &str, name: &str, e: &Exported) -> anyhow::Result<String> {
    let mut g = ProxmoxGuest::new(name, e.spec.clone());
    g.metadata.namespace = Some(namespace.to_string());
    let mut text = String::new();
    if !e.unexpressed.is_empty() {
        text.push_str("# Exported by homelab-operator. Kept on the guest as it is, not expressed in this spec:\n");
        for u in &e.unexpressed {
            text.push_str(&format!("#   {u}\n"));
        }
    }
    for s in &e.secrets {
        text.push_str(&format!("# Create the Secret {s} before applying.\n"));
    }
    text.push_str(&serde_yaml_ng::to_string(&g)?);
    Ok(text)
}

fn write_manifest(file: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(file, text).with_context(|| format!("writing {}", file.display()))
}

fn summary(a: &ExportArgs, written: &[Written], hosts: &[PathBuf], records: &Records) {
    let verb = if a.dry_run { "would write" } else { "wrote" };
    for w in written {
        println!(
            "ProxmoxGuest {}/{} (VMID {}): {verb} {}",
            a.namespace,
            w.name,
            w.vmid,
            w.file.display()
        );
        for u in &w.exported.unexpressed {
            println!("  not expressed, kept as it is: {u}");
        }
        for s in &w.exported.secrets {
            println!("  create the Secret {}/{s}", a.namespace);
        }
    }
    for h in hosts {
        println!("ProxyHost: {verb} {}", h.display());
    }
    for r in &records.files {
        println!("DnsRecord: {verb} {}", r.display());
    }
    for s in &records.skipped {
        println!("not exported: {s}");
    }
    for f in &records.failed {
        println!("error: {f}");
    }
    let unexpressed: usize = written.iter().map(|w| w.exported.unexpressed.len()).sum();
    let secrets: usize = written.iter().map(|w| w.exported.secrets.len()).sum();
    println!(
        "\nExport: {} guests, {} proxy hosts, {} DNS records, {unexpressed} settings kept as they are but not expressed, {secrets} Secrets to create{}.",
        written.len(),
        hosts.len(),
        records.files.len(),
        if a.dry_run { " (dry run: nothing written)" } else { "" }
    );
}
