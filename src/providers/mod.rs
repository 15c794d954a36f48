//! One module per outside system, each behind a small trait so reconcilers never see HTTP.
pub mod dns;
pub mod http;
pub mod npm;
pub mod pbs;
pub mod pve;
