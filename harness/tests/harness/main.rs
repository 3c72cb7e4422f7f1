//! Integration tests for the harness against the real dependencies: nats-server, PostgreSQL,
//! tonic/OTLP and Unix processes. Each test owns its resources, so they run in parallel.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use checkout_harness::trace_check::{check_tree, render_tree};
use checkout_harness::{NatsServer, OtlpReceiver, ReceivedSpan, Service, SpanKind, TestDb};
use opentelemetry::trace::{
    Span as _, SpanKind as OtelKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{self as common, AnyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{self as proto, ResourceSpans, ScopeSpans};
use sqlx::Connection as _;

const WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// NATS

mod cluster;
mod nats_db;
mod otlp;
mod processes;
mod trees;
