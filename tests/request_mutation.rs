//! The connection manager edits the request before it picks a route, as Envoy's does: the
//! forwarding headers it adds (`x-forwarded-proto`, `x-request-id`) are there for route
//! matching, for the headers of local replies and for access logs, also when no upstream is
//! involved. Each check runs on Envoy and on layer8 with one bootstrap.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// What one proxy did with the requests.
#[derive(Debug, PartialEq)]
struct Seen {
    /// Status and body of the request routed on `x-forwarded-proto`.
    by_xfp: (u16, String),
    /// The `x-id` response header of a direct response, which copies `%REQ(x-request-id)%`.
    reply_id_is_uuid: bool,
    /// Access log lines: status, then whether the logged `x-request-id` is a UUID.
    log: Vec<String>,
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| {
            matches!(i, 8 | 13 | 18 | 23) == (c == '-') && (c == '-' || c.is_ascii_hexdigit())
        })
}

async fn run(bin: &str, dir: &Path) -> Seen {
    let (admin, listen) = (free_port(), free_port());
    let log = dir.join(format!(
        "{}.log",
        if bin.contains("envoy") {
            "envoy"
        } else {
            "layer8"
        }
    ));
    let vhosts = r#"            - name: app
              domains: ["app"]
              routes:
              - match:
                  prefix: "/xfp"
                  headers: [{ name: x-forwarded-proto, string_match: { exact: http } }]
                direct_response: { status: 200, body: { inline_string: "matched on x-forwarded-proto" } }
              - match: { prefix: "/xfp" }
                direct_response: { status: 404, body: { inline_string: "x-forwarded-proto missing" } }
              - match: { prefix: "/direct" }
                direct_response: { status: 200, body: { inline_string: "direct" } }
                response_headers_to_add:
                - header: { key: x-id, value: "%REQ(x-request-id)%" }
"#;
    let yaml = http_bootstrap(
        admin,
        listen,
        vhosts,
        "    []\n",
        &format!(
            "access_log:\n          - name: envoy.access_loggers.file\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n              path: {}\n              log_format: {{ text_format: \"%REQ(:PATH)% %RESPONSE_CODE% %REQ(X-REQUEST-ID)%\\n\" }}",
            log.display()
        ),
    );
    let _proc = tokio::task::block_in_place(|| {
        start_process(
            bin,
            &yaml,
            "yaml",
            admin,
            &["--disable-hot-restart", "--file-flush-interval-msec", "50"],
        )
    });
    let c = Clients::new();
    let xfp = c.send(false, listen, "GET", "app", "/xfp", &[], "").await;
    let direct = c
        .send(false, listen, "GET", "app", "/direct", &[], "")
        .await;
    assert_eq!(direct.status, 200, "{bin}");
    let no_route = c.send(false, listen, "GET", "app", "/none", &[], "").await;
    assert_eq!(no_route.status, 404, "{bin}");
    let reply_id = direct
        .headers
        .get("x-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let deadline = Instant::now() + Duration::from_secs(15);
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= 3 || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut log: Vec<String> = lines
        .iter()
        .map(|l| {
            let mut f = l.split(' ');
            let (path, code, id) = (f.next(), f.next(), f.next().unwrap_or(""));
            format!(
                "{} {} uuid={}",
                path.unwrap_or(""),
                code.unwrap_or(""),
                is_uuid(id)
            )
        })
        .collect();
    log.sort();
    Seen {
        by_xfp: (xfp.status, String::from_utf8_lossy(&xfp.body).into_owned()),
        reply_id_is_uuid: is_uuid(reply_id),
        log,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_added_before_routing_like_envoy() {
    let dir = temp_dir("request-mutation");
    let envoy = run(&envoy_bin(), &dir).await;
    let ours = run(layer8_bin(), &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let expected = Seen {
        by_xfp: (200, "matched on x-forwarded-proto".into()),
        reply_id_is_uuid: true,
        log: vec![
            "/direct 200 uuid=true".into(),
            "/none 404 uuid=true".into(),
            "/xfp 200 uuid=true".into(),
        ],
    };
    assert_eq!(envoy, expected, "Envoy");
    assert_eq!(ours, expected, "layer8");
}
