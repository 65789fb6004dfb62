//! `herald describe` and `/_herald/v1/{asyncapi,openapi}.json` (section 14): the documents of the
//! root gateway.yaml are committed in docs/describe/ and must match a fresh run; the served ones
//! are the same documents; both pass the official validators (`@asyncapi/parser`,
//! `openapi-spec-validator`; .ci/tools.sh installs them).

use std::path::{Path, PathBuf};
use std::process::Command;

use herald_tests::*;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `herald describe -c <config> --format <format>`, with none of the variables the root
/// gateway.yaml reads set, so that it gives the documented defaults.
fn describe(config: &Path, format: &str) -> String {
    let out = Command::new(herald_bin())
        .args(["describe", "--format", format, "-c"])
        .arg(config)
        .env_remove("HERALD_LISTEN")
        .env_remove("HERALD_UPSTREAM")
        .env_remove("HERALD_API_KEY")
        .env_remove("HERALD_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_committed_documents_are_those_of_gateway_yaml() {
    for format in ["asyncapi", "openapi"] {
        let committed = repo().join(format!("docs/describe/{format}.json"));
        let fresh = describe(&repo().join("gateway.yaml"), format);
        assert_eq!(
            std::fs::read_to_string(&committed).unwrap(),
            fresh,
            "{} is stale: herald describe -c gateway.yaml --format {format} > docs/describe/{format}.json",
            committed.display()
        );
    }
}

#[test]
fn the_documents_pass_the_official_validators() {
    let asyncapi = repo().join("docs/describe/asyncapi.json");
    let openapi = repo().join("docs/describe/openapi.json");
    let node = repo().join("tests/describe");
    if node.join("node_modules/@asyncapi/parser").exists() {
        let out = Command::new("node").arg(node.join("validate.mjs")).arg(&asyncapi).output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "@asyncapi/parser:\n{said}{}", String::from_utf8_lossy(&out.stderr));
        assert!(said.contains("valid AsyncAPI 3.0.0"), "{said}");
    } else {
        eprintln!("AsyncAPI validation skipped: run .ci/tools.sh (npm ci --prefix tests/describe)");
    }
    let validator = repo().join("target/ci-tools/bin/openapi-spec-validator");
    if validator.exists() {
        let out = Command::new(validator).arg(&openapi).output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && said.contains("OK"), "openapi-spec-validator:\n{said}");
    } else {
        eprintln!("OpenAPI validation skipped: run .ci/tools.sh (openapi-spec-validator)");
    }
}

#[tokio::test]
async fn the_gateway_serves_the_same_documents() {
    let (_api, upstream) = start_api().await;
    let yaml = config(
        upstream,
        "webhooks:\n  api_keys: [test-api-key-0123456789]\nstorage:\n  kind: memory\n\
         routes:\n  - name: tasks\n    path: /tasks\n    access: public\n    \
         events: { format: collection, type: task, collection: { id: /id } }\n  \
         - name: task\n    path: '/tasks/{id}'\n    events: { format: merge-patch }\n",
    );
    let gw = Gateway::start(&yaml).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    std::fs::write(&file, &yaml).unwrap();
    for format in ["asyncapi", "openapi"] {
        let resp = reqwest::get(gw.url(&format!("/_herald/v1/{format}.json"))).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let served: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        let printed: Value = serde_json::from_str(&describe(&file, format)).unwrap();
        assert_eq!(served, printed);
        assert!(!served.to_string().contains(&upstream.to_string()), "the upstream's address stays private");
    }
    let head = reqwest::Client::new().head(gw.url("/_herald/v1/openapi.json")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let post = reqwest::Client::new().post(gw.url("/_herald/v1/openapi.json")).send().await.unwrap();
    assert_eq!(post.status(), 404);
}
