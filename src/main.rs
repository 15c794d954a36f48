use clap::Parser;

fn main() -> std::process::ExitCode {
    homelab_operator::controller::housekeeping::tune_allocator();
    // One process-wide TLS provider for kube and reqwest (see EXAMPLES.md §0).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = homelab_operator::cli::Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(homelab_operator::cli::main(cli)) {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
