//! The `reveal` binary end to end: help, a tiny pipeline on synthetic data, and one-line errors
//! with exit code 2 for bad input.

use std::path::Path;
use std::process::{Command, Output};

fn reveal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reveal"))
        .args(args)
        .env_remove("REVEAL_DATA")
        .output()
        .expect("runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fails with exit code 2 and a single `error:` line containing every `needle`.
fn assert_clean_error(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "exit code; stderr: {e}");
    let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {e}");
    assert!(lines[0].starts_with("error: "), "{e}");
    for n in needles {
        assert!(lines[0].contains(n), "missing {n:?} in {e}");
    }
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn help_has_examples() {
    let o = reveal(&["--help"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    for cmd in [
        "demo",
        "data",
        "train",
        "reconstruct",
        "kkt",
        "score",
        "experiment",
        "bench",
        "ssim",
        "Examples:",
    ] {
        assert!(text.contains(cmd), "{cmd} missing from --help");
    }
}

#[test]
fn tiny_pipeline_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).display().to_string();
    let data = ["--dataset", "synthetic", "--per-class", "8", "--test", "20"];

    let o = reveal(
        &[
            &[
                "data",
                "--json",
                "--bias",
                "corner",
                "--preview",
                &p("prev.png"),
            ][..],
            &data[..],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["train"]["per_binary_class"], serde_json::json!([8, 8]));
    assert_eq!(v["triggers"]["class1"], serde_json::json!([0]));
    assert!(Path::new(&p("prev.png")).is_file());

    let o = reveal(
        &[
            &[
                "train",
                "--json",
                "--hidden",
                "32,32",
                "--out",
                &p("m.safetensors"),
            ][..],
            &data[..],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let t: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(t["train_error"], serde_json::json!(0.0));
    assert!(t["train_loss"].as_f64().unwrap() < 1e-5);
    assert!(
        t["wall_seconds"].as_f64().unwrap() > 0.0,
        "wall time in the JSON"
    );

    let o = reveal(&[
        "reconstruct",
        "--json",
        "--model",
        &p("m.safetensors"),
        "--out",
        &p("c.safetensors"),
        "--iters",
        "20",
        "--runs",
        "2",
        "--keep",
        "2",
        "--preset",
        "mnist-b",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["pooled"].as_array().unwrap().len(), 2);
    assert!(s["runs"][1]["wall_seconds"].as_f64().unwrap() > 0.0);

    let o = reveal(&[
        "score",
        "--json",
        "--model",
        &p("m.safetensors"),
        "--recon",
        &p("c.safetensors"),
        "--grid",
        &p("g.png"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let sc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(sc["pairs"].as_array().unwrap().len(), 16);
    assert!(Path::new(&p("g.png")).is_file());

    let o = reveal(&[
        "kkt",
        "--json",
        "--model",
        &p("m.safetensors"),
        "--candidates",
        &p("c.safetensors"),
        "--out",
        &p("k.safetensors"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let k: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let sum = ["loss.kkt", "loss.prior_x", "loss.prior_lambda"]
        .iter()
        .map(|n| k[n].as_f64().unwrap())
        .sum::<f64>();
    assert!((k["loss"].as_f64().unwrap() - sum).abs() < 1e-9 * sum.abs().max(1.0));
    let bytes = std::fs::read(p("k.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("grad.x").unwrap().shape(), [64, 256]); // two pooled runs of m = 2n = 32 candidates, 16×16 images
    assert_eq!(st.tensor("grad.lambda").unwrap().shape(), [64]);
}

#[test]
fn bad_input_gives_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).display().to_string();
    std::fs::write(p("junk.safetensors"), b"not a model").unwrap();

    assert_clean_error(
        &reveal(&[
            "score",
            "--model",
            &p("missing.safetensors"),
            "--recon",
            &p("c.safetensors"),
        ]),
        &["missing.safetensors"],
    );
    assert_clean_error(
        &reveal(&[
            "reconstruct",
            "--model",
            &p("junk.safetensors"),
            "--out",
            &p("c.safetensors"),
        ]),
        &["junk.safetensors"],
    );
    assert_clean_error(&reveal(&["data", "--dataset", "mnist"]), &["REVEAL_DATA"]);
    assert_clean_error(
        &reveal(&["data", "--dataset", "mnist", "--data-dir", &p("nowhere")]),
        &["nowhere"],
    );
    assert_clean_error(
        &reveal(&[
            "data",
            "--dataset",
            "synthetic",
            "--bias",
            "diag5",
            "--size",
            "12",
        ]),
        &["diag5", "12×12"],
    );
    assert_clean_error(
        &reveal(&[
            "train",
            "--dataset",
            "synthetic",
            "--lr=-1",
            "--out",
            &p("m.safetensors"),
        ]),
        &["--lr"],
    );
    assert_clean_error(
        &reveal(&["data", "--dataset", "synthetic", "--test", "0"]),
        &["--test"],
    );
    assert_clean_error(
        &reveal(&["data", "--dataset", "synthetic", "--per-class", "0"]),
        &["per-class"],
    );
    assert_clean_error(&reveal(&["bench", "--case", "Z"]), &["--case"]);
    // The zoo and the training recipes refuse what they cannot do before any work.
    let out = tempfile::tempdir().unwrap();
    let zoo = |extra: &[&str]| {
        let mut args = vec!["zoo", "--out", out.path().to_str().unwrap()];
        args.extend_from_slice(extra);
        reveal(&args)
    };
    assert_clean_error(&zoo(&["--fractions", "0"]), &["fraction 0", "(0, 1]"]);
    assert_clean_error(&zoo(&["--hidden", "0"]), &["hidden widths"]);
    assert_clean_error(&zoo(&["--triggers", "tint"]), &["tint", "colour"]);
    assert!(
        std::fs::read_dir(out.path()).unwrap().next().is_none(),
        "refused before any work"
    );
    assert_clean_error(
        &reveal(&[
            "train",
            "--optimizer",
            "sgd",
            "--momentum",
            "1",
            "--out",
            "m",
        ]),
        &["--momentum"],
    );
    assert_clean_error(
        &reveal(&[
            "train",
            "--optimizer",
            "adam",
            "--batch-size",
            "0",
            "--out",
            "m",
        ]),
        &["--batch-size"],
    );

    // A model and an odd candidate count.
    let o = reveal(&[
        "train",
        "--dataset",
        "synthetic",
        "--per-class",
        "4",
        "--hidden",
        "8,8",
        "--test",
        "4",
        "--out",
        &p("m.safetensors"),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_clean_error(
        &reveal(&[
            "reconstruct",
            "--model",
            &p("m.safetensors"),
            "--out",
            &p("c.safetensors"),
            "--candidates",
            "7",
        ]),
        &["--candidates 7", "even"],
    );
    assert_clean_error(
        &reveal(&[
            "reconstruct",
            "--model",
            &p("m.safetensors"),
            "--out",
            &p("c.safetensors"),
            "--runs",
            "2",
            "--keep",
            "3",
        ]),
        &["--keep"],
    );
    assert_clean_error(
        &reveal(&[
            "reconstruct",
            "--model",
            &p("m.safetensors"),
            "--out",
            &p("c.safetensors"),
            "--preset",
            "nope",
        ]),
        &["nope"],
    );
    // A model whose input size does not fit the data set its metadata names.
    let meta = reveal_nn::files::load_model::<f32>(Path::new(&p("m.safetensors")))
        .unwrap()
        .metadata;
    let wide = reveal_nn::Mlp::<f32>::init(784, &[8, 8], 0);
    reveal_nn::files::save_model(Path::new(&p("wide.safetensors")), &wide, None, &meta).unwrap();
    assert_clean_error(
        &reveal(&[
            "reconstruct",
            "--model",
            &p("wide.safetensors"),
            "--out",
            &p("w.safetensors"),
            "--rank-by",
            "score",
            "--iters",
            "2",
        ]),
        &["wide.safetensors", "784 inputs", "256"],
    );
    // Divergence: the reference schedule with an absurd rate; the last finite model is kept.
    assert_clean_error(
        &reveal(&[
            "train",
            "--dataset",
            "synthetic",
            "--per-class",
            "4",
            "--hidden",
            "8,8",
            "--schedule",
            "reference",
            "--lr",
            "1e30",
            "--out",
            &p("boom.safetensors"),
        ]),
        &[
            "diverged after epoch",
            "lower the learning rate",
            "boom.ckpt.safetensors",
        ],
    );
    assert!(Path::new(&p("boom.ckpt.safetensors")).is_file());

    let o = reveal(&[
        "reconstruct",
        "--model",
        &p("m.safetensors"),
        "--out",
        &p("c.safetensors"),
        "--iters",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_clean_error(
        &reveal(&[
            "score",
            "--model",
            &p("m.safetensors"),
            "--recon",
            &p("c.safetensors"),
            "--k",
            "99",
        ]),
        &["--k 99"],
    );
}

/// `reveal kkt` agrees with the independent closed form: to 1e-8 relative in f64, 1e-4 in f32,
/// for a binary model (labels ±1) and a 3-class one (labels = class indices); labels that do
/// not fit the model are refused in one line.
#[test]
fn kkt_command_agrees_with_the_closed_form() {
    use reveal_recon::Multipliers::*;
    // The form of the multipliers comes from the file's run settings.
    for (outputs, form) in [(1, Margin), (3, Margin), (3, Pairs), (1, Signed)] {
        kkt_agrees_for(outputs, form);
    }
}

fn kkt_agrees_for(outputs: usize, form: reveal_recon::Multipliers) {
    use reveal_nn::{Activation, Mlp};
    use reveal_recon::closed_form::closed_form;
    use reveal_recon::optim::{Hyper, RunConfig, RunState};
    use reveal_tape::check::{randn, Rng};

    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f);
    let mut rng = Rng::seed(1);
    let mut net = Mlp::<f64>::init_classes(20, &[16, 16], outputs, 0);
    for w in net.params_mut() {
        *w = randn(w.dim(), &mut rng) * 0.5;
    }
    reveal_nn::save_model(&p("m.safetensors"), &net, None, &Default::default()).unwrap();
    let cfg = RunConfig {
        multipliers: form,
        ..RunConfig::new(
            Hyper {
                init_scale: 0.8,
                lr: 0.1,
                lambda_min: 0.45,
                alpha: 19.2,
            },
            10,
            1,
            3,
        )
    };
    let mut state = RunState::<f64>::init_for(20, outputs, &cfg);
    state.lambda.mapv_inplace(|l| 0.2 + 0.5 * l); // some below λ_min
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("config".to_string(), serde_json::to_string(&cfg).unwrap());
    reveal_recon::files::save_candidates(&p("c.safetensors"), &state, false, &meta).unwrap();
    let (l, gx, gl) = closed_form(
        &net,
        None,
        &state.x,
        &state.lambda,
        &state.y,
        Activation::ModifiedRelu(19.2),
        0.45,
        form,
    );

    for (precision, tol) in [("f64", 1e-8), ("f32", 1e-4)] {
        let out = p(&format!("k-{precision}.safetensors"));
        let o = reveal(&[
            "kkt",
            "--json",
            "--precision",
            precision,
            "--model",
            &p("m.safetensors").display().to_string(),
            "--candidates",
            &p("c.safetensors").display().to_string(),
            "--out",
            &out.display().to_string(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let k: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let loss = k["loss"].as_f64().unwrap();
        assert!(
            (loss - l).abs() <= tol * l.abs(),
            "{form:?} {precision}: loss {loss} vs {l}"
        );
        let bytes = std::fs::read(&out).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let read = |name: &str| -> Vec<f64> {
            let t = st.tensor(name).unwrap();
            match t.dtype() {
                safetensors::Dtype::F64 => t
                    .data()
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                _ => t
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
            }
        };
        let rel = |a: &[f64], b: &[f64]| {
            let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
            (d / b.iter().map(|y| y * y).sum::<f64>()).sqrt()
        };
        let (ex, el) = (
            rel(&read("grad.x"), gx.as_slice().unwrap()),
            rel(&read("grad.lambda"), gl.as_slice().unwrap()),
        );
        assert!(
            ex < tol && el < tol,
            "{form:?} {precision}: relative error ∂x {ex:e}, ∂λ {el:e}"
        );
    }
    // The other kind of labels: ±1 for a 3-output model, 2 for a binary one.
    state.y = reveal_recon::candidate_labels_for(10, if outputs == 1 { 3 } else { 1 });
    reveal_recon::files::save_candidates(&p("c.safetensors"), &state, false, &meta).unwrap();
    let o = reveal(&[
        "kkt",
        "--model",
        &p("m.safetensors").display().to_string(),
        "--candidates",
        &p("c.safetensors").display().to_string(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("c.safetensors") && e.contains("label"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
}

/// An `--out` that exists and is not a regular file (here a FIFO we make) is refused before
/// any work, and left as it was: the atomic rename would have replaced it.
#[test]
fn output_that_is_not_a_regular_file_is_refused() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let out = fifo.to_string_lossy().to_string();
    let o = reveal(&[
        "train",
        "--per-class",
        "3",
        "--hidden",
        "6,6",
        "--out",
        &out,
    ]);
    assert_clean_error(&o, &["pipe", "not a regular file"]);
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    // A folder given as --out fails the same way.
    let o = reveal(&[
        "train",
        "--per-class",
        "3",
        "--out",
        &dir.path().to_string_lossy(),
    ]);
    assert_clean_error(&o, &["not a regular file"]);
}

/// A model with a NaN or infinite weight is refused at load, naming the tensor and element.
#[test]
fn model_with_non_finite_weights_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nan.safetensors");
    let mut net = reveal_nn::Mlp::<f32>::init(16, &[4, 4], 0);
    net.weights[1][[2, 3]] = f32::NAN;
    reveal_nn::files::save_model(&path, &net, None, &Default::default()).unwrap();
    let out = dir.path().join("c.safetensors");
    let o = reveal(&[
        "reconstruct",
        "--model",
        &path.to_string_lossy(),
        "--out",
        &out.to_string_lossy(),
        "--candidates",
        "4",
    ]);
    assert_clean_error(&o, &["nan.safetensors", "layers.1.weight", "NaN", "[2, 3]"]);
    net.weights[1][[2, 3]] = 0.0;
    net.biases[0][[0, 1]] = f32::INFINITY;
    reveal_nn::files::save_model(&path, &net, None, &Default::default()).unwrap();
    let o = reveal(&[
        "kkt",
        "--model",
        &path.to_string_lossy(),
        "--candidates",
        "x",
    ]);
    assert_clean_error(&o, &["layers.0.bias", "inf", "[1]"]);
}

/// A model without reveal's metadata (as if trained elsewhere) is scored with data flags.
#[test]
fn score_takes_data_flags_for_a_model_from_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_string_lossy().to_string();
    let run = |args: &[&str]| {
        let o = reveal(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        o
    };
    run(&[
        "train",
        "--per-class",
        "4",
        "--hidden",
        "8,8",
        "--out",
        &p("m.safetensors"),
    ]);
    let m = reveal_nn::files::load_model::<f32>(Path::new(&p("m.safetensors"))).unwrap();
    reveal_nn::files::save_model(
        Path::new(&p("bare.safetensors")),
        &m.mlp,
        None,
        &Default::default(),
    )
    .unwrap();
    let bare = p("bare.safetensors");
    run(&[
        "reconstruct",
        "--model",
        &bare,
        "--out",
        &p("c.safetensors"),
        "--candidates",
        "8",
        "--iters",
        "5",
    ]);
    let o = reveal(&[
        "score",
        "--model",
        &bare,
        "--recon",
        &p("c.safetensors"),
        "--dataset",
        "mnist",
    ]);
    assert_clean_error(&o, &["REVEAL_DATA"]);
    let o = run(&[
        "score",
        "--model",
        &bare,
        "--recon",
        &p("c.safetensors"),
        "--dataset",
        "synthetic",
        "--per-class",
        "4",
        "--k",
        "3",
        "--json",
    ]);
    let score: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        score["pairs"].as_array().unwrap().len(),
        8,
        "every training image paired"
    );
    // The same data flags on a model with metadata score it exactly as its metadata does.
    let with_meta = run(&[
        "score",
        "--model",
        &p("m.safetensors"),
        "--recon",
        &p("c.safetensors"),
        "--k",
        "3",
        "--json",
    ]);
    assert_eq!(o.stdout, with_meta.stdout);
}

/// Output into a pipe whose reader has gone (`reveal … | head`) ends the run quietly, never
/// with a panic.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.png"), dir.path().join("b.png"));
    for p in [&a, &b] {
        image::GrayImage::from_fn(8, 8, |x, y| image::Luma([(x * 30 + y) as u8]))
            .save(p)
            .unwrap();
    }
    for args in [
        vec!["--help"],
        vec!["ssim", a.to_str().unwrap(), b.to_str().unwrap()],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_reveal"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader goes before the first line is written
        let o = child.wait_with_output().unwrap();
        let e = stderr(&o);
        assert!(!e.contains("panicked"), "{args:?}: {e}");
        assert_ne!(o.status.code(), Some(101), "{args:?}: {e}");
    }
}

/// `reveal stationarity` of a squared-loss model with weight decay: the forms a one-output model
/// has (margin and signed; pairs is margin there), the signed form marked as its recipe's. With
/// one output the free fit spans the same multipliers in both (λ_i·y_i against λ_i), so their
/// residuals agree; that fit is well below 1 (the step mostly explained). And one line naming
/// the file for a file that is no model.
#[test]
fn stationarity_fits_each_form_at_a_models_training_set() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).display().to_string();
    let o = reveal(&[
        "train",
        "--dataset",
        "synthetic",
        "--per-class",
        "8",
        "--hidden",
        "16,16",
        "--loss",
        "squared",
        "--weight-decay",
        "1e-2",
        "--epochs",
        "3000",
        "--out",
        &p("sq.safetensors"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = reveal(&["stationarity", "--json", "--model", &p("sq.safetensors")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let forms: Vec<&str> = rows
        .iter()
        .map(|r| r["multipliers"].as_str().unwrap())
        .collect();
    assert_eq!(forms, ["margin", "signed"]);
    assert_eq!(rows[1]["training_recipe_form"], serde_json::json!(true));
    let residual = |i: usize| rows[i]["residual"].as_f64().unwrap();
    assert!(
        (residual(0) - residual(1)).abs() <= 1e-6 * residual(1) && residual(1) < 0.5,
        "margin {} against signed {}",
        residual(0),
        residual(1)
    );
    std::fs::write(p("bad.safetensors"), b"not a model").unwrap();
    assert_clean_error(
        &reveal(&["stationarity", "--model", &p("bad.safetensors")]),
        &["bad.safetensors"],
    );
}
