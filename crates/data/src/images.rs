//! A set of 8-bit images with their class labels, as every loader returns it.

use anyhow::{bail, Result};

/// Images stored as bytes, each C×H×W channel-major, one after another, with a class per image.
#[derive(Clone, Debug, PartialEq)]
pub struct Images {
    /// (channels, height, width).
    pub shape: (usize, usize, usize),
    /// n·C·H·W bytes.
    pub pixels: Vec<u8>,
    /// The class index of each image (into `class_names`).
    pub labels: Vec<u8>,
    /// Class names, by index.
    pub class_names: Vec<String>,
}

impl Images {
    /// Pixels per image, d = C·H·W.
    pub fn dim(&self) -> usize {
        self.shape.0 * self.shape.1 * self.shape.2
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The bytes of image i.
    pub fn image(&self, i: usize) -> &[u8] {
        let d = self.dim();
        &self.pixels[i * d..(i + 1) * d]
    }

    /// How many images of each class.
    pub fn histogram(&self) -> Vec<usize> {
        let mut h = vec![0; self.class_names.len()];
        for &l in &self.labels {
            h[l as usize] += 1;
        }
        h
    }

    /// Checks that pixels, labels and class names agree.
    pub fn validate(&self, what: &str) -> Result<()> {
        if self.pixels.len() != self.len() * self.dim() {
            bail!(
                "{what}: {} bytes of pixels for {} images of {:?}",
                self.pixels.len(),
                self.len(),
                self.shape
            );
        }
        if let Some(&l) = self
            .labels
            .iter()
            .find(|&&l| l as usize >= self.class_names.len())
        {
            bail!(
                "{what}: label {l} but only {} classes",
                self.class_names.len()
            );
        }
        Ok(())
    }
}
