//! Once a minute while the controllers run: memory nobody uses goes back.

use std::{sync::Arc, time::Duration};

use super::context::Context;

pub async fn every_minute(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        ctx.recorder.forget_if_quiet();
        trim_heap();
    }
}

/// glibc's malloc keeps freed memory in its arenas for reuse: after a burst
/// (the first listing of a thousand objects, a backup run over every guest)
/// the process stays that large although nothing uses the memory.
/// `malloc_trim` hands the free pages back.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the kernel; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
