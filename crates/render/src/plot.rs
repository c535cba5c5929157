//! Plots: a [`Figure`] drawn on any plotters backend and written as PNG or SVG (by the file's
//! extension) through a temporary file, and the figures the workflows share: a scatter of
//! labelled points ([`Scatter`]) and a strip plot of one value per item in columns ([`Strip`]).

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

/// The error plotters' drawing returns.
pub type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Something drawn on a plotters drawing area, whatever the backend.
pub trait Figure {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static;
}

/// Writes `figure` at `size` pixels to `path`, as SVG when the path ends in `.svg` and PNG
/// otherwise, through a temporary file renamed into place (nothing half-written on Ctrl-C).
pub fn write<F: Figure>(path: &Path, figure: &F, size: (u32, u32)) -> Result<()> {
    crate::register_font();
    let svg = path.extension().is_some_and(|e| e == "svg");
    let tmp = path.with_extension(if svg { "tmp.svg" } else { "tmp.png" });
    let drawn = if svg {
        figure.draw(SVGBackend::new(&tmp, size).into_drawing_area())
    } else {
        figure.draw(BitMapBackend::new(&tmp, size).into_drawing_area())
    };
    drawn.map_err(|e| anyhow!("{}: cannot draw the plot: {e}", path.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| anyhow!("{}: cannot write: {e}", path.display()))
}

/// The colour of series `i`: a palette that stays apart in print and for most colour blindness
/// (Okabe–Ito), grey first.
pub fn colour(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 8] = [
        RGBColor(120, 120, 120),
        RGBColor(213, 94, 0),
        RGBColor(230, 159, 0),
        RGBColor(0, 114, 178),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(86, 180, 233),
        RGBColor(0, 0, 0),
    ];
    PALETTE[i % PALETTE.len()]
}

/// A point of a [`Scatter`]: where it is, its label, and whether it is of the second kind
/// (drawn red rather than blue).
#[derive(Clone, Debug)]
pub struct Labelled {
    pub at: (f64, f64),
    pub label: String,
    pub marked: bool,
}

/// Labelled points on linear axes, the x range fitted to the points, the y range given.
#[derive(Clone, Debug)]
pub struct Scatter {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub y_range: (f64, f64),
    pub points: Vec<Labelled>,
}

impl Figure for Scatter {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let (lo, hi) = self
            .points
            .iter()
            .map(|p| p.at.0)
            .fold((1.0f64, 0.0f64), |(l, h), v| (l.min(v), h.max(v)));
        let pad = ((hi - lo) * 0.15).max(0.02);
        let (y0, y1) = self.y_range;
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((lo - pad).max(0.0)..(hi + pad).min(1.0), y0..y1)?;
        chart
            .configure_mesh()
            .x_desc(self.x_desc.as_str())
            .y_desc(self.y_desc.as_str())
            .draw()?;
        for p in &self.points {
            let at = (p.at.0, p.at.1.clamp(y0, y1));
            let c = if p.marked { RED } else { BLUE };
            chart.draw_series(std::iter::once(Circle::new(at, 5, c.filled())))?;
            chart.draw_series(std::iter::once(Text::new(
                p.label.clone(),
                (at.0, at.1 + 0.025 * (y1 - y0)),
                ("sans-serif", 14),
            )))?;
        }
        root.present()?;
        Ok(())
    }
}

/// One item of a [`Strip`]: its column, its series (colour), its value, and whether it is drawn
/// filled (e.g. flagged) or hollow.
#[derive(Clone, Debug)]
pub struct StripPoint {
    pub column: usize,
    pub series: usize,
    pub value: f64,
    pub filled: bool,
}

/// One value per item on a log axis, items in columns (e.g. one per training recipe) and
/// coloured by series (e.g. the trigger kind; series without items are left out of the legend),
/// a reference line across (e.g. the threshold, 1).
#[derive(Clone, Debug)]
pub struct Strip {
    pub title: String,
    pub y_desc: String,
    pub columns: Vec<String>,
    pub series: Vec<String>,
    pub points: Vec<StripPoint>,
    pub line_at: f64,
}

impl Figure for Strip {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        // The axis is log10 of the value, labelled with the value itself.
        let log = |v: f64| v.max(1e-3).log10();
        let (lo, hi) = self
            .points
            .iter()
            .map(|p| log(p.value))
            .fold((log(self.line_at), log(self.line_at)), |(l, h), v| {
                (l.min(v), h.max(v))
            });
        let columns = self.columns.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(85)
            .build_cartesian_2d(
                -0.5f64..columns as f64 - 0.5,
                (lo - 0.15).floor()..(hi + 0.15).ceil(),
            )?;
        let names = self.columns.clone();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .max_light_lines(0)
            .x_labels(columns)
            .x_label_formatter(&move |x| {
                let i = x.round();
                match (i - x).abs() < 1e-6 && i >= 0.0 {
                    true => names.get(i as usize).cloned().unwrap_or_default(),
                    false => String::new(),
                }
            })
            .y_labels(12)
            .y_label_formatter(&|v| {
                let v = 10f64.powf(*v);
                match v {
                    v if v >= 10.0 => format!("{v:.0}"),
                    v if v >= 1.0 => format!("{v:.1}"),
                    v => format!("{v:.2}"),
                }
            })
            .y_desc(format!("{} (log scale)", self.y_desc))
            .draw()?;
        chart.draw_series(LineSeries::new(
            [
                (-0.5, log(self.line_at)),
                (columns as f64 - 0.5, log(self.line_at)),
            ],
            BLACK.stroke_width(1),
        ))?;
        // Within a column, series side by side and items of a series spread a little, so that
        // equal values stay visible.
        let width = 0.7 / self.series.len().max(1) as f64;
        for (s, name) in self.series.iter().enumerate() {
            let c = colour(s);
            let mut rank = vec![0usize; columns];
            let points: Vec<_> = self
                .points
                .iter()
                .filter(|p| p.series == s)
                .map(|p| {
                    let k = rank[p.column];
                    rank[p.column] += 1;
                    let x = p.column as f64 - 0.35
                        + width * (s as f64 + 0.5)
                        + width * 0.25 * ((k % 3) as f64 - 1.0);
                    let style = if p.filled {
                        c.filled()
                    } else {
                        c.stroke_width(2)
                    };
                    Circle::new((x, log(p.value)), 5, style)
                })
                .collect();
            // A series with no items keeps its colour and stays out of the legend.
            if points.is_empty() {
                continue;
            }
            chart
                .draw_series(points)?
                .label(name.as_str())
                .legend(move |(x, y)| Circle::new((x, y), 5, c.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        root.present()?;
        Ok(())
    }
}
