//! `http` output binding (Dapr's): `InvokeBinding` sends an HTTP request to the configured `url`.
//! The operation is the method (`create` = POST); metadata `path` is appended to the URL and the
//! other metadata become request headers. The response body comes back with `statusCode` and the
//! response headers as metadata; a non-2xx answer is an error.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use super::{ComponentError, Metadata, Result};

/// The largest response body a binding call accepts (64 MiB).
pub const MAX_RESPONSE_BODY: usize = 64 << 20;

/// An HTTP output binding.
#[derive(Debug)]
pub struct HttpBinding {
    url: String,
    timeout: Duration,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpBinding {
    /// From metadata `url` (required, `http://`) and `timeout` (default 30 s).
    pub fn new(metadata: &Metadata) -> std::result::Result<Self, String> {
        let url = metadata
            .get("url")
            .filter(|u| !u.is_empty())
            .ok_or("url is required")?
            .trim_end_matches('/')
            .to_string();
        if !url.starts_with("http://") {
            return Err(format!("url '{url}': only http:// is supported"));
        }
        url.parse::<http::Uri>()
            .map_err(|e| format!("url '{url}': {e}"))?;
        let timeout = match metadata.get("timeout") {
            Some(t) => crate::runtime::config::parse_duration(t)
                .ok_or_else(|| format!("timeout: bad duration '{t}'"))?,
            None => Duration::from_secs(30),
        };
        Ok(HttpBinding {
            url,
            timeout,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// The operations this binding accepts.
    pub const OPERATIONS: &'static [&'static str] = &[
        "create", "get", "head", "post", "put", "patch", "delete", "options", "trace",
    ];

    /// Send `data` with `operation`; returns the response body and metadata.
    pub async fn invoke(
        &self,
        operation: &str,
        data: Bytes,
        metadata: &Metadata,
    ) -> Result<(Bytes, Metadata)> {
        let method = match operation.to_ascii_lowercase().as_str() {
            "create" | "post" => http::Method::POST,
            "get" => http::Method::GET,
            "head" => http::Method::HEAD,
            "put" => http::Method::PUT,
            "patch" => http::Method::PATCH,
            "delete" => http::Method::DELETE,
            "options" => http::Method::OPTIONS,
            "trace" => http::Method::TRACE,
            other => {
                return Err(ComponentError::InvalidArgument(format!(
                    "binding operation '{other}' is not supported (use one of {})",
                    Self::OPERATIONS.join(", ")
                )))
            }
        };
        let path = metadata.get("path").map(String::as_str).unwrap_or("");
        let url = if path.is_empty() {
            self.url.clone()
        } else {
            format!("{}/{}", self.url, path.trim_start_matches('/'))
        };
        let mut req = http::Request::builder().method(method).uri(&url);
        for (k, v) in metadata {
            if k != "path" {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        let req = req
            .body(Full::new(data))
            .map_err(|e| ComponentError::InvalidArgument(format!("binding request: {e}")))?;
        // One deadline for the whole exchange, the response body included.
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| ComponentError::Unavailable(format!("{url}: {e}")))?;
            let status = resp.status();
            let mut out = Metadata::new();
            for (k, v) in resp.headers() {
                if let Ok(v) = v.to_str() {
                    out.insert(k.as_str().to_string(), v.to_string());
                }
            }
            out.insert("statusCode".into(), status.as_u16().to_string());
            let body = Limited::new(resp.into_body(), MAX_RESPONSE_BODY)
                .collect()
                .await
                .map_err(|e| ComponentError::Unavailable(format!("{url}: {e}")))?
                .to_bytes();
            Ok::<_, ComponentError>((status, out, body))
        };
        let (status, out, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ComponentError::Unavailable(format!("{url}: timed out")))??;
        if !status.is_success() {
            return Err(ComponentError::Internal(format!(
                "received status code {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&body)
            )));
        }
        Ok((body, out))
    }
}
