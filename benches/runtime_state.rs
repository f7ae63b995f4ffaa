//! GetState and SaveState over gRPC against a running layer8 (release binary, its own process),
//! with the in-memory store and with Redis, beside `redis-benchmark` doing the Redis commands
//! those calls turn into, against the same redis-server in the same run.
//!
//! The gRPC load comes from h2load (nghttp2's C load generator, as light a client as
//! redis-benchmark is) posting framed unary gRPC requests; percentiles come from its per-request
//! log. Rows: `RUNTIME_BENCH_CLIENTS` connections (default 16) with one call in flight on each
//! (as `redis-benchmark -c 16`), then 4 in flight, then a single connection;
//! `RUNTIME_BENCH_REQUESTS` calls per row (default 200 000). Markdown table on stdout.
//!
//! `cargo bench --bench runtime_state` (needs redis-server, redis-benchmark and h2load:
//! `bash .ci/install-deps.sh`).

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use layer8::runtime::proto::rt;
use prost::Message;

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

fn start_layer8(grpc: u16, admin: u16, redis: u16, concurrency: usize) -> Killed {
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
        .args(["--concurrency", &concurrency.to_string(), "-l", "warn"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn layer8");
    wait_port(grpc);
    Killed(child)
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Get,
    Save,
}

struct Row {
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

/// A unary gRPC request body: the 5-byte frame header and the message.
fn grpc_frame(msg: &impl Message) -> Vec<u8> {
    let body = msg.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Drive `op` on `store` with h2load: `conns` connections, `inflight` calls on each.
fn h2load(grpc: u16, op: Op, store: &str, conns: usize, inflight: usize, n: u64) -> Row {
    let dir = std::env::temp_dir().join(format!("layer8-runtime-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (method, body) = match op {
        Op::Get => (
            "GetState",
            grpc_frame(&rt::GetStateRequest {
                store_name: store.into(),
                key: "bench-key".into(),
                ..Default::default()
            }),
        ),
        Op::Save => (
            "SaveState",
            grpc_frame(&rt::SaveStateRequest {
                store_name: store.into(),
                states: vec![rt::StateItem {
                    key: "bench-key".into(),
                    value: b"xxx".to_vec(),
                    etag: None,
                    metadata: HashMap::new(),
                    options: None,
                }],
            }),
        ),
    };
    let data = dir.join(format!("{method}-{store}.bin"));
    std::fs::write(&data, body).expect("write body");
    let log = dir.join("latency.log");
    let _ = std::fs::remove_file(&log);
    let run = |n: u64, log: Option<&std::path::Path>| {
        let mut cmd = Command::new("h2load");
        cmd.args([
            "-n",
            &n.to_string(),
            "-c",
            &conns.to_string(),
            "-m",
            &inflight.to_string(),
        ])
        .arg("-d")
        .arg(&data)
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"]);
        if let Some(l) = log {
            cmd.arg(format!("--log-file={}", l.display()));
        }
        cmd.arg(format!(
            "http://127.0.0.1:{grpc}/spec.proto.runtime.v1.Runtime/{method}"
        ));
        let out = cmd.output().expect("h2load (bash .ci/install-deps.sh)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(n / 10, None); // warm-up
    let text = run(n, Some(&log));
    assert!(text.contains(&format!("{n} succeeded")), "h2load: {text}");
    let rps = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|r| r.trim_end_matches(" req/s").parse().ok())
        .unwrap_or(0.0);
    let mut lat: Vec<u64> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.parse().ok())
        .collect();
    lat.sort_unstable();
    let _ = std::fs::remove_dir_all(&dir);
    Row {
        ops_per_sec: rps,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
    }
}

/// `redis-benchmark` for one command: (rps, p50 ms, p99 ms) from its CSV output.
fn redis_benchmark(port: u16, clients: usize, n: u64, cmd: &[&str]) -> Row {
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
    Row {
        ops_per_sec: cols[0],
        p50_ms: cols[3],
        p99_ms: cols[5],
    }
}

fn main() {
    let clients = env("RUNTIME_BENCH_CLIENTS", 16) as usize;
    let n = env("RUNTIME_BENCH_REQUESTS", 200_000);
    let concurrencies: Vec<usize> = std::env::var("RUNTIME_BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let redis_port = free_port();
    let _redis = start_redis(redis_port);
    let row = |name: &str, r: &Row| {
        println!(
            "| {name} | {:.0} | {:.3} | {:.3} |",
            r.ops_per_sec, r.p50_ms, r.p99_ms
        );
    };
    let hmget = ["HMGET", "bench-key", "data", "version"];
    let hset = ["HSET", "bench-key2", "data", "xxx", "version", "1"];
    for concurrency in concurrencies {
        let (grpc, admin) = (free_port(), free_port());
        let l8 = start_layer8(grpc, admin, redis_port, concurrency);
        println!("\nlayer8 --concurrency {concurrency}, {n} calls per row\n");
        println!("| operation | ops/s | p50 ms | p99 ms |\n|---|---:|---:|---:|");
        for (op, name) in [(Op::Get, "GetState"), (Op::Save, "SaveState")] {
            for (conns, inflight) in [(clients, 1), (clients, 4), (1, 1)] {
                let r = h2load(grpc, op, "memory", conns, inflight, n);
                row(&format!("{name}, in-memory, {conns} conn x {inflight}"), &r);
            }
        }
        let mut ratios = Vec::new();
        for (op, name, cmd) in [
            (Op::Get, "GetState", &hmget[..]),
            (Op::Save, "SaveState", &hset[..]),
        ] {
            for conns in [clients, 1] {
                let r = h2load(grpc, op, "redis", conns, 1, n);
                row(&format!("{name}, Redis, {conns} conn x 1"), &r);
                let b = redis_benchmark(redis_port, conns, n, cmd);
                row(&format!("redis-benchmark -c {conns} {}", cmd[0]), &b);
                ratios.push(format!(
                    "{name} -c {conns}: {:.2}x",
                    r.p99_ms / b.p99_ms.max(f64::EPSILON)
                ));
            }
        }
        println!(
            "\nRedis-backed p99 / redis-benchmark p99: {}",
            ratios.join(", ")
        );
        drop(l8);
    }
}
