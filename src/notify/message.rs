//! What a notification says, rendered once per channel's shape.

/// Why it is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Something went wrong (a monitor went Down, a backup failed or went stale).
    Failure,
    /// Still wrong after the cooldown.
    Reminder,
    /// Back to normal.
    Recovery,
    /// `notify-test`.
    Test,
    /// A run's summary where nothing failed (an UpdatePolicy run).
    Report,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Failure => "failure",
            Event::Reminder => "reminder",
            Event::Recovery => "recovery",
            Event::Test => "test",
            Event::Report => "report",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Event::Failure => "FAILURE",
            Event::Reminder => "STILL FAILING",
            Event::Recovery => "RECOVERED",
            Event::Test => "TEST",
            Event::Report => "DONE",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub event: Event,
    /// What it is about: `MonitorTarget homelab/web01`, `BackupPolicy homelab/nightly`.
    pub subject: String,
    /// One line: `Down: connection refused`, `backup failed for db01 (VMID 101)`.
    pub summary: String,
    /// More lines (may be empty).
    pub detail: String,
}

impl Message {
    pub fn new(event: Event, subject: impl Into<String>, summary: impl Into<String>) -> Self {
        Self {
            event,
            subject: subject.into(),
            summary: summary.into(),
            detail: String::new(),
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// `[FAILURE] BackupPolicy homelab/nightly`
    pub fn title(&self) -> String {
        format!("[{}] {}", self.event.tag(), self.subject)
    }

    /// Title, summary and detail as plain text, cut to `max` characters (Discord takes 2000).
    pub fn text(&self, max: usize) -> String {
        let mut t = format!("{}\n{}", self.title(), self.summary);
        if !self.detail.is_empty() {
            t.push('\n');
            t.push_str(&self.detail);
        }
        if t.chars().count() > max {
            t = t.chars().take(max.saturating_sub(1)).collect::<String>() + "…";
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_to_the_channel_limit() {
        let m = Message::new(Event::Failure, "MonitorTarget homelab/web", "Down: timed out").with_detail("x".repeat(5000));
        assert!(
            m.text(10_000)
                .starts_with("[FAILURE] MonitorTarget homelab/web\nDown: timed out\nxxx")
        );
        assert_eq!(m.text(2000).chars().count(), 2000);
    }
}
