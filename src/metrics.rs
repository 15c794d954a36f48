//! Prometheus metrics (prefix `homelab_operator_`), bounded labels only:
//! kind, error category, system, operation, outcome. Never an object name.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub system: &'static str,
    pub op: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SystemLabels {
    pub system: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<KindLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<KindLabels, Histogram>,
    pub outside_calls: Family<CallLabels, Counter>,
    pub tasks_in_flight: Family<SystemLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("homelab_operator");
        let reconciles = Family::<KindLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        let outside_calls = Family::<CallLabels, Counter>::default();
        let tasks_in_flight = Family::<SystemLabels, Gauge>::default();
        registry.register("reconciles", "Reconciles run, by kind", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by kind and error category",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration, by kind",
            reconcile_duration.clone(),
        );
        registry.register(
            "outside_calls",
            "Calls to outside systems, by system, operation and outcome",
            outside_calls.clone(),
        );
        registry.register(
            "tasks_in_flight",
            "Long-running outside tasks being polled",
            tasks_in_flight.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            outside_calls,
            tasks_in_flight,
        }
    }
}

impl Metrics {
    pub fn outside_call(&self, system: &'static str, op: &'static str, outcome: &'static str) {
        self.outside_calls.get_or_create(&CallLabels { system, op, outcome }).inc();
    }

    /// Total outside calls to one system (benchmarks and tests read this).
    pub fn outside_call_total(&self, system: &str) -> u64 {
        let text = self.render();
        let prefix = format!("homelab_operator_outside_calls_total{{system=\"{system}\"");
        text.lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("metrics encode into a String");
        out
    }
}
