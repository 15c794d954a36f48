//! Benchmark: N HTTP monitors at one interval against a local server for a
//! while, through the real scheduler (status writes counted by a recording
//! publisher, no apiserver).
//!
//!     cargo run --release --example bench_monitors -- [MONITORS] [INTERVAL_S] [SECONDS]
//!
//! Reports the process's CPU share, peak RSS, status writes per minute and
//! check-start jitter (each monitor's gaps between checks, seen by the server).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, extract::Path, routing::get};
use futures::future::BoxFuture;
use homelab_operator::{
    api::{MonitorTargetSpec, MonitorTargetStatus},
    monitor::{probe, scheduler::Scheduler},
    notify::Notifier,
    status::StatusSink,
};

#[derive(Default)]
struct Count(AtomicU64);

impl StatusSink<MonitorTargetStatus> for Count {
    fn save<'a>(&'a self, _status: &'a MonitorTargetStatus) -> BoxFuture<'a, Result<(), String>> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

fn cpu_seconds() -> f64 {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given.
    let u = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr());
        u.assume_init()
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (n, interval, secs) = (
        *args.first().unwrap_or(&1000),
        *args.get(1).unwrap_or(&30),
        *args.get(2).unwrap_or(&300),
    );
    let arrivals: Arc<Mutex<HashMap<u64, Vec<Instant>>>> = Default::default();
    let seen = arrivals.clone();
    let app = Router::new().route(
        "/m/{i}",
        get(move |Path(i): Path<u64>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().entry(i).or_default().push(Instant::now());
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let writes = Arc::new(Count::default());
    let sched = Scheduler::new(
        Arc::new(Notifier::new(Default::default(), None).map_err(anyhow::Error::msg)?),
        32,
        None,
    );
    tokio::spawn(sched.clone().run());
    for i in 0..n {
        let spec: MonitorTargetSpec =
            serde_yaml_ng::from_str(&format!("http: {{url: \"http://{addr}/m/{i}\"}}\nintervalSeconds: {interval}\n"))?;
        let config = probe::build(&spec, None, &Default::default(), Some(1)).map_err(anyhow::Error::msg)?;
        sched
            .upsert(
                ("bench".into(), format!("m{i:04}")),
                config,
                &MonitorTargetStatus::default(),
                writes.clone(),
            )
            .await;
    }
    println!("{n} HTTP monitors every {interval}s against a local server, for {secs}s");
    let (cpu0, wall0, writes0) = (cpu_seconds(), Instant::now(), writes.0.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let cpu = cpu_seconds() - cpu0;
    let wall = wall0.elapsed().as_secs_f64();
    let written = writes.0.load(Ordering::Relaxed) - writes0;
    let arrivals = arrivals.lock().unwrap();
    let mut gaps: Vec<f64> = arrivals
        .values()
        .flat_map(|t| t.windows(2).map(|w| (w[1] - w[0]).as_secs_f64() - interval as f64))
        .map(f64::abs)
        .collect();
    gaps.sort_by(f64::total_cmp);
    let pct = |p: f64| gaps.get(((gaps.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(f64::NAN) * 1000.0;
    let checks: usize = arrivals.values().map(Vec::len).sum();
    println!("checks:                    {checks} ({:.1}/s)", checks as f64 / wall);
    println!("CPU share (operator+server): {:.1}% of one core", cpu / wall * 100.0);
    println!(
        "status writes:             {written} in {wall:.0} s: {} first reports, {} after ({:.1} per minute)",
        written.min(n),
        written.saturating_sub(n),
        written.saturating_sub(n) as f64 / wall * 60.0
    );
    println!(
        "check-start jitter:        median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    println!("peak RSS (operator+server): {:.1} MiB", homelab_operator::metrics::peak_rss_mib());
    Ok(())
}
