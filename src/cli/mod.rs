//! Command-line commands, each a thin function over the library.

mod apply;
pub mod backups;
pub mod demo;
mod demo_monitors;
mod demo_updates;
pub mod export;
pub mod oneshot;
mod plan;
pub mod resources;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::{api, config::Config};
pub use crate::{
    config::ConfigArg,
    controller::{DEFAULT_CONCURRENCY, RunArgs},
};

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
    /// Write manifests (with `adopt: true`) for the guests that already run, read read-only;
    /// `plan` over them shows no change but the ownership marks adopting adds.
    Export(export::ExportArgs),
    /// Send a test message to a notification channel of the config.
    /// Exit 0 when it was delivered, 1 otherwise.
    NotifyTest(NotifyTestArgs),
}

#[derive(Args, Debug)]
pub struct NotifyTestArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Channel name in the config's `notifications:` section.
    pub channel: String,
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
    /// Resources worked on at once (apply), as `run --concurrency`.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: u16,
    /// Output of `plan`: `text` (for people, like `terraform plan`) or `json` (for bots).
    #[arg(long, value_enum, default_value = "text")]
    pub output: PlanOutput,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum PlanOutput {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Directory of example resources.
    #[arg(long)]
    pub examples: Option<PathBuf>,
    /// Simulated task duration in milliseconds.
    #[arg(long, default_value_t = 400)]
    pub task_ms: u64,
    /// Then add a homelab made by hand (guests, a backup job, a proxy host, DNS records),
    /// write DIR/config.yaml that reaches the simulators, and keep serving until interrupted:
    /// try `export`, `plan` and `apply` on it.
    #[arg(long, value_name = "DIR")]
    pub serve: Option<PathBuf>,
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
        Command::Plan(a) => plan::run(a).await,
        Command::Apply(a) => apply::run(a).await,
        Command::Demo(a) => demo::run(a).await,
        Command::Export(a) => export::run(a).await,
        Command::NotifyTest(a) => notify_test(a).await,
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

async fn notify_test(a: NotifyTestArgs) -> anyhow::Result<i32> {
    use crate::notify::{Event, Message, Notifier};
    let config = Config::load(&a.config.config)?;
    let notifier = Notifier::new(config.notifications, None).map_err(anyhow::Error::msg)?;
    let msg = Message::new(
        Event::Test,
        "homelab-operator notify-test",
        format!("a test message to channel {:?}", a.channel),
    );
    let out = notifier.send(&a.channel, &msg).await?;
    match &out.error {
        None => println!(
            "{}: sent ({} attempt{})",
            a.channel,
            out.attempts,
            if out.attempts == 1 { "" } else { "s" }
        ),
        Some(e) => println!("{}: not sent after {} attempts: {e}", a.channel, out.attempts),
    }
    Ok(if out.error.is_none() { 0 } else { 1 })
}
