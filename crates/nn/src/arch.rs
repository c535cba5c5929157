//! Architectures as `--arch` spells them, and the convolutional front of a network.
//!
//! `conv:32k3,conv:64k3s2,avgpool:2,fc:1000` is a convolution of 32 channels with a 3×3 kernel,
//! one of 64 channels with a 3×3 kernel and stride 2, a 2×2 average pooling, then a fully
//! connected hidden layer of 1000 units; the output layer (one unit, or one per class) is
//! implied. `conv:<out>k<kernel>[s<stride>][p<padding>]` (stride 1, padding 0 unless given),
//! `avgpool:<k>` (stride k), `fc:<width>`. ReLU follows every conv and fc layer; the image is
//! flattened (channel-major, as PyTorch's `flatten`) before the first fc layer.

use std::fmt;
use std::str::FromStr;

use reveal_tape::Patches;

/// One stage of the convolutional front.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// A convolution: `out` channels, a k×k kernel, stride s, zero padding p, then ReLU.
    Conv {
        out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    /// Average pooling over k×k windows with stride k.
    AvgPool { kernel: usize },
}

/// An image's shape: C channels of H×W pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Grid {
    /// C·H·W, the values of one image.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// True when a dimension is 0 ([`Features::new`] refuses such an input).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for Grid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}x{}", self.channels, self.height, self.width)
    }
}

impl FromStr for Grid {
    type Err = String;
    /// `CxHxW`, e.g. `1x28x28`.
    fn from_str(s: &str) -> Result<Grid, String> {
        let v: Vec<usize> = s.split('x').filter_map(|p| p.parse().ok()).collect();
        match v[..] {
            [channels, height, width] if channels * height * width > 0 => Ok(Grid {
                channels,
                height,
                width,
            }),
            _ => Err(format!("image shape {s:?} is not CxHxW, e.g. 1x28x28")),
        }
    }
}

/// A whole architecture: the convolutional stages, then the fc hidden widths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arch {
    pub stages: Vec<Stage>,
    pub hidden: Vec<usize>,
}

impl Arch {
    /// An MLP of these hidden widths.
    pub fn mlp(hidden: &[usize]) -> Arch {
        Arch {
            stages: Vec::new(),
            hidden: hidden.to_vec(),
        }
    }

    /// The convolutional front over images of shape `input`, or `None` for an MLP; an error
    /// names the stage whose window does not fit what reaches it.
    pub fn features(&self, input: Grid) -> Result<Option<Features>, String> {
        match self.stages.is_empty() {
            true => Ok(None),
            false => Features::new(input, self.stages.clone()).map(Some),
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Stage::Conv {
                out,
                kernel,
                stride,
                padding,
            } => {
                write!(f, "conv:{out}k{kernel}")?;
                if stride != 1 {
                    write!(f, "s{stride}")?;
                }
                if padding != 0 {
                    write!(f, "p{padding}")?;
                }
                Ok(())
            }
            Stage::AvgPool { kernel } => write!(f, "avgpool:{kernel}"),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .stages
            .iter()
            .map(Stage::to_string)
            .chain(self.hidden.iter().map(|h| format!("fc:{h}")))
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

/// `32k3s2p1` → Conv { out 32, kernel 3, stride 2, padding 1 }: `<out>k<kernel>`, then an
/// optional `s<stride>`, then an optional `p<padding>`, nothing else.
fn parse_conv(spec: &str) -> Option<Stage> {
    /// The leading digits of `rest` as a number; `rest` moves past them.
    fn number(rest: &mut &str) -> Option<usize> {
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (digits, tail) = rest.split_at(end);
        *rest = tail;
        digits.parse().ok()
    }
    /// `<tag><number>` if `rest` starts with the tag, else `default`.
    fn tagged(rest: &mut &str, tag: char, default: usize) -> Option<usize> {
        match rest.strip_prefix(tag) {
            Some(tail) => {
                *rest = tail;
                number(rest)
            }
            None => Some(default),
        }
    }
    let mut rest = spec;
    let out = number(&mut rest)?;
    rest = rest.strip_prefix('k')?;
    let kernel = number(&mut rest)?;
    let stride = tagged(&mut rest, 's', 1)?;
    let padding = tagged(&mut rest, 'p', 0)?;
    rest.is_empty().then_some(Stage::Conv {
        out,
        kernel,
        stride,
        padding,
    })
}

impl FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Arch, String> {
        let bad = |part: &str| {
            format!(
                "{part:?} is not conv:<out>k<kernel>[s<stride>][p<padding>], avgpool:<k> or fc:<width> (e.g. conv:32k3,conv:64k3s2,fc:1000)"
            )
        };
        let mut arch = Arch {
            stages: Vec::new(),
            hidden: Vec::new(),
        };
        for part in s.split(',').map(str::trim) {
            let positive = |v: usize| (v > 0).then_some(v);
            match part.split_once(':') {
                Some(("conv", spec)) if arch.hidden.is_empty() => {
                    let stage = parse_conv(spec).ok_or_else(|| bad(part))?;
                    match stage {
                        Stage::Conv {
                            out,
                            kernel,
                            stride,
                            ..
                        } if out > 0 && kernel > 0 && stride > 0 => arch.stages.push(stage),
                        _ => return Err(bad(part)),
                    }
                }
                Some(("avgpool", k)) if arch.hidden.is_empty() => {
                    let kernel = k.parse().ok().and_then(positive).ok_or_else(|| bad(part))?;
                    arch.stages.push(Stage::AvgPool { kernel });
                }
                Some(("fc", w)) => {
                    let width = w.parse().ok().and_then(positive).ok_or_else(|| bad(part))?;
                    arch.hidden.push(width);
                }
                Some(("conv" | "avgpool", _)) => {
                    return Err(format!(
                        "{part:?} comes after an fc layer; convolutions and pooling come first"
                    ))
                }
                _ => return Err(bad(part)),
            }
        }
        if arch.hidden.is_empty() {
            return Err(format!(
                "{s:?}: at least one fc hidden layer is needed before the implied output layer (e.g. …,fc:1000)"
            ));
        }
        Ok(arch)
    }
}

/// The convolutional front of a network: the input image's shape, then its stages. Built only
/// through [`Features::new`], so every stage's window fits what reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Features {
    input: Grid,
    stages: Vec<Stage>,
}

impl Features {
    /// Checks that the stages chain over images of shape `input`; the error names the stage.
    pub fn new(input: Grid, stages: Vec<Stage>) -> Result<Features, String> {
        if input.is_empty() {
            return Err(format!("image shape {input} is empty"));
        }
        let mut grid = input;
        for (i, stage) in stages.iter().enumerate() {
            let g = Self::patches(stage, grid);
            if !g.is_valid() {
                return Err(format!(
                    "stage {} ({stage}) does not fit its {grid} input (kernel larger than the padded image)",
                    i + 1
                ));
            }
            grid = Self::after(stage, &g);
        }
        Ok(Features { input, stages })
    }

    /// The input image's shape.
    pub fn input(&self) -> Grid {
        self.input
    }

    /// The stages in order.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Each stage with the windows it takes over its input.
    pub fn geometries(&self) -> Vec<(Stage, Patches)> {
        let mut grid = self.input;
        self.stages
            .iter()
            .map(|&s| {
                let g = Self::patches(&s, grid);
                grid = Self::after(&s, &g);
                (s, g)
            })
            .collect()
    }

    /// The shape that reaches the first fc layer.
    pub fn output(&self) -> Grid {
        self.geometries()
            .last()
            .map_or(self.input, |(s, g)| Self::after(s, g))
    }

    /// The number of convolutions (weight layers of the front).
    pub fn convs(&self) -> usize {
        self.stages
            .iter()
            .filter(|s| matches!(s, Stage::Conv { .. }))
            .count()
    }

    /// The convolutions' weights as PyTorch stores them, [out, in, k, k], in order.
    pub fn conv_weight_shapes(&self) -> Vec<[usize; 4]> {
        self.geometries()
            .into_iter()
            .filter_map(|(s, g)| match s {
                Stage::Conv { out, kernel, .. } => Some([out, g.channels, kernel, kernel]),
                Stage::AvgPool { .. } => None,
            })
            .collect()
    }

    /// The convolutions' weights as the tape holds them, [out, in·k·k], in order.
    pub fn conv_shapes(&self) -> Vec<(usize, usize)> {
        let flat = |[o, c, kh, kw]: [usize; 4]| (o, c * kh * kw);
        self.conv_weight_shapes().into_iter().map(flat).collect()
    }

    fn patches(stage: &Stage, grid: Grid) -> Patches {
        let (kernel, stride, padding) = match *stage {
            Stage::Conv {
                kernel,
                stride,
                padding,
                ..
            } => (kernel, stride, padding),
            Stage::AvgPool { kernel } => (kernel, kernel, 0),
        };
        Patches {
            channels: grid.channels,
            height: grid.height,
            width: grid.width,
            kernel,
            stride,
            padding,
        }
    }

    fn after(stage: &Stage, g: &Patches) -> Grid {
        Grid {
            channels: match *stage {
                Stage::Conv { out, .. } => out,
                Stage::AvgPool { .. } => g.channels,
            },
            height: g.out_height(),
            width: g.out_width(),
        }
    }
}
