//! The instruments against an in-memory exporter.

use super::*;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

#[test]
fn names_are_unique_and_attributes_are_declared() {
    let mut names: Vec<_> = INSTRUMENTS.iter().map(|i| i.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), INSTRUMENTS.len());
    assert!(STEP_DURATION.attributes.contains(&PHASE));
}

#[test]
fn a_finished_saga_is_counted_with_its_value_in_the_right_bucket() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let metrics = Metrics::new(provider.meter("test"));
    metrics.saga_finished(SagaOutcome::Completed, Duration::from_millis(30), 4_500);
    metrics.saga_finished(SagaOutcome::Completed, Duration::from_millis(30), 700);
    provider.force_flush().unwrap();
    let exported = exporter.get_finished_metrics().unwrap();
    let metric = exported
        .iter()
        .flat_map(|rm| rm.scope_metrics())
        .flat_map(|sm| sm.metrics())
        .find(|m| m.name() == VALUE.name)
        .expect("checkout.value exported");
    assert_eq!(metric.unit(), "{cent}");
    let AggregatedMetrics::F64(MetricData::Histogram(h)) = metric.data() else {
        panic!("a histogram");
    };
    let point = h.data_points().next().expect("one point");
    assert_eq!(point.count(), 2);
    assert_eq!(point.bounds().collect::<Vec<_>>(), VALUE_BUCKETS.to_vec());
    // 700 falls in (500, 1000], 4500 in (2000, 5000].
    let counts: Vec<u64> = point.bucket_counts().collect();
    assert_eq!(counts[1], 1);
    assert_eq!(counts[3], 1);
}
