//! Builds the components a runtime config names, by API and `type`, and answers for their health.
//! Every component is connected at build time: a bad one fails the whole runtime (and the process)
//! with its name, never a half-started runtime.

use std::collections::HashMap;
use std::sync::Arc;

use super::binding_http::HttpBinding;
use super::file_local::LocalFiles;
use super::hello::Hello;
use super::secret_env::EnvSecrets;
use super::secret_file::FileSecrets;
use super::{
    configuration_etcd, configuration_memory, lock_etcd, lock_memory, lock_redis, pubsub_memory,
    pubsub_redis, sequencer_etcd, sequencer_memory, sequencer_redis, state_memory, state_redis,
    ConfigStore, Health, LockStore, PubSub, Sequencer, StateStore,
};
use crate::runtime::config::{base_type, AppConfig, ComponentSpec, RuntimeConfig};
use crate::runtime::keys::KeyPrefix;

/// A component that failed to build.
#[derive(Debug, thiserror::Error)]
#[error("runtime component {api}.{name} (type '{kind}'): {message}")]
pub struct BuildError {
    /// API section (`state`, `lock`, ...).
    pub api: &'static str,
    /// Component name.
    pub name: String,
    /// Its `type`.
    pub kind: String,
    /// What went wrong.
    pub message: String,
}

/// A built component with its type and key prefix strategy.
pub struct Named<T: ?Sized> {
    /// The `type` it was built from.
    pub kind: String,
    /// The component.
    pub inner: Arc<T>,
    /// How API keys become stored keys.
    pub prefix: KeyPrefix,
}

/// A secret store.
#[derive(Debug)]
pub enum Secrets {
    /// `local.env`.
    Env(EnvSecrets),
    /// `local.file`.
    File(FileSecrets),
}

/// Every component of one runtime, by API and name.
#[derive(Default)]
pub struct Components {
    /// `app`.
    pub app: AppConfig,
    /// `hellos`.
    pub hellos: HashMap<String, Arc<Hello>>,
    /// `state`.
    pub state: HashMap<String, Named<dyn StateStore>>,
    /// `pub_subs`.
    pub pubsubs: HashMap<String, Named<dyn PubSub>>,
    /// `config_store`.
    pub config: HashMap<String, Named<dyn ConfigStore>>,
    /// `lock`.
    pub locks: HashMap<String, Named<dyn LockStore>>,
    /// `sequencer`.
    pub sequencers: HashMap<String, Named<dyn Sequencer>>,
    /// `file`.
    pub files: HashMap<String, Arc<LocalFiles>>,
    /// `bindings`.
    pub bindings: HashMap<String, Arc<HttpBinding>>,
    /// `secret_store`.
    pub secrets: HashMap<String, Secrets>,
}

impl Components {
    /// Build and connect every component of `cfg`.
    pub async fn build(cfg: &RuntimeConfig) -> Result<Components, BuildError> {
        let mut c = Components {
            app: cfg.app.clone(),
            ..Default::default()
        };
        for (name, spec) in &cfg.hellos {
            let fail = failure("hellos", name, spec);
            match spec.kind.as_str() {
                "helloworld" => {
                    c.hellos
                        .insert(name.clone(), Arc::new(Hello::new(spec.hello.as_deref())));
                }
                _ => return Err(fail(unknown("helloworld"))),
            }
        }
        for (name, spec) in &cfg.state {
            let fail = failure("state", name, spec);
            let inner: Arc<dyn StateStore> = match base_type(&spec.kind, "state") {
                "in-memory" => Arc::new(state_memory::MemoryState::new()),
                "redis" => Arc::new(
                    state_redis::RedisState::new(&spec.metadata)
                        .await
                        .map_err(&fail)?,
                ),
                _ => return Err(fail(unknown("in-memory, redis"))),
            };
            let prefix = KeyPrefix::from_metadata(&spec.metadata, KeyPrefix::None);
            c.state.insert(name.clone(), named(spec, inner, prefix));
        }
        for (name, spec) in &cfg.pub_subs {
            let fail = failure("pub_subs", name, spec);
            // As in Layotto and Dapr, the consumer group defaults to the app id, so two apps
            // on one topic each get every message.
            let mut spec = spec.clone();
            if !spec.metadata.contains_key("consumerID") && !cfg.app.app_id.is_empty() {
                spec.metadata
                    .insert("consumerID".into(), cfg.app.app_id.clone());
            }
            let spec = &spec;
            let inner: Arc<dyn PubSub> = match base_type(&spec.kind, "pubsub") {
                "in-memory" => pubsub_memory::MemoryPubSub::new(&spec.metadata).map_err(&fail)?,
                "redis" => Arc::new(
                    pubsub_redis::RedisPubSub::new(&spec.metadata)
                        .await
                        .map_err(&fail)?,
                ),
                _ => return Err(fail(unknown("in-memory, redis"))),
            };
            c.pubsubs
                .insert(name.clone(), named(spec, inner, KeyPrefix::None));
        }
        for (name, spec) in &cfg.config_store {
            let fail = failure("config_store", name, spec);
            let inner: Arc<dyn ConfigStore> = match spec.kind.as_str() {
                "in-memory" => Arc::new(configuration_memory::MemoryConfigStore::new()),
                "etcd" => Arc::new(
                    configuration_etcd::EtcdConfigStore::new(&spec.metadata)
                        .await
                        .map_err(&fail)?,
                ),
                _ => return Err(fail(unknown("in-memory, etcd"))),
            };
            c.config
                .insert(name.clone(), named(spec, inner, KeyPrefix::None));
        }
        for (name, spec) in &cfg.lock {
            let fail = failure("lock", name, spec);
            let inner: Arc<dyn LockStore> = match spec.kind.as_str() {
                "in-memory" => Arc::new(lock_memory::MemoryLock::new()),
                "redis" => Arc::new(
                    lock_redis::RedisLock::new(&spec.metadata)
                        .await
                        .map_err(&fail)?,
                ),
                "etcd" => Arc::new(
                    lock_etcd::EtcdLock::new(&spec.metadata)
                        .await
                        .map_err(&fail)?,
                ),
                _ => return Err(fail(unknown("in-memory, redis, etcd"))),
            };
            let prefix = KeyPrefix::from_metadata(&spec.metadata, KeyPrefix::AppId);
            c.locks.insert(name.clone(), named(spec, inner, prefix));
        }
        for (name, spec) in &cfg.sequencer {
            let fail = failure("sequencer", name, spec);
            let inner: Arc<dyn Sequencer> = match spec.kind.as_str() {
                "in-memory" => Arc::new(sequencer_memory::MemorySequencer::new()),
                "redis" => Arc::new(
                    sequencer_redis::RedisSequencer::new(&spec.metadata)
                        .await
                        .map_err(&fail)?,
                ),
                "etcd" => Arc::new(
                    sequencer_etcd::EtcdSequencer::new(&spec.metadata)
                        .await
                        .map_err(&fail)?,
                ),
                _ => return Err(fail(unknown("in-memory, redis, etcd"))),
            };
            let prefix = KeyPrefix::from_metadata(&spec.metadata, KeyPrefix::AppId);
            for (key, floor) in &spec.bigger_than {
                let stored = prefix.scoped_key("sequencer", key, &cfg.app.app_id, name);
                inner
                    .ensure_floor(&stored, *floor)
                    .await
                    .map_err(|e| fail(format!("biggerThan.{key}: {e}")))?;
            }
            c.sequencers
                .insert(name.clone(), named(spec, inner, prefix));
        }
        for (name, spec) in &cfg.file {
            let fail = failure("file", name, spec);
            let files = match spec.kind.as_str() {
                "local" => LocalFiles::new(name, &spec.raw_metadata).map_err(&fail)?,
                _ => return Err(fail(unknown("local"))),
            };
            c.files.insert(name.clone(), Arc::new(files));
        }
        for (name, spec) in &cfg.bindings {
            let fail = failure("bindings", name, spec);
            let b = match base_type(&spec.kind, "bindings") {
                "http" => HttpBinding::new(&spec.metadata).map_err(&fail)?,
                _ => return Err(fail(unknown("http"))),
            };
            c.bindings.insert(name.clone(), Arc::new(b));
        }
        for (name, spec) in &cfg.secret_store {
            let fail = failure("secret_store", name, spec);
            let s = match base_type(&spec.kind, "secretstores") {
                "local.env" => Secrets::Env(EnvSecrets::new(&spec.metadata)),
                "local.file" => Secrets::File(FileSecrets::new(&spec.metadata).map_err(&fail)?),
                _ => return Err(fail(unknown("local.file, local.env"))),
            };
            c.secrets.insert(name.clone(), s);
        }
        Ok(c)
    }

    /// Health of every component that talks to a store, as `<api>.<name>`, checked
    /// concurrently (each check is bounded by its component).
    pub async fn health(&self) -> Vec<(String, Health)> {
        use futures_util::future::{join_all, BoxFuture, FutureExt};
        let mut checks: Vec<BoxFuture<'_, (String, Health)>> = Vec::new();
        fn add<'a>(
            checks: &mut Vec<BoxFuture<'a, (String, Health)>>,
            name: String,
            f: BoxFuture<'a, Health>,
        ) {
            checks.push(f.map(move |h| (name, h)).boxed());
        }
        for (n, s) in &self.state {
            add(&mut checks, format!("state.{n}"), s.inner.health());
        }
        for (n, s) in &self.pubsubs {
            add(&mut checks, format!("pub_subs.{n}"), s.inner.health());
        }
        for (n, s) in &self.config {
            add(&mut checks, format!("config_store.{n}"), s.inner.health());
        }
        for (n, s) in &self.locks {
            add(&mut checks, format!("lock.{n}"), s.inner.health());
        }
        for (n, s) in &self.sequencers {
            add(&mut checks, format!("sequencer.{n}"), s.inner.health());
        }
        let mut out = join_all(checks).await;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

fn named<T: ?Sized>(spec: &ComponentSpec, inner: Arc<T>, prefix: KeyPrefix) -> Named<T> {
    Named {
        kind: spec.kind.clone(),
        inner,
        prefix,
    }
}

fn unknown(known: &str) -> String {
    format!("unknown type (known: {known})")
}

fn failure<'a>(
    api: &'static str,
    name: &'a str,
    spec: &'a ComponentSpec,
) -> impl Fn(String) -> BuildError + 'a {
    move |message| BuildError {
        api,
        name: name.to_string(),
        kind: spec.kind.clone(),
        message,
    }
}
