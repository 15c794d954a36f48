//! The spec an RRset says, for `export`. Pure: planning it against the same
//! RRset changes nothing but the ownership mark.

use crate::{
    api::{DeletionPolicy, DnsRecordSpec, RecordPolicy, RecordType},
    providers::dns::{RecordSet, absolute},
};

const TYPES: [RecordType; 9] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::CNAME,
    RecordType::TXT,
    RecordType::PTR,
    RecordType::MX,
    RecordType::SRV,
    RecordType::NS,
    RecordType::CAA,
];

/// The spec of an RRset of `zone`, or why it is not exported (the zone's own
/// SOA and NS records, types the spec has no name for).
pub fn spec_of(provider: &str, zone: &str, set: &RecordSet) -> Result<DnsRecordSpec, String> {
    let zone = absolute(zone);
    let name = absolute(&set.name);
    let apex = name.eq_ignore_ascii_case(&zone);
    let record_type = TYPES
        .into_iter()
        .find(|t| t.as_str().eq_ignore_ascii_case(&set.rtype))
        .ok_or_else(|| format!("{name} {}: not a record type the spec has", set.rtype))?;
    if apex && (set.rtype.eq_ignore_ascii_case("NS") || set.rtype.eq_ignore_ascii_case("SOA")) {
        return Err(format!("{name} {}: the zone's own record", set.rtype));
    }
    let relative = match apex {
        true => "@".to_string(),
        false => name
            .strip_suffix(&format!(".{zone}"))
            .ok_or_else(|| format!("{name}: not in zone {zone}"))?
            .to_ascii_lowercase(),
    };
    Ok(DnsRecordSpec {
        provider: provider.to_string(),
        zone: zone.trim_end_matches('.').to_string(),
        name: relative,
        record_type,
        ttl: set.ttl,
        values: set.values.clone(),
        target: None,
        policy: RecordPolicy::Sync,
        deletion_policy: DeletionPolicy::Retain,
        adopt: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::dns_record::plan::{DnsAction, normalize, plan};

    fn set(name: &str, rtype: &str, values: &[&str]) -> RecordSet {
        RecordSet {
            name: name.into(),
            rtype: rtype.into(),
            ttl: 3600,
            values: values.iter().map(|v| v.to_string()).collect(),
            mark: None,
        }
    }

    #[test]
    fn records_export_to_specs_that_only_add_the_mark() {
        for s in [
            set("nas.home.arpa.", "A", &["10.0.0.5"]),
            set("home.arpa.", "MX", &["10 mail.home.arpa."]),
            set("www.home.arpa.", "CNAME", &["nas.home.arpa."]),
            set("home.arpa.", "TXT", &["\"v=spf1 -all\""]),
        ] {
            let spec = spec_of("default", "home.arpa", &s).unwrap();
            let values = normalize(spec.record_type, &spec.values).unwrap();
            let want = RecordSet {
                name: s.name.clone(),
                rtype: s.rtype.clone(),
                ttl: spec.ttl,
                values,
                mark: Some("m1".into()),
            };
            let mut observed = s.clone();
            observed.values = normalize(spec.record_type, &s.values).unwrap();
            let p = plan(&want, Some(&observed), spec.adopt, spec.policy);
            assert!(
                p.marks_only && matches!(p.actions.as_slice(), [DnsAction::Put { why: "Adopted", .. }]),
                "{s:?}: {p:?}"
            );
        }
        assert_eq!(
            spec_of("default", "home.arpa", &set("www.home.arpa.", "A", &["1.2.3.4"]))
                .unwrap()
                .name,
            "www"
        );
        assert!(spec_of("default", "home.arpa", &set("home.arpa.", "NS", &["ns1.home.arpa."])).is_err());
        assert!(spec_of("default", "home.arpa", &set("home.arpa.", "SOA", &["x"])).is_err());
    }
}
