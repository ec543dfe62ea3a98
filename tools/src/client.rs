//! A small HTTP/1.1 client for diad's unix socket: one request per
//! connection (`Connection: close`), JSON in and out, and diad's
//! `{"error": ...}` bodies turned into error messages.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;

/// Talks to diad.
pub struct Client {
    socket: PathBuf,
}

/// A parsed HTTP response.
#[derive(Debug)]
struct Response {
    status: u16,
    body: Vec<u8>,
}

impl Client {
    /// A client for diad at `socket`.
    pub fn new(socket: PathBuf) -> Self {
        Self { socket }
    }

    /// `GET path`, decoding a JSON body.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.request("GET", path, None)?;
        decode(resp)
    }

    /// `POST path` with a JSON body, decoding a JSON answer.
    pub fn post<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let body = serde_json::to_vec(body)?;
        let resp = self.request("POST", path, Some(&body))?;
        decode(resp)
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Result<()> {
        self.delete_for::<serde_json::Value>(path).map(|_| ())
    }

    /// DELETE whose answer is a message.
    pub fn delete_for<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.request("DELETE", path, None)?;
        decode::<T>(resp)
    }

    fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Response> {
        let mut s = UnixStream::connect(&self.socket).map_err(|e| {
            anyhow!(
                "cannot reach diad at {}: {e} (is diad running?)",
                self.socket.display()
            )
        })?;
        // The card's admin timeout is 5 s; leave room for a reset on top.
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: diad\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).context("reading diad's answer")?;
        parse(&raw)
    }
}

fn decode<T: DeserializeOwned>(resp: Response) -> Result<T> {
    if !(200..300).contains(&resp.status) {
        let msg = serde_json::from_slice::<serde_json::Value>(&resp.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&resp.body).into_owned());
        bail!("{msg} (HTTP {})", resp.status);
    }
    serde_json::from_slice(&resp.body).context("diad sent JSON this diaconfig does not understand")
}

fn parse(raw: &[u8]) -> Result<Response> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("diad closed the connection before answering"))?;
    let head = std::str::from_utf8(&raw[..split]).context("response head")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line from diad: {status_line:?}"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let rest = &raw[split + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunked body"))?;
        let size_text = std::str::from_utf8(&data[..eol])?
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        let size = usize::from_str_radix(size_text, 16).context("chunk size")?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked() {
        let r = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        let r = parse(b"HTTP/1.1 504 Gateway Timeout\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.status, 504);
        assert_eq!(r.body, b"{\"a\":1}");
        assert!(parse(b"HTTP/1.1 200").is_err());
    }

    #[test]
    fn error_bodies_become_messages() {
        let r = Response {
            status: 504,
            body: br#"{"error":"the card did not answer"}"#.to_vec(),
        };
        let e = decode::<serde_json::Value>(r).unwrap_err().to_string();
        assert_eq!(e, "the card did not answer (HTTP 504)");
    }

    #[test]
    fn unreachable_daemon_says_so() {
        let c = Client::new("/nonexistent/diad.sock".into());
        let e = c
            .get::<serde_json::Value>("/v1/card")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is diad running?"), "{e}");
    }
}
