//! Listener filters that look at the first bytes without consuming them: tls_inspector (SNI,
//! ALPN, via rustls' ClientHello parser) and http_inspector (HTTP/1.x vs h2c preface).

use tokio::net::TcpStream;

use crate::model::listener::Inspectors;

/// What inspection found.
#[derive(Debug, Default)]
pub struct Found {
    /// `tls` or `raw_buffer`.
    pub transport: &'static str,
    /// SNI.
    pub sni: Option<String>,
    /// ALPN or detected HTTP protocol.
    pub app_protocols: Vec<String>,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const MAX_PEEK: usize = 16 * 1024;

/// Peek at the connection until the enabled inspectors have an answer (or the peer closes).
pub async fn inspect(stream: &TcpStream, which: Inspectors) -> Found {
    let mut buf = vec![0u8; MAX_PEEK];
    let mut found = Found {
        transport: "raw_buffer",
        ..Default::default()
    };
    let mut last = 0;
    loop {
        let n = match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return found,
            Ok(n) => n,
        };
        let data = &buf[..n];
        if data[0] == 0x16 && which.tls {
            match client_hello(data) {
                Hello::Done(sni, alpn) => {
                    found.transport = "tls";
                    found.sni = sni;
                    found.app_protocols = alpn;
                    return found;
                }
                Hello::NotTls => return found,
                Hello::NeedMore => {}
            }
        } else if which.http {
            match http_protocol(data) {
                Some(Some(p)) => {
                    found.app_protocols = vec![p.to_string()];
                    return found;
                }
                Some(None) => return found,
                None => {}
            }
        } else {
            return found;
        }
        if n == MAX_PEEK || n == last {
            // peek returns the same bytes until more arrive: wait a moment for them.
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            if n == MAX_PEEK {
                return found;
            }
        }
        last = n;
    }
}

enum Hello {
    Done(Option<String>, Vec<String>),
    NeedMore,
    NotTls,
}

fn client_hello(data: &[u8]) -> Hello {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rd = data;
    if acceptor.read_tls(&mut rd).is_err() {
        return Hello::NotTls;
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => {
            let hello = accepted.client_hello();
            let sni = hello.server_name().map(|s| s.to_ascii_lowercase());
            let alpn = hello
                .alpn()
                .map(|it| {
                    it.map(|p| String::from_utf8_lossy(p).into_owned())
                        .collect()
                })
                .unwrap_or_default();
            Hello::Done(sni, alpn)
        }
        Ok(None) => Hello::NeedMore,
        Err(_) => Hello::NotTls,
    }
}

/// `Some(Some(proto))` when detected, `Some(None)` when not HTTP, `None` when more bytes are needed.
fn http_protocol(data: &[u8]) -> Option<Option<&'static str>> {
    let n = data.len().min(H2_PREFACE.len());
    if data[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Some(Some("h2c"))
        } else {
            None
        };
    }
    let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
        return if data.len() > 8192 { Some(None) } else { None };
    };
    let line = &data[..end];
    if line.ends_with(b" HTTP/1.1") {
        Some(Some("http/1.1"))
    } else if line.ends_with(b" HTTP/1.0") {
        Some(Some("http/1.0"))
    } else {
        Some(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_http_versions() {
        assert_eq!(
            http_protocol(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Some(Some("http/1.1"))
        );
        assert_eq!(http_protocol(b"GET / HTTP/1.0\r\n"), Some(Some("http/1.0")));
        assert_eq!(http_protocol(H2_PREFACE), Some(Some("h2c")));
        assert_eq!(http_protocol(b"PRI * HT"), None);
        assert_eq!(http_protocol(b"GET / HT"), None);
        assert_eq!(http_protocol(b"\x00\x01binary\r\n"), Some(None));
    }
}
