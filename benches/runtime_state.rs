//! GetState and SaveState over gRPC against a running layer8 (release binary, its own process),
//! with the in-memory store and with Redis, beside `redis-benchmark` doing the Redis commands
//! those calls turn into, against the same redis-server in the same run.
//!
//! The gRPC load comes from h2load (nghttp2's C load generator, as light a client as
//! redis-benchmark is) posting framed unary gRPC requests; percentiles come from its per-request
//! log. Rows: `RUNTIME_BENCH_CLIENTS` connections (default 16) with one call in flight on each
//! (as `redis-benchmark -c 16`), then 4 in flight, then a single connection;
//! `RUNTIME_BENCH_REQUESTS` calls per row (default 200 000; a quarter of that for the
//! single-connection Redis rows). The Redis rows and their redis-benchmark twins run in
//! `RUNTIME_BENCH_ROUNDS` rounds (default 3), and the p99 ratios are reported as medians over
//! the rounds. Markdown tables on stdout.
//!
//! Two more kinds of row put the Redis-backed numbers in context:
//! - **HTTP/2 floor**: the same h2load requests against nginx answering `return 200` over h2c
//!   (no store, no gRPC): what the client-to-sidecar leg alone costs with a fast C server.
//! - **Unix socket**: GetState and SaveState with the app leg over the runtime's Unix-socket
//!   listener (Layotto's `pipe` option) instead of loopback TCP; Redis is still reached over TCP.
//! - **One proxy hop**: `redis-benchmark` through layer8's `tcp_proxy`, Envoy's `tcp_proxy` and
//!   Envoy's `redis_proxy` (one worker each, one bootstrap), beside it straight to Redis: what a
//!   sidecar hop alone costs here, with no HTTP/2 or gRPC. Envoy comes from `LAYER8_ENVOY` or the
//!   venv of `.ci/install-deps.sh`; without one its rows are left out.
//!
//! `cargo bench --bench runtime_state` (needs redis-server, redis-benchmark and h2load:
//! `bash .ci/install-deps.sh`). `RUNTIME_BENCH_SPREAD=1` gives the runtime listeners
//! `connection_balance_config: exact_balance`, spreading their connections over the workers.
//! `LAYER8_BIN=target/pgo/release/layer8` measures the PGO build of `benches/pgo.sh` instead of
//! the one cargo builds.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use layer8::runtime::components::state_redis::WRITE_SCRIPT;
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

fn start_layer8(
    grpc: u16,
    sock: &std::path::Path,
    admin: u16,
    redis: u16,
    concurrency: usize,
) -> Killed {
    // One runtime config on two listeners (TCP and a Unix socket): they share one runtime.
    let chains = serde_json::json!([{"filters": [{"name": "layer8.runtime", "typed_config": {
    "@type": "type.googleapis.com/xds.type.v3.TypedStruct",
    "type_url": "layer8.runtime.v1.Runtime",
    "value": {"grpc_config": {"state": {
        "memory": {"type": "in-memory"},
        "redis": {"type": "redis", "metadata": {"redisHost": format!("127.0.0.1:{redis}")}}
    }}}}}]}]);
    let mut listeners = serde_json::json!([{
        "name": "runtime",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": grpc}},
        "filter_chains": chains
    }, {
        "name": "runtime_uds",
        "address": {"pipe": {"path": sock.display().to_string()}},
        "filter_chains": chains
    }]);
    // A runtime listener keeps its connections on the first worker; `RUNTIME_BENCH_SPREAD=1`
    // spreads them over the workers instead, as a proxy listener does.
    if std::env::var("RUNTIME_BENCH_SPREAD").is_ok_and(|v| v == "1") {
        for l in listeners.as_array_mut().into_iter().flatten() {
            l["connection_balance_config"] = serde_json::json!({"exact_balance": {}});
        }
    }
    let cfg = serde_json::json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": listeners}
    });
    let path =
        std::env::temp_dir().join(format!("layer8-runtime-bench-{}.json", std::process::id()));
    std::fs::write(&path, cfg.to_string()).expect("write config");
    // `LAYER8_BIN` measures another build of the same code (the PGO build of benches/pgo.sh).
    let bin = std::env::var("LAYER8_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_layer8").into());
    let child = Command::new(bin)
        .arg("-c")
        .arg(&path)
        .args(["--concurrency", &concurrency.to_string(), "-l", "warn"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn layer8");
    let child = Killed(child);
    wait_port(grpc);
    // Listening: the config has been read.
    let _ = std::fs::remove_file(&path);
    child
}

/// The directory of the floor's nginx (config, logs, temp files).
fn nginx_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("layer8-runtime-bench-nginx-{}", std::process::id()))
}

/// nginx with one h2c server that answers every request `200` with no body.
fn start_nginx(port: u16) -> Killed {
    let dir = nginx_dir();
    std::fs::create_dir_all(&dir).expect("nginx dir");
    let d = dir.display();
    let conf = format!(
        "worker_processes 1; master_process off; daemon off; pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};
  uwsgi_temp_path {d}; scgi_temp_path {d};
  server {{ listen 127.0.0.1:{port} http2; keepalive_requests 100000000;
           location / {{ return 200; }} }}
}}
"
    );
    std::fs::write(dir.join("nginx.conf"), conf).expect("nginx.conf");
    let bin = ["/usr/sbin/nginx", "nginx"]
        .into_iter()
        .find(|b| std::path::Path::new(b).exists())
        .unwrap_or("nginx");
    let child = Command::new(bin)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("nginx: {e} (bash .ci/install-deps.sh)"));
    wait_port(port);
    Killed(child)
}

/// The Envoy binary, as the tests and `benches/xds_apply.rs` find it: `LAYER8_ENVOY`, else the
/// venv of `.ci/install-deps.sh`; `None` when there is none.
fn envoy_bin() -> Option<std::path::PathBuf> {
    let bin: std::path::PathBuf = std::env::var("LAYER8_ENVOY")
        .unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
            format!("{home}/.cache/layer8-tools/venv/bin/envoy")
        })
        .into();
    bin.exists().then_some(bin)
}

/// A proxy (`bin`: layer8 or Envoy) on one worker, serving `listeners` (name, port, network
/// filter) in front of the Redis at `redis`, from the same Envoy bootstrap.
fn start_hop(
    bin: &std::path::Path,
    tag: &str,
    listeners: &[(&str, u16, serde_json::Value)],
    redis: u16,
) -> Killed {
    let ports: Vec<u16> = listeners.iter().map(|(_, port, _)| *port).collect();
    let listeners: Vec<_> = listeners
        .iter()
        .map(|(name, port, filter)| {
            serde_json::json!({
                "name": name,
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [filter]}]
            })
        })
        .collect();
    let cfg = serde_json::json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": free_port()}}},
        "static_resources": {"listeners": listeners, "clusters": [{
            "name": "redis", "connect_timeout": "1s", "type": "STATIC",
            "load_assignment": {"cluster_name": "redis", "endpoints": [{"lb_endpoints": [{"endpoint":
                {"address": {"socket_address": {"address": "127.0.0.1", "port_value": redis}}}}]}]}
        }]}
    });
    let path = std::env::temp_dir().join(format!(
        "layer8-runtime-bench-{tag}-{}.json",
        std::process::id()
    ));
    std::fs::write(&path, cfg.to_string()).expect("write hop config");
    let mut cmd = Command::new(bin);
    cmd.arg("-c")
        .arg(&path)
        .args(["--concurrency", "1", "-l", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if tag == "envoy" {
        cmd.arg("--disable-hot-restart");
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let killed = Killed(child);
    for port in ports {
        wait_port(port);
    }
    // Listening: the config has been read.
    let _ = std::fs::remove_file(&path);
    killed
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

/// Where h2load connects.
#[derive(Clone, Copy)]
enum Target<'a> {
    /// layer8's runtime on loopback TCP.
    Tcp(u16),
    /// layer8's runtime on its Unix-socket listener.
    Unix(&'a std::path::Path),
    /// nginx answering `return 200` over h2c on this port: the HTTP/2 floor.
    Floor(u16),
}

/// Drive `op` on `store` with h2load: `conns` connections, `inflight` calls on each.
fn h2load(to: Target<'_>, op: Op, store: &str, conns: usize, inflight: usize, n: u64) -> Row {
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
        let path = format!("/spec.proto.runtime.v1.Runtime/{method}");
        match to {
            Target::Tcp(port) | Target::Floor(port) => {
                cmd.arg(format!("http://127.0.0.1:{port}{path}"))
            }
            Target::Unix(sock) => cmd
                .arg(format!("--base-uri=unix:{}", sock.display()))
                .arg(format!("http://localhost{path}")),
        };
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

/// Load `script` into the server's script cache (`SCRIPT LOAD`, as layer8 does on first use) and
/// return its SHA1 for EVALSHA.
fn script_load(port: u16, script: &str) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "SCRIPT", "LOAD", script])
        .output()
        .expect("redis-cli (bash .ci/install-deps.sh)");
    let sha = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(sha.len(), 40, "SCRIPT LOAD said: {sha}");
    sha
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

/// `1.87x [1.80, 1.87, 2.10]`: the median of `ratios` and each of them.
fn summary(ratios: &[f64]) -> String {
    let mut sorted = ratios.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    format!("{median:.2}x [{}]", each.join(", "))
}

/// One proxy hop, no gRPC: `redis-benchmark` straight to Redis, then through layer8's
/// `tcp_proxy`, Envoy's `tcp_proxy` and Envoy's `redis_proxy` (each on one worker), round by
/// round. What a sidecar hop alone costs on this host, the floor under the Redis rows' ratios.
/// Envoy's rows are left out when there is no Envoy binary.
fn hop_floor(redis: u16, clients: usize, n: u64, rounds: usize, cmd: &[&str]) {
    let tcp_proxy = serde_json::json!({"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": "redis_tcp", "cluster": "redis"}});
    let redis_proxy = serde_json::json!({"name": "envoy.filters.network.redis_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy",
        "stat_prefix": "redis", "settings": {"op_timeout": "5s"},
        "prefix_routes": {"catch_all_route": {"cluster": "redis"}}}});
    let layer8_bin: std::path::PathBuf = std::env::var("LAYER8_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_layer8").into())
        .into();
    let l8_port = free_port();
    let _l8 = start_hop(
        &layer8_bin,
        "layer8",
        &[("tcp", l8_port, tcp_proxy.clone())],
        redis,
    );
    let mut hops = vec![("layer8 tcp_proxy", l8_port)];
    let envoy = envoy_bin();
    let (env_tcp, env_redis) = (free_port(), free_port());
    let _envoy = envoy.as_ref().map(|bin| {
        hops.push(("Envoy tcp_proxy", env_tcp));
        hops.push(("Envoy redis_proxy", env_redis));
        start_hop(
            bin,
            "envoy",
            &[
                ("tcp", env_tcp, tcp_proxy),
                ("redis", env_redis, redis_proxy),
            ],
            redis,
        )
    });
    if envoy.is_none() {
        println!("\n(no Envoy binary: set LAYER8_ENVOY or run bash .ci/install-deps.sh)");
    }
    println!(
        "\nOne proxy hop: redis-benchmark {} straight to Redis and through each proxy (one \
         worker), {rounds} rounds\n\n| operation | ops/s | p50 ms | p99 ms |\n|---|---:|---:|---:|",
        cmd[0]
    );
    let mut lines = Vec::new();
    for conns in [clients, 1] {
        let calls = if conns == 1 { n / 4 } else { n };
        let mut ratios = vec![Vec::new(); hops.len()];
        for round in 1..=rounds {
            let direct = redis_benchmark(redis, conns, calls, cmd);
            print_row(&format!("direct, -c {conns}, round {round}"), &direct);
            for ((name, port), ratios) in hops.iter().zip(&mut ratios) {
                let r = redis_benchmark(*port, conns, calls, cmd);
                print_row(&format!("{name}, -c {conns}, round {round}"), &r);
                ratios.push(p99_ratio(&r, &direct));
            }
        }
        let cells: Vec<String> = ratios.iter().map(|r| summary(r)).collect();
        lines.push(format!("| -c {conns} | {} |", cells.join(" | ")));
    }
    let names: Vec<&str> = hops.iter().map(|(name, _)| *name).collect();
    println!(
        "\nProxied p99 / direct p99, median of {rounds} rounds (each round's ratio in \
         brackets):\n\n| | {} |\n|---|{}\n{}",
        names.join(" | "),
        "---|".repeat(names.len()),
        lines.join("\n")
    );
}

/// One markdown table row: name, ops/s, p50 and p99 in ms.
fn print_row(name: &str, r: &Row) {
    println!(
        "| {name} | {:.0} | {:.3} | {:.3} |",
        r.ops_per_sec, r.p50_ms, r.p99_ms
    );
}

/// `a`'s p99 over `b`'s.
fn p99_ratio(a: &Row, b: &Row) -> f64 {
    a.p99_ms / b.p99_ms.max(f64::EPSILON)
}

fn main() {
    let clients = env("RUNTIME_BENCH_CLIENTS", 16) as usize;
    let n = env("RUNTIME_BENCH_REQUESTS", 200_000);
    let rounds = env("RUNTIME_BENCH_ROUNDS", 3).max(1) as usize;
    let concurrencies: Vec<usize> = std::env::var("RUNTIME_BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let redis_port = free_port();
    let _redis = start_redis(redis_port);
    // What GetState and SaveState send to Redis: an HMGET, and the write script (loaded here as
    // layer8 loads it) through EVALSHA. A bare HSET, cheaper for Redis than the script, is shown
    // beside it.
    let hmget = ["HMGET", "bench-key", "data", "version"];
    let sha = script_load(redis_port, WRITE_SCRIPT);
    let evalsha = ["EVALSHA", &sha, "1", "bench-key2", "set", "always", "xxx"];
    let hset = ["HSET", "bench-key3", "data", "xxx", "version", "1"];

    let floor_port = free_port();
    let nginx = start_nginx(floor_port);
    println!(
        "\nHTTP/2 floor: the GetState requests against nginx `return 200` (h2c), {n} per row\n"
    );
    println!("| operation | ops/s | p50 ms | p99 ms |\n|---|---:|---:|---:|");
    let mut ratios = Vec::new();
    for conns in [clients, 1] {
        let f = h2load(Target::Floor(floor_port), Op::Get, "redis", conns, 1, n);
        print_row(&format!("h2load -> nginx h2c, {conns} conn x 1"), &f);
        let b = redis_benchmark(redis_port, conns, n, &hmget);
        print_row(&format!("redis-benchmark -c {conns} HMGET"), &b);
        ratios.push(format!("-c {conns}: {:.2}x", p99_ratio(&f, &b)));
    }
    println!(
        "\nnginx h2c p99 / redis-benchmark p99: {}",
        ratios.join(", ")
    );
    drop(nginx);
    let _ = std::fs::remove_dir_all(nginx_dir());
    hop_floor(redis_port, clients, n, rounds, &hmget);

    let sock =
        std::env::temp_dir().join(format!("layer8-runtime-bench-{}.sock", std::process::id()));
    for concurrency in concurrencies {
        let (grpc, admin) = (free_port(), free_port());
        let _ = std::fs::remove_file(&sock);
        let l8 = start_layer8(grpc, &sock, admin, redis_port, concurrency);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "{} never appeared",
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let (tcp, unix) = (Target::Tcp(grpc), Target::Unix(&sock));
        println!("\nlayer8 --concurrency {concurrency}, {n} calls per row\n");
        println!("| operation | ops/s | p50 ms | p99 ms |\n|---|---:|---:|---:|");
        for (op, name) in [(Op::Get, "GetState"), (Op::Save, "SaveState")] {
            for (conns, inflight) in [(clients, 1), (clients, 4), (1, 1)] {
                let r = h2load(tcp, op, "memory", conns, inflight, n);
                print_row(&format!("{name}, in-memory, {conns} conn x {inflight}"), &r);
            }
        }
        // The Redis rows run in rounds, each round the layer8 rows and redis-benchmark back to
        // back, so that a noisy moment of the shared host lands in one round, not in one side.
        let mut ratios = Vec::new();
        for (op, name, cmd, extra) in [
            (Op::Get, "GetState", &hmget[..], None),
            (Op::Save, "SaveState", &evalsha[..], Some(&hset[..])),
        ] {
            for conns in [clients, 1] {
                // One connection is 5-10x slower: a quarter of the calls still gives p99 from
                // hundreds of samples.
                let calls = if conns == 1 { n / 4 } else { n };
                let (mut tcp_x, mut unix_x, mut extra_x) = (Vec::new(), Vec::new(), Vec::new());
                for round in 1..=rounds {
                    let r = h2load(tcp, op, "redis", conns, 1, calls);
                    print_row(
                        &format!("{name}, Redis, {conns} conn x 1, round {round}"),
                        &r,
                    );
                    let u = h2load(unix, op, "redis", conns, 1, calls);
                    print_row(
                        &format!(
                            "{name}, Redis, app over Unix socket, {conns} conn x 1, round {round}"
                        ),
                        &u,
                    );
                    let b = redis_benchmark(redis_port, conns, calls, cmd);
                    print_row(
                        &format!("redis-benchmark -c {conns} {}, round {round}", cmd[0]),
                        &b,
                    );
                    tcp_x.push(p99_ratio(&r, &b));
                    unix_x.push(p99_ratio(&u, &b));
                    if let Some(extra) = extra {
                        let e = redis_benchmark(redis_port, conns, calls, extra);
                        print_row(
                            &format!("redis-benchmark -c {conns} {}, round {round}", extra[0]),
                            &e,
                        );
                        extra_x.push((p99_ratio(&r, &e), p99_ratio(&u, &e)));
                    }
                }
                let mut line = format!(
                    "| {name}, {conns} conn | {} | {} |",
                    summary(&tcp_x),
                    summary(&unix_x)
                );
                if extra.is_some() {
                    let (t, u): (Vec<f64>, Vec<f64>) = extra_x.into_iter().unzip();
                    line += &format!(
                        "\n| {name}, {conns} conn, against a bare HSET | {} | {} |",
                        summary(&t),
                        summary(&u)
                    );
                }
                ratios.push(line);
            }
        }
        println!(
            "\nRedis-backed p99 / redis-benchmark p99 (same command), median of {rounds} rounds \
             (each round's ratio in brackets):\n\n| | TCP | app over Unix socket |\n|---|---|---|\n{}",
            ratios.join("\n")
        );
        drop(l8);
    }
    let _ = std::fs::remove_file(&sock);
}
