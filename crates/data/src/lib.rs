//! # reveal-data
//!
//! Everything the experiments feed on: loaders for MNIST (IDX), CIFAR-10 (binary batches) and
//! image folders; the binary tasks; the selection of training and test images; the planted
//! biases; the built-in synthetic set; and the preprocessing of docs/DESIGN.md §2 (pixels in [0, 1],
//! C×H×W rows, the per-pixel training mean subtracted from train and test).

pub mod bias;
pub mod formats;
pub mod images;
pub mod synthetic;
pub mod trigger;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use ndarray::{Array1, Array2, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use bias::{Bias, Triggers};
pub use images::Images;
pub use trigger::{KindName, Trigger, TriggerKind};

/// Where the images come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// MNIST: `train` for training, `t10k` for test.
    Mnist,
    /// CIFAR-10: every `data_batch_*.bin` present for training, `test_batch.bin` for test.
    Cifar10,
    /// `root/<class>/*.png|jpg`; test images from `test_root`, or else the images not selected
    /// for training.
    Folder {
        root: PathBuf,
        test_root: Option<PathBuf>,
        size: Option<(usize, usize)>,
    },
    /// The built-in rings-vs-crosses set with images of side `size`.
    Synthetic { size: usize },
}

impl Source {
    /// The short name used on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Source::Mnist => "mnist",
            Source::Cifar10 => "cifar10",
            Source::Folder { .. } => "folder",
            Source::Synthetic { .. } => "synthetic",
        }
    }

    /// The default binary task of this source.
    pub fn default_task(&self) -> Task {
        match self {
            Source::Mnist => Task::OddEven,
            Source::Cifar10 => Task::VehiclesAnimals,
            Source::Synthetic { .. } => Task::Split {
                class0: vec!["ring".into()],
                class1: vec!["cross".into()],
            },
            Source::Folder { .. } => Task::Split {
                class0: vec![],
                class1: vec![],
            },
        }
    }
}

/// A task: which original classes form class 0 (y = −1) and class 1 (y = +1) of a binary
/// task, or every class its own (`All`: y = the class index, a C-output model).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// MNIST: even digits → 0, odd → 1.
    OddEven,
    /// CIFAR-10: vehicles {airplane, automobile, ship, truck} → 0, animals → 1.
    VehiclesAnimals,
    /// Named classes; with both lists empty, a two-class folder maps its first class to 0.
    Split {
        class0: Vec<String>,
        class1: Vec<String>,
    },
    /// Every class of the data set, each its own (ten for MNIST and CIFAR-10).
    All,
}

/// A class of a split, given by its name or, failing that, its index: the label it means.
fn resolve(entry: &str, names: &[String]) -> Option<usize> {
    names
        .iter()
        .position(|n| n == entry)
        .or_else(|| entry.parse::<usize>().ok().filter(|&i| i < names.len()))
}

impl std::str::FromStr for Task {
    type Err = String;

    /// `odd-even`, `vehicles-animals`, `cat-dog`, `all`, or `A,B/C,D`: the classes (names or
    /// indices) of binary class 0, then of class 1.
    fn from_str(s: &str) -> Result<Self, String> {
        let list = |part: &str| -> Vec<String> {
            part.split(',')
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect()
        };
        match s.trim() {
            "odd-even" => Ok(Task::OddEven),
            "all" => Ok(Task::All),
            "vehicles-animals" => Ok(Task::VehiclesAnimals),
            "cat-dog" => Ok(Task::Split {
                class0: vec!["cat".into()],
                class1: vec!["dog".into()],
            }),
            other => match other.split_once('/') {
                Some((a, b)) if !list(a).is_empty() && !list(b).is_empty() => Ok(Task::Split {
                    class0: list(a),
                    class1: list(b),
                }),
                _ => Err(format!(
                    "{s:?}: expected odd-even, vehicles-animals, cat-dog, all or class lists A,B/C,D (names or indices)"
                )),
            },
        }
    }
}

impl Task {
    /// How many classes the task has: 2, or every class of the data set for `All`.
    pub fn classes(&self, names: &[String]) -> usize {
        match self {
            Task::All => names.len(),
            _ => 2,
        }
    }

    /// The task's class of an image with original label `label`, or `None` if not in the task.
    fn class_of(&self, label: u8, names: &[String]) -> Option<u8> {
        let is = |entries: &[String]| {
            entries
                .iter()
                .any(|e| resolve(e, names) == Some(label as usize))
        };
        match self {
            Task::OddEven => Some(label % 2),
            Task::All => Some(label),
            Task::VehiclesAnimals => Some(if matches!(label, 0 | 1 | 8 | 9) { 0 } else { 1 }),
            Task::Split { class0, class1 } if class0.is_empty() && class1.is_empty() => {
                Some(label.min(1))
            }
            Task::Split { class0, class1 } => {
                if is(class0) {
                    Some(0)
                } else if is(class1) {
                    Some(1)
                } else {
                    None
                }
            }
        }
    }

    /// Checks a named split against the classes a data set has.
    fn check(&self, names: &[String], what: &str) -> Result<()> {
        if let Task::Split { class0, class1 } = self {
            if class0.is_empty() && class1.is_empty() && names.len() != 2 {
                bail!(
                    "{what}: {} classes ({}); say which form each binary class",
                    names.len(),
                    names.join(", ")
                );
            }
            for n in class0.iter().chain(class1) {
                if resolve(n, names).is_none() {
                    bail!(
                        "{what}: no class {n:?} (classes: {}; or their indices 0–{})",
                        names.join(", "),
                        names.len().saturating_sub(1)
                    );
                }
            }
            if let Some(n) = class0.iter().find(|a| {
                class1
                    .iter()
                    .any(|b| resolve(a, names) == resolve(b, names))
            }) {
                bail!("{what}: class {n:?} is in both binary classes");
            }
        }
        Ok(())
    }
}

/// How training images are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Selection {
    /// The first n/C of each class, in file order (the reference).
    First,
    /// n/C of each class drawn with a seed, kept in file order.
    Random { seed: u64 },
}

impl std::str::FromStr for Selection {
    type Err = String;
    /// `first`, or `random:SEED`.
    fn from_str(s: &str) -> Result<Self, String> {
        match (s, s.strip_prefix("random:").map(str::parse::<u64>)) {
            ("first", _) => Ok(Selection::First),
            (_, Some(Ok(seed))) => Ok(Selection::Random { seed }),
            _ => Err(format!("{s:?}: expected first or random:SEED")),
        }
    }
}

/// Which test images, and how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestSelection {
    /// The first k of each class of the test split (the reference uses 500).
    PerClass(usize),
    /// The whole test split.
    All,
    /// The first k of each class of the *training* file that the training set did not take:
    /// held-out images from the training data's own distribution (MNIST's two files come from
    /// different writers).
    HeldOut(usize),
}

/// Everything needed to rebuild a training set; stored in model files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataSpec {
    pub source: Source,
    pub task: Task,
    /// Training images per class of the task (n = classes · per_class).
    pub per_class: usize,
    pub selection: Selection,
    pub test: TestSelection,
    pub bias: Bias,
    /// Seed of the bias positions.
    pub seed: u64,
    /// A zoo's trigger on one class's images (after the bias), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
}

impl DataSpec {
    /// The reference set-up for a source: default task, first-per-class selection, 500 test
    /// images per class, no bias.
    pub fn new(source: Source, per_class: usize) -> Self {
        DataSpec {
            task: source.default_task(),
            source,
            per_class,
            selection: Selection::First,
            test: TestSelection::PerClass(500),
            bias: Bias::None,
            seed: 0,
            trigger: None,
        }
    }
}

/// One preprocessed split.
#[derive(Clone, Debug)]
pub struct Split {
    /// Pixels in [0, 1], C×H×W per row (the training split after its bias).
    pub pixels: Array2<f32>,
    /// `pixels` minus the training mean: what the model sees.
    pub x: Array2<f32>,
    /// Labels: ±1 in a binary task (−1 for class 0), else the task's class index 0…C−1.
    pub y: Array1<f32>,
    /// Position of each image in its source split.
    pub index: Vec<usize>,
    /// Original class of each image.
    pub label: Vec<u8>,
}

impl Split {
    /// Number of images in each class of the task (`classes` of them).
    pub fn class_counts(&self, classes: usize) -> Vec<usize> {
        let mut counts = vec![0; classes];
        for &v in &self.y {
            counts[class_of_label(v, classes)] += 1;
        }
        counts
    }
}

/// A data set ready for training: train and test splits, the training mean, the triggers.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub spec: DataSpec,
    /// (C, H, W).
    pub shape: (usize, usize, usize),
    pub train: Split,
    pub test: Split,
    /// Clean images to hold reconstructions against (the bias map's reference): as many per
    /// class as the test selection (500 for the whole test split), from the *training* file,
    /// after the training set — held out from the training data's own distribution (MNIST's
    /// training and test files come from different writers). The test split when the training
    /// file has fewer than 2 left of a class.
    pub reference: Split,
    /// The per-pixel mean of the training pixels [d].
    pub mean: Array1<f32>,
    pub triggers: Triggers,
    pub class_names: Vec<String>,
}

/// The task class of a label as [`Split::y`] stores it (±1 for 2 classes, else the index).
pub fn class_of_label(y: f32, classes: usize) -> usize {
    match classes {
        2 => (y > 0.0) as usize,
        _ => y as usize,
    }
}

impl Prepared {
    /// Classes of the task (2 for a binary task).
    pub fn classes(&self) -> usize {
        self.spec.task.classes(&self.class_names)
    }

    /// Outputs of a model of this task: 1 for a binary task (labels ±1), else one per class.
    pub fn outputs(&self) -> usize {
        match self.classes() {
            2 => 1,
            c => c,
        }
    }
}

/// The data folder: `--data-dir`, else `$REVEAL_DATA`.
pub fn data_dir(flag: Option<&Path>) -> Option<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("REVEAL_DATA").map(PathBuf::from))
}

/// `dir/sub` when it exists, else `dir` itself (so a dataset's own folder may be passed).
fn sub_or_self(dir: &Path, sub: &str) -> PathBuf {
    let p = dir.join(sub);
    if p.is_dir() {
        p
    } else {
        dir.to_path_buf()
    }
}

/// A data set whose folder was not given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0} needs its files: give the data folder, or set REVEAL_DATA (see data/README.md)")]
pub struct NoDataDir(pub String);

fn need_dir(dir: Option<&Path>, what: &str) -> Result<PathBuf> {
    match dir {
        Some(d) => Ok(d.to_path_buf()),
        None => Err(NoDataDir(what.to_string()).into()),
    }
}

/// Loads the raw train and test images of a source.
pub fn load_source(
    source: &Source,
    dir: Option<&Path>,
    min_train: usize,
) -> Result<(Images, Option<Images>)> {
    Ok(match source {
        Source::Mnist => {
            let d = sub_or_self(&need_dir(dir, "mnist")?, "mnist");
            (
                formats::load_mnist(&d, "train")?,
                Some(formats::load_mnist(&d, "t10k")?),
            )
        }
        Source::Cifar10 => {
            let d = sub_or_self(&need_dir(dir, "cifar10")?, "cifar10");
            let names = formats::cifar_class_names(&d)?;
            let train: Vec<PathBuf> = (1..=5)
                .map(|i| d.join(format!("data_batch_{i}.bin")))
                .filter(|p| p.is_file())
                .collect();
            if train.is_empty() {
                bail!("{}: no data_batch_*.bin files", d.display());
            }
            let test = formats::load_cifar(&[d.join("test_batch.bin")], names.clone())?;
            (formats::load_cifar(&train, names)?, Some(test))
        }
        Source::Folder {
            root,
            test_root,
            size,
        } => {
            let test = test_root
                .as_deref()
                .map(|t| formats::load_folder(t, *size))
                .transpose()?;
            (formats::load_folder(root, *size)?, test)
        }
        Source::Synthetic { size } => (
            synthetic::generate((2 * min_train).max(2000), *size, 1),
            Some(synthetic::generate(1000, *size, 2)),
        ),
    })
}

/// Indices of the training images: per class `per_class` of them, first or seeded-random.
/// `class[i]` is image i's class in the task (of `classes`), or `None` outside it.
fn select_train(
    class: &[Option<u8>],
    classes: usize,
    per_class: usize,
    selection: Selection,
) -> Result<Vec<usize>> {
    let mut chosen = Vec::with_capacity(classes * per_class);
    for c in 0..classes as u8 {
        let mut members: Vec<usize> = (0..class.len()).filter(|&i| class[i] == Some(c)).collect();
        if members.len() < per_class {
            bail!(
                "class {c} of the task has {} images, {per_class} were asked for",
                members.len()
            );
        }
        if let Selection::Random { seed } = selection {
            members.shuffle(&mut ChaCha8Rng::seed_from_u64(seed.wrapping_add(c as u64)));
        }
        chosen.extend_from_slice(&members[..per_class]);
    }
    chosen.sort_unstable();
    Ok(chosen)
}

/// Indices of the test images in file order, skipping `exclude` (sorted).
fn select_test(
    class: &[Option<u8>],
    classes: usize,
    test: TestSelection,
    exclude: &[usize],
) -> Vec<usize> {
    let mut taken = vec![0usize; classes];
    let cap = match test {
        TestSelection::PerClass(k) | TestSelection::HeldOut(k) => k,
        TestSelection::All => usize::MAX,
    };
    (0..class.len())
        .filter(|i| exclude.binary_search(i).is_err())
        .filter(|&i| match class[i] {
            Some(c) if taken[c as usize] < cap => {
                taken[c as usize] += 1;
                true
            }
            _ => false,
        })
        .collect()
}

/// Pixels in [0, 1] of the chosen images, as rows.
fn to_rows(images: &Images, index: &[usize]) -> Array2<f32> {
    let d = images.dim();
    Array2::from_shape_fn((index.len(), d), |(r, c)| {
        images.image(index[r])[c] as f32 / 255.0
    })
}

/// The label a model trains on for task class `c`: ±1 in a binary task, the index otherwise.
fn label_value(c: u8, classes: usize) -> f32 {
    match classes {
        2 if c == 0 => -1.0,
        2 => 1.0,
        _ => c as f32,
    }
}

fn split_of(images: &Images, index: Vec<usize>, class: &[Option<u8>], classes: usize) -> Split {
    let pixels = to_rows(images, &index);
    let y = index
        .iter()
        .map(|&i| label_value(class[i].expect("selected images are in the task"), classes))
        .collect();
    let label = index.iter().map(|&i| images.labels[i]).collect();
    Split {
        x: pixels.clone(),
        pixels,
        y,
        index,
        label,
    }
}

/// Loads, selects, biases and centres a data set as `spec` says.
pub fn prepare(spec: &DataSpec, dir: Option<&Path>) -> Result<Prepared> {
    if spec.per_class == 0 {
        bail!("per-class count must be at least 1");
    }
    let (train_images, test_images) = load_source(&spec.source, dir, spec.per_class)?;
    train_images.validate(spec.source.name())?;
    spec.bias.check_fits(train_images.shape)?;
    let names = train_images.class_names.clone();
    spec.task.check(&names, spec.source.name())?;
    let classes = spec.task.classes(&names);
    let class_of = |imgs: &Images| -> Vec<Option<u8>> {
        imgs.labels
            .iter()
            .map(|&l| spec.task.class_of(l, &imgs.class_names))
            .collect()
    };
    let train_class = class_of(&train_images);
    let train_index = select_train(&train_class, classes, spec.per_class, spec.selection)?;
    let mut train = split_of(&train_images, train_index, &train_class, classes);
    let class: Vec<u8> = train
        .index
        .iter()
        .map(|&i| train_class[i].expect("selected images are in the task"))
        .collect();
    let triggers = bias::apply(
        spec.bias,
        &mut train.pixels,
        &class,
        classes,
        train_images.shape,
        spec.seed,
    )?;
    if let Some(t) = &spec.trigger {
        t.apply(&mut train.pixels, &class, train_images.shape)?;
    }

    // Images of the training file the training set did not take, the first k of each class.
    let held_out = |k| {
        let index = select_test(
            &train_class,
            classes,
            TestSelection::HeldOut(k),
            &train.index,
        );
        split_of(&train_images, index, &train_class, classes)
    };
    // The reference: as many per class as the test selection (500 for the whole test split).
    let reference = held_out(match spec.test {
        TestSelection::PerClass(k) | TestSelection::HeldOut(k) => k,
        TestSelection::All => 500,
    });
    let test = match (&test_images, spec.test) {
        (_, TestSelection::HeldOut(_)) => reference.clone(),
        (Some(t), _) => {
            if t.shape != train_images.shape || t.class_names != names {
                bail!("the test images ({:?}, {} classes) do not match the training images ({:?}, {} classes)", t.shape, t.class_names.len(), train_images.shape, names.len());
            }
            let c = class_of(t);
            split_of(t, select_test(&c, classes, spec.test, &[]), &c, classes)
        }
        // No test split (a folder without one): the training images the training set left.
        (None, TestSelection::PerClass(k)) => held_out(k),
        (None, TestSelection::All) => held_out(usize::MAX),
    };
    // Too few left in the training file (fewer than 2 of a class): the test split instead.
    let reference = match reference.class_counts(classes).iter().all(|&c| c >= 2) {
        true => reference,
        false => test.clone(),
    };

    let mean = train
        .pixels
        .mean_axis(Axis(0))
        .expect("at least one training image");
    let (mut test, mut reference) = (test, reference);
    train.x = &train.pixels - &mean;
    test.x = &test.pixels - &mean;
    reference.x = &reference.pixels - &mean;
    Ok(Prepared {
        spec: spec.clone(),
        shape: train_images.shape,
        train,
        test,
        reference,
        mean,
        triggers,
        class_names: names,
    })
}
