//! A minimal HTTP/1.1 client for the tests and benchmarks that talk to `httpd` in Keel through
//! QEMU's forwarded port: one request per connection, the response read to its end.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// A response: the status line, the headers (names lower-cased) and the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` (whole, in one write) to 127.0.0.1:`port` and reads the response until the
/// server closes the connection.
pub fn exchange(port: u16, request: &str) -> Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse(&raw)
}

/// `GET path` with `Connection: close`.
pub fn get(port: u16, path: &str) -> Result<Response> {
    exchange(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: keel\r\nConnection: close\r\n\r\n"),
    )
}

/// Knocks (a bounded number of times) until `path` answers 200: a server in the guest opens
/// its socket only once its task runs.
pub fn wait_until_served(port: u16, path: &str) -> Result<()> {
    for _ in 0..100 {
        if get(port, path).is_ok_and(|r| r.status.contains(" 200")) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(100));
    }
    bail!("nothing answered GET {path} on port {port}")
}

fn parse(raw: &[u8]) -> Result<Response> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("no end of headers in {:?}", String::from_utf8_lossy(raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_headers_and_body() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nhi").unwrap();
        assert_eq!(r.status, "HTTP/1.1 200 OK");
        assert_eq!(r.header("content-length"), Some("2"));
        assert_eq!(r.header("x-a"), Some("b"));
        assert_eq!(r.body, b"hi");
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
