//! Access logs: the same bootstrap served by real Envoy and by layer8, the same requests, and
//! the same log lines (text with filters and lengths, typed JSON, tcp_proxy); Istio's own format;
//! and bad formats rejected naming the field.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

const TEXT: &str = r#"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %BYTES_RECEIVED% %BYTES_SENT% \"%REQ(USER-AGENT)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% %ROUTE_NAME% %UPSTREAM_REQUEST_ATTEMPT_COUNT% %RESP(X-UPSTREAM)% %REQ(X-MISSING)% %REQ(USER-AGENT):4% %%\n"#;

fn bootstrap(admin: u16, ports: [u16; 3], dir: &Path, ups: [u16; 3]) -> String {
    let [up, dead, bad] = ups;
    let [listen, tcp, picky] = ports;
    let dir = dir.display();
    format!(
        r#"
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: http
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {dir}/text.log
              log_format:
                text_format_source:
                  inline_string: "{TEXT}"
          - name: envoy.access_loggers.file
            filter:
              status_code_filter:
                comparison: {{ op: GE, value: {{ default_value: 400, runtime_key: layer8_test_unset }} }}
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {dir}/json.log
              log_format:
                json_format:
                  code: "%RESPONSE_CODE%"
                  flags: "%RESPONSE_FLAGS%"
                  method: "%REQ(:METHOD)%"
                  path: "%REQ(:PATH)%"
                  sent: "%BYTES_SENT%"
                  missing: "%REQ(X-MISSING)%"
                  mixed: "m=%REQ(:METHOD)% c=%RESPONSE_CODE%"
                  nested: {{ cluster: "%UPSTREAM_CLUSTER%" }}
                  literal: 7
          - name: envoy.access_loggers.file
            filter:
              or_filter:
                filters:
                - response_flag_filter: {{ flags: ["NR"] }}
                - header_filter: {{ header: {{ name: x-log-me, present_match: true }} }}
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {dir}/picked.log
              log_format: {{ text_format: "%RESPONSE_CODE% %REQ(:PATH)%\n" }}
          route_config:
            virtual_hosts:
            - name: app
              domains: ["app"]
              routes:
              - name: rewrite
                match: {{ prefix: "/old/" }}
                route: {{ cluster: up, prefix_rewrite: "/new/" }}
              - name: retried
                match: {{ prefix: "/retry" }}
                route: {{ cluster: up, retry_policy: {{ retry_on: 5xx, num_retries: 1 }} }}
              - name: direct
                match: {{ prefix: "/direct" }}
                direct_response: {{ status: 201, body: {{ inline_string: "made" }} }}
              - name: fail
                match: {{ prefix: "/fail" }}
                route: {{ cluster: bad, retry_policy: {{ retry_on: 5xx, num_retries: 1, retry_back_off: {{ base_interval: 0.001s }} }} }}
              - name: dead
                match: {{ prefix: "/dead" }}
                route: {{ cluster: dead }}
              - name: default
                match: {{ prefix: "/" }}
                route: {{ cluster: up }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  - name: tcp
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {tcp} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: up
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {dir}/tcp.log
              log_format:
                text_format: "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_HOST% %UPSTREAM_CLUSTER% %PROTOCOL%\n"
  - name: picky
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {picky} }} }}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }}
    access_log:
    - name: envoy.access_loggers.file
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
        path: {dir}/listener.log
        log_format: {{ text_format: "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %UPSTREAM_CLUSTER% %DOWNSTREAM_LOCAL_ADDRESS% %RESPONSE_CODE_DETAILS%\n" }}
    filter_chains:
    - filter_chain_match: {{ server_names: ["only.example"] }}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: picky
          cluster: up
  clusters:
  - name: up
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {up} }} }} }}
  - name: bad
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: bad
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {bad} }} }} }}
  - name: dead
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: dead
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {dead} }} }} }}
"#
    )
}

/// Lines of a log file once it has `n` of them (the writer flushes every 50 ms here).
fn lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Write `request` on a new connection to `port`, read until the peer closes, and check that
/// the answer starts with `status_line`.
async fn raw_exchange(port: u16, request: &'static [u8], status_line: &'static [u8]) {
    let out = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(request).expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    })
    .await
    .expect("raw client");
    assert!(
        out.starts_with(status_line),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
}

struct Logs {
    text: Vec<String>,
    json: Vec<serde_json::Value>,
    picked: Vec<String>,
    tcp: Vec<String>,
    listener: Vec<String>,
}

/// Serve the bootstrap with `bin`, send the corpus, and collect what it logged.
async fn run(bin: &str, ups: [u16; 3]) -> Logs {
    let (admin, listen, tcp, picky) = (free_port(), free_port(), free_port(), free_port());
    let dir: PathBuf = temp_dir("access-log");
    let yaml = bootstrap(admin, [listen, tcp, picky], &dir, ups);
    let _proc = tokio::task::block_in_place(|| {
        start_process(
            bin,
            &yaml,
            "yaml",
            admin,
            &[
                "--disable-hot-restart",
                "--file-flush-interval-msec",
                "50",
                "--concurrency",
                "1",
            ],
        )
    });
    let c = Clients::new();
    let ua = [("user-agent", "l8-test")];
    let send = |h2, method, host, path, extra: &'static [(&'static str, &'static str)], body| {
        let c = c.clone();
        async move {
            let mut headers: Vec<(&str, &str)> = ua.to_vec();
            headers.extend_from_slice(extra);
            c.send(h2, listen, method, host, path, &headers, body).await
        }
    };
    assert_eq!(
        send(false, "GET", "app", "/hello", &[], "").await.status,
        200
    );
    assert_eq!(
        send(false, "GET", "app", "/old/x?q=1", &[], "")
            .await
            .status,
        200
    );
    let post = send(
        false,
        "POST",
        "app",
        "/hello",
        &[("x-log-me", "1")],
        "0123456789",
    )
    .await;
    assert_eq!(post.status, 200);
    // A body the router buffers for a possible retry is counted too.
    let retried = send(false, "POST", "app", "/retry", &[], "0123456789").await;
    assert_eq!(retried.status, 200);
    assert_eq!(
        send(false, "GET", "app", "/direct", &[], "").await.status,
        201
    );
    assert_eq!(
        send(false, "GET", "nowhere", "/x", &[], "").await.status,
        404
    );
    assert_eq!(
        send(false, "GET", "app", "/dead", &[], "").await.status,
        503
    );
    // An upstream 503 retried once, then passed on: the retry limit was reached (URX).
    assert_eq!(
        send(false, "GET", "app", "/fail", &[], "").await.status,
        503
    );
    assert_eq!(send(true, "GET", "app", "/h2", &[], "").await.status, 200);
    // A space in Host: refused before routing (400, DPE), with no request values logged.
    raw_exchange(
        listen,
        b"GET /bad-host HTTP/1.1\r\nHost: a b\r\nuser-agent: l8-test\r\n\r\n",
        b"HTTP/1.1 400",
    )
    .await;
    // One connection through tcp_proxy: a whole HTTP exchange, then close.
    raw_exchange(
        tcp,
        b"GET /t HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 200",
    )
    .await;
    // A connection no filter chain accepts (plain text, the only chain wants an SNI).
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", picky)).expect("picky listener");
        let _ = s.write_all(b"hello there\r\n");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        assert!(out.is_empty(), "closed without an answer");
    })
    .await
    .expect("picky client");

    let (text, json, picked, tcp_lines, listener) = tokio::task::block_in_place(|| {
        (
            lines(&dir.join("text.log"), 10),
            lines(&dir.join("json.log"), 4),
            lines(&dir.join("picked.log"), 2),
            lines(&dir.join("tcp.log"), 1),
            lines(&dir.join("listener.log"), 1),
        )
    });
    let _ = std::fs::remove_dir_all(&dir);
    let mut text = text;
    text.sort();
    Logs {
        text,
        json: json
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect(),
        picked,
        tcp: tcp_lines,
        listener: listener
            .iter()
            .map(|l| l.replace(&picky.to_string(), "PICKY"))
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_logs_match_envoy_line_for_line() {
    let up = status_upstream("up", 200).await;
    let bad = status_upstream("bad", 503).await;
    let dead = free_port();
    let ups = [up.addr.port(), dead, bad.addr.port()];
    let envoy = run(&envoy_bin(), ups).await;
    let before = bad.hits.load(std::sync::atomic::Ordering::Relaxed);
    let ours = run(layer8_bin(), ups).await;
    assert_eq!(
        bad.hits.load(std::sync::atomic::Ordering::Relaxed) - before,
        2,
        "one retry"
    );
    let u = up.addr;
    let b = bad.addr;

    // The text log, exactly as layer8 writes it (sorted: streams end in any order).
    let mut expected = vec![
        format!("GET /hello HTTP/1.1 200 - via_upstream 0 5 \"l8-test\" \"app\" \"{u}\" up default 1 up - l8-t %"),
        format!("GET /old/x?q=1 HTTP/1.1 200 - via_upstream 0 5 \"l8-test\" \"app\" \"{u}\" up rewrite 1 up - l8-t %"),
        format!("POST /hello HTTP/1.1 200 - via_upstream 10 5 \"l8-test\" \"app\" \"{u}\" up default 1 up - l8-t %"),
        format!("POST /retry HTTP/1.1 200 - via_upstream 10 5 \"l8-test\" \"app\" \"{u}\" up retried 1 up - l8-t %"),
        "GET /direct HTTP/1.1 201 - direct_response 0 4 \"l8-test\" \"app\" \"-\" - direct 0 - - l8-t %".to_string(),
        "GET /x HTTP/1.1 404 NR route_not_found 0 0 \"l8-test\" \"nowhere\" \"-\" - - 0 - - l8-t %".to_string(),
        format!("GET /fail HTTP/1.1 503 URX via_upstream 0 5 \"l8-test\" \"app\" \"{b}\" bad fail 2 bad - l8-t %"),
        format!("GET /h2 HTTP/2 200 - via_upstream 0 5 \"l8-test\" \"app\" \"{u}\" up default 1 up - l8-t %"),

        // Refused by the codec in Envoy, before there is a request to log: no request values.
        "- - HTTP/1.1 400 DPE http.invalid_authority 0 11 \"-\" \"-\" \"-\" - - 0 - - - %".to_string(),
    ];
    expected.push(format!(
        "GET /dead HTTP/1.1 503 UF upstream_reset_before_response_started{{remote_connection_failure|delayed_connect_error:_Connection_refused}} 0 98 \"l8-test\" \"app\" \"127.0.0.1:{dead}\" dead dead 1 - - l8-t %"
    ));
    expected.sort();
    assert_eq!(ours.text, expected, "layer8's text log");
    assert_eq!(envoy.text, ours.text, "Envoy and layer8 disagree");

    // The JSON log: only >= 400, typed values, null for a missing header, nested objects.
    assert_eq!(ours.json.len(), 4, "{:?}", ours.json);
    let nr = &ours.json[0];
    assert_eq!(
        nr,
        &serde_json::json!({
            "code": 404, "flags": "NR", "method": "GET", "path": "/x", "sent": 0,
            "missing": null, "mixed": "m=GET c=404", "nested": { "cluster": null }, "literal": 7
        })
    );
    assert_eq!(ours.json[1]["code"], 503);
    assert_eq!(ours.json[1]["nested"]["cluster"], "dead");
    assert_eq!(ours.json[2]["flags"], "URX");
    assert_eq!(ours.json[3]["code"], 400);
    assert_eq!(ours.json[3]["flags"], "DPE");
    assert_eq!(ours.json[3]["path"], serde_json::Value::Null);
    assert_eq!(
        envoy.json, ours.json,
        "Envoy and layer8 JSON lines disagree"
    );

    // An or_filter of a response flag and a request header.
    assert_eq!(ours.picked, vec!["200 /hello", "404 /x"]);
    assert_eq!(envoy.picked, ours.picked);

    // tcp_proxy: no HTTP status, the bytes each way, the host and cluster.
    assert_eq!(ours.tcp.len(), 1);
    let f: Vec<&str> = ours.tcp[0].split(' ').collect();
    assert_eq!(f[0..2], ["0", "-"]);
    assert_eq!(f[2], "47", "bytes received: {}", ours.tcp[0]);
    assert!(
        f[3].parse::<u64>().is_ok_and(|n| n > 100),
        "{}",
        ours.tcp[0]
    );
    assert_eq!(f[4..], [u.to_string().as_str(), "up", "-"]);
    assert_eq!(envoy.tcp, ours.tcp);

    // The listener's own log: a connection refused before any filter chain.
    assert_eq!(
        ours.listener,
        vec!["0 NR 0 - 127.0.0.1:PICKY filter_chain_not_found"]
    );
    assert_eq!(envoy.listener, ours.listener);
}

/// Istio's sidecar format (from the 1.9 dump) renders every field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_format_renders_every_field() {
    let up = echo_upstream("up").await;
    let dump =
        std::fs::read_to_string(istio_fixtures().join("config-dumps/sidecar-istio-1.9.json"))
            .expect("fixture");
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("json");
    let format = find_text_format(&dump).expect("an access log format in the 1.9 dump");
    let (admin, listen) = (free_port(), free_port());
    let dir = temp_dir("istio-log");
    let path = dir.join("istio.log");
    let yaml = http_bootstrap(
        admin,
        listen,
        "            - name: all\n              domains: [\"*\"]\n              routes:\n              - name: r1\n                match: { prefix: \"/\" }\n                route: { cluster: up }\n",
        &static_cluster("up", &[up.addr], ""),
        &format!(
            "access_log:\n          - name: envoy.access_loggers.file\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n              path: {}\n              log_format: {{ text_format: {} }}",
            path.display(),
            serde_json::Value::String(format)
        ),
    );
    let _proc = tokio::task::block_in_place(|| {
        start_process(
            layer8_bin(),
            &yaml,
            "yaml",
            admin,
            &["--file-flush-interval-msec", "50"],
        )
    });
    let r = Clients::new()
        .send(
            false,
            listen,
            "GET",
            "reviews:9080",
            "/ratings",
            &[("user-agent", "curl/8"), ("x-forwarded-for", "10.1.2.3")],
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    let got = tokio::task::block_in_place(|| lines(&path, 1));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(got.len(), 1);
    let line = &got[0];
    // [2026-11-23T07:05:09.123Z] "GET /ratings HTTP/1.1" 200 - via_upstream - "-" 0 N T ...
    let re = regex::Regex::new(
        r#"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "GET /ratings HTTP/1\.1" 200 - via_upstream - "-" 0 (\d+) (\d+) (\d+) "10\.1\.2\.3" "curl/8" "([0-9a-f-]{36})" "reviews:9080" "([0-9.:]+)" up 127\.0\.0\.1:(\d+) 127\.0\.0\.1:(\d+) 127\.0\.0\.1:(\d+) - r1$"#,
    )
    .expect("regex");
    let caps = re
        .captures(line)
        .unwrap_or_else(|| panic!("unexpected line: {line}"));
    assert!(caps[1].parse::<u64>().expect("bytes") > 50, "{line}");
    assert_eq!(&caps[5], up.addr.to_string());
    // The upstream connection's own port, then the listener's.
    assert!(
        caps[6].parse::<u16>().is_ok_and(|p| p != up.addr.port()),
        "{line}"
    );
    assert_eq!(caps[7].parse::<u16>().ok(), Some(listen));
    // The x-request-id logged is the one the upstream received.
    assert_eq!(
        r.echo().headers.get("x-request-id").map(String::as_str),
        Some(&caps[4])
    );
}

fn find_text_format(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(serde_json::Value::String(f)) = m.get("text_format") {
                return Some(f.clone());
            }
            m.values().find_map(find_text_format)
        }
        serde_json::Value::Array(a) => a.iter().find_map(find_text_format),
        _ => None,
    }
}

#[test]
fn bad_formats_are_rejected_naming_the_field() {
    let dir = temp_dir("bad-log");
    for (format, want) in [
        (
            "%NOT_AN_OPERATOR%",
            "unknown command operator NOT_AN_OPERATOR",
        ),
        ("%REQ(x-a%", "invalid command at position 0"),
        ("%REQ%", "needs a header name"),
    ] {
        let yaml = http_bootstrap(
            free_port(),
            free_port(),
            "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: { prefix: \"/\" }\n                direct_response: { status: 200 }\n",
            &static_cluster("none", &["127.0.0.1:9".parse().expect("addr")], ""),
            &format!(
                "access_log:\n          - name: envoy.access_loggers.file\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n              path: {}\n              log_format: {{ text_format: \"{format}\" }}",
                dir.join("x.log").display()
            ),
        );
        let path = dir.join("bad.yaml");
        std::fs::write(&path, yaml).expect("write");
        let err = validate_rejects(&path);
        assert!(
            err.contains("access_log[0].typed_config.log_format.text_format") && err.contains(want),
            "{format}: {err}"
        );
    }
    // A file that cannot be opened rejects the resource too, naming the path field.
    let yaml = http_bootstrap(
        free_port(),
        free_port(),
        "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: { prefix: \"/\" }\n                direct_response: { status: 200 }\n",
        &static_cluster("none", &["127.0.0.1:9".parse().expect("addr")], ""),
        "access_log:\n          - name: envoy.access_loggers.file\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n              path: /nonexistent-layer8-dir/x.log",
    );
    let path = dir.join("unopenable.yaml");
    std::fs::write(&path, yaml).expect("write");
    let err = validate_rejects(&path);
    assert!(
        err.contains("access_log[0].typed_config.path")
            && err.contains("cannot open '/nonexistent-layer8-dir/x.log'"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGUSR1 reopens access log files, as Envoy does for log rotation: after the file is renamed
/// and the signal sent, later lines go to a new file at the configured path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_reopens_log_files_like_envoy() {
    let up = status_upstream("up", 200).await;
    for bin in [envoy_bin(), layer8_bin().to_string()] {
        let (admin, listen) = (free_port(), free_port());
        let dir = temp_dir("rotate");
        let path = dir.join("access.log");
        let rotated = dir.join("access.log.1");
        let yaml = http_bootstrap(
            admin,
            listen,
            "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: { prefix: \"/\" }\n                route: { cluster: up }\n",
            &static_cluster("up", &[up.addr], ""),
            &format!(
                "access_log:\n          - name: envoy.access_loggers.file\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n              path: {}\n              log_format: {{ text_format: \"%REQ(:PATH)%\\n\" }}",
                path.display()
            ),
        );
        let proc = tokio::task::block_in_place(|| {
            start_process(
                &bin,
                &yaml,
                "yaml",
                admin,
                &["--disable-hot-restart", "--file-flush-interval-msec", "50"],
            )
        });
        let c = Clients::new();
        let get = |path: String| {
            let c = c.clone();
            async move {
                c.send(false, listen, "GET", "app", &path, &[], "")
                    .await
                    .status
            }
        };
        assert_eq!(get("/one".into()).await, 200, "{bin}");
        assert_eq!(tokio::task::block_in_place(|| lines(&path, 1)), ["/one"]);
        std::fs::rename(&path, &rotated).expect("rotate");
        let pid = i32::try_from(proc.child.id()).expect("pid");
        // SAFETY: a signal to the child this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
        // Until a line reaches the new file: the signal is handled asynchronously, so the
        // first requests after it may still land in the rotated one.
        let mut sent = 0;
        let deadline = Instant::now() + Duration::from_secs(15);
        while !path.exists()
            || std::fs::read_to_string(&path)
                .unwrap_or_default()
                .is_empty()
        {
            assert!(
                Instant::now() < deadline,
                "{bin}: no new file after SIGUSR1"
            );
            sent += 1;
            assert_eq!(get(format!("/two-{sent}")).await, 200, "{bin}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Every request is logged once, in one file or the other (the last lines may still be
        // on their way to the file).
        let read = |p: &Path| -> Vec<String> {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            text.lines().map(str::to_string).collect()
        };
        let (mut old, mut new) = (read(&rotated), read(&path));
        while old.len() + new.len() < 1 + sent && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            (old, new) = (read(&rotated), read(&path));
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            old.first().map(String::as_str),
            Some("/one"),
            "{bin}: {old:?}"
        );
        assert!(!new.is_empty(), "{bin}");
        assert!(new.iter().all(|l| l.starts_with("/two-")), "{bin}: {new:?}");
        assert_eq!(old.len() + new.len(), 1 + sent, "{bin}: {old:?} {new:?}");
        drop(proc);
    }
}
