//! Reading a worker's `/metrics`, `/readyz` and `/healthz` as Prometheus
//! and a load balancer would: over HTTP.
//!
//! Owns fetching and parsing the exposition well enough to assert exact
//! values. It must never read metrics any other way than over the wire.

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// One scrape: every sample, by its series (`name{labels}` exactly as
/// exposed, or `name` alone).
#[derive(Debug, Clone)]
pub struct Scrape {
    pub text: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    pub fn parse(text: String) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect();
        Scrape { text, samples }
    }

    /// The value of one series; `None` when it is not exposed.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }

    /// The value of one series, 0 when absent (a counter never incremented).
    pub fn value(&self, series: &str) -> f64 {
        self.get(series).unwrap_or(0.0)
    }

    /// Sum over every series of metric `name` whose labels contain all of
    /// `labels` (each `key="value"`).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(series, _)| {
                let (metric, rest) = series.split_once('{').unwrap_or((series.as_str(), ""));
                metric == name && labels.iter().all(|l| rest.contains(l))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// The metric families declared (`# TYPE` lines): name and type.
    pub fn families(&self) -> Vec<(String, String)> {
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| {
                let (name, kind) = l.split_once(' ')?;
                Some((name.to_owned(), kind.to_owned()))
            })
            .collect()
    }
}

/// GETs `path` from the worker's telemetry address: status and body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    courier_provider::install_crypto();
    // Bounded, so that a worker that stops answering fails the test with
    // a message instead of hanging it.
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let response = client
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"));
    let status = response.status().as_u16();
    let body = response.text().await.expect("read the body");
    (status, body)
}

/// Scrapes `/metrics`.
pub async fn metrics(addr: SocketAddr) -> Scrape {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "/metrics answered {status}: {body}");
    Scrape::parse(body)
}
