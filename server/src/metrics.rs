//! `/metrics`: the server's counts and totals in the OpenMetrics text format, which
//! Prometheus scrapes.
//!
//! Rendered at each scrape from what the core already keeps (`Server::stats`, the core's
//! `Counters`, read in one request to the core task), so serving metrics adds nothing to the
//! path a frame takes: the core bumps plain integers and this module turns a snapshot of
//! them into text. A registry is built per scrape for that reason: the values are not live
//! metric objects that the hot path would update.

use breeze_core::server::{Counters, Stats};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The `Content-Type` of what `render` returns.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

/// The exposition of one snapshot.
pub fn render(stats: &Stats, counters: &Counters) -> String {
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
        "Open connections, logged in or not.",
        stats.connections,
    );
    gauge(
        &mut registry,
        "sessions",
        "Logged-in connections (agents included).",
        stats.sessions,
    );
    gauge(
        &mut registry,
        "online_users",
        "Users shown online (in the offline grace included).",
        stats.online_users,
    );
    gauge(
        &mut registry,
        "registered_users",
        "Accounts this server knows.",
        stats.registered_users,
    );
    gauge(
        &mut registry,
        "storage_in_flight",
        "Storage requests handed to the store and not answered yet (its queue depth).",
        stats.pending_storage,
    );
    counter(
        &mut registry,
        "frames_received",
        "Frames received from clients.",
        counters.frames_in,
    );
    counter(
        &mut registry,
        "received_bytes",
        "Payload bytes of the frames received.",
        counters.bytes_in,
    );
    counter(
        &mut registry,
        "sent_bytes",
        "Payload bytes of the frames sent.",
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
        "Frames sent to clients, by message kind (PresenceDiff: presence changes told).",
        by_kind,
    );
    counter(
        &mut registry,
        "messages_stored",
        "Messages confirmed stored to their senders (Sent).",
        counters.sent("Sent"),
    );
    counter(
        &mut registry,
        "messages_delivered",
        "Messages delivered to a recipient's session, live or from the mailbox (Deliver).",
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
    registry.register("logins", "Login attempts by outcome.", logins);
    counter(
        &mut registry,
        "registrations",
        "Accounts registered by clients.",
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
        "Connections the server closed, by the reason it gave (HeartbeatTimeout: silent peers).",
        closes,
    );
    counter(
        &mut registry,
        "connections_lost",
        "Connections the client closed or the network lost.",
        counters.connections_lost,
    );
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
        };
        let mut counters = Counters {
            logins: 4,
            logins_failed: 1,
            closes: vec![(CloseReason::HeartbeatTimeout, 3)],
            ..Counters::default()
        };
        counters.frames_out[4] = 7;
        counters.frames_out[9] = 2;
        let text = render(&stats, &counters);
        for line in [
            "breeze_connections 3",
            "breeze_online_users 2",
            "breeze_storage_in_flight 1",
            "breeze_frames_sent_total{kind=\"PresenceDiff\"} 7",
            "breeze_messages_delivered_total 2",
            "breeze_logins_total{result=\"ok\"} 4",
            "breeze_logins_total{result=\"failed\"} 1",
            "breeze_closes_total{reason=\"HeartbeatTimeout\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
