//! MonitorTarget's engine: checks, the state machine, and the scheduler that
//! runs every monitor's checks outside the reconcile workers.

pub mod checks;
pub mod probe;
pub mod scheduler;
pub mod state;
