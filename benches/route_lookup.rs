//! Route lookup cost at 10, 1k and 10k routes: virtual host selection plus first-match route
//! selection, for the request that matches the last route (the worst case for a scan).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use layer8::config::{route, Notes};
use layer8::model::route::RouteTable;
use layer8_xds::json::{decode, DecodeOptions};
use layer8_xds::pb::envoy::config::route::v3::RouteConfiguration;

fn table(json: serde_json::Value) -> RouteTable {
    let rc = decode::<RouteConfiguration>(json, DecodeOptions::default())
        .expect("decode")
        .message;
    route::translate(&rc, &mut Notes::default()).expect("translate")
}

/// One virtual host with `n` routes: prefix routes, every 10th with a header condition.
fn one_vhost(n: usize) -> RouteTable {
    let routes: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let mut m = serde_json::json!({ "prefix": format!("/svc{i}/") });
            if i % 10 == 0 {
                m["headers"] = serde_json::json!([{ "name": "x-canary", "present_match": true }]);
            }
            serde_json::json!({ "match": m, "route": { "cluster": format!("c{i}") } })
        })
        .collect();
    table(
        serde_json::json!({ "name": "r", "virtual_hosts": [{ "name": "v", "domains": ["*"], "routes": routes }] }),
    )
}

/// `n` virtual hosts (one per service, as istiod generates) with two routes each.
fn many_vhosts(n: usize) -> RouteTable {
    let vhosts: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "name": format!("svc{i}"),
                "domains": [format!("svc{i}.ns.svc.cluster.local"), format!("svc{i}.ns.svc.cluster.local:80"), format!("svc{i}")],
                "routes": [
                    { "match": { "prefix": "/admin", "headers": [{ "name": "x-admin", "present_match": true }] }, "route": { "cluster": "admin" } },
                    { "match": { "prefix": "/" }, "route": { "cluster": format!("c{i}") } }
                ]
            })
        })
        .collect();
    table(serde_json::json!({ "name": "r", "virtual_hosts": vhosts }))
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_lookup");
    for n in [10usize, 1_000, 10_000] {
        let t = one_vhost(n);
        let req = http::Request::builder()
            .uri(format!("/svc{}/api/items?id=7", n - 1))
            .body(())
            .expect("req");
        g.bench_with_input(BenchmarkId::new("one_vhost_last_route", n), &n, |b, _| {
            b.iter(|| {
                let vh = t
                    .find_virtual_host(black_box("app.example.com"))
                    .expect("vhost");
                black_box(
                    layer8::http::route::select(vh, black_box(&req), "app.example.com")
                        .expect("route"),
                );
            })
        });
        let t = many_vhosts(n);
        let host = format!("svc{}.ns.svc.cluster.local:80", n - 1);
        let req = http::Request::builder()
            .uri("/api/items")
            .body(())
            .expect("req");
        g.bench_with_input(BenchmarkId::new("vhost_per_service", n), &n, |b, _| {
            b.iter(|| {
                let vh = t.find_virtual_host(black_box(&host)).expect("vhost");
                black_box(layer8::http::route::select(vh, black_box(&req), &host).expect("route"));
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
