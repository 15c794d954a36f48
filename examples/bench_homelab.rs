//! Benchmark: the whole homelab at once on a real kube-apiserver (`../shared/k8s`,
//! as the envtest tier starts it) and the simulators: N ProxmoxGuests, N DnsRecords
//! publishing their addresses, N HTTP MonitorTargets every 30 s, N/10 ProxyHosts
//! and one BackupPolicy over every guest (backed up now), added kind by kind;
//! then a quiet steady state.
//!
//!     cargo run --release --example bench_homelab -- [GUESTS] [STEADY_SECONDS]
//!
//! (`HOMELAB_ENVTEST_ASSETS` points at the unpacked control plane; `.ci/run`
//! unpacks it into `target/envtest`.) The operator runs as its own process
//! under the chart's RBAC, so its CPU and memory are its own: the
//! `homelab-operator` binary beside the examples directory (`cargo build
//! --release` first), else this binary re-run as `homelab-operator run`.
//! Prints, per kind added: time to Ready, the operator's resident memory then
//! and its peak; for the steady state: outside calls per system, API-server
//! writes by resource, CPU, RSS sampled every 10 s and the largest mappings.
//! `BENCH_OPERATOR_WRAPPER=heaptrack` runs the operator under that command
//! (a heap profile of where its memory goes).

#[path = "../tests/support/envtest.rs"]
#[allow(dead_code)]
mod envtest;

use std::{
    collections::BTreeMap,
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use homelab_operator::sim::{
    SimServer,
    npm::NpmSim,
    pbs::{PbsSim, PbsSimConfig},
    pve::{PveSim, PveSimConfig},
    technitium::TechnitiumSim,
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, PostParams},
    runtime::{reflector, watcher},
};
use serde_json::{Value, json};

const NS: &str = "homelab";
const LIMIT: Duration = Duration::from_secs(1800);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("operator") {
        homelab_operator::controller::housekeeping::tune_allocator();
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if args.get(1).map(String::as_str) == Some("operator") {
        // The child: exactly what the `homelab-operator` binary runs.
        let cli = homelab_operator::cli::Cli::parse_from(&args[1..]);
        runtime.block_on(homelab_operator::cli::main(cli))?;
        return Ok(());
    }
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let steady: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(300);
    runtime.block_on(bench(n, Duration::from_secs(steady)))
}

/// The outside systems on loopback, and a web server the monitors check.
struct World {
    pve: Arc<PveSim>,
    pbs: Arc<PbsSim>,
    dns: Arc<TechnitiumSim>,
    npm: Arc<NpmSim>,
    checks: Arc<AtomicU64>,
    checks_url: String,
    _servers: Vec<SimServer>,
    dir: tempfile::TempDir,
}

async fn world() -> anyhow::Result<World> {
    let pve = PveSim::with_defaults(PveSimConfig {
        task_duration: Duration::from_millis(100),
        ..Default::default()
    })
    .map_err(anyhow::Error::msg)?;
    let pbs = PbsSim::new(PbsSimConfig::default()).map_err(anyhow::Error::msg)?;
    pve.attach_pbs("pbs1", pbs.clone(), "store1");
    let dns = TechnitiumSim::new("dns-token-1", &["home.arpa"]).map_err(anyhow::Error::msg)?;
    let npm = NpmSim::new("operator@home.arpa", "npm-secret-1").map_err(anyhow::Error::msg)?;
    let servers = vec![pve.serve().await?, pbs.serve().await?, dns.serve().await?, npm.serve().await?];
    let checks = Arc::new(AtomicU64::new(0));
    let seen = checks.clone();
    let app = axum::Router::new().route(
        "/m/{i}",
        axum::routing::get(move || {
            seen.fetch_add(1, Ordering::Relaxed);
            async { "ok" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let checks_url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(World {
        pve,
        pbs,
        dns,
        npm,
        checks,
        checks_url,
        _servers: servers,
        dir: tempfile::tempdir()?,
    })
}

impl World {
    fn config(&self) -> anyhow::Result<std::path::PathBuf> {
        let dir = self.dir.path();
        let [pve, pbs, dns, npm] = &self._servers[..] else { unreachable!() };
        let file = |name: &str, content: &str| -> std::io::Result<String> {
            let p = dir.join(name);
            std::fs::write(&p, content)?;
            Ok(p.display().to_string())
        };
        let text = format!(
            "{}{}dns:\n  default:\n    type: technitium\n    url: {}\n    tokenFile: {}\n\
             proxy:\n  default:\n    type: nginx-proxy-manager\n    url: {}\n    identity: operator@home.arpa\n    secretFile: {}\n",
            homelab_operator::sim::pve::config_section(&self.pve, pve, dir)?,
            homelab_operator::sim::pbs::config_section("main", &self.pbs, pbs, dir)?,
            dns.url,
            file("dns-token", "dns-token-1")?,
            npm.url,
            file("npm-secret", "npm-secret-1")?,
        );
        let path = dir.join("config.yaml");
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// Calls each system has answered so far.
    fn calls(&self) -> BTreeMap<&'static str, u64> {
        let sum = |m: BTreeMap<String, u64>| m.values().sum::<u64>();
        BTreeMap::from([
            ("Proxmox VE", self.pve.total_calls()),
            ("Proxmox Backup Server", self.pbs.total_calls()),
            ("Technitium DNS", sum(self.dns.calls())),
            ("Nginx Proxy Manager", sum(self.npm.calls())),
            ("monitor checks (web server)", self.checks.load(Ordering::Relaxed)),
        ])
    }
}

/// The operator as its own process, dying with the bench.
fn start_operator(plane: &envtest::ControlPlane, config: &Path, dir: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join("operator.log"))?;
    let me = std::env::current_exe()?;
    let binary = me.parent().and_then(Path::parent).map(|d| d.join("homelab-operator"));
    let (exe, args) = match binary.filter(|b| b.is_file()) {
        Some(b) => (b, &["run"][..]),
        None => (me, &["operator", "run"][..]),
    };
    println!("operator: {}", exe.display());
    let mut cmd = match std::env::var("BENCH_OPERATOR_WRAPPER") {
        Ok(wrapper) => {
            let mut c = Command::new(wrapper);
            c.arg(&exe);
            c
        }
        Err(_) => Command::new(&exe),
    };
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .args([
            "--namespace",
            NS,
            "--lease-namespace",
            "homelab-operator",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", &plane.operator_kubeconfig)
        .env("POD_NAME", "bench")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: prctl in the child before exec only sets its parent-death signal.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    Ok(cmd.spawn()?)
}

/// The operator's own process: the child, or the wrapper's descendant running the operator binary.
fn operator_pid(child: u32) -> u32 {
    let is_operator = |pid: &u32| {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        exe.file_name().is_some_and(|n| n == "homelab-operator" || n == "bench_homelab")
    };
    for _ in 0..300 {
        let mut family = vec![child];
        let mut i = 0;
        while let Some(&pid) = family.get(i) {
            if is_operator(&pid) {
                return pid;
            }
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
            family.extend(children.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            i += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// The operator process's resident memory now and at its peak (MiB), and CPU seconds so far.
struct Usage {
    rss: f64,
    peak: f64,
    /// Of `rss`: the heap and stacks (the rest is the mapped binary and libraries).
    anon: f64,
    cpu: f64,
    threads: f64,
}

fn usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let ticks: Vec<f64> = rest.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Usage {
        rss: kib("VmRSS:") / 1024.0,
        peak: kib("VmHWM:") / 1024.0,
        anon: kib("RssAnon:") / 1024.0,
        cpu: (ticks.get(11).unwrap_or(&0.0) + ticks.get(12).unwrap_or(&0.0)) / hz,
        threads: kib("Threads:"),
    }
}

/// Object `i` of a kind, as JSON without apiVersion and kind.
type Make<'a> = dyn Fn(usize) -> Value + 'a;

/// Our kinds as the bench handles them.
struct KindRef {
    kind: &'static str,
    plural: &'static str,
}

const GUESTS: KindRef = KindRef {
    kind: "ProxmoxGuest",
    plural: "proxmoxguests",
};
const RECORDS: KindRef = KindRef {
    kind: "DnsRecord",
    plural: "dnsrecords",
};
const MONITORS: KindRef = KindRef {
    kind: "MonitorTarget",
    plural: "monitortargets",
};
const PROXIES: KindRef = KindRef {
    kind: "ProxyHost",
    plural: "proxyhosts",
};
const POLICIES: KindRef = KindRef {
    kind: "BackupPolicy",
    plural: "backuppolicies",
};

fn resource(k: &KindRef) -> ApiResource {
    let gvk = GroupVersionKind::gvk("homelab.dev", "v1alpha1", k.kind);
    ApiResource::from_gvk_with_plural(&gvk, k.plural)
}

fn api(client: &Client, k: &KindRef) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), NS, &resource(k))
}

/// Ready as `kubectl wait` sees it; for a monitor, its first check said Up.
fn is_ready(k: &KindRef, o: &DynamicObject) -> bool {
    let wanted = if k.kind == MONITORS.kind { "Healthy" } else { "Ready" };
    let generation = o.metadata.generation;
    o.data["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == wanted && c["status"] == "True" && c["observedGeneration"].as_i64() == generation)
    })
}

fn guest(i: usize) -> Value {
    json!({"metadata": {"name": format!("ct{i:04}"), "labels": {"backup": "nightly"}}, "spec": {
        "type": "lxc", "source": {"osTemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"},
        "memoryMiB": 256, "disks": [{"slot": "rootfs", "storage": "local-lvm", "sizeGiB": 4}],
        "network": [{"slot": "net0", "bridge": "vmbr0", "ipv4": "dhcp"}], "deletionPolicy": "Delete"}})
}

fn record(i: usize) -> Value {
    json!({"metadata": {"name": format!("ct{i:04}")}, "spec": {
        "provider": "default", "zone": "home.arpa", "name": format!("ct{i:04}"), "type": "A",
        "target": {"name": format!("ct{i:04}")}}})
}

fn monitor(url: &str) -> impl Fn(usize) -> Value + '_ {
    move |i| {
        json!({"metadata": {"name": format!("ct{i:04}")}, "spec": {
            "http": {"url": format!("{url}/m/{i}")}, "intervalSeconds": 30, "timeoutSeconds": 5}})
    }
}

fn proxy(i: usize) -> Value {
    json!({"metadata": {"name": format!("ct{i:04}")}, "spec": {
        "domains": [format!("ct{i:04}.home.arpa")], "target": {"name": format!("ct{i:04}"), "port": 8080}}})
}

fn policy(_: usize) -> Value {
    json!({"metadata": {"name": "nightly", "annotations": {"homelab.dev/backup-now": "bench"}}, "spec": {
        "selector": {"matchLabels": {"backup": "nightly"}}, "schedule": "02:30", "storage": "pbs1",
        "mode": "snapshot", "retention": {"keepDaily": 7}, "maxAge": "26h",
        "pbs": {"endpoint": "main", "datastore": "store1"}}})
}

/// Whether the process still runs (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
}

/// Create `count` objects of a kind (16 at a time) and wait until every one is Ready.
async fn add_kind(client: &Client, pid: u32, k: &KindRef, count: usize, make: impl Fn(usize) -> Value) -> anyhow::Result<Duration> {
    let api = api(client, k);
    let writer = reflector::store::Writer::new(resource(k));
    let reader = writer.as_reader();
    let watch = tokio::spawn(reflector(writer, watcher(api.clone(), watcher::Config::default())).try_for_each(|_| async { Ok(()) }));
    let start = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let mut obj = make(i);
            obj["apiVersion"] = "homelab.dev/v1alpha1".into();
            obj["kind"] = k.kind.into();
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &serde_json::from_value(obj)?)
                    .await
                    .map_err(anyhow::Error::from)
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    loop {
        let ready = reader.state().iter().filter(|o| is_ready(k, o)).count();
        if ready == count {
            break;
        }
        anyhow::ensure!(
            alive(pid),
            "the operator exited (see operator.log in the bench's temporary directory)"
        );
        anyhow::ensure!(start.elapsed() < LIMIT, "{}: {ready} of {count} Ready after {LIMIT:?}", k.kind);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    watch.abort();
    Ok(start.elapsed())
}

/// API-server requests so far by kind of request (`reads`: GET and LIST;
/// `watches`: WATCH, counted as a watch ends, so about one per watch per
/// five minutes; `writes`) and resource, as the API
/// server counts them (every client: the operator, the bench, the controller
/// manager; in the quiet window only the operator and leader election work).
fn api_requests(plane: &envtest::ControlPlane) -> BTreeMap<(&'static str, String), f64> {
    let (_, text) = plane.kubectl(&["get", "--raw", "/metrics"]);
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let label = |name: &str| {
            let key = format!("{name}=\"");
            line.split_once(&key)
                .and_then(|(_, r)| r.split_once('"'))
                .map(|(v, _)| v.to_string())
        };
        let class = match label("verb").unwrap_or_default().as_str() {
            "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" => "writes",
            "GET" | "LIST" => "reads",
            "WATCH" => "watches",
            _ => continue,
        };
        let Some(resource) = label("resource").filter(|r| !r.is_empty()) else {
            continue; // /metrics, /healthz and the like
        };
        let resource = match label("subresource").filter(|s| !s.is_empty()) {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource,
        };
        let value: f64 = line.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()).unwrap_or(0.0);
        *out.entry((class, resource)).or_default() += value;
    }
    out
}

/// The requests made between two `api_requests`, a table per kind of request.
fn print_api_requests(before: &BTreeMap<(&'static str, String), f64>, after: &BTreeMap<(&'static str, String), f64>) {
    for class in ["writes", "reads", "watches"] {
        println!("\n| API-server {class} by resource | count |\n|---|---|");
        let mut total = 0.0;
        for ((c, resource), n) in after.iter().filter(|((c, _), _)| *c == class) {
            let d = n - before.get(&(*c, resource.clone())).unwrap_or(&0.0);
            if d > 0.0 {
                total += d;
                println!("| {resource} | {d:.0} |");
            }
        }
        println!("| total | {total:.0} |");
    }
}

async fn bench(n: usize, steady: Duration) -> anyhow::Result<()> {
    let plane = envtest::control_plane();
    for args in [
        &["apply", "--server-side", "-f", "crds/"][..],
        &["apply", "--server-side", "-k", "manifests/install"],
        &["wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"],
        &["create", "namespace", NS],
    ] {
        let (ok, out) = plane.kubectl(args);
        anyhow::ensure!(ok, "kubectl {args:?}: {out}");
    }
    let w = world().await?;
    let mut operator = start_operator(plane, &w.config()?, w.dir.path())?;
    let pid = operator_pid(operator.id());
    let client = plane.admin().await;
    let proxies = (n / 10).max(1);
    println!("homelab on a real kube-apiserver: {n} guests, {n} DNS records, {n} monitors (30 s), {proxies} proxy hosts, 1 backup policy");
    println!("\n| kind added | count | time to Ready | operator RSS after | peak RSS so far |\n|---|---|---|---|---|");
    let url = w.checks_url.clone();
    let steps: [(&KindRef, usize, &Make); 5] = [
        (&GUESTS, n, &guest),
        (&RECORDS, n, &record),
        (&MONITORS, n, &monitor(&url)),
        (&PROXIES, proxies, &proxy),
        (&POLICIES, 1, &policy),
    ];
    for (k, count, make) in steps {
        let took = add_kind(&client, pid, k, count, make).await?;
        let u = usage(pid);
        println!(
            "| {} | {count} | {:.1} s | {:.1} MiB | {:.1} MiB |",
            k.kind,
            took.as_secs_f64(),
            u.rss,
            u.peak
        );
    }
    steady_state(plane, &w, pid, steady).await;
    let _ = operator.kill();
    Ok(())
}

/// Nothing changes for `window`: what does the operator still do?
async fn steady_state(plane: &envtest::ControlPlane, w: &World, pid: u32, window: Duration) {
    let (calls0, requests0, u0) = (w.calls(), api_requests(plane), usage(pid));
    // RSS sampled every 10 s: the quiet level and the swing of the periodic resync.
    let mut samples = Vec::new();
    let end = tokio::time::Instant::now() + window;
    while tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(10).min(end - tokio::time::Instant::now())).await;
        samples.push(usage(pid).rss);
    }
    let (calls1, requests1, u1) = (w.calls(), api_requests(plane), usage(pid));
    let secs = window.as_secs_f64();
    println!("\nsteady state, {secs:.0} s with nothing changing:\n\n| outside system | calls |\n|---|---|");
    for (system, after) in &calls1 {
        println!("| {system} | {} |", after - calls0.get(system).unwrap_or(&0));
    }
    print_api_requests(&requests0, &requests1);
    println!(
        "\noperator CPU {:.2} s ({:.1} % of one core); RSS {:.1} MiB at the end ({:.1} MiB heap and stacks), peak {:.1} MiB",
        u1.cpu - u0.cpu,
        100.0 * (u1.cpu - u0.cpu) / secs,
        u1.rss,
        u1.anon,
        u1.peak
    );
    samples.sort_by(f64::total_cmp);
    if let (Some(lo), Some(hi)) = (samples.first(), samples.last()) {
        let median = samples[samples.len() / 2];
        println!(
            "RSS over the window, sampled every 10 s: min {lo:.1}, median {median:.1}, max {hi:.1} MiB; {} threads",
            u1.threads
        );
    }
    print_largest_mappings(pid);
}

/// The operator's mappings holding the most resident memory: heap, binary, stacks.
fn print_largest_mappings(pid: u32) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut maps: Vec<(u64, String)> = Vec::new();
    let mut mapping = String::new();
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let Some(kib) = line.strip_prefix("Rss:") {
            let kib = kib.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0);
            maps.push((kib, mapping.clone()));
        } else if fields.first().is_some_and(|f| f.contains('-') && !f.ends_with(':')) {
            // A mapping's header: address range, permissions, offset, device, inode, path.
            let path = fields.get(5..).map(|p| p.join(" ")).filter(|p| !p.is_empty());
            mapping = format!("{} {}", fields.get(1).unwrap_or(&""), path.as_deref().unwrap_or("[anon]"));
        }
    }
    maps.sort_by_key(|m| std::cmp::Reverse(m.0));
    println!("largest mappings (RSS KiB, permissions, what):");
    for (kib, mapping) in maps.iter().take(8) {
        println!("  {kib:>7} {mapping}");
    }
}
