//! When to ask a QEMU guest agent for addresses: not before the guest has had
//! time to boot, and with a growing pause while the agent does not answer
//! (a booting guest is not an error).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// First pause after "agent is not running"; doubles up to `MAX_PAUSE`.
const FIRST_PAUSE: Duration = Duration::from_secs(5);
const MAX_PAUSE: Duration = Duration::from_secs(120);

#[derive(Default)]
pub struct AgentClock {
    /// Per guest UID: not before this instant, and the pause that led to it.
    paused: Mutex<HashMap<String, (Instant, Duration)>>,
}

impl AgentClock {
    /// How long until the agent of `uid` is worth asking (`ZERO`: now), given
    /// how long the guest has been up and how long its OS takes to start the agent.
    pub fn wait(&self, uid: &str, uptime: Duration, grace: Duration) -> Duration {
        let boot = grace.saturating_sub(uptime);
        let paused = self
            .paused
            .lock()
            .expect("agent lock")
            .get(uid)
            .map_or(Duration::ZERO, |(until, _)| until.saturating_duration_since(Instant::now()));
        boot.max(paused)
    }

    /// The agent did not answer (or had no address yet): pause before the
    /// next question; returns the pause.
    pub fn pause(&self, uid: &str) -> Duration {
        let mut paused = self.paused.lock().expect("agent lock");
        let pause = paused.get(uid).map_or(FIRST_PAUSE, |(_, p)| (*p * 2).min(MAX_PAUSE));
        paused.insert(uid.to_string(), (Instant::now() + pause, pause));
        pause
    }

    pub fn answered(&self, uid: &str) {
        self.paused.lock().expect("agent lock").remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_out_the_boot_grace_then_backs_off_while_the_agent_is_silent() {
        let c = AgentClock::default();
        let grace = Duration::from_secs(30);
        assert_eq!(c.wait("a", Duration::from_secs(12), grace), Duration::from_secs(18));
        assert_eq!(c.wait("a", Duration::from_secs(45), grace), Duration::ZERO);
        assert_eq!(c.pause("a"), Duration::from_secs(5));
        assert_eq!(c.pause("a"), Duration::from_secs(10));
        assert!(c.wait("a", Duration::from_secs(45), grace) > Duration::from_secs(9));
        for _ in 0..10 {
            c.pause("a");
        }
        assert_eq!(c.pause("a"), MAX_PAUSE);
        assert_eq!(c.wait("b", Duration::from_secs(45), grace), Duration::ZERO, "per guest");
        c.answered("a");
        assert_eq!(c.wait("a", Duration::from_secs(45), grace), Duration::ZERO);
    }
}
