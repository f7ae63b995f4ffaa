//! GetState and SaveState over gRPC against a running layer8 (release binary, its own process),
//! with the in-memory store and with Redis, beside `redis-benchmark` doing the Redis commands
//! those calls turn into, against the same redis-server in the same run.
//!
//! Load: `RUNTIME_BENCH_CLIENTS` connections (default 16), one call in flight on each, as
//! `redis-benchmark -c 16 -P 1`; `RUNTIME_BENCH_SECONDS` per measurement (default 5) after a
//! one-second warm-up. Reports ops/s, p50 and p99 as a markdown table on stdout.
//!
//! `cargo bench --bench runtime_state` (needs redis-server and redis-benchmark:
//! `bash .ci/install-deps.sh`).

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use layer8::runtime::proto::rt;
use layer8::runtime::proto::rt::runtime_client::RuntimeClient;
use tonic::transport::Channel;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("free port: {e}"))
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_redis(port: u16) -> Killed {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("redis-server: {e} (bash .ci/install-deps.sh)"));
    wait_port(port);
    Killed(child)
}

fn start_layer8(grpc: u16, admin: u16, redis: u16) -> Killed {
    let cfg = serde_json::json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": [{
            "name": "runtime",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": grpc}},
            "filter_chains": [{"filters": [{"name": "layer8.runtime", "typed_config": {
                "@type": "type.googleapis.com/xds.type.v3.TypedStruct",
                "type_url": "layer8.runtime.v1.Runtime",
                "value": {"grpc_config": {"state": {
                    "memory": {"type": "in-memory"},
                    "redis": {"type": "redis", "metadata": {"redisHost": format!("127.0.0.1:{redis}")}}
                }}}}}]}]
        }]}
    });
    let path =
        std::env::temp_dir().join(format!("layer8-runtime-bench-{}.json", std::process::id()));
    std::fs::write(&path, cfg.to_string()).expect("write config");
    let child = Command::new(env!("CARGO_BIN_EXE_layer8"))
        .arg("-c")
        .arg(&path)
        .args(["--concurrency", "2", "-l", "warn"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn layer8");
    wait_port(grpc);
    Killed(child)
}

#[derive(Clone, Copy)]
enum Op {
    Get,
    Save,
}

struct Result {
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

async fn call(c: &mut RuntimeClient<Channel>, op: Op, store: &str, key: &str) {
    match op {
        Op::Get => {
            c.get_state(rt::GetStateRequest {
                store_name: store.into(),
                key: key.into(),
                ..Default::default()
            })
            .await
            .expect("GetState");
        }
        Op::Save => {
            c.save_state(rt::SaveStateRequest {
                store_name: store.into(),
                states: vec![rt::StateItem {
                    key: key.into(),
                    value: b"xxx".to_vec(),
                    etag: None,
                    metadata: HashMap::new(),
                    options: None,
                }],
            })
            .await
            .expect("SaveState");
        }
    }
}

async fn measure(grpc: u16, op: Op, store: &str, clients: usize, secs: u64) -> Result {
    let mut conns = Vec::new();
    for _ in 0..clients {
        let ch = Channel::from_shared(format!("http://127.0.0.1:{grpc}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        conns.push(RuntimeClient::new(ch));
    }
    let store: Arc<str> = store.into();
    // Warm-up: the key exists and every connection is hot.
    call(&mut conns[0], Op::Save, &store, "bench-key").await;
    let warm = Instant::now() + Duration::from_secs(1);
    let end = warm + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for mut c in conns {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                call(&mut c, op, &store, "bench-key").await;
                if t >= warm {
                    lat.push(t.elapsed());
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client"));
    }
    all.sort();
    Result {
        ops_per_sec: all.len() as f64 / secs as f64,
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
    }
}

/// `redis-benchmark` for one command: (rps, p50 ms, p99 ms) from its CSV output.
fn redis_benchmark(port: u16, clients: usize, secs: u64, rps_guess: f64, cmd: &[&str]) -> Result {
    let n = ((rps_guess * secs as f64) as u64).max(10_000);
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-c",
            &clients.to_string(),
            "-n",
            &n.to_string(),
            "-P",
            "1",
            "--csv",
        ])
        .args(cmd)
        .output()
        .expect("redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout);
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let row = text
        .lines()
        .find(|l| !l.starts_with("\"test\""))
        .unwrap_or_else(|| panic!("redis-benchmark said: {text}"));
    let cols: Vec<f64> = row
        .split(',')
        .skip(1)
        .map(|c| c.trim_matches('"').parse().unwrap_or(0.0))
        .collect();
    Result {
        ops_per_sec: cols[0],
        p50_ms: cols[3],
        p99_ms: cols[5],
    }
}

fn main() {
    let clients = env("RUNTIME_BENCH_CLIENTS", 16) as usize;
    let secs = env("RUNTIME_BENCH_SECONDS", 5);
    let (redis_port, grpc, admin) = (free_port(), free_port(), free_port());
    let _redis = start_redis(redis_port);
    let _l8 = start_layer8(grpc, admin, redis_port);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let row = |name: &str, r: &Result| {
        println!(
            "| {name} | {:.0} | {:.3} | {:.3} |",
            r.ops_per_sec, r.p50_ms, r.p99_ms
        );
    };
    println!("{clients} connections, 1 in flight each, {secs} s per row\n");
    println!("| operation | ops/s | p50 ms | p99 ms |\n|---|---:|---:|---:|");
    let mem_get = rt.block_on(measure(grpc, Op::Get, "memory", clients, secs));
    row("GetState, in-memory", &mem_get);
    let mem_save = rt.block_on(measure(grpc, Op::Save, "memory", clients, secs));
    row("SaveState, in-memory", &mem_save);
    let redis_get = rt.block_on(measure(grpc, Op::Get, "redis", clients, secs));
    row("GetState, Redis", &redis_get);
    let rb_get = redis_benchmark(
        redis_port,
        clients,
        secs,
        redis_get.ops_per_sec * 3.0,
        &["HMGET", "bench-key", "data", "version"],
    );
    row("redis-benchmark HMGET (what GetState sends)", &rb_get);
    let redis_save = rt.block_on(measure(grpc, Op::Save, "redis", clients, secs));
    row("SaveState, Redis", &redis_save);
    let rb_save = redis_benchmark(
        redis_port,
        clients,
        secs,
        redis_save.ops_per_sec * 3.0,
        &["HSET", "bench-key2", "data", "xxx", "version", "1"],
    );
    row(
        "redis-benchmark HSET (the write inside SaveState's script)",
        &rb_save,
    );
    println!(
        "\nRedis-backed p99 / redis-benchmark p99: GetState {:.2}x, SaveState {:.2}x",
        redis_get.p99_ms / rb_get.p99_ms.max(f64::EPSILON),
        redis_save.p99_ms / rb_save.p99_ms.max(f64::EPSILON)
    );
}
