//! `/console` (SPEC 13.2) over HTTP: the page and its files are public, served with the
//! strict CSP and the common headers; `CONSOLE=false` makes `/console` an unknown path.
//! (The page itself is driven in a real browser in `tests/browser.rs`.)
#![allow(clippy::unwrap_used)]

mod common;

use common::app::{OPS_TOKEN, spawn_app};

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

#[tokio::test]
async fn the_page_and_its_files_are_public_with_the_strict_csp_and_common_headers() {
    let app = spawn_app(&[]).await;
    for (path, content_type) in [
        ("/console", "text/html; charset=utf-8"),
        ("/console/", "text/html; charset=utf-8"),
        ("/console/console.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
    ] {
        let res = app.get(path, None).await;
        assert_eq!(res.status(), 200, "{path}");
        let h = res.headers();
        assert_eq!(h["content-type"], content_type, "{path}");
        assert_eq!(h["content-security-policy"], CSP, "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert!(h.contains_key("x-request-id"), "{path}");
        assert!(h.contains_key("cache-control"), "{path}");
        assert!(!res.text().await.unwrap().is_empty());
    }
    let page = app.get("/console", None).await.text().await.unwrap();
    assert!(page.contains(r#"<label for="token">Token</label>"#));
    // An unknown file under /console/ is a 404, never another file.
    assert_eq!(app.get("/console/secret.txt", None).await.status(), 404);
    assert_eq!(
        app.post("/console", None, serde_json::json!({}))
            .await
            .status(),
        405
    );
}

#[tokio::test]
async fn with_console_false_the_console_is_an_unknown_path() {
    let app = spawn_app(&[("CONSOLE", "false")]).await;
    assert_eq!(app.get("/console", None).await.status(), 401);
    assert_eq!(app.get("/console", Some(OPS_TOKEN)).await.status(), 404);
    assert_eq!(
        app.get("/console/console.js", Some(OPS_TOKEN))
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn the_console_obeys_the_tls_policy() {
    let app = spawn_app(&[("REQUIRE_TLS", "true"), ("TRUST_PROXY_TLS", "true")]).await;
    assert_eq!(app.get("/console", None).await.status(), 426);
}
