//! Records read from one listing of their zone: every DnsRecord of a zone on
//! an endpoint shares a listing per drift period instead of reading its own
//! RRset. Drift is still found and corrected record by record (each compares
//! its RRset in the listing with its spec); our writes amend the listing.

use std::{collections::HashSet, sync::Mutex, time::Duration};

use crate::{
    providers::dns::{DnsApi, Error, RecordSet},
    reconcile::listings::Listings,
};

#[derive(Default)]
pub struct ZoneListings {
    listings: Listings<Vec<RecordSet>>,
    /// Zones whose server refuses us a listing (an RFC 2136 server that does
    /// not allow our key a transfer): their records are read one by one.
    unlisted: Mutex<HashSet<String>>,
}

fn key(endpoint: &str, zone: &str) -> String {
    format!("{endpoint}/{}", zone.to_ascii_lowercase())
}

fn position(sets: &[RecordSet], name: &str, rtype: &str) -> Option<usize> {
    sets.iter()
        .position(|s| s.name.eq_ignore_ascii_case(name) && s.rtype.eq_ignore_ascii_case(rtype))
}

/// Put `found` in place of the RRset `name`/`rtype` (or take it out).
fn replace(sets: &mut Vec<RecordSet>, name: &str, rtype: &str, found: Option<&RecordSet>) {
    match (position(sets, name, rtype), found) {
        (Some(i), Some(set)) => sets[i] = set.clone(),
        (Some(i), None) => {
            sets.remove(i);
        }
        (None, Some(set)) => sets.push(set.clone()),
        (None, None) => {}
    }
}

impl ZoneListings {
    fn is_unlisted(&self, key: &str) -> bool {
        self.unlisted.lock().expect("unlisted zones").contains(key)
    }

    /// The RRset from a listing of `zone` younger than `max_age`.
    async fn get<D: DnsApi>(
        &self,
        dns: &D,
        endpoint: &str,
        zone: &str,
        name: &str,
        rtype: &str,
        max_age: Duration,
    ) -> Result<Option<RecordSet>, Error> {
        let key = key(endpoint, zone);
        if !self.is_unlisted(&key) {
            match self.listings.get(&key, max_age, || dns.list(zone)).await {
                Ok(sets) => return Ok(position(&sets, name, rtype).map(|i| sets[i].clone())),
                Err(e) if e.is_transient() => return Err(e),
                Err(e) if e.is_permission() => {
                    tracing::info!(endpoint, zone, error = %e, "the server refuses a zone listing: reading its records one by one");
                    self.unlisted.lock().expect("unlisted zones").insert(key);
                }
                // The record's own read says what is wrong (a zone the server lacks, …).
                Err(_) => {}
            }
        }
        dns.get(zone, name, rtype).await
    }

    /// What is now known of one RRset, from our write or a fresh read.
    async fn learned(&self, endpoint: &str, zone: &str, name: &str, rtype: &str, found: Option<&RecordSet>) {
        self.listings
            .amend(&key(endpoint, zone), |sets| replace(sets, name, rtype, found))
            .await;
    }
}

/// A DNS endpoint whose reads come from its zones' shared listings: what the
/// reconciler of one record talks to. `fresh` reads the record itself (a new
/// or changed spec acts on what the server has now, not on a listing).
pub struct Listed<'a, D> {
    pub dns: &'a D,
    pub zones: &'a ZoneListings,
    pub endpoint: &'a str,
    pub max_age: Duration,
    pub fresh: bool,
}

impl<D: DnsApi> DnsApi for Listed<'_, D> {
    async fn get(&self, zone: &str, name: &str, rtype: &str) -> Result<Option<RecordSet>, Error> {
        if !self.fresh {
            return self.zones.get(self.dns, self.endpoint, zone, name, rtype, self.max_age).await;
        }
        let found = self.dns.get(zone, name, rtype).await?;
        self.zones.learned(self.endpoint, zone, name, rtype, found.as_ref()).await;
        Ok(found)
    }

    async fn list(&self, zone: &str) -> Result<Vec<RecordSet>, Error> {
        self.dns.list(zone).await
    }

    async fn put(&self, zone: &str, set: &RecordSet) -> Result<(), Error> {
        self.dns.put(zone, set).await?;
        self.zones.learned(self.endpoint, zone, &set.name, &set.rtype, Some(set)).await;
        Ok(())
    }

    async fn delete(&self, zone: &str, name: &str, rtype: &str) -> Result<(), Error> {
        self.dns.delete(zone, name, rtype).await?;
        self.zones.learned(self.endpoint, zone, name, rtype, None).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A server that refuses zone transfers (as BIND does without `allow-transfer` for our key).
    #[derive(Default)]
    struct NoTransfer {
        lists: AtomicU32,
        gets: AtomicU32,
    }

    impl DnsApi for NoTransfer {
        async fn get(&self, _zone: &str, name: &str, rtype: &str) -> Result<Option<RecordSet>, Error> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            Ok(Some(RecordSet {
                name: name.into(),
                rtype: rtype.into(),
                ttl: 300,
                values: vec!["10.0.0.1".into()],
                mark: None,
            }))
        }
        async fn list(&self, _zone: &str) -> Result<Vec<RecordSet>, Error> {
            self.lists.fetch_add(1, Ordering::SeqCst);
            Err(Error::Rcode {
                server: "bind".into(),
                op: "transfer",
                rcode: "REFUSED".into(),
                message: None,
            })
        }
        async fn put(&self, _zone: &str, _set: &RecordSet) -> Result<(), Error> {
            Ok(())
        }
        async fn delete(&self, _zone: &str, _name: &str, _rtype: &str) -> Result<(), Error> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_zone_the_server_will_not_list_is_read_record_by_record() {
        let (dns, zones) = (NoTransfer::default(), ZoneListings::default());
        let listed = Listed {
            dns: &dns,
            zones: &zones,
            endpoint: "bind",
            max_age: Duration::from_secs(300),
            fresh: false,
        };
        for name in ["a.home.arpa.", "b.home.arpa.", "c.home.arpa."] {
            let found = listed.get("home.arpa.", name, "A").await.unwrap().unwrap();
            assert_eq!(found.values, ["10.0.0.1"]);
        }
        assert_eq!(dns.lists.load(Ordering::SeqCst), 1, "asked for a transfer once");
        assert_eq!(dns.gets.load(Ordering::SeqCst), 3, "then each record read itself");
    }
}
