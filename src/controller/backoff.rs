//! Per-object exponential backoff with jitter for transient errors, reset on success.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use rand::Rng;

pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Delay before the next try of this object; grows with each failure.
    pub fn next(&self, key: &str) -> Duration {
        let mut f = self.failures.lock().expect("backoff lock");
        let n = f.entry(key.to_string()).or_default();
        *n = n.saturating_add(1);
        let exp = self
            .base
            .saturating_mul(2u32.saturating_pow(n.saturating_sub(1).min(16)))
            .min(self.max);
        // Full jitter in the upper half keeps many failing objects from retrying in lockstep.
        let half = exp / 2;
        half + Duration::from_millis(rand::rng().random_range(0..=half.as_millis().max(1) as u64))
    }

    pub fn reset(&self, key: &str) {
        self.failures.lock().expect("backoff lock").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_resets() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let first = b.next("a");
        assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1));
        for _ in 0..20 {
            assert!(b.next("a") <= Duration::from_secs(60));
        }
        assert!(b.next("a") >= Duration::from_secs(30));
        b.reset("a");
        assert!(b.next("a") <= Duration::from_secs(1));
    }
}
