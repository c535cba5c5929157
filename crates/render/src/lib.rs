//! # reveal-render
//!
//! What reveal's workflows hand their finished results to: image grids and heat maps as PNG
//! ([`grid`], [`heat`]), the pieces of a self-contained HTML page ([`html`]) and the bundled
//! font of the plots ([`register_font`]), and plots as PNG or SVG ([`plot`]). It knows nothing of audits or experiments; each
//! workflow composes its own page from these pieces.

pub mod grid;
pub mod heat;
pub mod html;
pub mod plot;

/// DejaVu Sans Mono, bundled so plots need no system fonts (licence in assets/).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");

/// Makes the bundled font plotters' "sans-serif" (once per process).
pub fn register_font() {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        let _ =
            plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, FONT);
    });
}
