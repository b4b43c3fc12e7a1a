//! The page's files, compiled into the binary (no build step at run time).

/// One static file.
pub struct Asset {
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its text.
    pub body: &'static str,
}

const INDEX: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_str!("../assets/index.html"),
};
const APP_JS: Asset = Asset {
    content_type: "text/javascript; charset=utf-8",
    body: include_str!("../assets/app.js"),
};
const APP_CSS: Asset = Asset {
    content_type: "text/css; charset=utf-8",
    body: include_str!("../assets/app.css"),
};

/// The file served at `path`, if any.
pub fn get(path: &str) -> Option<&'static Asset> {
    match path {
        "/" | "/index.html" => Some(&INDEX),
        "/assets/app.js" => Some(&APP_JS),
        "/assets/app.css" => Some(&APP_CSS),
        _ => None,
    }
}
