//! The `layer8` binary: Envoy's command line, logging, runtimes, and exit codes.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use layer8::cli::{self, Cli, Command, Mode};
use layer8::config::bootstrap;
use layer8::server;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{reload, EnvFilter};

fn main() -> ExitCode {
    // A bad command line exits 1, as Envoy does (clap's default is 2); --help/--version exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::from(e.use_stderr()));
        }
    };
    if let Some(Command::Validate {
        config_path,
        config_yaml,
        allow_unknown_static_fields,
    }) = &cli.command
    {
        return validate(
            config_path.as_deref(),
            config_yaml.as_deref(),
            *allow_unknown_static_fields,
        );
    }
    if cli.mode == Mode::Validate {
        return validate(
            cli.config_path.as_deref(),
            cli.config_yaml.as_deref(),
            cli.allow_unknown_static_fields,
        );
    }
    let reload = match init_logging(&cli) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("layer8: {e:#}");
            return ExitCode::from(1);
        }
    };
    match run(cli, reload) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let e = describe(&e);
            tracing::error!("{e}");
            eprintln!("layer8: {e}");
            ExitCode::from(1)
        }
    }
}

/// The error and its causes, `: `-separated, skipping a cause the message already ends with
/// (the load errors embed their source in their own message).
fn describe(e: &anyhow::Error) -> String {
    let mut s = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !s.ends_with(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
    }
    s
}

fn validate(path: Option<&std::path::Path>, yaml: Option<&str>, allow_unknown: bool) -> ExitCode {
    let (path, yaml) = if path.is_none() && yaml.is_none() {
        (None, Some(layer8::DEFAULT_BOOTSTRAP))
    } else {
        (path, yaml)
    };
    match server::validate(path, yaml, allow_unknown) {
        Ok(notes) => {
            for n in &notes.skipped {
                eprintln!("skipped: {n}");
            }
            println!(
                "configuration '{}' OK",
                path.map_or("--config-yaml".into(), |p| p.display().to_string())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

type Reload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

fn filter_directive(cli: &Cli) -> anyhow::Result<String> {
    let level = cli::tracing_level(&cli.log_level)
        .with_context(|| format!("invalid log level '{}'", cli.log_level))?;
    let mut directive = level.to_string();
    if let Some(components) = &cli.component_log_level {
        for pair in components.split(',').filter(|s| !s.is_empty()) {
            let (_, lvl) = pair
                .split_once(':')
                .with_context(|| format!("invalid --component-log-level entry '{pair}'"))?;
            cli::tracing_level(lvl)
                .with_context(|| format!("invalid log level '{lvl}' in --component-log-level"))?;
        }
    }
    if let Ok(extra) = std::env::var("RUST_LOG") {
        directive = format!("{directive},{extra}");
    }
    Ok(directive)
}

fn init_logging(cli: &Cli) -> anyhow::Result<Reload> {
    let filter = EnvFilter::try_new(filter_directive(cli)?).context("log filter")?;
    let (filter, handle) = reload::Layer::new(filter);
    let writer: Box<dyn Fn() -> Box<dyn std::io::Write> + Send + Sync> = match &cli.log_path {
        Some(p) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("--log-path {}", p.display()))?;
            let file = std::sync::Arc::new(file);
            Box::new(move || Box::new(file.clone()) as Box<dyn std::io::Write>)
        }
        None => Box::new(|| Box::new(std::io::stderr()) as Box<dyn std::io::Write>),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(false);
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .context("logging already initialised")?;
    Ok(Box::new(move |spec: &str| {
        let lvl = spec.rsplit('=').next().unwrap_or(spec);
        let mapped = cli::tracing_level(lvl).ok_or_else(|| format!("unknown level '{lvl}'"))?;
        let f = EnvFilter::try_new(mapped).map_err(|e| e.to_string())?;
        handle.reload(f).map_err(|e| e.to_string())
    }))
}

fn run(cli: Cli, reload: Reload) -> anyhow::Result<()> {
    let concurrency = cli
        .concurrency
        .filter(|c| *c > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let (path, yaml) = match (&cli.config_path, &cli.config_yaml) {
        (None, None) => {
            tracing::info!("no -c/--config-yaml given: serving the embedded default configuration");
            (None, Some(layer8::DEFAULT_BOOTSTRAP.to_string()))
        }
        (p, y) => (p.clone(), y.clone()),
    };
    if let Some(ms) = cli.file_flush_interval_msec {
        layer8::access_log::sink::set_flush_interval(std::time::Duration::from_millis(ms));
    }
    let mut loaded = bootstrap::load(
        path.as_deref(),
        yaml.as_deref(),
        cli.allow_unknown_static_fields,
    )?;
    // Like Envoy, the flags set the node even when the bootstrap has none.
    if cli.service_cluster.is_some() || cli.service_node.is_some() || cli.service_zone.is_some() {
        let node = loaded.bootstrap.node.get_or_insert_with(Default::default);
        if let Some(c) = &cli.service_cluster {
            node.cluster = c.clone();
        }
        if let Some(n) = &cli.service_node {
            node.id = n.clone();
        }
        if let Some(z) = &cli.service_zone {
            node.locality.get_or_insert_with(Default::default).zone = z.clone();
        }
    }
    if cli.mode == Mode::InitOnly {
        server::validate(
            path.as_deref(),
            yaml.as_deref(),
            cli.allow_unknown_static_fields,
        )?;
        return Ok(());
    }
    // Data plane: one single-threaded runtime per worker. Config, admin and signals: this thread.
    layer8::workers::start(concurrency).context("worker threads")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .thread_name("layer8-main")
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let options = server::Options {
        concurrency,
        drain_time_s: cli.drain_time_s,
        config_path: path.as_ref().map(|p| p.display().to_string()),
        allow_unknown_static_fields: cli.allow_unknown_static_fields,
        config_yaml: cli.config_yaml.clone(),
        service_cluster: cli.service_cluster.clone().unwrap_or_default(),
        service_node: cli.service_node.clone().unwrap_or_default(),
        service_zone: cli.service_zone.clone().unwrap_or_default(),
        drain_strategy_immediate: cli.drain_strategy == cli::DrainStrategy::Immediate,
        disable_hot_restart: cli.disable_hot_restart,
        log_level: cli.log_level.clone(),
        component_log_level: cli.component_log_level.clone().unwrap_or_default(),
        log_format: cli.log_format.clone().unwrap_or_default(),
        file_flush_interval_msec: cli.file_flush_interval_msec,
    };
    runtime.block_on(async move {
        let running = server::start(loaded, options, Some(reload)).await?;
        server::wait_for_shutdown(&running.state).await;
        anyhow::Ok(())
    })?;
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    layer8::access_log::flush_all();
    Ok(())
}
