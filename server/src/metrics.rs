//! `/metrics`: the server's counts and totals in the OpenMetrics text format, which
//! Prometheus scrapes.
//!
//! Rendered at each scrape from what the core already keeps (`Server::stats`, the core's
//! `Counters`, read in one request to the core task), so serving metrics adds nothing to the
//! path a frame takes: the core bumps plain integers and this module turns a snapshot of
//! them into text. A registry is built per scrape for that reason: the values are not live
//! metric objects that the hot path would update.

use breeze_core::server::{Counters, Stats};
use breeze_store::{BUCKETS_MICROS, CommitSnapshot};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// The `Content-Type` of what `render` returns.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

/// The store's commit latencies as a Prometheus histogram, from a snapshot of the store's
/// own buckets (prometheus-client's `Histogram` only takes observations one by one, and the
/// store counts them on its writer thread without it).
#[derive(Debug)]
struct CommitLatency(CommitSnapshot);

impl TypedMetric for CommitLatency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for CommitLatency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let bounds = BUCKETS_MICROS
            .iter()
            .map(|&micros| micros as f64 / 1e6)
            .chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(self.0.buckets.iter().copied()).collect();
        encoder.encode_histogram::<NoLabelSet>(
            self.0.sum_micros as f64 / 1e6,
            self.0.count,
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The exposition of one snapshot; `commits` when the store keeps commit figures.
pub fn render(stats: &Stats, counters: &Counters, commits: Option<&CommitSnapshot>) -> String {
    let mut registry = Registry::with_prefix("breeze");
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: usize| {
        let g: Gauge = Gauge::default();
        g.set(i64::try_from(value).unwrap_or(i64::MAX));
        registry.register(name, help, g);
    };
    let counter = |registry: &mut Registry, name: &str, help: &str, value: u64| {
        let c: Counter = Counter::default();
        c.inc_by(value);
        registry.register(name, help, c);
    };
    gauge(
        &mut registry,
        "connections",
        "Open connections, logged in or not",
        stats.connections,
    );
    gauge(
        &mut registry,
        "sessions",
        "Logged-in connections (agents included)",
        stats.sessions,
    );
    gauge(
        &mut registry,
        "online_users",
        "Users shown online (in the offline grace included)",
        stats.online_users,
    );
    gauge(
        &mut registry,
        "registered_users",
        "Accounts this server knows",
        stats.registered_users,
    );
    gauge(
        &mut registry,
        "storage_in_flight",
        "Storage requests handed to the store and not answered yet (its queue depth)",
        stats.pending_storage,
    );
    gauge(
        &mut registry,
        "cluster_fenced",
        "1 while this cluster node has fenced itself off (lost the bus; lets nobody in)",
        usize::from(stats.fenced),
    );
    counter(
        &mut registry,
        "frames_received",
        "Frames received from clients",
        counters.frames_in,
    );
    counter(
        &mut registry,
        "pings_answered_in_place",
        "Of the frames received, the Pings their connection answered without the core",
        counters.pings_in_place,
    );
    counter(
        &mut registry,
        "received_bytes",
        "Payload bytes of the frames received",
        counters.bytes_in,
    );
    counter(
        &mut registry,
        "sent_bytes",
        "Payload bytes of the frames sent",
        counters.bytes_out,
    );
    let by_kind = Family::<Labels, Counter>::default();
    for (kind, n) in counters.frames_out_by_kind() {
        by_kind
            .get_or_create(&vec![("kind", kind.to_owned())])
            .inc_by(n);
    }
    registry.register(
        "frames_sent",
        "Frames sent to clients, by message kind (PresenceDiff: presence changes told)",
        by_kind,
    );
    counter(
        &mut registry,
        "messages_stored",
        "Messages confirmed stored to their senders (Sent)",
        counters.sent("Sent"),
    );
    counter(
        &mut registry,
        "messages_delivered",
        "Messages delivered to a recipient's session, live or from the mailbox (Deliver)",
        counters.sent("Deliver"),
    );
    let logins = Family::<Labels, Counter>::default();
    for (result, n) in [
        ("ok", counters.logins),
        ("agent", counters.agent_logins),
        ("failed", counters.logins_failed),
        ("throttled", counters.logins_throttled),
    ] {
        logins
            .get_or_create(&vec![("result", result.to_owned())])
            .inc_by(n);
    }
    registry.register("logins", "Login attempts by outcome", logins);
    counter(
        &mut registry,
        "registrations",
        "Accounts registered by clients",
        counters.registrations,
    );
    let closes = Family::<Labels, Counter>::default();
    let mut reasons = counters.closes.clone();
    reasons.sort_by_key(|(reason, _)| format!("{reason:?}"));
    for (reason, n) in reasons {
        closes
            .get_or_create(&vec![("reason", format!("{reason:?}"))])
            .inc_by(n);
    }
    registry.register(
        "closes",
        "Connections the server closed, by the reason it gave (HeartbeatTimeout: silent peers)",
        closes,
    );
    counter(
        &mut registry,
        "connections_lost",
        "Connections the client closed or the network lost",
        counters.connections_lost,
    );
    if let Some(commits) = commits {
        registry.register_with_unit(
            "storage_commit",
            "How long the store's commits took (each carries a batch of requests; with \
             PostgreSQL, the whole transaction, its statements sent in one flight with the COMMIT)",
            prometheus_client::registry::Unit::Seconds,
            CommitLatency(commits.clone()),
        );
        counter(
            &mut registry,
            "storage_commit_failures",
            "Batches the store could not commit (their requests were answered StorageFailed)",
            commits.failures,
        );
    }
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use breeze_core::message::CloseReason;

    #[test]
    fn a_snapshot_renders_as_openmetrics_text() {
        let stats = Stats {
            connections: 3,
            sessions: 2,
            online_users: 2,
            registered_users: 5,
            pending_storage: 1,
            fenced: false,
        };
        let mut counters = Counters {
            logins: 4,
            logins_failed: 1,
            pings_in_place: 5,
            closes: vec![(CloseReason::HeartbeatTimeout, 3)],
            ..Counters::default()
        };
        counters.frames_out[4] = 7;
        counters.frames_out[9] = 2;
        let commits = CommitSnapshot {
            buckets: vec![2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            count: 4,
            sum_micros: 2_000_500,
            failures: 0,
            failing: false,
        };
        let text = render(&stats, &counters, Some(&commits));
        for line in [
            "breeze_connections 3",
            "breeze_online_users 2",
            "breeze_pings_answered_in_place_total 5",
            "breeze_storage_in_flight 1",
            "breeze_frames_sent_total{kind=\"PresenceDiff\"} 7",
            "breeze_messages_delivered_total 2",
            "breeze_logins_total{result=\"ok\"} 4",
            "breeze_logins_total{result=\"failed\"} 1",
            "breeze_closes_total{reason=\"HeartbeatTimeout\"} 3",
            "breeze_storage_commit_seconds_count 4",
            "breeze_storage_commit_seconds_bucket{le=\"0.0001\"} 2",
            "breeze_storage_commit_seconds_bucket{le=\"0.0005\"} 3",
            "breeze_storage_commit_seconds_bucket{le=\"1.0\"} 3",
            "breeze_storage_commit_seconds_bucket{le=\"+Inf\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
