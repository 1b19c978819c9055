// SPDX-License-Identifier: MPL-2.0
//! The page at `/` and the API's description, built into the binary: the
//! service works offline, with nothing fetched from elsewhere.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/style.css");
const OPENAPI: &str = include_str!("openapi.json");

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub fn index() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

pub fn script() -> Response {
    file("text/javascript; charset=utf-8", SCRIPT)
}

pub fn style() -> Response {
    file("text/css; charset=utf-8", STYLE)
}

pub fn openapi() -> Response {
    file("application/json", OPENAPI)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option the service takes is described, with nothing more.
    #[test]
    fn the_openapi_description_lists_every_option() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        let post = &doc["paths"]["/api/remove"]["post"];
        let mut names: Vec<&str> = post["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .map(|p| p["name"].as_str().expect("a name"))
            .collect();
        names.sort_unstable();
        let mut known = super::super::options::NAMES.to_vec();
        known.sort_unstable();
        assert_eq!(names, known);
        assert!(post["requestBody"]["content"]["multipart/form-data"].is_object());
        assert!(doc["paths"]["/api/remove"]["get"].is_object());
    }

    #[test]
    fn the_page_loads_only_its_own_files() {
        for text in [INDEX, SCRIPT, STYLE] {
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
        assert!(INDEX.contains("/app.js") && INDEX.contains("/style.css"));
    }
}
