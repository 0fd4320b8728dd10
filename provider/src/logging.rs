//! Logs on stderr as hclog JSON lines (`@level`, `@message`, `@timestamp`, `@module` and fields), the
//! form go-plugin parses and Terraform re-logs under `TF_LOG` with the provider's name attached.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the stderr logger. The level comes from `TF_LOG_PROVIDER_GPUCAP`, `TF_LOG_PROVIDER` or
/// `TF_LOG` (Terraform's names: TRACE, DEBUG, INFO, WARN, ERROR), defaulting to INFO; Terraform
/// filters again on its side.
pub fn init() {
    let level = ["TF_LOG_PROVIDER_GPUCAP", "TF_LOG_PROVIDER", "TF_LOG"]
        .iter()
        .find_map(|k| std::env::var(k).ok())
        .map(|v| v.to_ascii_lowercase())
        .filter(|v| ["trace", "debug", "info", "warn", "error"].contains(&v.as_str()))
        .unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "{level},h2=warn,hyper=warn,tower=warn,rustls=warn"
    ));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(HclogJson)
        .try_init();
}

/// Formats one event as one hclog JSON line.
struct HclogJson;

impl<S, N> FormatEvent<S, N> for HclogJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut fields = serde_json::Map::new();
        fields.insert(
            "@level".into(),
            meta.level().as_str().to_ascii_lowercase().into(),
        );
        fields.insert(
            "@timestamp".into(),
            humantime::format_rfc3339_micros(std::time::SystemTime::now())
                .to_string()
                .into(),
        );
        fields.insert("@module".into(), "provider.gpucap".into());
        let mut visitor = Fields(&mut fields);
        event.record(&mut visitor);
        let mut line = serde_json::to_string(&fields).map_err(|_| std::fmt::Error)?;
        line.push('\n');
        writer.write_str(&line)
    }
}

struct Fields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        let key = if field.name() == "message" {
            "@message"
        } else {
            field.name()
        };
        self.0.insert(key.to_string(), value);
    }
}

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.put(field, s.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
}
