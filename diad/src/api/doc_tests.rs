//! docs/api.md against the API: the route table lists exactly the (method,
//! path) pairs the router serves, and every message example is complete
//! for the type it is named after (a field renamed, added or dropped on
//! either side fails), so the doc cannot drift from the code unnoticed.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use dia::api::{
    AttachPort, Attachment, ClusterStatus, Container, CreateCluster, CreateContainer,
    CreateNetwork, CreateVolume, JoinCluster, Network, PortStatsView, PortView, SetTier, Tier,
    TierSpec, Volume, VolumeList,
};
use dia::{Identity, Pool, Stats};
use dia_abi::card::{
    CARD_CAP_NETWORK, CARD_CAP_QOS, CARD_CAP_STORAGE, INTERFACE_VERSION, PCI_VENDOR_ID,
};
use dia_abi::ioctl::{DiaIdentity, DIA_ABI_VERSION};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{health, router, routes, AppState};
use crate::error::ApiError;
use crate::test_support::{manager, LogHost};

const API_DOC: &str = include_str!("../../../docs/api.md");

/// Every message the doc shows an example of, by the name of its block.
const MESSAGES: &[&str] = &[
    "Health",
    "ClusterStatus",
    "CreateCluster",
    "JoinCluster",
    "Removed",
    "Identity",
    "Pool",
    "VolumeList",
    "Volume",
    "CreateVolume",
    "AddPlex",
    "Attachment",
    "SetTier",
    "Stats",
    "Tier",
    "TierSpec",
    "Container",
    "CreateContainer",
    "Network",
    "CreateNetwork",
    "PortView",
    "AttachPort",
    "PortStatsView",
    "Deleted",
    "Error",
];

/// A path with its query dropped and every parameter written `{}`.
fn normalise(path: &str) -> String {
    let path = path.split('?').next().unwrap_or_default();
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            c if !in_param => out.push(c),
            _ => {}
        }
    }
    out
}

/// The route table's rows: (method, normalised path, answer cell).
fn documented_routes() -> Vec<(String, String, String)> {
    let methods = ["GET", "POST", "PUT", "PATCH", "DELETE"];
    API_DOC
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
            let method = cells.first()?.trim();
            if cells.len() != 3 || !methods.contains(&method) {
                return None;
            }
            let path = cells[1].trim().trim_matches('`');
            Some((method.into(), normalise(path), cells[2].trim().into()))
        })
        .collect()
}

/// The fenced blocks whose info string is `LANG NAME`: NAME -> its text.
fn examples(lang: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in API_DOC.lines() {
        if let Some((name, text)) = &mut current {
            if line.trim_start().starts_with("```") {
                out.entry(name.clone()).or_default().push(text.clone());
                current = None;
            } else {
                text.push_str(line);
                text.push('\n');
            }
        } else if let Some(info) = line.trim_start().strip_prefix("```") {
            let mut words = info.split_whitespace();
            if words.next() == Some(lang) {
                if let Some(name) = words.next() {
                    current = Some((name.to_string(), String::new()));
                }
            }
        }
    }
    out
}

/// Where `doc` and `code` differ, as key paths.
fn differences(at: &str, doc: &Value, code: &Value, out: &mut Vec<String>) {
    match (doc, code) {
        (Value::Object(d), Value::Object(c)) => {
            for k in d.keys().filter(|k| !c.contains_key(*k)) {
                out.push(format!("{at}.{k}: in the example, not in the type"));
            }
            for k in c.keys().filter(|k| !d.contains_key(*k)) {
                out.push(format!("{at}.{k}: in the type, not in the example"));
            }
            for (k, dv) in d {
                if let Some(cv) = c.get(k) {
                    differences(&format!("{at}.{k}"), dv, cv, out);
                }
            }
        }
        (Value::Array(d), Value::Array(c)) if d.len() == c.len() => {
            for (i, (dv, cv)) in d.iter().zip(c).enumerate() {
                differences(&format!("{at}[{i}]"), dv, cv, out);
            }
        }
        (d, c) if d != c => out.push(format!("{at}: the example has {d}, the type gives {c}")),
        _ => {}
    }
}

/// The example read as a `T` and written back must be the example itself.
fn round_trips<T: DeserializeOwned + Serialize>(example: &Value) -> Result<(), String> {
    let typed: T = serde_json::from_value(example.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    let mut diff = Vec::new();
    differences("", example, &back, &mut diff);
    if diff.is_empty() {
        Ok(())
    } else {
        Err(diff.join("; "))
    }
}

/// The same keys at the top level as what the code answers.
fn same_keys(example: &Value, answer: &Value) -> Result<(), String> {
    let keys = |v: &Value| -> BTreeSet<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    if keys(example) == keys(answer) {
        Ok(())
    } else {
        Err(format!(
            "the example's keys differ from the answer {answer}"
        ))
    }
}

/// The card example shows this interface and ABI version, the emulated
/// card's vendor id and every capability.
fn identity_is_current(example: &Value) -> Result<(), String> {
    let all = DiaIdentity {
        abi_version: DIA_ABI_VERSION,
        interface_version: INTERFACE_VERSION,
        vendor_id: PCI_VENDOR_ID,
        capabilities: CARD_CAP_STORAGE | CARD_CAP_NETWORK | CARD_CAP_QOS,
        ..DiaIdentity::default()
    };
    let want = serde_json::to_value(Identity::from(&all)).map_err(|e| e.to_string())?;
    let stale: Vec<String> = [
        "abi_version",
        "interface_version",
        "vendor_id",
        "capabilities",
    ]
    .iter()
    .filter(|k| example[**k] != want[**k])
    .map(|k| format!("{k} is {} (now {})", example[*k], want[*k]))
    .collect();
    if stale.is_empty() {
        Ok(())
    } else {
        Err(stale.join("; "))
    }
}

async fn check(name: &str, example: &Value) -> Result<(), String> {
    match name {
        "Health" => {
            same_keys(example, &health().await.0)?;
            (example["status"] == "ok")
                .then_some(())
                .ok_or_else(|| "status is \"ok\"".to_string())
        }
        "Identity" => {
            round_trips::<Identity>(example)?;
            identity_is_current(example)
        }
        "Pool" => round_trips::<Pool>(example),
        "VolumeList" => round_trips::<VolumeList>(example),
        "Volume" => round_trips::<Volume>(example),
        "CreateVolume" => round_trips::<CreateVolume>(example),
        "AddPlex" => round_trips::<dia::api::AddPlex>(example),
        "Attachment" => round_trips::<Attachment>(example),
        "SetTier" => round_trips::<SetTier>(example),
        "Stats" => round_trips::<Stats>(example),
        "Tier" => round_trips::<Tier>(example),
        "TierSpec" => round_trips::<TierSpec>(example),
        "Container" => round_trips::<Container>(example),
        "CreateContainer" => round_trips::<CreateContainer>(example),
        "Network" => round_trips::<Network>(example),
        "CreateNetwork" => round_trips::<CreateNetwork>(example),
        "PortView" => round_trips::<PortView>(example),
        "AttachPort" => round_trips::<AttachPort>(example),
        "PortStatsView" => round_trips::<PortStatsView>(example),
        // What the DELETE handlers answer.
        "Deleted" => (*example == json!({ "deleted": true }))
            .then_some(())
            .ok_or_else(|| "the answer is {\"deleted\": true}".to_string()),
        "ClusterStatus" => round_trips::<ClusterStatus>(example),
        "CreateCluster" => round_trips::<CreateCluster>(example),
        "JoinCluster" => round_trips::<JoinCluster>(example),
        "Removed" => (*example == json!({ "removed": true }))
            .then_some(())
            .ok_or_else(|| "the answer is {\"removed\": true}".to_string()),
        "Error" => same_keys(example, &ApiError::not_found("x").body()),
        _ => Err(format!(
            "no such message (known: {}); add it to MESSAGES and check()",
            MESSAGES.join(", ")
        )),
    }
}

#[tokio::test]
async fn the_route_table_is_what_the_router_serves() {
    let (_dir, m, _card, _host) = manager(LogHost::default());
    let app = router(AppState::new(m));
    // A method no route has: the router answers 405 with the methods the
    // path has (`Allow`), and no handler runs.
    let probe = Method::from_bytes(b"PROBE").unwrap();
    let mut served = BTreeSet::new();
    for (path, _) in routes() {
        let uri = normalise(path).replace("{}", "x");
        let req = Request::builder()
            .method(probe.clone())
            .uri(&uri)
            .body(Body::empty())
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        let allow = res.headers()["allow"].to_str().unwrap().to_string();
        for method in allow.split(',').map(str::trim).filter(|m| *m != "HEAD") {
            served.insert((method.to_string(), normalise(path)));
        }
    }
    let documented: BTreeSet<(String, String)> = documented_routes()
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let not_served: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && not_served.is_empty(),
        "docs/api.md's route table and diad's router differ: served but not \
         documented {undocumented:?}; documented but not served {not_served:?}"
    );
}

#[tokio::test]
async fn every_message_example_is_complete_for_its_type() {
    let blocks = examples("json");
    let mut errors = Vec::new();
    for name in MESSAGES {
        match blocks.get(*name).map(Vec::as_slice) {
            Some([_]) => {}
            Some(_) => errors.push(format!("{name}: more than one example")),
            None => errors.push(format!("{name}: no example (```json {name})")),
        }
    }
    for (name, texts) in &blocks {
        for text in texts {
            let checked = match serde_json::from_str::<Value>(text) {
                Ok(example) => check(name, &example).await,
                Err(e) => Err(format!("not JSON: {e}")),
            };
            if let Err(e) = checked {
                errors.push(format!("{name}: {e}"));
            }
        }
    }
    // The table names only messages the doc shows.
    for (method, path, answer) in documented_routes() {
        for name in answer.split('`').skip(1).step_by(2) {
            if name.starts_with(|c: char| c.is_ascii_uppercase()) && !blocks.contains_key(name) {
                errors.push(format!("{method} {path}: `{name}` has no example"));
            }
        }
    }
    assert!(
        errors.is_empty(),
        "docs/api.md's messages:\n{}",
        errors.join("\n")
    );
}

#[test]
fn the_desired_state_example_is_a_valid_state_file() {
    let blocks = examples("toml");
    let texts = blocks
        .get("DesiredState")
        .expect("docs/api.md has a ```toml DesiredState block");
    for text in texts {
        if let Err(e) = toml::from_str::<crate::state::DesiredState>(text) {
            panic!("docs/api.md's state file example: {e}");
        }
    }
}

#[test]
fn the_doc_parsers_find_what_they_look_for() {
    // A table that parses to nothing would make the route test vacuous.
    assert!(documented_routes().len() >= 20);
    assert_eq!(
        normalise("/v1/ports/{container:ifname}/stats"),
        "/v1/ports/{}/stats"
    );
    assert_eq!(normalise("/v1/volumes/{name}?force=true"), "/v1/volumes/{}");
    let mut diff = Vec::new();
    differences(
        "",
        &json!({"a": 1, "b": {"c": 2}}),
        &json!({"a": 1, "b": {"d": 2}}),
        &mut diff,
    );
    assert_eq!(
        diff,
        [
            ".b.c: in the example, not in the type",
            ".b.d: in the type, not in the example"
        ]
    );
}
