//! The loaders against the real MNIST and CIFAR-10 files, with the known values of
//! the data sets' own README (checksums and known values, see `data/README.md`).

mod common;

use reveal_data::formats::{load_cifar, load_mnist, CIFAR10_CLASSES};
use reveal_data::{prepare, DataSpec, Source, TestSelection};

/// Indices of `take` even and `take` odd images after the first `skip` of each, in file order.
fn of_each_parity(labels: &[u8], skip: usize, take: usize) -> Vec<usize> {
    let mut out: Vec<usize> = (0..2u8)
        .flat_map(|parity| {
            (0..labels.len())
                .filter(move |&i| labels[i] % 2 == parity)
                .skip(skip)
                .take(take)
        })
        .collect();
    out.sort();
    out
}

fn names() -> Vec<String> {
    CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()
}

#[test]
fn mnist_counts_labels_and_mean() {
    let Some(root) = common::data_root() else {
        return;
    };
    let train = load_mnist(&root.join("mnist"), "train").unwrap();
    let test = load_mnist(&root.join("mnist"), "t10k").unwrap();
    assert_eq!(train.shape, (1, 28, 28));
    assert_eq!(
        train.histogram(),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        test.histogram(),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    assert_eq!(train.labels[..10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
    assert_eq!(test.labels[..10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);
    let mean = |p: &[u8]| p.iter().map(|&v| v as f64).sum::<f64>() / p.len() as f64;
    assert!((mean(&train.pixels) - 33.318).abs() < 5e-4);
    assert!((mean(&test.pixels) - 33.791).abs() < 5e-4);
}

#[test]
fn cifar_counts_labels_and_known_pixels() {
    let Some(root) = common::data_root() else {
        return;
    };
    let c = root.join("cifar10");
    let test = load_cifar(&[c.join("test_batch.bin")], names()).unwrap();
    let train = load_cifar(&[c.join("data_batch_1.bin")], names()).unwrap();
    assert_eq!(test.histogram(), [1000; 10]);
    assert_eq!(
        train.histogram(),
        [1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981]
    );
    assert_eq!(test.labels[..10], [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]);
    assert_eq!(train.labels[..10], [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]);
    // The JPEG-derived cat, red row 0.
    assert_eq!(
        test.image(0)[..9],
        [167, 166, 168, 177, 162, 160, 176, 158, 167]
    );

    let exact_test = load_cifar(&[c.join("exact/test_batch_first1000.bin")], names()).unwrap();
    let exact_train = load_cifar(&[c.join("exact/data_batch_1_first4000.bin")], names()).unwrap();
    assert_eq!(
        exact_test.histogram(),
        [103, 89, 100, 103, 90, 86, 112, 102, 106, 109]
    );
    assert_eq!(
        exact_train.histogram(),
        [396, 366, 420, 384, 422, 393, 414, 385, 407, 413]
    );
    let cat = exact_test.image(0);
    assert_eq!(cat[..9], [158, 159, 165, 166, 160, 156, 162, 159, 158]);
    assert_eq!(cat[3072 - 3..], [124, 129, 110]); // the blue plane ends
    assert_eq!(exact_test.image(1)[..5], [235, 231, 232, 232, 232]);
    assert_eq!(
        exact_test.image(2)[..9],
        [158, 158, 139, 132, 166, 182, 187, 193, 199]
    );
    assert_eq!(
        exact_test.image(3)[..9],
        [155, 167, 176, 190, 177, 166, 168, 166, 170]
    );
    let frog = exact_train.image(0);
    let row0 = [
        59, 43, 50, 68, 98, 119, 139, 145, 149, 149, 131, 125, 142, 144, 137, 129, 137, 134, 124,
        139, 139, 133, 136, 139, 152, 163, 168, 159, 158, 158, 152, 148,
    ];
    assert_eq!(frog[..32], row0);
    assert_eq!(frog[32..40], [16, 0, 18, 51, 88, 120, 128, 127]);
    assert_eq!(exact_test.labels[..], test.labels[..1000]);
}

#[test]
fn mnist_binary_selection_takes_the_first_of_each_class() {
    let Some(root) = common::data_root() else {
        return;
    };
    let p = prepare(&DataSpec::new(Source::Mnist, 250), Some(&root)).unwrap();
    let labels = load_mnist(&root.join("mnist"), "train").unwrap().labels;
    assert_eq!(p.train.index, of_each_parity(&labels, 0, 250));
    assert_eq!(p.train.class_counts(2), [250, 250]);
    for (k, &i) in p.train.index.iter().enumerate() {
        assert_eq!(
            p.train.y[k],
            if labels[i].is_multiple_of(2) {
                -1.0
            } else {
                1.0
            }
        );
    }
    assert_eq!(p.test.class_counts(2), [500, 500]);
    // The training mean is subtracted from both splits.
    let col_mean = p.train.x.mean_axis(ndarray::Axis(0)).unwrap();
    assert!(col_mean.iter().all(|v| v.abs() < 1e-5));
    let diff = &p.test.pixels - &p.test.x;
    assert!(diff
        .rows()
        .into_iter()
        .all(|r| (&r - &p.mean).iter().all(|v| v.abs() < 1e-6)));
}

#[test]
fn cifar_vehicles_animals_and_whole_test_split() {
    let Some(root) = common::data_root() else {
        return;
    };
    let mut spec = DataSpec::new(Source::Cifar10, 50);
    spec.test = TestSelection::All;
    let p = prepare(&spec, Some(&root)).unwrap();
    assert_eq!(p.shape, (3, 32, 32));
    assert_eq!(p.train.class_counts(2), [50, 50]);
    assert_eq!(p.test.class_counts(2), [4000, 6000]);
    for (k, &l) in p.train.label.iter().enumerate() {
        assert_eq!(p.train.y[k] < 0.0, [0, 1, 8, 9].contains(&l));
    }
}

/// `--task`: named tasks and class lists (names or indices) pick any binary split.
#[test]
fn tasks_pick_any_binary_split_of_the_classes() {
    let Some(root) = common::data_root() else {
        return;
    };
    let task = |s: &str| s.parse::<reveal_data::Task>().unwrap();
    let with = |source: Source, t: &str| {
        let mut spec = DataSpec::new(source, 20);
        spec.task = task(t);
        prepare(&spec, Some(&root))
    };
    // MNIST 3,5,8 against 0,6: only those digits, 20 of each binary class, in file order.
    let p = with(Source::Mnist, "3,5,8/0,6").unwrap();
    for (l, y) in p.train.label.iter().zip(&p.train.y) {
        assert!([3, 5, 8, 0, 6].contains(l), "digit {l}");
        assert_eq!(*y < 0.0, [3, 5, 8].contains(l), "digit {l} has y {y}");
    }
    assert_eq!(p.train.class_counts(2), [20, 20]);
    // CIFAR-10 cat-dog by name, and the same by index (cat 3, dog 5).
    let by_name = with(Source::Cifar10, "cat-dog").unwrap();
    let by_index = with(Source::Cifar10, "3/5").unwrap();
    assert_eq!(by_name.train.index, by_index.train.index);
    assert!(by_name.train.label.iter().all(|&l| l == 3 || l == 5));
    assert_eq!(by_name.spec.task, task("cat-dog"));
    // Unknown classes and a class on both sides are refused with the classes listed.
    let e = with(Source::Cifar10, "cat/zebra").unwrap_err().to_string();
    assert!(e.contains("zebra") && e.contains("airplane"), "{e}");
    let e = with(Source::Mnist, "1,2/2").unwrap_err().to_string();
    assert!(e.contains("both"), "{e}");
    assert!("odd".parse::<reveal_data::Task>().is_err());
}

/// `--task all`: every class its own, labels the class index, per-class counts for train and
/// test; the corner trigger paints each class's own grey; diagonal triggers are refused.
#[test]
fn task_all_keeps_every_class_with_its_index() {
    let Some(root) = common::data_root() else {
        return;
    };
    for source in [Source::Mnist, Source::Cifar10] {
        let mut spec = DataSpec::new(source.clone(), 7);
        spec.task = "all".parse().unwrap();
        spec.test = TestSelection::PerClass(30);
        let p = prepare(&spec, Some(&root)).unwrap();
        assert_eq!((p.classes(), p.outputs()), (10, 10));
        for (l, y) in p.train.label.iter().zip(&p.train.y) {
            assert_eq!(*l as f32, *y, "the label is the class index");
        }
        assert_eq!(p.train.class_counts(10), vec![7; 10]);
        assert_eq!(p.test.class_counts(10), vec![30; 10]);
        spec.bias = reveal_data::Bias::Corner;
        let p = prepare(&spec, Some(&root)).unwrap();
        for (img, y) in p.train.pixels.rows().into_iter().zip(&p.train.y) {
            assert_eq!(img[0], y / 9.0, "class {y}: corner grey");
        }
        spec.bias = reveal_data::Bias::Diag3;
        let e = prepare(&spec, Some(&root)).unwrap_err().to_string();
        assert!(e.contains("binary"), "{e}");
    }
}

/// The reference (always) and a `HeldOut` test split are the training file's images after the
/// training set; a `PerClass` test split stays the test file's.
#[test]
fn held_out_images_come_from_the_training_file_after_the_training_set() {
    let Some(root) = common::data_root() else {
        return;
    };
    let train_file = load_mnist(&root.join("mnist"), "train").unwrap();
    let test_labels = load_mnist(&root.join("mnist"), "t10k").unwrap().labels;
    for (test, k) in [
        (TestSelection::HeldOut(30), 30),
        (TestSelection::PerClass(40), 40),
    ] {
        let mut spec = DataSpec::new(Source::Mnist, 50);
        spec.test = test;
        let p = prepare(&spec, Some(&root)).unwrap();
        // The first k of each parity that the first 50 of each parity leave.
        let held_out = of_each_parity(&train_file.labels, 50, k);
        assert_eq!(p.reference.index, held_out, "{test:?}");
        let test_index = match test {
            TestSelection::HeldOut(_) => held_out,
            _ => of_each_parity(&test_labels, 0, k),
        };
        assert_eq!(p.test.index, test_index, "{test:?}");
        // The reference's pixels are the training file's, centred by the training mean.
        let first = p.reference.index[0];
        let row: Vec<f32> = train_file.pixels[first * 784..(first + 1) * 784]
            .iter()
            .map(|&v| v as f32 / 255.0)
            .collect();
        assert_eq!(p.reference.pixels.row(0).to_vec(), row);
        let centred = &p.reference.pixels.row(0) - &p.reference.x.row(0);
        assert!((&centred - &p.mean).iter().all(|v| v.abs() < 1e-6));
    }
}
