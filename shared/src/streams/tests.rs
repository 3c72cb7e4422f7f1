//! The topology file against the code: every subject captured, every consumer defined.

use super::*;
use crate::steps::Phase;
use crate::subjects;

#[test]
fn the_topology_file_is_valid_and_covers_every_subject() {
    let topology = Topology::load().unwrap();
    let captured = |subject: &str| {
        topology.streams.iter().any(|s| {
            s.subjects.iter().any(|p| {
                p == subject
                    || p.strip_suffix('>')
                        .is_some_and(|pre| subject.starts_with(pre))
            })
        })
    };
    assert!(captured(subjects::CHECKOUT_REQUESTED));
    assert!(captured(subjects::REJECTED));
    assert!(captured(&subjects::dead_letter(
        "checkout.cmd.payment.charge"
    )));
    assert!(captured(&subjects::lifecycle(uuid::Uuid::nil(), "started")));
    // One consumer per step, on the stream that captures its commands.
    for &step in Step::ALL {
        let def = topology.consumer(step.as_str()).unwrap();
        assert!(captured(&subjects::command(step, Phase::Do)), "{step}");
        let stream = topology
            .streams
            .iter()
            .find(|s| s.name == def.stream)
            .unwrap();
        assert_eq!(stream.retention, "workqueue", "{step}");
    }
    assert!(topology.consumer(REQUESTS_CONSUMER).is_ok());
    assert!(topology.consumer(EVENTS_CONSUMER).is_ok());
    let lifecycle = topology.streams.iter().find(|s| s.name == LIFECYCLE_STREAM);
    assert!(lifecycle.is_some_and(|s| s.subjects == ["checkout.saga.>"]));
}

#[test]
fn every_stream_that_keeps_messages_is_bounded_by_count_as_well_as_by_age() {
    let topology = Topology::load().unwrap();
    for def in topology.streams.iter().filter(|s| s.retention == "limits") {
        let config = def.config(1);
        assert_eq!(config.max_messages, def.max_messages, "{}", def.name);
        // The catalog keeps one message per SKU, bounded by its SKUs instead.
        if def.max_messages_per_subject < 0 {
            assert!(def.max_messages > 0, "{} is unbounded by count", def.name);
            assert!(def.max_age_secs > 0, "{} is unbounded by age", def.name);
        }
    }
    // A definition without the field (an operator's older copy) keeps no count limit.
    let old: StreamDef = serde_json::from_str(
        r#"{"name": "S", "subjects": ["s"], "retention": "limits",
            "duplicate_window_secs": 120, "max_age_secs": 60,
            "max_messages_per_subject": -1, "description": "d"}"#,
    )
    .unwrap();
    assert_eq!(old.config(1).max_messages, -1);
}

#[test]
fn a_workers_delivery_budget_is_the_documented_one() {
    let topology = Topology::load().unwrap();
    for &step in Step::ALL {
        let def = topology.consumer(step.as_str()).unwrap();
        assert_eq!(def.nak_delay(1), Duration::from_millis(200));
        assert_eq!(def.nak_delay(2), Duration::from_millis(400));
        assert_eq!(def.nak_delay(9), Duration::from_secs(10), "capped");
        // The figure the module documentation gives.
        assert_eq!(def.delivery_budget(), Some(Duration::from_millis(42_600)));
    }
    let replies = topology.consumer(EVENTS_CONSUMER).unwrap();
    assert_eq!(
        replies.delivery_budget(),
        None,
        "a reply is never given up on"
    );
}
