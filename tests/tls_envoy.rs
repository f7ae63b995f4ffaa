//! TLS termination against the oracle: the same bootstrap (a mutual-TLS listener with SAN
//! matchers and `forward_client_cert_details: APPEND_FORWARD`) served by Envoy and by layer8, the
//! same curl requests to both; handshake outcomes, the negotiated protocol, status and the
//! headers the upstream sees (`x-forwarded-client-cert`, `x-forwarded-proto`) must agree.

mod common;

use std::path::Path;
use std::process::Command;

use common::pki::Ca;
use common::*;

fn bootstrap(admin: u16, port: u16, dir: &Path, echo: std::net::SocketAddr) -> String {
    let f = |n: &str| dir.join(n).display().to_string();
    let tls = format!(
        r#"          require_client_certificate: true
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates:
            - certificate_chain: {{ filename: {} }}
              private_key: {{ filename: {} }}
            validation_context:
              trusted_ca: {{ filename: {} }}
              match_typed_subject_alt_names:
              - san_type: URI
                matcher: {{ prefix: "spiffe://cluster.local/" }}"#,
        f("server.pem"),
        f("server.key"),
        f("ca.pem")
    );
    let hcm = "          forward_client_cert_details: APPEND_FORWARD\n          set_current_client_cert_details: { subject: true, uri: true, dns: true }";
    tls_bootstrap_with(admin, port, &tls, echo, hcm)
}

/// What a client saw: curl's exit code, status, HTTP version, and the upstream's view of the
/// forwarded headers that matter.
#[derive(Debug, PartialEq)]
struct Seen {
    rc: i32,
    status: String,
    version: String,
    xfcc: Option<String>,
    xfp: Option<String>,
}

fn request(port: u16, dir: &Path, args: &[&str]) -> Seen {
    let resolve = format!("server.test:{port}:127.0.0.1");
    let out = Command::new("curl")
        .args(["-s", "-m", "5", "--resolve", &resolve, "--cacert"])
        .arg(dir.join("ca.pem"))
        .args(args)
        .args(["-w", "\n%{http_code} %{http_version}"])
        .arg(format!("https://server.test:{port}/x"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (status, version) = tail.split_once(' ').unwrap_or((tail, ""));
    let echo: Option<Echo> = serde_json::from_str(body).ok();
    Seen {
        rc: out.status.code().unwrap_or(-1),
        status: status.to_string(),
        version: version.to_string(),
        xfcc: echo
            .as_ref()
            .and_then(|e| e.headers.get("x-forwarded-client-cert").cloned()),
        xfp: echo.and_then(|e| e.headers.get("x-forwarded-proto").cloned()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer8_and_envoy_agree_on_mutual_tls() {
    let dir = temp_dir("tls-envoy");
    let ca = Ca::new("cluster.local");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    ca.leaf(&["server.test", "spiffe://cluster.local/ns/default/sa/server"])
        .write(&dir, "server");
    ca.leaf(&["spiffe://cluster.local/ns/default/sa/sleep", "sleep.test"])
        .write(&dir, "good");
    ca.leaf(&["spiffe://other.domain/ns/default/sa/sleep"])
        .write(&dir, "foreign");
    // A subject with several attributes and characters RFC 2253 escapes.
    ca.leaf_with_subject(
        &["spiffe://cluster.local/ns/default/sa/named"],
        &[
            (rcgen::DnType::CountryName, "US"),
            (rcgen::DnType::OrganizationName, "Acme, Inc."),
            (rcgen::DnType::CommonName, "client one"),
        ],
    )
    .write(&dir, "named");
    let echo = echo_upstream("echo").await;
    let (ea, ep, la, lp) = (free_port(), free_port(), free_port(), free_port());
    let (d1, d2) = (dir.clone(), dir.clone());
    let envoy = tokio::task::spawn_blocking(move || {
        start_process(
            &envoy_bin(),
            &bootstrap(ea, ep, &d1, echo.addr),
            "yaml",
            ea,
            &[
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "-l",
                "warning",
            ],
        )
    });
    let layer8 = tokio::task::spawn_blocking(move || {
        start_process(
            layer8_bin(),
            &bootstrap(la, lp, &d2, echo.addr),
            "yaml",
            la,
            &["--concurrency", "1"],
        )
    });
    let (_envoy, _layer8) = (envoy.await.expect("envoy"), layer8.await.expect("layer8"));

    let good = |extra: &[&str]| {
        let mut v = vec![
            "--cert".to_string(),
            dir.join("good.pem").display().to_string(),
            "--key".to_string(),
            dir.join("good.key").display().to_string(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let foreign = vec![
        "--cert".to_string(),
        dir.join("foreign.pem").display().to_string(),
        "--key".to_string(),
        dir.join("foreign.key").display().to_string(),
    ];
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("mutual TLS, HTTP/2 by ALPN", good(&[])),
        ("mutual TLS, HTTP/1.1", good(&["--http1.1"])),
        (
            "an XFCC from the client is appended to",
            good(&[
                "-H",
                "x-forwarded-client-cert: By=spiffe://a/b;URI=spiffe://c/d",
            ]),
        ),
        ("no ALPN", good(&["--no-alpn"])),
        (
            "a client certificate with a subject",
            vec![
                "--cert".to_string(),
                dir.join("named.pem").display().to_string(),
                "--key".to_string(),
                dir.join("named.key").display().to_string(),
            ],
        ),
        ("no client certificate", vec![]),
        ("SAN outside the trust domain", foreign),
    ];
    let dir2 = dir.clone();
    let results = tokio::task::spawn_blocking(move || {
        cases
            .into_iter()
            .map(|(name, args)| {
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                (name, request(ep, &dir2, &a), request(lp, &dir2, &a))
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("requests");
    let mut disagree = Vec::new();
    for (name, envoy, layer8) in &results {
        // curl's exit code for a refused handshake differs with the alert (35 vs 56): compare
        // success and failure.
        fn norm(s: &Seen) -> (bool, &str, &str, Option<&str>, Option<&str>) {
            (
                s.rc == 0,
                &s.status,
                &s.version,
                s.xfcc.as_deref(),
                s.xfp.as_deref(),
            )
        }
        if norm(envoy) != norm(layer8) {
            disagree.push(format!("{name}:\n  envoy  {envoy:?}\n  layer8 {layer8:?}"));
        }
    }
    assert!(disagree.is_empty(), "{}", disagree.join("\n"));
    // And the cases did what they say.
    assert_eq!(results[0].2.status, "200");
    assert_eq!(results[0].2.version, "2");
    assert!(results[0]
        .2
        .xfcc
        .as_deref()
        .is_some_and(|x| x.contains("URI=spiffe://cluster.local/ns/default/sa/sleep")));
    assert!(
        results[4]
            .2
            .xfcc
            .as_deref()
            .is_some_and(|x| x.contains("Subject=\"CN=client one,O=Acme\\, Inc.,C=US\"")),
        "{:?}",
        results[4].2
    );
    assert_ne!(results[5].2.rc, 0);
    assert_ne!(results[6].2.rc, 0);
    let _ = std::fs::remove_dir_all(&dir);
}
