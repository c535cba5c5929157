//! The MLP: homogeneity, the reference init, the tape forward against the plain one, and files.

use std::collections::BTreeMap;

use ndarray::Array2;
use reveal_io::write_owned_tensors;
use reveal_nn::files::{load_model, load_model_with, save_model, LayerNames};
use reveal_nn::{forward, Activation, Biases, Init, Mlp};
use reveal_tape::check::{randn, Rng};
use reveal_tape::Tape;

fn trained_like(seed: u64) -> Mlp<f64> {
    let mut m = Mlp::<f64>::init(7, &[5, 4], seed);
    m.weights[0].mapv_inplace(|v| v * 1e4);
    m.biases[0].mapv_inplace(|v| v * 1e4);
    m
}

#[test]
fn homogeneous_of_degree_three() {
    let m = trained_like(1);
    let x = randn((6, 7), &mut Rng::seed(2));
    for c in [0.5, 2.0, 3.7] {
        let mut scaled = m.clone();
        for p in scaled.params_mut() {
            p.mapv_inplace(|v| v * c);
        }
        let (f, fc) = (m.predict(x.view()), scaled.predict(x.view()));
        for (a, b) in f.iter().zip(fc.iter()) {
            assert!(
                (b - c.powi(3) * a).abs() <= 1e-12 * (1.0 + b.abs()),
                "c = {c}: {b} vs {}",
                c.powi(3) * a
            );
        }
    }
}

#[test]
fn reference_init_statistics() {
    let m = Mlp::<f64>::init(784, &[1000, 1000], 0);
    let std = |a: &Array2<f64>| (a.mapv(|v| v * v).mean().unwrap()).sqrt();
    assert!((std(&m.weights[0]) - 1e-4).abs() < 2e-6);
    assert!((std(&m.biases[0]) - 1e-4).abs() < 1e-5);
    let bound = 1.0 / 1000f64.sqrt();
    for w in &m.weights[1..] {
        assert!(w.iter().all(|v| v.abs() < bound));
        // U(−b, b) has std b/√3.
        assert!((std(w) - bound / 3f64.sqrt()).abs() < 0.05 * bound);
    }
    assert_eq!(m.weights[2].dim(), (1, 1000));
}

#[test]
fn tape_forward_equals_plain_forward() {
    let every = Mlp::<f64>::init_with(7, &[6, 5], 3, Init::Default, Biases::All, 5);
    for m in [trained_like(3), every] {
        let x = randn((5, 7), &mut Rng::seed(4));
        let tape = Tape::new();
        let f = forward(
            &m.on_tape(&tape),
            &m.layout(),
            tape.constant(x.clone()),
            Activation::Relu,
        );
        let g = forward(
            &m.on_tape(&tape),
            &m.layout(),
            tape.constant(x.clone()),
            Activation::ModifiedRelu(20.0),
        );
        assert_eq!(*f.value(), m.predict(x.view()));
        assert_eq!(
            *g.value(),
            m.predict(x.view()),
            "the modified ReLU has the same forward value"
        );
    }
}

#[test]
fn save_load_round_trip_is_bit_exact_in_both_precisions() {
    let dir = tempfile::tempdir().unwrap();
    let m = trained_like(5);
    let mean = Array2::from_shape_fn((1, 7), |(_, j)| j as f64 * 0.1);
    let mut meta = BTreeMap::new();
    meta.insert("data".to_string(), "{\"x\":1}".to_string());
    let p = dir.path().join("m.safetensors");
    save_model(&p, &m, Some(&mean), &meta).unwrap();
    let back = load_model::<f64>(&p).unwrap();
    assert_eq!(back.mlp, m);
    assert_eq!(back.mean.unwrap(), mean);
    assert_eq!(back.metadata.get("data"), meta.get("data"));
    let m32: Mlp<f32> = m.cast();
    save_model(&p, &m32, None, &meta).unwrap();
    assert_eq!(load_model::<f32>(&p).unwrap().mlp, m32);
    assert!(load_model::<f32>(&p).unwrap().mean.is_none());
}

/// Writes a PyTorch-like state dict with one thing changed and returns the load error.
fn load_error(edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) -> String {
    load_error_with(&LayerNames::Auto, edit)
}

/// [`load_error`] read with the given layer names.
fn load_error_with(
    names: &LayerNames,
    edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<f32>)>),
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let m: Mlp<f32> = trained_like(6).cast();
    let flat = |a: &Array2<f32>| a.iter().copied().collect::<Vec<_>>();
    let mut t = vec![
        (
            "layers.0.weight".to_string(),
            vec![5, 7],
            flat(&m.weights[0]),
        ),
        ("layers.0.bias".to_string(), vec![5], flat(&m.biases[0])),
        (
            "layers.1.weight".to_string(),
            vec![4, 5],
            flat(&m.weights[1]),
        ),
        (
            "layers.2.weight".to_string(),
            vec![1, 4],
            flat(&m.weights[2]),
        ),
    ];
    edit(&mut t);
    let p = dir.path().join("state_dict.safetensors");
    write_owned_tensors(&p, &t, &BTreeMap::new()).unwrap();
    match load_model_with::<f32>(&p, names, None) {
        Ok(f) if f.mlp == m => String::new(),
        Ok(f) => format!(
            "loaded another model: {} hidden, {} outputs",
            f.mlp.hidden().len(),
            f.mlp.outputs()
        ),
        Err(e) => e.to_string(),
    }
}

/// Renames reveal's `layers.i` to other names.
fn rename(t: &mut [(String, Vec<usize>, Vec<f32>)], names: [&str; 3]) {
    for (name, _, _) in t.iter_mut() {
        for (i, n) in names.iter().enumerate() {
            if let Some(rest) = name.strip_prefix(&format!("layers.{i}.")) {
                *name = format!("{n}.{rest}");
                break;
            }
        }
    }
}

/// State dicts of PyTorch modules: `fc1, fc2, fc3` attributes, and `nn.Sequential` indices
/// with the ReLUs between (`0, 2, 4`), found by name in natural order; other names given
/// (`LayerNames::Given`); an order that does not chain, or biases on some later layers only, refused.
#[test]
fn pytorch_layer_names_are_found_or_given() {
    assert_eq!(load_error(|t| rename(t, ["fc1", "fc2", "fc3"])), "");
    assert_eq!(load_error(|t| rename(t, ["net.0", "net.2", "net.4"])), "");
    assert_eq!(
        load_error(|t| rename(t, ["l9", "l10", "l11"])),
        "",
        "l10 after l9"
    );
    // Names whose natural order is not the network's: refused with the order read, then
    // loaded with the names given.
    let e = load_error(|t| rename(t, ["c", "b", "a"]));
    assert!(
        e.contains("a.weight") && e.contains("name the Linear layers"),
        "{e}"
    );
    let given = LayerNames::Given(vec!["c".into(), "b".into(), "a".into()]);
    assert_eq!(load_error_with(&given, |t| rename(t, ["c", "b", "a"])), "");
    let e = load_error(|t| {
        rename(t, ["fc1", "fc2", "fc3"]);
        t.push(("fc2.bias".into(), vec![4], vec![0.0; 4]));
    });
    assert!(e.contains("fc2.bias") && e.contains("every layer"), "{e}");
    let e = load_error_with(&LayerNames::Given(vec!["fc1".into()]), |t| {
        rename(t, ["fc1", "fc2", "fc3"])
    });
    assert!(
        e.contains("classifier head") || e.contains("unexpected tensor"),
        "{e}"
    );
    let e = load_error(|t| t.retain(|(n, _, _)| n.ends_with(".bias")));
    assert!(
        e.contains("no layer weights") && e.contains("name the Linear layers"),
        "{e}"
    );
}

#[test]
fn pytorch_state_dict_loads_and_bad_files_are_rejected() {
    assert_eq!(
        load_error(|_| {}),
        "",
        "a state dict with PyTorch's names loads"
    );
    let e = load_error(|t| t[1].0 = "layers.0.b".into());
    assert!(
        e.contains("missing tensor layers.0.bias") && e.contains("state_dict.safetensors"),
        "{e}"
    );
    let e = load_error(|t| {
        t[2].1 = vec![5, 4];
    });
    assert!(e.contains("layers.1.weight") && e.contains("[5, 4]"), "{e}");
    let e = load_error(|t| t.push(("layers.1.bias".into(), vec![4], vec![0.0; 4])));
    assert!(
        e.contains("layers.1.bias") && e.contains("every layer"),
        "{e}"
    );
    // Without its binary head the net reads as a 4-class model (4 outputs from 5 inputs) and
    // loads; a last layer with as many outputs as inputs is a hidden layer, not a head.
    assert_eq!(
        load_error(|t| {
            t.pop();
        }),
        "loaded another model: 1 hidden, 4 outputs"
    );
    let e = load_error(|t| t[3] = ("layers.2.weight".into(), vec![4, 4], vec![0.1; 16]));
    assert!(e.contains("classifier head"), "{e}");
}

#[test]
fn wrong_dtype_and_garbage_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    let bytes = vec![1u8; 4];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![1], &bytes).unwrap();
    std::fs::write(
        &p,
        safetensors::serialize(vec![("layers.0.weight", view)], &None).unwrap(),
    )
    .unwrap();
    let e = load_model::<f32>(&p).err().unwrap().to_string();
    assert!(e.contains("I32") && e.contains("m.safetensors"), "{e}");
    std::fs::write(&p, b"garbage").unwrap();
    assert!(load_model::<f32>(&p)
        .err()
        .unwrap()
        .to_string()
        .contains("m.safetensors"));
}

/// The margin signs: y itself for one output; +1 at the label and −1 at the largest other output
/// for C outputs (the first of equal ones); margins are Σ_j S_ij f_ij.
#[test]
fn margin_signs_pick_the_label_and_the_runner_up() {
    use ndarray::array;
    use reveal_nn::{margin_signs, margins};
    let f = array![[0.5], [-2.0]];
    let y = array![[1.0], [-1.0]];
    assert_eq!(margin_signs(f.view(), y.view()), y);
    assert_eq!(margins(f.view(), y.view()), array![[0.5], [2.0]]);
    let f = array![[3.0, 1.0, 2.0], [0.0, 5.0, 5.0], [1.0, 1.0, -1.0]];
    let y = array![[0.0], [2.0], [2.0]];
    let s = margin_signs(f.view(), y.view());
    assert_eq!(
        s,
        array![[1.0, 0.0, -1.0], [0.0, -1.0, 1.0], [-1.0, 0.0, 1.0]]
    );
    assert_eq!(margins(f.view(), y.view()), array![[1.0], [0.0], [-2.0]]);
}

/// A model with a bias in every layer (PyTorch's default `nn.Linear`) is written with
/// `layers.i.bias` for every i and read back the same, under reveal's names and PyTorch's.
#[test]
fn a_bias_in_every_layer_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mlp::<f32>::init_with(6, &[5, 4], 3, Init::Default, Biases::All, 9);
    assert_eq!(m.biases.len(), 3);
    assert_eq!(m.params().len(), 6);
    let p = dir.path().join("all.safetensors");
    save_model(&p, &m, None, &BTreeMap::new()).unwrap();
    let back = load_model::<f32>(&p).unwrap().mlp;
    assert_eq!(back, m);
    assert_eq!(back.bias_layout(), Biases::All);
    // The same tensors under a PyTorch module's names.
    let bytes = std::fs::read(&p).unwrap();
    let file = reveal_io::parse_tensors::<f32>(&bytes, &p).unwrap();
    let owned: Vec<(String, Vec<usize>, Vec<f32>)> = file
        .tensors
        .iter()
        .map(|(n, t)| {
            let name = n
                .replace("layers.0", "fc1")
                .replace("layers.1", "fc2")
                .replace("layers.2", "fc3");
            (name, t.shape.clone(), t.data.clone())
        })
        .collect();
    let q = dir.path().join("torch.safetensors");
    write_owned_tensors(&q, &owned, &BTreeMap::new()).unwrap();
    assert_eq!(load_model::<f32>(&q).unwrap().mlp, m);
}
