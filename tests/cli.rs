//! The `layer8` binary's command line, as a process: `validate` (and `--mode validate`) on valid
//! and invalid bootstraps, serve mode refusing an invalid bootstrap, unknown flags, the flags
//! pilot-agent passes to Envoy (checked against Envoy 1.40's `/server_info`), `--config-yaml`
//! merged over `-c`, and `POST /quitquitquit`.

mod common;
use common::*;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::time::{Duration, Instant};

/// A valid bootstrap: admin on `admin`, one HTTP listener `http` on `listen` routing to the
/// STATIC cluster `backend`.
fn good(admin: u16, listen: u16) -> String {
    let vhosts = r#"            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: backend }"#;
    let backend = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    http_bootstrap(
        admin,
        listen,
        vhosts,
        &static_cluster("backend", &[backend], ""),
        "",
    )
}

/// `good` with one textual substitution (which must apply exactly once).
fn edit(base: &str, from: &str, to: &str) -> String {
    assert_eq!(base.matches(from).count(), 1, "edit anchor {from:?}");
    base.replacen(from, to, 1)
}

/// The invalid variants of `base` (whose listener is on `listen`): (name, bootstrap, exact
/// stderr of `validate`, where `path` stands for the file's path).
fn invalid(base: &str, listen: u16, path: &Path) -> Vec<(&'static str, String, String)> {
    let listener_start = base.find("  - name: http").expect("listener");
    let clusters_start = base.find("  clusters:").expect("clusters");
    // A second listener named `http`, on another port.
    let listener = edit(
        &base[listener_start..clusters_start],
        &format!("port_value: {listen} "),
        &format!("port_value: {} ", free_port()),
    );
    let duplicate = format!(
        "{}{listener}{}",
        &base[..clusters_start],
        &base[clusters_start..]
    );
    vec![
        (
            "maglev table size not prime",
            edit(base, "    connect_timeout: 1s\n", "    connect_timeout: 1s\n    lb_policy: MAGLEV\n    maglev_lb_config: { table_size: 100 }\n"),
            "error: cluster 'backend': maglev_lb_config.table_size: must be a prime number\n".to_string(),
        ),
        (
            "unknown field",
            edit(base, "    connect_timeout: 1s\n", "    connect_timeout: 1s\n    no_such_field: 1\n"),
            format!("error: {}: unknown field(s): static_resources.clusters[0].no_such_field\n", path.display()),
        ),
        ("duplicate listener name", duplicate, "error: listener 'http': name: duplicate listener name\n".to_string()),
        (
            "rbac filter",
            edit(
                base,
                "          - name: envoy.filters.http.router\n",
                "          - name: envoy.filters.http.rbac\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC\n              rules: { action: DENY }\n          - name: envoy.filters.http.router\n",
            ),
            "error: listener 'http': filter_chains[0].filters[0].typed_config.http_filters[0]: security filter 'envoy.filters.http.rbac' (type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC) is not implemented; refusing to serve without it\n".to_string(),
        ),
    ]
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write config");
    p
}

fn run(args: &[&str]) -> Output {
    Command::new(layer8_bin())
        .args(args)
        .output()
        .expect("run layer8")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Wait for a child to exit (the bound is a safety net only).
fn wait_exit(p: &mut Proc) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = p.child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "process did not exit within 30s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 request to the admin port: (status, body).
fn admin(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read admin response");
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad response {raw:?}"));
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

#[test]
fn validate_accepts_a_good_config() {
    let dir = temp_dir("cli-validate");
    let path = write(&dir, "good.yaml", &good(free_port(), free_port()));
    for args in [
        vec!["validate", "-c", path.to_str().unwrap()],
        vec!["--mode", "validate", "-c", path.to_str().unwrap()],
    ] {
        let out = run(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(
            text(&out.stdout),
            format!("configuration '{}' OK\n", path.display()),
            "{args:?}"
        );
        assert_eq!(text(&out.stderr), "", "{args:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn validate_rejects_invalid_configs_naming_resource_and_field() {
    let dir = temp_dir("cli-invalid");
    let listen = free_port();
    let base = good(free_port(), listen);
    for (i, (case, yaml, want)) in invalid(&base, listen, &dir.join("placeholder"))
        .into_iter()
        .enumerate()
    {
        let path = write(&dir, &format!("bad{i}.yaml"), &yaml);
        let want = want.replace(
            &dir.join("placeholder").display().to_string(),
            &path.display().to_string(),
        );
        for args in [
            vec!["validate", "-c", path.to_str().unwrap()],
            vec!["--mode", "validate", "-c", path.to_str().unwrap()],
        ] {
            let out = run(&args);
            assert_eq!(out.status.code(), Some(1), "{case}: {args:?}");
            assert_eq!(text(&out.stdout), "", "{case}");
            assert_eq!(text(&out.stderr), want, "{case}");
        }
    }

    // A route with a bad regex: the route configuration and the field, then the regex error.
    let path = write(
        &dir,
        "regex.yaml",
        &edit(
            &base,
            r#"match: { prefix: "/" }"#,
            r#"match: { safe_regex: { regex: "a(b" } }"#,
        ),
    );
    let out = run(&["validate", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: route_configuration 'local': virtual_hosts[0].routes[0].match.safe_regex.regex: regex parse error:\n"),
        "{stderr}"
    );
    assert!(stderr.ends_with("error: unclosed group\n"), "{stderr}");

    // The unknown field is tolerated with --allow-unknown-static-fields.
    let path = write(
        &dir,
        "unknown.yaml",
        &edit(
            &base,
            "    connect_timeout: 1s\n",
            "    connect_timeout: 1s\n    no_such_field: 1\n",
        ),
    );
    let out = run(&[
        "validate",
        "-c",
        path.to_str().unwrap(),
        "--allow-unknown-static-fields",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("configuration '{}' OK\n", path.display())
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn serve_mode_refuses_an_invalid_config() {
    let dir = temp_dir("cli-serve-bad");
    let (admin_port, listen) = (free_port(), free_port());
    let base = good(admin_port, listen);
    for (i, (case, yaml, want)) in invalid(&base, listen, &dir.join("placeholder"))
        .into_iter()
        .enumerate()
    {
        let path = write(&dir, &format!("bad{i}.yaml"), &yaml);
        let want = want.replace(
            &dir.join("placeholder").display().to_string(),
            &path.display().to_string(),
        );
        // `error: <message>` from validate is `layer8: <message>` in serve mode.
        let want = format!(
            "layer8: {}",
            want.strip_prefix("error: ").expect("error: prefix")
        );
        let out = run(&["-c", path.to_str().unwrap(), "-l", "off"]);
        assert_eq!(out.status.code(), Some(1), "{case}");
        assert_eq!(text(&out.stderr), want, "{case}");
        // Nothing was left listening.
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", admin_port)).is_err(),
            "{case}: admin still up"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unknown_flags_are_rejected() {
    for args in [
        vec!["--no-such-flag"],
        vec!["validate", "--no-such-flag"],
        vec!["-c", "x.yaml", "--no-such-flag"],
    ] {
        let out = run(&args);
        // Exit status 1, as Envoy's for a bad command line.
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with("error: unexpected argument '--no-such-flag' found\n"),
            "{args:?}: {stderr}"
        );
        assert_eq!(text(&out.stdout), "", "{args:?}");
    }
    let envoy = Command::new(envoy_bin())
        .arg("--no-such-flag")
        .output()
        .expect("run envoy");
    assert_eq!(envoy.status.code(), Some(1), "envoy");
}

/// The flags pilot-agent passes (`-c` is added by `start_process`).
const PILOT_FLAGS: &[&str] = &[
    "--drain-time-s",
    "45",
    "--drain-strategy",
    "immediate",
    "--local-address-ip-version",
    "v4",
    "--file-flush-interval-msec",
    "1000",
    "--disable-hot-restart",
    "--allow-unknown-static-fields",
    "--log-format",
    "%Y",
    "-l",
    "warning",
    "--component-log-level",
    "misc:error",
    "--concurrency",
    "2",
    "--service-cluster",
    "c",
    "--service-node",
    "n",
];

#[test]
fn pilot_agent_flags_are_accepted_and_reported_like_envoy() {
    // The bootstrap has no `node`: the flags create it, as in Envoy.
    let mut reported = Vec::new();
    for bin in [layer8_bin().to_string(), envoy_bin()] {
        let admin_port = free_port();
        let mut p = start_process(
            &bin,
            &good(admin_port, free_port()),
            "yaml",
            admin_port,
            PILOT_FLAGS,
        );
        assert_eq!(
            admin(admin_port, "GET", "/ready"),
            (200, "LIVE\n".to_string()),
            "{bin}"
        );
        let (status, body) = admin(admin_port, "GET", "/server_info");
        assert_eq!(status, 200, "{bin}");
        let info: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{bin}: /server_info: {e}: {body}"));
        let o = &info["command_line_options"];
        let fields = [
            ("node.id", &info["node"]["id"]),
            ("node.cluster", &info["node"]["cluster"]),
            ("state", &info["state"]),
            ("concurrency", &o["concurrency"]),
            ("service_node", &o["service_node"]),
            ("service_cluster", &o["service_cluster"]),
            ("drain_time", &o["drain_time"]),
            ("drain_strategy", &o["drain_strategy"]),
            ("disable_hot_restart", &o["disable_hot_restart"]),
            (
                "allow_unknown_static_fields",
                &o["allow_unknown_static_fields"],
            ),
            ("log_level", &o["log_level"]),
            ("component_log_level", &o["component_log_level"]),
            ("log_format", &o["log_format"]),
            ("file_flush_interval", &o["file_flush_interval"]),
            ("local_address_ip_version", &o["local_address_ip_version"]),
        ]
        .map(|(k, v)| (k, v.clone()));
        reported.push(fields.to_vec());
        // POST /quitquitquit: the process exits with status 0.
        assert_eq!(admin(admin_port, "POST", "/quitquitquit").0, 200, "{bin}");
        let status = wait_exit(&mut p);
        assert_eq!(status.code(), Some(0), "{bin}: exit status");
    }
    let want: Vec<(&str, serde_json::Value)> = vec![
        ("node.id", "n".into()),
        ("node.cluster", "c".into()),
        ("state", "LIVE".into()),
        ("concurrency", 2.into()),
        ("service_node", "n".into()),
        ("service_cluster", "c".into()),
        ("drain_time", "45s".into()),
        ("drain_strategy", "Immediate".into()),
        ("disable_hot_restart", true.into()),
        ("allow_unknown_static_fields", true.into()),
        ("log_level", "warning".into()),
        ("component_log_level", "misc:error".into()),
        ("log_format", "%Y".into()),
        ("file_flush_interval", "1s".into()),
        ("local_address_ip_version", "v4".into()),
    ];
    assert_eq!(reported[0], want, "layer8");
    assert_eq!(reported[1], want, "envoy");
}

#[test]
fn config_yaml_is_merged_over_the_config_file() {
    let (file_admin, yaml_admin, listen) = (free_port(), free_port(), free_port());
    let over =
        format!("admin: {{ address: {{ socket_address: {{ port_value: {yaml_admin} }} }} }}");
    let mut p = start_process(
        layer8_bin(),
        &good(file_admin, listen),
        "yaml",
        yaml_admin,
        &["--config-yaml", &over, "-l", "off"],
    );
    // The admin port comes from --config-yaml; the address and everything else from the file.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", file_admin)).is_err(),
        "admin on the file's port"
    );
    let (status, body) = admin(yaml_admin, "GET", "/server_info");
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&body).expect("server_info json");
    assert_eq!(
        info["command_line_options"]["config_yaml"],
        serde_json::Value::String(over.clone())
    );
    let (status, body) = admin(yaml_admin, "GET", "/listeners");
    assert_eq!((status, body), (200, format!("http::127.0.0.1:{listen}\n")));
    assert_eq!(admin(yaml_admin, "POST", "/quitquitquit").0, 200);
    assert_eq!(wait_exit(&mut p).code(), Some(0));
}

#[test]
fn logging_level_changes_at_run_time_and_log_path_is_written() {
    let (admin_port, listen) = (free_port(), free_port());
    let dir = temp_dir("logging");
    let log = dir.join("layer8.log");
    let log_arg = log.to_str().expect("path").to_string();
    let mut p = start_process(
        layer8_bin(),
        &good(admin_port, listen),
        "yaml",
        admin_port,
        &["-l", "info", "--log-path", &log_arg],
    );
    assert_eq!(
        admin(admin_port, "POST", "/logging?level=debug"),
        (200, "active loggers:\n  layer8: debug\n".to_string())
    );
    let (status, body) = admin(admin_port, "POST", "/logging?level=loud");
    assert_eq!(
        (status, body.as_str()),
        (404, "error: unknown level 'loud'\n")
    );
    assert_eq!(admin(admin_port, "GET", "/logging").0, 405);
    assert_eq!(admin(admin_port, "POST", "/quitquitquit").0, 200);
    assert_eq!(wait_exit(&mut p).code(), Some(0));
    let written = std::fs::read_to_string(&log).expect("log file");
    assert!(written.contains("layer8 is live"), "{written}");
    let _ = std::fs::remove_dir_all(&dir);
}
