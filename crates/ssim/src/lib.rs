//! SSIM and NCC distance.
