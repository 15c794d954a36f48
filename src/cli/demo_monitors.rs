//! The demo's monitors: web01's web server, simulated on loopback (it answers
//! while the simulated VM serves), checked by the real scheduler; the VM goes
//! down on the simulator (one message on the simulated Telegram, then the
//! recovery), then it reboots marked busy, as the controller marks a reboot
//! it drives (nothing is sent).

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;

use crate::{
    api::{MonitorState, MonitorTargetSpec, MonitorTargetStatus},
    monitor::{
        probe,
        scheduler::{Key, Scheduler},
    },
    notify::Notifier,
    sim::{notify::NotifySim, pve::PveSim},
    status::StatusSink,
};

/// Prints each state the scheduler writes for one monitor, once per change.
struct Console(Key, std::sync::Mutex<Option<MonitorState>>, std::sync::Mutex<Vec<MonitorState>>);

impl StatusSink<MonitorTargetStatus> for Console {
    fn save<'a>(&'a self, s: &'a MonitorTargetStatus) -> BoxFuture<'a, Result<(), String>> {
        let mut last = self.1.lock().expect("console");
        if *last != Some(s.state) {
            println!(
                "   MonitorTarget {}/{}: {:?} ({})",
                self.0.0,
                self.0.1,
                s.state,
                s.message.as_deref().unwrap_or("no check yet")
            );
            self.2.lock().expect("console").push(s.state);
            *last = Some(s.state);
        }
        Box::pin(async { Ok(()) })
    }
}

async fn until(console: &Console, state: MonitorState, n: usize) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if console.2.lock().expect("console").iter().filter(|s| **s == state).count() >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// True when the sequence went as it should.
pub async fn run(sim: Arc<PveSim>, vmid: u32, dir: &std::path::Path) -> anyhow::Result<bool> {
    println!("\n== monitors: web01's web server checked every second; 2 failures in a row are Down; channel: simulated Telegram");
    let chat = NotifySim::new(Default::default());
    let chat_server = chat.serve().await?;
    let config = crate::config::Config::parse("(demo)", &crate::sim::notify::config_section(&chat, &chat_server, dir)?)?;
    let notifier = Arc::new(Notifier::new(config.notifications, None).map_err(anyhow::Error::msg)?);
    let key: Key = ("homelab".into(), "web01-http".into());
    let console = Arc::new(Console(key.clone(), Default::default(), Default::default()));
    let sched = Scheduler::new(notifier, 8, None);
    tokio::spawn(sched.clone().run());
    let addr = crate::sim::pve::stand_in_web_server(sim.clone(), vmid, std::net::Ipv4Addr::LOCALHOST.into()).await?;
    let url = format!("http://{addr}/");
    let spec: MonitorTargetSpec = serde_yaml_ng::from_str(&format!(
        "target: {{kind: ProxmoxGuest, name: web01}}\nhttp: {{url: \"{url}\"}}\nfailureThreshold: 2\nnotify: {{channels: [telegram]}}\n"
    ))?;
    let mut monitor = probe::build(&spec, None, &Default::default(), Some(1)).map_err(anyhow::Error::msg)?;
    monitor.interval = Duration::from_secs(1);
    sched.upsert(key, monitor, &MonitorTargetStatus::default(), console.clone()).await;
    let mut ok = until(&console, MonitorState::Up, 1).await;
    println!("== web01 goes down on the simulator (not the operator's doing)");
    sim.set_power(vmid, false);
    ok &= until(&console, MonitorState::Down, 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("== web01 is started again");
    sim.set_power(vmid, true);
    ok &= until(&console, MonitorState::Up, 2).await;
    // The recovery message is sent after the Up status is written: wait for it, not for a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while chat.received().len() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let told = chat.received();
    for m in &told {
        println!("   telegram: {}", m.text.replace('\n', " | "));
    }
    // The controller marks a guest busy just before it sends a reboot; the envtest tier proves that path through `run`.
    println!("== web01 reboots for a pending change, marked busy as the controller marks a reboot it drives: maintenance, nothing is sent");
    sched.guest_busy("homelab", "web01", true);
    sim.set_power(vmid, false);
    ok &= until(&console, MonitorState::Maintenance, 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    sim.set_power(vmid, true);
    sched.guest_busy("homelab", "web01", false);
    ok &= until(&console, MonitorState::Up, 3).await;
    let after = chat.received().len();
    println!(
        "   telegram messages: {} for the outage, {} for the reboot",
        told.len(),
        after - told.len()
    );
    Ok(ok && told.len() == 2 && after == told.len())
}
