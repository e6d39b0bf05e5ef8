//! Process-wide logging for every subcommand that runs for long: `--log-format` and `--log-level`.

use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logging flags, flattened into the subcommands that run for long.
#[derive(clap::Args, Debug, Clone)]
pub struct LogOptions {
    /// Log line format.
    #[arg(long, env = "LVS_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, in `RUST_LOG` syntax (`info`, `lvs_operator=debug,kube=info`).
    #[arg(long, env = "LVS_OPERATOR_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

impl LogOptions {
    /// Installs the global subscriber. Fails on a filter that does not parse.
    pub fn init(&self) -> anyhow::Result<()> {
        let filter = EnvFilter::try_new(&self.log_level)?;
        let builder = tracing_subscriber::fmt().with_env_filter(filter);
        match self.log_format {
            LogFormat::Text => builder.init(),
            LogFormat::Json => builder.json().init(),
        }
        Ok(())
    }
}
