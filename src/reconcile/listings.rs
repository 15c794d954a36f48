//! One listing serves many objects: a DNS zone's RRsets for every record in
//! it, an NPM endpoint's hosts for every ProxyHost, a datastore's snapshots
//! for every BackupPolicy, a cluster's guests for every ProxmoxGuest. Each
//! key is fetched at most once per `max_age`, concurrent askers wait for the
//! one fetch in flight, and our own writes amend the kept listing so the next
//! reader sees them without another fetch.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

// tokio's clock, so tests with paused time see listings age.
use tokio::time::Instant;

/// How old a shared listing may be when an object resyncs from it: the
/// resync interval, so each key is listed about once per interval.
/// `drift_period` (`--drift-interval`) shortens it.
pub fn max_age(drift_period: Duration) -> Duration {
    drift_period.min(super::RESYNC)
}

type Slot<T> = Arc<tokio::sync::Mutex<Option<(Instant, Arc<T>)>>>;

pub struct Listings<T> {
    slots: Mutex<HashMap<String, Slot<T>>>,
}

impl<T> Default for Listings<T> {
    fn default() -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> Listings<T> {
    fn slot(&self, key: &str) -> Slot<T> {
        self.slots
            .lock()
            .expect("listings lock")
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    /// The listing of `key`, fetched unless one younger than `max_age` is kept.
    pub async fn get<E, F>(&self, key: &str, max_age: Duration, fetch: impl FnOnce() -> F) -> Result<Arc<T>, E>
    where
        F: Future<Output = Result<T, E>>,
    {
        let slot = self.slot(key);
        let mut kept = slot.lock().await;
        if let Some((at, data)) = kept.as_ref()
            && at.elapsed() < max_age
        {
            return Ok(data.clone());
        }
        let data = Arc::new(fetch().await?);
        *kept = Some((Instant::now(), data.clone()));
        Ok(data)
    }

    /// Apply our own write to the kept listing of `key`, if one is kept (its age stays).
    pub async fn amend(&self, key: &str, change: impl FnOnce(&mut T)) {
        let slot = self.slot(key);
        let mut kept = slot.lock().await;
        if let Some((_, data)) = kept.as_mut() {
            change(Arc::make_mut(data));
        }
    }

    /// How old the kept listing of `key` is (zero when none is kept).
    pub async fn age(&self, key: &str) -> Duration {
        self.slot(key).lock().await.as_ref().map_or(Duration::ZERO, |(at, _)| at.elapsed())
    }

    /// Drop the kept listing of `key`: the next reader fetches.
    pub async fn forget(&self, key: &str) {
        *self.slot(key).lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_fetch_serves_every_reader_until_it_is_too_old() {
        let listings: Arc<Listings<Vec<u32>>> = Default::default();
        let fetches = Arc::new(AtomicU32::new(0));
        let read = |max_age| {
            let (listings, fetches) = (listings.clone(), fetches.clone());
            async move {
                listings
                    .get("zone", max_age, || async {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, ()>(vec![1])
                    })
                    .await
            }
        };
        let readers: Vec<_> = (0..50).map(|_| tokio::spawn(read(Duration::from_secs(60)))).collect();
        for r in readers {
            assert_eq!(*r.await.unwrap().unwrap(), vec![1]);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "concurrent readers share the fetch in flight");
        listings.amend("zone", |v| v.push(2)).await;
        assert_eq!(*read(Duration::from_secs(60)).await.unwrap(), vec![1, 2], "our write is seen");
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(*read(Duration::from_secs(60)).await.unwrap(), vec![1]);
        assert_eq!(fetches.load(Ordering::SeqCst), 2, "a listing older than max_age is fetched again");
        listings.forget("zone").await;
        listings.amend("zone", |v| v.push(3)).await;
        read(Duration::from_secs(60)).await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 3, "a forgotten listing is fetched again");
    }

    #[tokio::test]
    async fn a_failed_fetch_keeps_nothing() {
        let listings: Listings<Vec<u32>> = Default::default();
        let failed = listings
            .get("zone", Duration::from_secs(60), || async { Err::<Vec<u32>, _>("refused") })
            .await;
        assert_eq!(failed.unwrap_err(), "refused");
        let ok = listings
            .get("zone", Duration::from_secs(60), || async { Ok::<_, &str>(vec![7]) })
            .await;
        assert_eq!(*ok.unwrap(), vec![7]);
    }
}
