//! Process lifecycle: load the bootstrap, publish the first snapshot, start listeners and the
//! admin server, then wait for `/quitquitquit` or a signal and drain.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use layer8_xds::pb::envoy::config::bootstrap::v3::Bootstrap;
use tokio::sync::Notify;

use crate::config::{self, bootstrap, Notes};
use crate::listener::ListenerManager;
use crate::model::listener::{ListenAddr, ListenerConfig};
use crate::model::{Snapshot, SnapshotStore};
use crate::stats;

/// Changes the log level at run time (`/logging`).
pub type LogReload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Settings from the command line that the admin API reports.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--concurrency`.
    pub concurrency: usize,
    /// `--drain-time-s`.
    pub drain_time_s: u64,
    /// Config path, if any.
    pub config_path: Option<String>,
    /// Whether `--allow-unknown-static-fields` was given.
    pub allow_unknown_static_fields: bool,
    /// `--config-yaml`, if any.
    pub config_yaml: Option<String>,
    /// `--service-cluster`, `--service-node`, `--service-zone` (empty when not given).
    pub service_cluster: String,
    /// See `service_cluster`.
    pub service_node: String,
    /// See `service_cluster`.
    pub service_zone: String,
    /// `--drain-strategy immediate`.
    pub drain_strategy_immediate: bool,
    /// `--disable-hot-restart`.
    pub disable_hot_restart: bool,
    /// `-l`, `--component-log-level` and `--log-format` as given.
    pub log_level: String,
    /// See `log_level`.
    pub component_log_level: String,
    /// See `log_level`.
    pub log_format: String,
    /// `--file-flush-interval-msec`.
    pub file_flush_interval_msec: Option<u64>,
}

/// Process-wide state shared by the data plane and admin.
pub struct State {
    /// The published configuration.
    pub snapshots: SnapshotStore,
    /// The bootstrap as loaded (for `/config_dump`).
    pub bootstrap: Bootstrap,
    /// When the server started.
    pub started: Instant,
    /// Wall-clock start.
    pub started_wall: SystemTime,
    /// False after `/healthcheck/fail`.
    pub healthy: AtomicBool,
    /// Set once listeners are up.
    pub live: AtomicBool,
    /// Signalled by `/quitquitquit`.
    pub quit: Notify,
    /// CLI options.
    pub options: Options,
    /// Running listeners (config path only).
    pub listeners: tokio::sync::Mutex<ListenerManager>,
    /// What translation skipped.
    pub notes: Notes,
    /// Reload handle for `/logging`.
    pub log_reload: Option<LogReload>,
    /// Dynamic configuration, when the bootstrap has `dynamic_resources`.
    pub xds: std::sync::OnceLock<Arc<crate::xds::Xds>>,
    /// Application runtimes of the static runtime listeners.
    pub runtimes: std::sync::OnceLock<crate::runtime::Runtimes>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl State {
    /// The listener that owns `dst` (exact address, else wildcard IP on the same port), for
    /// `use_original_dst` handoff.
    pub fn find_listener_for(&self, dst: SocketAddr) -> Option<Arc<ListenerConfig>> {
        let snap = self.snapshots.load();
        let exact = snap
            .listeners
            .iter()
            .find(|l| l.address == ListenAddr::Tcp(dst));
        exact
            .or_else(|| {
                snap.listeners.iter().find(|l| match l.address {
                    ListenAddr::Tcp(a) => {
                        a.port() == dst.port() && a.ip().is_unspecified() && !l.use_original_dst
                    }
                    ListenAddr::Unix(_) => false,
                })
            })
            .cloned()
    }
}

/// The host name for `%HOSTNAME%`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The bootstrap could not be read or decoded.
    #[error(transparent)]
    Load(#[from] bootstrap::LoadError),
    /// A resource is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A listener could not bind.
    #[error(transparent)]
    Bind(#[from] crate::listener::manager::BindError),
    /// A runtime component could not be built or connected.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::components::registry::BuildError),
    /// The admin listener could not bind.
    #[error("admin: cannot bind {0}: {1}")]
    Admin(SocketAddr, std::io::Error),
}

/// Load and fully translate a bootstrap without serving. Returns what translation skipped.
pub fn validate(
    path: Option<&std::path::Path>,
    yaml: Option<&str>,
    allow_unknown: bool,
) -> Result<Notes, StartError> {
    let loaded = bootstrap::load(path, yaml, allow_unknown)?;
    bootstrap::admin_address(&loaded.bootstrap)?;
    bootstrap::stats_matcher(&loaded.bootstrap)?;
    let mut notes = Notes::default();
    bootstrap::build_snapshot(&loaded.bootstrap, None, &mut notes)?;
    config::config_source::ads(&loaded.bootstrap)?;
    Ok(notes)
}

/// A running server.
pub struct Running {
    /// Shared state.
    pub state: Arc<State>,
    /// Admin address actually bound.
    pub admin: Option<SocketAddr>,
}

fn register_server_stats(concurrency: usize) {
    stats::gauge("server.state").set(0.0);
    stats::gauge("server.live").set(1.0);
    stats::gauge("server.concurrency").set(concurrency as f64);
    for name in [
        "listener_manager.lds.update_success",
        "listener_manager.lds.update_rejected",
        "listener_manager.lds.update_attempt",
        "cluster_manager.cds.update_success",
        "cluster_manager.cds.update_rejected",
        "cluster_manager.cds.update_attempt",
        "server.static_unknown_fields",
        "layer8.filters_skipped",
    ] {
        let _ = stats::counter(name);
    }
}

/// Start serving `loaded` on the current tokio runtime.
pub async fn start(
    loaded: bootstrap::Loaded,
    options: Options,
    log_reload: Option<LogReload>,
) -> Result<Running, StartError> {
    if let Some(m) = bootstrap::stats_matcher(&loaded.bootstrap)? {
        stats::set_matcher(m);
    }
    register_server_stats(options.concurrency);
    if !loaded.unknown_fields.is_empty() {
        stats::counter("server.static_unknown_fields")
            .increment(loaded.unknown_fields.len() as u64);
        for f in &loaded.unknown_fields {
            tracing::warn!(field = %f, "unknown field in bootstrap ignored (--allow-unknown-static-fields)");
        }
    }
    let admin_addr = bootstrap::admin_address(&loaded.bootstrap)?;
    let mut notes = Notes::default();
    let snapshot: Snapshot = bootstrap::build_snapshot(&loaded.bootstrap, None, &mut notes)?;
    for n in &notes.skipped {
        tracing::info!("skipped: {n}");
    }
    let state = Arc::new(State {
        snapshots: SnapshotStore::default(),
        bootstrap: loaded.bootstrap,
        started: Instant::now(),
        started_wall: SystemTime::now(),
        healthy: AtomicBool::new(true),
        live: AtomicBool::new(false),
        quit: Notify::new(),
        options,
        listeners: tokio::sync::Mutex::new(ListenerManager::default()),
        notes,
        log_reload,
        xds: std::sync::OnceLock::new(),
        runtimes: std::sync::OnceLock::new(),
    });
    let snap = state.snapshots.publish(snapshot);
    release_config_memory();
    stats::gauge("cluster_manager.active_clusters").set(snap.clusters.len() as f64);
    stats::gauge("listener_manager.total_listeners_active").set(snap.listeners.len() as f64);
    let runtimes = crate::runtime::start_all(&snap, &state).await?;
    let _ = state.runtimes.set(runtimes);
    let admin = match admin_addr {
        Some(addr) => Some(
            crate::admin::start(addr, state.clone())
                .await
                .map_err(|e| StartError::Admin(addr, e))?,
        ),
        None => None,
    };
    let failed = state
        .listeners
        .lock()
        .await
        .apply(&snap.listeners, &state)
        .await;
    if let Some(e) = failed.into_iter().next() {
        return Err(e.into());
    }
    stats::gauge("listener_manager.workers_started").set(1.0);
    crate::xds::start(&state)?;
    state.live.store(true, Ordering::SeqCst);
    tracing::info!(listeners = snap.listeners.len(), clusters = snap.clusters.len(), admin = ?admin, "layer8 is live");
    // Starting the admin server, the workers and the listeners faulted code back in (the
    // kernel maps a whole 64 KiB neighbourhood per fault): drop it again once they are up.
    // (Heap and code only: the descriptor registry may be in use by a config load by then.)
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        trim_heap();
        page_out_binary();
    });
    Ok(Running { state, admin })
}

/// Replace the configuration with a new bootstrap's static resources (used by tests and, later,
/// by xDS). Unchanged listeners keep their sockets; changed ones drain.
pub async fn apply_bootstrap(
    state: &Arc<State>,
    b: &Bootstrap,
) -> Result<Arc<Snapshot>, StartError> {
    let prev = state.snapshots.load();
    let mut notes = Notes::default();
    let next = bootstrap::build_snapshot(b, Some(&prev), &mut notes)?;
    let mut mgr = state.listeners.lock().await;
    let snap = state.snapshots.publish(next);
    if let Some(e) = mgr.apply(&snap.listeners, state).await.into_iter().next() {
        return Err(e.into());
    }
    Ok(snap)
}

/// Give back config-time memory: the protobuf descriptor pool used for JSON decoding (rebuilt
/// on demand) and the allocator's free pages.
pub fn release_config_memory() {
    layer8_xds::registry::release();
    trim_heap();
    page_out_binary();
}

/// Return free heap pages to the OS.
fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the OS; no pointers are invalidated.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Ask the kernel to drop the resident pages of our own executable's read-only mappings (code
/// and constants such as the embedded descriptor sets). They are clean file pages: whatever the
/// data plane needs faults straight back in from the page cache, the config-time code that ran
/// once at startup stays out of the working set.
fn page_out_binary() {
    const MADV_PAGEOUT: libc::c_int = 21;
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let exe = exe.to_string_lossy();
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            continue;
        };
        if !line.ends_with(exe.as_ref()) || perms.contains('w') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // SAFETY: the range is a whole read-only, file-backed mapping of this process; PAGEOUT
        // only reclaims pages, it never changes their contents or the mapping.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, MADV_PAGEOUT);
        }
    }
}

/// Wait for `/quitquitquit`, SIGTERM or SIGINT, then drain listeners. Meanwhile SIGUSR1
/// reopens the access log files, as in Envoy.
pub async fn wait_for_shutdown(state: &Arc<State>) {
    use tokio::signal::unix::{signal, SignalKind};
    if let Ok(mut usr1) = signal(SignalKind::user_defined1()) {
        tokio::spawn(async move {
            while usr1.recv().await.is_some() {
                tracing::info!("SIGUSR1: reopening access logs");
                // File opens block: off the event loop.
                let _ = tokio::task::spawn_blocking(crate::access_log::reopen_all).await;
            }
        });
    }
    let mut term = signal(SignalKind::terminate()).ok();
    tokio::select! {
        _ = state.quit.notified() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
    stats::gauge("server.state").set(1.0);
    if let Some(runtimes) = state.runtimes.get() {
        for rt in runtimes.values() {
            rt.stop().await;
        }
    }
    let mut mgr = state.listeners.lock().await;
    mgr.stop_accepting();
    mgr.drain_all();
}
