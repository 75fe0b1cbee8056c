//! Logging and span export: log lines on stderr (text or JSON), and, when `[telemetry]
//! otlp_endpoint` is set for `serve`, every span (request → panel → member → attempt, judge,
//! synthesis) exported over OTLP/HTTP in JSON by OpenTelemetry's batch processor, which runs on a
//! thread of its own and never holds a request up.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use quorate_config::TelemetryConfig;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Spans wait at most this long before they are sent.
const EXPORT_EVERY: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the logging (`RUST_LOG`, else `level`) and, with an endpoint, the span export. The
/// provider returned must be shut down at exit, which sends what is still buffered.
pub fn init(
    format: LogFormat,
    level: &str,
    telemetry: Option<&TelemetryConfig>,
) -> Option<SdkTracerProvider> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => logs.boxed(),
        // Each line carries its span stack, so the `request` span's id is on every line of it.
        LogFormat::Json => logs.json().with_span_list(true).boxed(),
    };
    let provider = telemetry.and_then(provider);
    // Spans are exported at info whatever the log level: the log filter does not thin them.
    let spans = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("quorate"))
            .with_filter(LevelFilter::INFO)
    });
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(spans)
        .init();
    provider
}

fn provider(telemetry: &TelemetryConfig) -> Option<SdkTracerProvider> {
    let endpoint = telemetry.otlp_endpoint.as_deref()?;
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build();
    let exporter = match exporter {
        Ok(exporter) => exporter,
        Err(e) => {
            eprintln!("warning: spans are not exported: {e}");
            return None;
        }
    };
    let batches = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(EXPORT_EVERY)
                .build(),
        )
        .build();
    let resource = Resource::builder()
        .with_service_name(telemetry.service_name.clone())
        .build();
    Some(
        SdkTracerProvider::builder()
            .with_span_processor(batches)
            .with_resource(resource)
            .build(),
    )
}

/// Sends the spans still buffered and stops the export (blocking: call it outside the runtime).
pub fn shutdown(provider: SdkTracerProvider) {
    if let Err(e) = provider.force_flush() {
        eprintln!("warning: the last spans were not exported: {e}");
    }
    let _ = provider.shutdown();
}
