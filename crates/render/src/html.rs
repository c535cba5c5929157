//! The pieces of a self-contained HTML page: one file, every picture embedded as a data URI, no
//! scripts and nothing fetched, readable in any browser.

use std::path::Path;

use anyhow::{Context, Result};

/// Standard base64 (RFC 4648) with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An `<img>` of a PNG file in `dir`, embedded, drawn `width` pixels wide without smoothing.
pub fn image(dir: &Path, file: &str, width: usize, alt: &str) -> Result<String> {
    let path = dir.join(file);
    let bytes = std::fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(format!(
        r#"<img alt="{}" src="data:image/png;base64,{}" style="width:{width}px;image-rendering:pixelated">"#,
        escape(alt),
        base64(&bytes)
    ))
}

/// Text made safe for HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The style sheet every page shares.
pub const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}\
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}\
.verdict{border:3px solid;padding:1em;margin:1em 0;font-size:1.15em}.bad{border-color:#b00;background:#fff3f3}\
.good{border-color:#070;background:#f3fff3}.unsure{border-color:#b80;background:#fffbee}\
.scale{display:inline-block;width:200px;height:14px;vertical-align:middle;\
background:linear-gradient(to right,#fff,#b20000);border:1px solid #999}figure{display:inline-block;margin:0 1em 1em 0}";

/// The start of a page titled `title` (escaped), up to the open `<body>`.
pub fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>",
        escape(title)
    )
}

/// The end of a page.
pub const TAIL: &str = "</body></html>\n";

/// The colour scale of a heat map: what it shows (`what`, escaped) and the value at which
/// it saturates.
pub fn scale_legend(what: &str, top: f64) -> String {
    format!(
        r#"<p>{}. <span>0 </span><span class="scale"></span><span> {top:.0} and above</span></p>"#,
        escape(what)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn escape_leaves_no_markup() {
        assert_eq!(
            escape(r#"<a href="x">&</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }
}
