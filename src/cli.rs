//! Envoy's command line, as pilot-agent and operators pass it.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// layer8: an Envoy-compatible sidecar proxy. Flags are Envoy's.
#[derive(Debug, Parser)]
#[command(name = "layer8", version, about, disable_help_subcommand = true)]
pub struct Cli {
    /// Validate a config without serving (like `envoy --mode validate`).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Bootstrap file (JSON or YAML, Envoy v3).
    #[arg(short = 'c', long = "config-path")]
    pub config_path: Option<PathBuf>,
    /// YAML merged over the bootstrap file.
    #[arg(long = "config-yaml")]
    pub config_yaml: Option<String>,
    /// Log level: trace, debug, info, warning/warn, error, critical, off.
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    pub log_level: String,
    /// Per-component levels, `comp:level,comp:level`.
    #[arg(long = "component-log-level")]
    pub component_log_level: Option<String>,
    /// Worker threads (default: number of cores).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Drain time in seconds.
    #[arg(long = "drain-time-s", default_value_t = 600)]
    pub drain_time_s: u64,
    /// `gradual` or `immediate`.
    #[arg(long = "drain-strategy", value_enum, default_value = "gradual")]
    pub drain_strategy: DrainStrategy,
    /// `v4` or `v6`.
    #[arg(long = "local-address-ip-version", default_value = "v4")]
    pub local_address_ip_version: String,
    /// Access log flush interval (accepted; logs are flushed per line).
    #[arg(long = "file-flush-interval-msec")]
    pub file_flush_interval_msec: Option<u64>,
    /// Hot restart is never used by layer8; accepted for compatibility.
    #[arg(long = "disable-hot-restart")]
    pub disable_hot_restart: bool,
    /// Tolerate unknown fields in the bootstrap (they are logged and counted).
    #[arg(long = "allow-unknown-static-fields")]
    pub allow_unknown_static_fields: bool,
    /// Reject unknown dynamic fields (accepted; dynamic config arrives over xDS).
    #[arg(long = "reject-unknown-dynamic-fields")]
    pub reject_unknown_dynamic_fields: bool,
    /// Overrides `node.cluster`.
    #[arg(long = "service-cluster")]
    pub service_cluster: Option<String>,
    /// Overrides `node.id`.
    #[arg(long = "service-node")]
    pub service_node: Option<String>,
    /// Overrides `node.locality.zone`.
    #[arg(long = "service-zone")]
    pub service_zone: Option<String>,
    /// Hot-restart parent shutdown time (accepted).
    #[arg(long = "parent-shutdown-time-s")]
    pub parent_shutdown_time_s: Option<u64>,
    /// Log format (Envoy's `%`-format; accepted, layer8 logs with its own format).
    #[arg(long = "log-format")]
    pub log_format: Option<String>,
    /// Log file (default stderr).
    #[arg(long = "log-path")]
    pub log_path: Option<PathBuf>,
    /// Hot-restart epoch (accepted).
    #[arg(long = "restart-epoch")]
    pub restart_epoch: Option<u32>,
    /// Shared-memory base id (accepted).
    #[arg(long = "base-id")]
    pub base_id: Option<u32>,
    /// Use a dynamic base id (accepted).
    #[arg(long = "use-dynamic-base-id")]
    pub use_dynamic_base_id: bool,
    /// `serve` (default), `validate` or `init_only`.
    #[arg(long = "mode", value_enum, default_value = "serve")]
    pub mode: Mode,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a configuration and exit: 0 if valid, 1 with the error otherwise.
    Validate {
        /// Bootstrap file.
        #[arg(short = 'c', long = "config-path")]
        config_path: Option<PathBuf>,
        /// YAML merged over it.
        #[arg(long = "config-yaml")]
        config_yaml: Option<String>,
        /// Tolerate unknown fields.
        #[arg(long = "allow-unknown-static-fields")]
        allow_unknown_static_fields: bool,
    },
}

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Serve traffic.
    Serve,
    /// Validate and exit.
    Validate,
    /// Initialise and exit.
    #[value(name = "init_only")]
    InitOnly,
}

/// `--drain-strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DrainStrategy {
    /// Encourage connections to close progressively.
    Gradual,
    /// Close them right away.
    Immediate,
}

/// Map an Envoy log level to a tracing filter directive.
pub fn tracing_level(level: &str) -> Option<&'static str> {
    Some(match level.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warning" | "warn" => "warn",
        "error" | "critical" => "error",
        "off" => "off",
        _ => return None,
    })
}
