//! The dashboard's assets under `/ui/` (docs/adr/0014-dashboard.md): hand-written
//! HTML, CSS and JavaScript from `crates/hunt-server/ui/`, embedded in the binary at
//! build time, answered with their content type, an `ETag` (a hash of the bytes, so
//! a new build is fetched again and an unchanged asset is a 304) and a strict
//! Content-Security-Policy. The assets need no key: a browser's navigation cannot
//! send one. The page asks for a key and sends it with every API call it makes.
//! Must never: serve anything but these files, or let a page run inline script.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::App;

/// Every answer under `/ui/` carries it: scripts, styles and API calls from this
/// server only, no inline script or style, no plugins, frames, forms or base.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// (file name, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../ui/index.html"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/app.js"),
    ),
    (
        "charts.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/charts.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../../ui/favicon.svg"),
    ),
];

/// The dashboard's routes: `/` and `/ui` send the browser to `/ui/`.
pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(to_ui))
        .route("/ui", get(to_ui))
        .route("/ui/", get(index))
        .route("/ui/{*file}", get(asset))
}

async fn to_ui() -> Response {
    secured(Redirect::permanent("/ui/").into_response())
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&file, &headers)
}

/// Each asset's `ETag`, computed once.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(_, _, bytes)| format!("\"{:016x}\"", fnv1a(bytes)))
            .collect()
    })
}

/// FNV-1a, 64 bits: enough to tell one build's asset from another's.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn serve(file: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|(name, _, _)| *name == file) else {
        let body = super::error::ErrorBody {
            error: super::error::ErrorInfo {
                code: "not_found",
                message: format!("the dashboard has no file `{file}`; open /ui/"),
                details: None,
            },
        };
        return secured((StatusCode::NOT_FOUND, super::Json(body)).into_response());
    };
    let (_, content_type, bytes) = ASSETS[i];
    let etag = &etags()[i];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut r = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
    };
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    // Asked again each time, answered 304 while unchanged: a new build is seen at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secured(r)
}

/// The headers every dashboard answer carries.
fn secured(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No asset holds what the policy would block: inline script, inline style, or a
    /// resource from elsewhere.
    #[test]
    fn the_assets_keep_to_the_policy() {
        for (name, _, bytes) in ASSETS {
            // The SVG namespace is a name, not a resource.
            let text = std::str::from_utf8(bytes)
                .unwrap()
                .replace("http://www.w3.org/2000/svg", "");
            for banned in [
                " style=",
                "<style",
                "onclick=",
                "onload=",
                "javascript:",
                "http://",
                "https://",
                "setAttribute('style'",
                "innerHTML",
                "eval(",
                "new Function",
            ] {
                assert!(!text.contains(banned), "{name} has `{banned}`");
            }
            if *name == "index.html" {
                assert!(!text.contains("<script>"), "inline script in {name}");
                for tag in text.split("<script").skip(1) {
                    assert!(
                        tag.trim_start().starts_with("type=\"module\" src="),
                        "{tag}"
                    );
                }
            }
        }
    }

    #[test]
    fn etags_differ_by_content() {
        let tags = etags();
        assert_eq!(tags.len(), ASSETS.len());
        assert_ne!(tags[0], tags[1]);
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
