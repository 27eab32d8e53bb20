//! The live status page at `/` (and `/index.html`): one HTML document with its CSS and
//! JavaScript inlined, compiled into the binary, so the page needs no CDN, no build
//! step and no file on the host. The page itself holds no data; its script polls
//! `/api/v1/groups`, `/api/v1/cluster` and `/api/v1/history` with the operator's token
//! (if any), so it is served before the token check and reveals nothing without it.

use std::sync::OnceLock;

const HTML: &str = include_str!("index.html");
const CSS: &str = include_str!("page.css");
const JS: &str = include_str!("page.js");

/// The page, assembled once.
pub fn document() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| {
        HTML.replacen("/*STYLE*/", CSS, 1)
            .replacen("/*SCRIPT*/", JS, 1)
    })
}

/// Answers `GET /` and `GET /index.html` with the page; `None` for other requests.
pub fn route(method: &str, path: &str) -> Option<(u16, &'static str, String)> {
    if !matches!(path, "/" | "/index.html") {
        return None;
    }
    if !matches!(method, "GET" | "HEAD") {
        return Some((
            405,
            "text/plain; charset=utf-8",
            format!("only GET is allowed on {path}\n"),
        ));
    }
    Some((200, "text/html; charset=utf-8", document().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_inlines_its_style_and_script() {
        let page = document();
        assert!(!page.contains("/*STYLE*/") && !page.contains("/*SCRIPT*/"));
        assert!(page.contains("function poll()"));
        assert!(page.contains(".group {"));
    }
}
