//! `/console` (SPEC 13.2): the web console, one page and its script and style sheet,
//! compiled into the binary (`include_str!`): no CDN, no build step, nothing fetched at
//! run time. The files are public, like `/health`; every piece of data the page shows
//! comes from the authenticated API with the token the user types.
//!
//! Served with a CSP that allows nothing but this origin (no inline script or style, no
//! framing, no form posts: the page's script sends every request itself).

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;

use super::{ApiError, AppState};

/// The policy of SPEC 13.2, exactly.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
form-action 'none'";

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// Whether `path` is one of the console's (public) paths.
pub fn is_console_path(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

/// The console's routes; none when `CONSOLE=false` (then `/console` is an unknown path).
pub fn routes(enabled: bool) -> Router<Arc<AppState>> {
    if !enabled {
        return Router::new();
    }
    let not_allowed = || async { ApiError::MethodNotAllowed { allow: "GET, HEAD" } };
    Router::new()
        .route("/console", get(index).fallback(not_allowed))
        .route("/console/", get(index).fallback(not_allowed))
        .route("/console/console.js", get(script).fallback(not_allowed))
        .route("/console/console.css", get(style).fallback(not_allowed))
}

async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

async fn script() -> Response {
    file("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    file("text/css; charset=utf-8", STYLE)
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    let mut res = (StatusCode::OK, body).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_inline_and_nothing_from_elsewhere() {
        for file in [INDEX, SCRIPT, STYLE] {
            for outside in ["http://", "https://", "//cdn", "@import", "url("] {
                assert!(!file.contains(outside), "{outside}");
            }
        }
        // No inline script, style or handler attribute: the CSP would block them.
        assert!(!INDEX.contains("<style"));
        assert!(!INDEX.contains(" style="));
        assert!(!INDEX.contains(" onclick="));
        assert_eq!(INDEX.matches("<script").count(), 1);
        assert!(INDEX.contains(r#"<script src="/console/console.js" defer></script>"#));
    }

    #[test]
    fn only_console_paths_are_public() {
        assert!(is_console_path("/console"));
        assert!(is_console_path("/console/console.js"));
        assert!(!is_console_path("/consoles"));
        assert!(!is_console_path("/events"));
    }
}
