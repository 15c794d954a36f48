//! What a run amounts to, in status and in its one notification. Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::{
    api::{self, ConditionState, MemberRun, UpdateMember, UpdatePolicyStatus, UpdateResult, UpdateStep},
    notify::{Event, Message},
};

/// At most this many guests are named in one condition message.
const NAMED: usize = 5;

fn this_run<'a>(m: &'a UpdateMember, run: &str) -> Option<&'a MemberRun> {
    m.last_run.as_ref().filter(|r| r.run == run)
}

/// Members of run `run` that ended with `result`.
fn with_result<'a>(status: &'a UpdatePolicyStatus, run: &'a str, result: UpdateResult) -> impl Iterator<Item = &'a UpdateMember> + 'a {
    status
        .members
        .iter()
        .filter(move |m| this_run(m, run).is_some_and(|r| r.result == Some(result)))
}

/// `2 updated, 1 rolled back, 1 skipped`.
pub fn summary(status: &UpdatePolicyStatus, run: &str) -> String {
    let words = [
        (UpdateResult::Updated, "updated"),
        (UpdateResult::RolledBack, "rolled back"),
        (UpdateResult::Failed, "failed"),
        (UpdateResult::Skipped, "skipped"),
        (UpdateResult::Checked, "checked"),
        (UpdateResult::UpToDate, "up to date"),
    ];
    let parts: Vec<String> = words
        .iter()
        .filter_map(|(r, w)| match with_result(status, run, *r).count() {
            0 => None,
            n => Some(format!("{n} {w}")),
        })
        .collect();
    if parts.is_empty() { "no members".into() } else { parts.join(", ") }
}

/// One guest's failure as a person reads it: the guest, the step, the output's last lines.
pub fn failure_line(m: &UpdateMember) -> String {
    let Some(r) = &m.last_run else { return m.name.clone() };
    let tail: Vec<&str> = r.output.iter().rev().take(3).rev().map(String::as_str).collect();
    let mut line = format!("{}: {}", m.name, r.reason.as_deref().unwrap_or("failed"));
    if !tail.is_empty() {
        line.push_str(&format!(" (output: {})", tail.join(" / ")));
    }
    line
}

/// Names, bounded: the first few, then how many more.
fn bounded(lines: Vec<String>) -> String {
    let more = lines.len().saturating_sub(NAMED);
    let mut text = lines.into_iter().take(NAMED).collect::<Vec<_>>().join("; ");
    if more > 0 {
        text.push_str(&format!("; and {more} more (see status.members)"));
    }
    text
}

/// Whether any member is still going through run `run`.
pub fn in_flight(status: &UpdatePolicyStatus, run: &str) -> bool {
    status
        .members
        .iter()
        .any(|m| this_run(m, run).is_some_and(|r| r.step != UpdateStep::Done))
}

/// Ready, Reconciling, Degraded, Stalled from the run in flight or the last one.
pub fn set_conditions(status: &mut UpdatePolicyStatus, generation: Option<i64>, config_error: Option<&str>) {
    let run = status.run.clone();
    let running = run.as_ref().is_some_and(|r| r.finished.is_none());
    let failed: Vec<String> = run.as_ref().map_or(vec![], |r| {
        [UpdateResult::RolledBack, UpdateResult::Failed]
            .into_iter()
            .flat_map(|res| with_result(status, &r.id, res).map(failure_line).collect::<Vec<_>>())
            .collect()
    });
    let (degraded, degraded_msg) = match failed.is_empty() {
        true => (false, String::new()),
        false => (true, bounded(failed)),
    };
    let (ready_reason, ready_msg) = match (config_error, running, &run) {
        (Some(e), ..) => ("InvalidSpec", e.to_string()),
        (None, true, Some(r)) => ("RunInProgress", format!("run {} in progress", r.id)),
        (None, _, Some(_)) => ("LastRun", status.last_result.clone().unwrap_or_default()),
        (None, _, None) => ("NoRunYet", next_run_words(status)),
    };
    let ready = config_error.is_none() && !running && !degraded;
    let wanted = [
        ConditionState::new(
            api::CONDITION_READY,
            ready,
            if degraded { "UpdateFailed" } else { ready_reason },
            ready_msg.clone(),
        ),
        ConditionState::new(
            api::CONDITION_RECONCILING,
            running,
            ready_reason,
            if running { ready_msg } else { String::new() },
        ),
        ConditionState::new(
            api::CONDITION_DEGRADED,
            degraded,
            if degraded { "UpdateFailed" } else { "AsExpected" },
            degraded_msg,
        ),
        ConditionState::new(
            api::CONDITION_STALLED,
            config_error.is_some(),
            if config_error.is_some() { "InvalidSpec" } else { "AsExpected" },
            config_error.unwrap_or_default(),
        ),
    ];
    status.conditions = api::merge_conditions(&status.conditions, &wanted, generation, Time(jiff::Timestamp::now()));
}

fn next_run_words(status: &UpdatePolicyStatus) -> String {
    match &status.next_run {
        Some(t) => format!("no run yet; the first starts at {t}"),
        None => "no run yet; no schedule: runs start on request (annotation homelab.dev/update-now)".into(),
    }
}

/// The run's one message: what was updated, rolled back or skipped.
pub fn notification(status: &UpdatePolicyStatus, subject: &str, run: &str) -> Message {
    let bad: Vec<String> = [UpdateResult::RolledBack, UpdateResult::Failed]
        .into_iter()
        .flat_map(|r| with_result(status, run, r).map(failure_line).collect::<Vec<_>>())
        .collect();
    let names = |r: UpdateResult| with_result(status, run, r).map(|m| m.name.clone()).collect::<Vec<_>>();
    let mut detail: Vec<String> = vec![];
    for (label, list) in [("updated", names(UpdateResult::Updated)), ("skipped", names(UpdateResult::Skipped))] {
        if !list.is_empty() {
            detail.push(format!("{label}: {}", list.join(", ")));
        }
    }
    let event = if bad.is_empty() { Event::Report } else { Event::Failure };
    detail.extend(bad);
    Message::new(event, subject, format!("run {run}: {}", summary(status, run))).with_detail(detail.join("\n"))
}

/// Total pending over the members (the printer column).
pub fn pending(status: &UpdatePolicyStatus) -> u32 {
    status.members.iter().map(|m| m.pending).sum()
}
