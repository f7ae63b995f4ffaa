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
    let cli = Cli::parse();
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
            tracing::error!("{e:#}");
            eprintln!("layer8: {e:#}");
            ExitCode::from(1)
        }
    }
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
    let mut loaded = bootstrap::load(
        path.as_deref(),
        yaml.as_deref(),
        cli.allow_unknown_static_fields,
    )?;
    if let Some(node) = loaded.bootstrap.node.as_mut() {
        if let Some(c) = &cli.service_cluster {
            node.cluster = c.clone();
        }
        if let Some(n) = &cli.service_node {
            node.id = n.clone();
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(concurrency)
        .thread_name("layer8-worker")
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let options = server::Options {
        concurrency,
        drain_time_s: cli.drain_time_s,
        config_path: path.as_ref().map(|p| p.display().to_string()),
        allow_unknown_static_fields: cli.allow_unknown_static_fields,
    };
    runtime.block_on(async move {
        let running = server::start(loaded, options, Some(reload)).await?;
        server::wait_for_shutdown(&running.state).await;
        anyhow::Ok(())
    })?;
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}
