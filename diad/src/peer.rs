//! The peer API: what one appliance's diad asks another's over the
//! management network (TCP port [`PEER_PORT`]): admit a joining appliance,
//! create or delete a volume whose data is to live there. It is a short
//! list of routes beside the full API, which stays on the root-only unix
//! socket. The management network is the appliances' own segment (as
//! etcd's peer traffic on it is), never a container's.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::state::MemberState;

/// The peer API's TCP port.
pub const PEER_PORT: u16 = 7447;
/// How long a peer call may take (creating a volume included).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// `POST /peer/v1/members`: an appliance asks to join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The joining appliance.
    pub member: MemberState,
    /// Its volumes' names (refused if the cluster has one already).
    pub volumes: Vec<String>,
    /// Its networks' names and VLANs (the same network may be on both).
    pub networks: Vec<(String, u16)>,
}

/// The answer: how to reach the cluster's etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinAnswer {
    /// The cluster's name.
    pub cluster: String,
    /// Client URLs of the etcd members.
    pub endpoints: Vec<String>,
    /// With an etcd member for the joiner: its `--initial-cluster`.
    pub initial_cluster: Option<String>,
}

/// `address` with the peer port unless it has one.
fn with_port(address: &str) -> String {
    if address.contains(':') {
        address.to_string()
    } else {
        format!("{address}:{PEER_PORT}")
    }
}

/// Calls another appliance's peer API (blocking; one request per
/// connection); its `{"error"}` answers come back as the same error.
pub fn call<B: Serialize, T: DeserializeOwned>(
    address: &str,
    method: &str,
    path: &str,
    body: Option<&B>,
) -> Result<T, ApiError> {
    let target = with_port(address);
    let unreachable =
        |e: std::io::Error| ApiError::unavailable(format!("cannot reach appliance {target}: {e}"));
    let addr = target
        .to_socket_addrs()
        .map_err(unreachable)?
        .next()
        .ok_or_else(|| ApiError::bad_request(format!("'{address}' is not an address")))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(unreachable)?;
    s.set_read_timeout(Some(CALL_TIMEOUT))
        .map_err(unreachable)?;
    let body = match body {
        Some(b) => serde_json::to_vec(b).map_err(|e| ApiError::internal(e.to_string()))?,
        None => Vec::new(),
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {target}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).map_err(unreachable)?;
    s.write_all(&body).map_err(unreachable)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(unreachable)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| ApiError::internal(format!("appliance {target} answered no HTTP")))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| ApiError::internal(format!("appliance {target}: bad status line")))?;
    let body = &raw[split + 4..];
    // Bodies are short; a chunked one is dechunked well enough by taking
    // the JSON between the first '{' and the last '}'.
    let json = match (
        body.iter().position(|&c| c == b'{' || c == b'['),
        body.iter().rposition(|&c| c == b'}' || c == b']'),
    ) {
        (Some(a), Some(b)) if a <= b => &body[a..=b],
        _ => b"null".as_slice(),
    };
    if !(200..300).contains(&status) {
        let msg = serde_json::from_slice::<serde_json::Value>(json)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| format!("HTTP {status}"));
        return Err(ApiError::from_status(
            status,
            format!("appliance {target}: {msg}"),
        ));
    }
    serde_json::from_slice(json)
        .map_err(|e| ApiError::internal(format!("appliance {target}: bad answer: {e}")))
}
