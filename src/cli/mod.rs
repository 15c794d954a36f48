//! Command-line commands, each a thin function over the library.

pub mod demo;
pub mod oneshot;
pub mod resources;

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::{api, config::Config, metrics::Metrics};

#[derive(Parser, Debug)]
#[command(
    name = "homelab-operator",
    version,
    about = "Run a Proxmox homelab from declared state",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (also RUST_LOG), e.g. `info,homelab_operator=debug`.
    #[arg(long, global = true, default_value = "info")]
    pub log: String,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller against the cluster in KUBECONFIG or the in-cluster config.
    Run(RunArgs),
    /// Print every CRD as multi-document YAML (what crds/ holds).
    Crds(CrdsArgs),
    /// Show what would change for resources in YAML files, read-only.
    /// Exit 0: nothing to do; 2: changes pending; 1: error.
    Plan(FilesArgs),
    /// Reconcile resources from YAML files once, without a cluster.
    Apply(FilesArgs),
    /// Start the built-in simulators on loopback, apply manifests/examples, print the result.
    Demo(DemoArgs),
}

#[derive(Args, Debug)]
pub struct ConfigArg {
    /// Operator config file.
    #[arg(long, env = crate::config::CONFIG_ENV)]
    pub config: PathBuf,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: String,
    /// Act without holding the leader Lease (local runs with one replica only).
    #[arg(long)]
    pub no_leader_election: bool,
    /// Namespace of the leader Lease (default: the pod's namespace, else `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Seconds between full reads of each guest's config (drift checks), spread over guests.
    #[arg(long, default_value_t = 600)]
    pub drift_interval: u64,
    /// Concurrent reconciles per kind.
    #[arg(long, default_value_t = 8)]
    pub concurrency: u16,
}

#[derive(Args, Debug)]
pub struct CrdsArgs {
    /// Write one file per CRD into this directory instead of printing.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct FilesArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Resource files or directories (repeatable).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Give up on a resource after this many seconds (apply).
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Directory of example resources.
    #[arg(long)]
    pub examples: Option<PathBuf>,
    /// Simulated task duration in milliseconds.
    #[arg(long, default_value_t = 400)]
    pub task_ms: u64,
}

pub fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Exit codes: 0 ok, 1 error, 2 changes pending (plan).
pub async fn main(cli: Cli) -> anyhow::Result<i32> {
    init_tracing(&cli.log);
    match cli.command {
        Command::Crds(a) => crds(a).map(|_| 0),
        Command::Plan(a) => plan(a).await,
        Command::Apply(a) => apply(a).await,
        Command::Demo(a) => demo::run(a).await,
        Command::Run(a) => {
            let config = Config::load(&a.config.config)?;
            crate::controller::run(config, a).await.map(|_| 0)
        }
    }
}

fn crds(a: CrdsArgs) -> anyhow::Result<()> {
    let crds = api::all_crds();
    match a.dir {
        None => {
            for crd in &crds {
                print!("{}", api::crd_yaml(crd));
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for crd in &crds {
                std::fs::write(dir.join(api::crd_file_name(crd)), api::crd_yaml(crd))?;
            }
        }
    }
    Ok(())
}

async fn plan(a: FilesArgs) -> anyhow::Result<i32> {
    let config = Config::load(&a.config.config)?;
    let loaded = resources::load(&a.files)?;
    let engine = oneshot::Engine::new(&config, Arc::new(Metrics::default()))?;
    let mut pending = false;
    let mut failed = false;
    for g in &loaded.guests {
        let name = oneshot::display_name(g);
        match oneshot::plan_one(&engine, g).await {
            Ok(p) if p.is_noop() => println!("{name}: no changes"),
            Ok(p) => {
                pending = true;
                println!("{name}:");
                if let Some(b) = &p.blocked {
                    println!("  ! {}: {}", b.reason, b.message);
                }
                for action in &p.actions {
                    println!("  ~ {action}");
                }
                for c in &p.pending {
                    println!(
                        "  ? {} ({:?}){}",
                        c.field,
                        c.class,
                        c.desired.as_ref().map_or(String::new(), |d| format!(" → {d}"))
                    );
                }
            }
            Err(e) => {
                failed = true;
                println!("{name}: error: {e}");
            }
        }
    }
    // Records that target a guest use the addresses its status in the files reports.
    let addresses = oneshot::guest_addresses(
        loaded
            .guests
            .iter()
            .filter_map(|g| g.status.as_ref().map(|s| (oneshot::display_name(g), s))),
    );
    for r in &oneshot::all_records(&loaded.guests, &loaded.records) {
        let name = oneshot::record_name(r);
        match oneshot::plan_record(&engine, r, &addresses).await {
            Ok(out) if out.plan.actions.is_empty() && out.plan.blocked.is_none() => {
                match api::find_condition(&out.status.conditions, api::CONDITION_READY) {
                    Some(c) if c.status == "False" => {
                        pending = true;
                        println!("{name}: {}: {}", c.reason, c.message);
                    }
                    _ => println!("{name}: no changes"),
                }
            }
            Ok(out) => {
                pending = true;
                println!("{name}:");
                if let Some((reason, message)) = &out.plan.blocked {
                    println!("  ! {reason}: {message}");
                }
                for a in &out.plan.actions {
                    if let crate::reconcile::dns_record::plan::DnsAction::Put { set, why } = a {
                        println!("  ~ {why}: {} {} {} (TTL {})", set.name, set.rtype, set.values.join(", "), set.ttl);
                    }
                }
            }
            Err(e) => {
                failed = true;
                println!("{name}: error: {e}");
            }
        }
    }
    for p in &oneshot::all_proxies(&loaded.guests, &loaded.proxies) {
        let name = oneshot::proxy_name(p);
        match oneshot::plan_proxy(&engine, p, &addresses).await {
            Ok(out) if out.plan.actions.is_empty() && out.plan.blocked.is_none() => {
                match api::find_condition(&out.status.conditions, api::CONDITION_READY) {
                    Some(c) if c.status == "False" => {
                        pending = true;
                        println!("{name}: {}: {}", c.reason, c.message);
                    }
                    _ => println!("{name}: no changes"),
                }
            }
            Ok(out) => {
                pending = true;
                println!("{name}:");
                if let Some((reason, message)) = &out.plan.blocked {
                    println!("  ! {reason}: {message}");
                }
                for a in &out.plan.actions {
                    match a {
                        crate::reconcile::proxy_host::plan::ProxyAction::Create(h) => {
                            println!(
                                "  + create proxy host {} → {}://{}:{}",
                                h.domain_names.join(", "),
                                h.forward_scheme,
                                h.forward_host,
                                h.forward_port
                            )
                        }
                        crate::reconcile::proxy_host::plan::ProxyAction::Update { id, spec: h, why } => {
                            println!(
                                "  ~ {why}: proxy host {id} {} → {}://{}:{}",
                                h.domain_names.join(", "),
                                h.forward_scheme,
                                h.forward_host,
                                h.forward_port
                            )
                        }
                    }
                }
            }
            Err(e) => {
                failed = true;
                println!("{name}: error: {e}");
            }
        }
    }
    for s in &loaded.skipped {
        eprintln!("skipped (kind not handled yet): {s}");
    }
    Ok(if failed {
        1
    } else if pending {
        2
    } else {
        0
    })
}

async fn apply(a: FilesArgs) -> anyhow::Result<i32> {
    let config = Config::load(&a.config.config)?;
    let loaded = resources::load(&a.files)?;
    let engine = oneshot::Engine::new(&config, Arc::new(Metrics::default()))?;
    let progress = |line: &str| println!("{line}");
    let results = oneshot::apply_all(&engine, &loaded.guests, 8, Duration::from_secs(a.timeout), &progress).await;
    // Records after guests, so records that target a guest see its addresses.
    let addresses = oneshot::guest_addresses(results.iter().map(|r| (r.name.clone(), &r.status)));
    let mut records = vec![];
    for r in &oneshot::all_records(&loaded.guests, &loaded.records) {
        records.push(oneshot::apply_record(&engine, r, &addresses, &progress).await);
    }
    if !results.is_empty() {
        println!("\n{}", oneshot::status_table(&results));
    }
    if !records.is_empty() {
        println!("\n{}", oneshot::record_table(&records));
    }
    let mut proxies = vec![];
    for p in &oneshot::all_proxies(&loaded.guests, &loaded.proxies) {
        proxies.push(oneshot::apply_proxy(&engine, p, &addresses, &progress).await);
    }
    if !proxies.is_empty() {
        println!("\n{}", oneshot::proxy_table(&proxies));
    }
    for s in &loaded.skipped {
        eprintln!("skipped (kind not handled yet): {s}");
    }
    let failed =
        results.iter().any(|r| r.error.is_some()) || records.iter().any(|r| r.error.is_some()) || proxies.iter().any(|r| r.error.is_some());
    Ok(if failed { 1 } else { 0 })
}
