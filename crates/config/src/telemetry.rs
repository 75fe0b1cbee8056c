//! `[telemetry]`: where the request spans are exported.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// An OTLP/HTTP traces endpoint in full (`http://collector:4318/v1/traces`), JSON encoded;
    /// none: spans are not exported.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` the spans carry.
    #[serde(default = "service_name")]
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: service_name(),
        }
    }
}

impl TelemetryConfig {
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        if let Some(endpoint) = &self.otlp_endpoint {
            if !endpoint.starts_with("http://") {
                return Err((
                    "otlp_endpoint".into(),
                    "want http://HOST:PORT/v1/traces (OTLP over HTTP; https is not built in)"
                        .into(),
                ));
            }
        }
        if self.service_name.trim().is_empty() {
            return Err(("service_name".into(), "must not be empty".into()));
        }
        Ok(())
    }
}

fn service_name() -> String {
    "quorate".to_string()
}
