//! CNNs through the binary: `reveal train --arch`, `reveal reconstruct` and `reveal audit` of the
//! same network from reveal and as a PyTorch state dict (4-D weights, its own names, no
//! metadata), and `reveal bench --arch`.

mod common;

use std::path::Path;

use common::{ok, reveal_in};

const ARCH: &str = "conv:4k3,conv:6k3s2p1,fc:16";

/// A corner-trigger CNN trained by reveal on the synthetic set (1×16×16) in `dir/m.safetensors`.
fn trained(dir: &Path) {
    ok(reveal_in(dir).args([
        "train",
        "--per-class",
        "8",
        "--arch",
        ARCH,
        "--bias",
        "corner",
        "--out",
        "m.safetensors",
    ]));
}

/// `reveal audit` with 200 iterations and 32 candidates, and `extra`: its results.json.
fn audit(dir: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["audit", "--iters", "200", "--candidates", "32", "--json"];
    args.extend_from_slice(extra);
    serde_json::from_slice(&ok(reveal_in(dir).args(&args)).stdout).unwrap()
}

/// The model as PyTorch's `save_file(model.state_dict())` writes a module with attributes c1,
/// c2, fc1, fc2: 4-D convolution weights, the layers in the file's (alphabetical) order.
fn as_pytorch_state_dict(dir: &Path) {
    let m = reveal_nn::files::load_model::<f32>(&dir.join("m.safetensors")).unwrap();
    let flat = |a: &ndarray::Array2<f32>| a.iter().copied().collect::<Vec<_>>();
    let w = &m.mlp.weights;
    let tensors = [
        ("fc2.weight", w[3].shape().to_vec(), flat(&w[3])),
        ("fc1.weight", w[2].shape().to_vec(), flat(&w[2])),
        ("c2.weight", vec![6, 4, 3, 3], flat(&w[1])),
        ("c1.weight", vec![4, 1, 3, 3], flat(&w[0])),
        ("c1.bias", vec![4], flat(&m.mlp.biases[0])),
        ("data.mean", vec![256], flat(m.mean.as_ref().unwrap())),
    ];
    reveal_io::write_owned_tensors(
        &dir.join("torch.safetensors"),
        &tensors,
        &Default::default(),
    )
    .unwrap();
}

#[test]
fn a_cnn_is_trained_reconstructed_and_audited_from_reveal_and_from_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trained(d);
    let m = reveal_nn::files::load_model::<f32>(&d.join("m.safetensors")).unwrap();
    assert_eq!(m.mlp.arch().to_string(), ARCH);
    assert_eq!(m.mlp.weights[1].dim(), (6, 4 * 9));

    ok(reveal_in(d).args([
        "reconstruct",
        "--model",
        "m.safetensors",
        "--out",
        "r.safetensors",
        "--iters",
        "50",
        "--candidates",
        "16",
    ]));
    let r = reveal_recon::files::load_candidates::<f32>(&d.join("r.safetensors")).unwrap();
    assert_eq!(r.x.dim(), (16, 256));

    as_pytorch_state_dict(d);
    let ours = audit(d, &["--model", "m.safetensors", "--out", "a"]);
    let data = [
        "--dataset",
        "synthetic",
        "--per-class",
        "8",
        "--bias",
        "corner",
    ];
    let mut args = vec![
        "--model",
        "torch.safetensors",
        "--out",
        "b",
        "--arch",
        ARCH,
        "--train-selection",
        "first",
    ];
    args.extend_from_slice(&data);
    let theirs = audit(d, &args);
    assert_eq!(theirs["verdict"], ours["verdict"]);
    assert_eq!(theirs["evidence"], ours["evidence"]);

    // Without --arch, or with one whose shapes do not chain: a one-line error naming the layer.
    let refused = |extra: &[&str], says: &str| {
        let mut args = vec!["audit", "--model", "torch.safetensors", "--out", "c"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&data);
        let o = reveal_in(d).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    };
    refused(&[], "c1.weight [4, 1, 3, 3] is a convolution; pass --arch");
    refused(
        &["--arch", "conv:4k3,conv:6k3s2,fc:16"],
        "fc1.weight: it does not take the previous layer's 216 outputs",
    );
    refused(
        &["--arch", "conv:4k3,conv:6k3s2p1,fc:8"],
        "its fc hidden widths are [16], --arch conv:4k3,conv:6k3s2p1,fc:8 says [8]",
    );
    refused(
        &["--arch", "conv:4k20,fc:8"],
        "stage 1 (conv:4k20) does not fit",
    );
}

#[test]
fn bench_times_an_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let o = ok(reveal_in(dir.path()).args([
        "bench",
        "--arch",
        "conv:4k3,avgpool:2,fc:8",
        "--input",
        "1x8x8",
        "--steps",
        "1",
        "--json",
    ]));
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(line["case"], "conv:4k3,avgpool:2,fc:8");
    assert_eq!(line["recon_method"], "GradOfGrad");
    // The layers' forward FLOPs per image: 36·9·4, 36·8 and 8·1. The model's count: a
    // reconstruction step (200 candidates) does 5 products of the first layer's size and 7 of
    // the others', a training step (100 images) 2 and 3. The products the kernels counted in
    // one step are exactly that, but for one of the output layer's seven in a reconstruction
    // step (its weight times σ′ is elementwise): nothing is recomputed.
    let per_image = |times: [f64; 3]| {
        [36.0 * 9.0 * 4.0, 36.0 * 8.0, 8.0]
            .iter()
            .zip(times)
            .map(|(f, t)| 2.0 * f * t)
            .sum::<f64>()
    };
    for (field, want) in [
        ("recon_gflop", 200.0 * per_image([5.0, 7.0, 7.0])),
        (
            "recon_products_gflop_counted",
            200.0 * per_image([5.0, 7.0, 6.0]),
        ),
        ("train_gflop", 100.0 * per_image([2.0, 3.0, 3.0])),
        (
            "train_products_gflop_counted",
            100.0 * per_image([2.0, 3.0, 3.0]),
        ),
    ] {
        let want = want / 1e9;
        let got = line[field].as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "{field}: {got} against {want}");
    }
}

#[test]
fn the_experiment_takes_an_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let arch = "conv:4k3s2,fc:16";
    ok(reveal_in(dir.path()).args([
        "experiment",
        "--dataset",
        "synthetic",
        "--per-class",
        "8",
        "--test",
        "20",
        "--biases",
        "none,corner",
        "--seeds",
        "0",
        "--no-control",
        "--arch",
        arch,
        "--iters",
        "30",
        "--out",
        "e",
    ]));
    let report = std::fs::read_to_string(dir.path().join("e/report.md")).unwrap();
    assert!(report.contains(&format!("network {arch}")), "{report}");
    let model = dir.path().join("e/models/corner-s0.safetensors");
    let m = reveal_nn::files::load_model::<f32>(&model).unwrap();
    assert_eq!(m.mlp.arch().to_string(), arch);
}
