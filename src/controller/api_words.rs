//! Kubernetes API errors in the API server's own words, for conditions,
//! Events and logs a person reads.

/// `message (Reason)` as the API server worded it, or the transport's words
/// when no server answered.
pub fn kube_words(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => format!("{} ({})", s.message, s.reason),
        other => other.to_string(),
    }
}
