//! `plan` and `apply` for MonitorTargets: the target resolved from the guests
//! and proxy hosts of the same files; `plan` says what would be checked,
//! `apply` runs each check once and prints the result (notifications are the
//! controller's: a one-shot run has no history to alert on).

use crate::{
    api::{MonitorTarget, ProxmoxGuestStatus, ProxyHost},
    cli::oneshot::render_table,
    monitor::{checks::CheckResult, probe, scheduler::MonitorConfig},
};

pub fn monitor_name(m: &MonitorTarget) -> String {
    format!(
        "{}/{}",
        m.metadata.namespace.as_deref().unwrap_or("default"),
        m.metadata.name.as_deref().unwrap_or("")
    )
}

/// The monitor's probe; `guests` are `namespace/name` → status (as `apply` just produced).
pub fn build(
    m: &MonitorTarget,
    guests: &std::collections::BTreeMap<String, ProxmoxGuestStatus>,
    proxies: &[ProxyHost],
) -> Result<MonitorConfig, String> {
    if !probe::secret_refs(&m.spec).is_empty() {
        return Err("refers to Secrets, which only the controller reads".into());
    }
    let ns = m.metadata.namespace.as_deref().unwrap_or("default");
    let host = match &m.spec.target {
        None => None,
        Some(t) if t.kind == "ProxyHost" => proxies
            .iter()
            .find(|p| p.metadata.namespace.as_deref() == Some(ns) && p.metadata.name.as_deref() == Some(&t.name))
            .and_then(|p| p.spec.domains.first().cloned())
            .map(Some)
            .ok_or_else(|| format!("target ProxyHost {} is not in these files", t.name))?,
        Some(t) => {
            let s = guests.get(&format!("{ns}/{}", t.name)).ok_or_else(|| {
                format!(
                    "target ProxmoxGuest {} has no address here (not in these files, or not created yet)",
                    t.name
                )
            })?;
            Some(
                s.addresses(t.nic.as_deref())
                    .into_iter()
                    .next()
                    .ok_or_else(|| format!("target ProxmoxGuest {} has no address", t.name))?,
            )
        }
    };
    probe::build(&m.spec, host.as_deref(), &Default::default(), m.metadata.generation)
}

pub struct Checked {
    pub name: String,
    pub outcome: Result<(MonitorConfig, CheckResult), String>,
}

/// Run the check once.
pub async fn check(m: &MonitorTarget, guests: &std::collections::BTreeMap<String, ProxmoxGuestStatus>, proxies: &[ProxyHost]) -> Checked {
    let outcome = match build(m, guests, proxies) {
        Ok(c) => {
            let r = c.probe.run(c.timeout).await;
            Ok((c, r))
        }
        Err(e) => Err(e),
    };
    Checked {
        name: monitor_name(m),
        outcome,
    }
}

/// NAME, TYPE, TARGET, RESULT, LATENCY, MESSAGE.
pub fn table(rows: &[Checked]) -> String {
    let mut out = vec![["NAME", "TYPE", "TARGET", "RESULT", "LATENCY", "MESSAGE"].map(String::from)];
    for r in rows {
        out.push(match &r.outcome {
            Ok((c, res)) => [
                r.name.clone(),
                c.check_type.to_string(),
                c.target.clone(),
                if res.ok { "Up" } else { "Down" }.to_string(),
                format!("{}ms", res.latency.as_millis()),
                res.message.clone(),
            ],
            Err(e) => [r.name.clone(), "-".into(), "-".into(), "error".into(), "-".into(), e.clone()],
        });
    }
    render_table(&out)
}
