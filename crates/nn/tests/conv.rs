//! Networks with convolutions: `--arch` spellings, the forward pass against PyTorch's layers by
//! their definitions, gradients, and files with PyTorch's names and 4-D layouts.

use std::collections::BTreeMap;

use ndarray::Array2;
use reveal_io::write_owned_tensors;
use reveal_nn::files::{load_model, load_model_with, save_model, LayerNames};
use reveal_nn::{forward, Activation, Arch, Biases, Features, Grid, Init, Layout, Mlp, Stage};
use reveal_tape::check::{gradcheck, gradgradcheck, randn, Rng};
use reveal_tape::{Tape, Var};

#[test]
fn arch_spellings_round_trip_and_bad_ones_are_named() {
    let a: Arch = "conv:32k3,conv:64k3s2p1,avgpool:2,fc:1000,fc:10"
        .parse()
        .unwrap();
    assert_eq!(
        a.stages,
        vec![
            Stage::Conv {
                out: 32,
                kernel: 3,
                stride: 1,
                padding: 0
            },
            Stage::Conv {
                out: 64,
                kernel: 3,
                stride: 2,
                padding: 1
            },
            Stage::AvgPool { kernel: 2 },
        ]
    );
    assert_eq!(a.hidden, vec![1000, 10]);
    assert_eq!(
        a.to_string(),
        "conv:32k3,conv:64k3s2p1,avgpool:2,fc:1000,fc:10"
    );
    assert_eq!("fc:20".parse::<Arch>().unwrap(), Arch::mlp(&[20]));
    for (bad, says) in [
        ("conv:32,fc:10", "\"conv:32\" is not conv:<out>k<kernel>"),
        ("conv:32k3x,fc:10", "\"conv:32k3x\" is not"),
        ("conv:0k3,fc:10", "\"conv:0k3\" is not"),
        ("conv:8k3s0,fc:10", "\"conv:8k3s0\" is not"),
        ("avgpool:0,fc:10", "\"avgpool:0\" is not"),
        ("fc:10,conv:8k3", "comes after an fc layer"),
        ("conv:8k3", "at least one fc hidden layer"),
        ("mlp:10", "\"mlp:10\" is not"),
    ] {
        let e = bad.parse::<Arch>().unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn a_stage_that_does_not_fit_is_named() {
    let arch: Arch = "conv:4k3,conv:4k5,fc:10".parse().unwrap();
    let e = arch
        .features(Grid {
            channels: 1,
            height: 6,
            width: 6,
        })
        .unwrap_err();
    assert!(
        e.contains("stage 2 (conv:4k5)") && e.contains("4x4x4"),
        "{e}"
    );
}

/// A small CNN of every kind of stage: conv (padding), conv (stride), avgpool, over 2×7×6 images.
fn small_cnn(biases: Biases, seed: u64) -> Mlp<f64> {
    let arch: Arch = "conv:3k3p1,conv:4k2s2,avgpool:2,fc:5".parse().unwrap();
    let input = Grid {
        channels: 2,
        height: 7,
        width: 6,
    };
    let features = arch.features(input).unwrap().unwrap();
    let mut m = Mlp::init_features(features, &arch.hidden, 3, Init::Default, biases, seed);
    // PyTorch's init, with the first layer's bias made large enough to matter.
    m.biases[0].mapv_inplace(|v| 3.0 * v);
    m
}

/// PyTorch's Conv2d by its definition on one NCHW image [C, H, W] (flattened channel-major).
fn conv2d(
    x: &[f64],
    (c, h, w): (usize, usize, usize),
    weight: &Array2<f64>,
    bias: Option<&Array2<f64>>,
    (k, s, p): (usize, usize, usize),
) -> (Vec<f64>, (usize, usize, usize)) {
    let (oh, ow, o) = (
        (h + 2 * p - k) / s + 1,
        (w + 2 * p - k) / s + 1,
        weight.nrows(),
    );
    let mut y = vec![0.0; o * oh * ow];
    for oc in 0..o {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut sum = bias.map_or(0.0, |b| b[(0, oc)]);
                for ch in 0..c {
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * s + ky) as isize - p as isize;
                            let ix = (ox * s + kx) as isize - p as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                sum += weight[(oc, (ch * k + ky) * k + kx)]
                                    * x[(ch * h + iy as usize) * w + ix as usize];
                            }
                        }
                    }
                }
                y[(oc * oh + oy) * ow + ox] = sum;
            }
        }
    }
    (y, (o, oh, ow))
}

/// PyTorch's AvgPool2d(k) by its definition on one NCHW image.
fn avg_pool2d(
    x: &[f64],
    (c, h, w): (usize, usize, usize),
    k: usize,
) -> (Vec<f64>, (usize, usize, usize)) {
    let (oh, ow) = (h / k, w / k);
    let mut y = vec![0.0; c * oh * ow];
    for ch in 0..c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut sum = 0.0;
                for ky in 0..k {
                    for kx in 0..k {
                        sum += x[(ch * h + oy * k + ky) * w + ox * k + kx];
                    }
                }
                y[(ch * oh + oy) * ow + ox] = sum / (k * k) as f64;
            }
        }
    }
    (y, (c, oh, ow))
}

/// The small CNN as a PyTorch module computes it: conv → relu → conv → relu → avgpool →
/// flatten (channel-major) → linear → relu → linear.
fn by_definition(m: &Mlp<f64>, x: &Array2<f64>) -> Array2<f64> {
    let relu = |v: Vec<f64>| v.into_iter().map(|t| t.max(0.0)).collect::<Vec<_>>();
    let bias = |k: usize| match m.bias_layout() {
        Biases::All => Some(&m.biases[k]),
        Biases::First => (k == 0).then(|| &m.biases[0]),
    };
    let mut out = Array2::zeros((x.nrows(), m.outputs()));
    for (i, row) in x.rows().into_iter().enumerate() {
        let img: Vec<f64> = row.to_vec();
        let (a, s) = conv2d(&img, (2, 7, 6), &m.weights[0], bias(0), (3, 1, 1));
        let (a, s) = conv2d(&relu(a), s, &m.weights[1], bias(1), (2, 2, 0));
        let (a, _) = avg_pool2d(&relu(a), s, 2);
        let a = Array2::from_shape_vec((1, a.len()), a).unwrap();
        let mut h = a.dot(&m.weights[2].t());
        if let Some(b) = bias(2) {
            h = h + b;
        }
        let mut f = h.mapv(|t| t.max(0.0)).dot(&m.weights[3].t());
        if let Some(b) = bias(3) {
            f = f + b;
        }
        out.row_mut(i).assign(&f.row(0));
    }
    out
}

#[test]
fn forward_equals_pytorchs_layers_by_definition() {
    for biases in [Biases::First, Biases::All] {
        let m = small_cnn(biases, 1);
        assert_eq!(m.weights[0].dim(), (3, 2 * 9));
        assert_eq!(m.weights[1].dim(), (4, 3 * 4));
        // 7×6 → conv p1 → 7×6 → conv k2 s2 → 3×3 → avgpool 2 → 1×1, 4 channels.
        assert_eq!(m.weights[2].dim(), (5, 4));
        let x = randn((3, 2 * 7 * 6), &mut Rng::seed(2));
        let (got, want) = (m.predict(x.view()), by_definition(&m, &x));
        let err = (&got - &want).iter().fold(0.0f64, |a, e| a.max(e.abs()));
        assert!(err < 1e-12, "{biases:?}: {got:?} vs {want:?}");
    }
}

/// The whole CNN passes gradcheck and gradgradcheck in its input and its first conv weight
/// (the modified ReLU's smooth surrogate, so second derivatives exist everywhere).
#[test]
fn cnn_gradients_at_first_and_second_order() {
    let m = small_cnn(Biases::All, 3);
    let layout = m.layout();
    let x = randn((2, 2 * 7 * 6), &mut Rng::seed(4));
    let params: Vec<Array2<f64>> = m.params().into_iter().cloned().collect();
    let inputs = [x, m.weights[0].clone()];
    gradcheck(|t, v| cnn_of(t, v, &params, &layout), &inputs, 1).unwrap();
    gradgradcheck(|t, v| cnn_of(t, v, &params, &layout), &inputs, 2).unwrap();
}

/// f(x) with the first weight an input: v = [x, W1], the other parameters constants.
fn cnn_of<'t>(
    t: &'t Tape<f64>,
    v: &[Var<'t, f64>],
    params: &[Array2<f64>],
    layout: &Layout,
) -> Vec<Var<'t, f64>> {
    let mut p: Vec<_> = params.iter().map(|a| t.constant(a.clone())).collect();
    p[0] = v[1];
    vec![forward(&p, layout, v[0], Activation::Softplus(5.0))]
}

#[test]
fn cnn_files_round_trip_with_pytorch_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cnn.safetensors");
    let m: Mlp<f32> = small_cnn(Biases::First, 5).cast();
    save_model(&p, &m, None, &BTreeMap::new()).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let header = String::from_utf8_lossy(&bytes[8..600]);
    assert!(header.contains(r#""shape":[3,2,3,3]"#), "{header}");
    assert!(header.contains(r#""arch":"conv:3k3p1,conv:4k2s2,avgpool:2,fc:5""#));
    assert_eq!(load_model::<f32>(&p).unwrap().mlp, m);
}

/// A PyTorch state dict of an `nn.Sequential` pair (`features.0`, `features.3`, `classifier.0`,
/// `classifier.2`) with 4-D conv weights and a bias everywhere, no
/// metadata. Read with the architecture given (convolutions first in the automatic order);
/// refused without it, or with one whose shapes do not chain, naming the layer.
#[test]
fn a_pytorch_state_dict_needs_its_arch() {
    let dir = tempfile::tempdir().unwrap();
    let m: Mlp<f32> = small_cnn(Biases::All, 6).cast();
    let flat = |a: &Array2<f32>| a.iter().copied().collect::<Vec<_>>();
    // nn.Sequential's names: "classifier" sorts before "features", so only putting the 4-D
    // weights first finds the network's order.
    let names = ["classifier.0", "classifier.2", "features.0", "features.3"];
    let order = [2, 3, 0, 1];
    let mut t = Vec::new();
    for (name, &k) in names.iter().zip(&order) {
        let w = &m.weights[k];
        let shape = match k {
            0 => vec![3, 2, 3, 3],
            1 => vec![4, 3, 2, 2],
            _ => w.shape().to_vec(),
        };
        t.push((format!("{name}.weight"), shape, flat(w)));
        t.push((format!("{name}.bias"), vec![w.nrows()], flat(&m.biases[k])));
    }
    let p = dir.path().join("state_dict.safetensors");
    write_owned_tensors(&p, &t, &BTreeMap::new()).unwrap();
    let features = m.features.as_deref();
    let read = load_model_with::<f32>(&p, &LayerNames::Auto, features).unwrap();
    assert_eq!(read.mlp, m);
    let e = load_model::<f32>(&p).map(|_| ()).unwrap_err().to_string();
    assert!(
        e.contains("features.0.weight [3, 2, 3, 3] is a convolution; pass --arch"),
        "{e}"
    );
    let input = features.unwrap().input();
    let wrong = Features::new(
        input,
        vec![Stage::Conv {
            out: 3,
            kernel: 5,
            stride: 1,
            padding: 0,
        }],
    )
    .unwrap();
    let e = load_model_with::<f32>(&p, &LayerNames::Auto, Some(&wrong))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("features.0.weight: the architecture's convolution 1 wants [3, 2, 5, 5]"),
        "{e}"
    );
}
