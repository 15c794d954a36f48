//! Kubernetes glue (placeholder until the controller lands).
pub async fn run(_config: crate::config::Config, _args: crate::cli::RunArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
