//! Cron schedules as a Kubernetes CronJob reads them (five fields or an `@`
//! alias; UTC), for restore tests and monitors' maintenance windows.

/// `field` names the spec field in the error.
pub fn parse(field: &str, s: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .build()
        .parse(s)
        .map_err(|e| format!("{field} {s:?}: {e}"))
}
