// SPDX-License-Identifier: MPL-2.0
//! `u2netmatte`: cut out a folder of photos with one command.
//!
//! Files are decoded on every core, pushed through the u2netmatte element in
//! batches (`appsrc ! u2netmatte ! appsink`, frames of any size sharing a
//! batch), and encoded on every core again. Each output is written under a
//! temporary name and renamed when complete. A file that cannot be read is
//! reported and skipped; the exit code says whether everything succeeded.

mod codec;
mod inputs;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};

/// What the output files hold (the element's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// RGBA cut-out whose alpha is the soft mask (rembg's cut-out).
    Alpha,
    /// The source where the mask is above --threshold, else --fill-color.
    Composite,
    /// The soft mask, grayscale.
    Mask,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Provider {
    Auto,
    Cuda,
    Cpu,
}

/// Output file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Png,
    /// No alpha: --mode alpha is refused; composite drops the fill's alpha.
    Jpg,
    /// Lossless WebP.
    Webp,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Jpg => "jpg",
            Format::Webp => "webp",
        }
    }
}

/// Removes the background of photos with U2Net (U2NetP by default), as
/// `rembg p` or u2net-fast's batch_remove_background do.
#[derive(Debug, Parser)]
#[command(name = "u2netmatte", version, about)]
pub struct Args {
    /// Image files or folders of images (png, jpg, jpeg, webp, bmp).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Folder to write the results to (created if needed).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Model: an .onnx path or a name (u2netp, u2net, u2net_human_seg, silueta, ...).
    #[arg(short, long, default_value = "u2netp")]
    pub model: String,
    /// Frames per inference run.
    #[arg(short, long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub batch_size: u32,
    #[arg(long, value_enum, default_value_t = Mode::Alpha)]
    pub mode: Mode,
    /// --mode composite keeps pixels whose mask is above this (0..1).
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f64,
    /// --mode composite background, as 0xAARRGGBB (or AARRGGBB).
    #[arg(long, default_value = "0x00000000", value_parser = parse_argb)]
    pub fill_color: u32,
    #[arg(long, value_enum, default_value_t = Provider::Auto)]
    pub provider: Provider,
    /// CUDA device.
    #[arg(long, default_value_t = 0)]
    pub device_id: i32,
    #[arg(short, long, value_enum, default_value_t = Format::Png)]
    pub format: Format,
    /// Threads decoding and encoding files (default: every core).
    #[arg(short, long)]
    pub jobs: Option<usize>,
    /// No progress bar (there is none anyway when stderr is not a terminal).
    #[arg(short, long)]
    pub quiet: bool,
}

fn parse_argb(s: &str) -> Result<u32, String> {
    let hex = s
        .trim_start_matches("0x")
        .trim_start_matches("0X")
        .trim_start_matches('#');
    u32::from_str_radix(hex, 16).map_err(|e| format!("'{s}' is not a 0xAARRGGBB colour: {e}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.threshold) {
        eprintln!("error: --threshold {} is not within 0..1", args.threshold);
        return ExitCode::from(2);
    }
    if args.format == Format::Jpg && args.mode == Mode::Alpha {
        eprintln!(
            "error: jpg has no alpha channel for a cut-out: use --format png or webp, \
             or --mode composite with an opaque --fill-color"
        );
        return ExitCode::from(2);
    }
    match run::run(&args) {
        Ok(summary) => {
            for (path, reason) in &summary.failed {
                eprintln!("skipped {}: {reason}", path.display());
            }
            eprintln!(
                "{} of {} files written to {} in {:.1} s ({:.2} files/s){}",
                summary.written,
                summary.total,
                args.output.display(),
                summary.seconds,
                summary.written as f64 / summary.seconds.max(1e-9),
                if summary.failed.is_empty() {
                    String::new()
                } else {
                    format!(", {} failed", summary.failed.len())
                }
            );
            if summary.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
