// SPDX-License-Identifier: MPL-2.0
//! `u2netmatte`: cut out a folder of photos with one command.
//!
//! Files are decoded on every core, pushed through the u2netmatte element in
//! batches (`appsrc ! u2netmatte ! appsink`, frames of any size sharing a
//! batch), and encoded on every core again. Each output is written under a
//! temporary name and renamed when complete; no input is ever an output. A
//! file that cannot be read is reported and skipped; the exit code says
//! whether everything succeeded (see `EXIT_CODES`).

mod codec;
mod element;
mod inputs;
mod run;
mod serve;
mod shard;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::shard::ShardArg;

/// What the output files hold (the element's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// RGBA cut-out whose alpha is the soft mask (rembg's cut-out).
    Alpha,
    /// The source where the mask is above --threshold, else --fill-color.
    Composite,
    /// The soft mask, grayscale.
    Mask,
    /// Opaque RGBA: the subject as it is over its background blurred
    /// (--blur-radius).
    Blur,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Provider {
    Auto,
    Cuda,
    Cpu,
    /// The CPU through ONNX Runtime's OpenVINO build.
    Openvino,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    /// Masks equal rembg's.
    Fp32,
    /// Faster on a CPU with AMX or AVX512-BF16 (through OpenVINO); masks
    /// within 0.5 % of fp32's.
    Bf16,
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

const EXIT_CODES: &str = "Exit codes:
  0  every input was written
  1  some inputs could not be read or written (each is named); the others were written
  2  bad arguments, or a fatal error (such as a model that cannot load or run); when
     it came after some files were written, it says how many, and names each input
     left undone";

/// Removes the background of photos with U2Net (U2NetP by default), as
/// `rembg p` or u2net-fast's batch_remove_background do; `u2netmatte serve`
/// serves the same over HTTP, as `rembg s` does.
#[derive(Debug, Parser)]
#[command(
    name = "u2netmatte",
    version,
    about,
    after_help = EXIT_CODES,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub folder: Args,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// An HTTP service: rembg's API (POST /api/remove) and a drag-and-drop
    /// page at /, concurrent requests batched through one model session.
    Serve(serve::ServeArgs),
}

/// The folder tool's arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image files or folders of images (png, jpg, jpeg, webp, bmp).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Folder to write the results to (created if needed); not an input
    /// folder, and no result may take an input's name.
    #[arg(short, long, required = true)]
    output: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub look: LookArgs,
    #[arg(short, long, value_enum, default_value_t = Format::Png)]
    pub format: Format,
    /// Threads decoding and encoding files (default: every core).
    #[arg(short, long)]
    pub jobs: Option<usize>,
    /// No progress bar (there is none anyway when stderr is not a terminal).
    #[arg(short, long)]
    pub quiet: bool,
    /// Take only shard K of N (K from 0), so that N workers split the
    /// inputs with no overlap; a file's shard follows from its name alone,
    /// the same on every machine. `auto/N`: K from $JOB_COMPLETION_INDEX
    /// (a Kubernetes Indexed Job) or $SLURM_ARRAY_TASK_ID (a Slurm array).
    #[arg(long, value_name = "K/N")]
    pub shard: Option<ShardArg>,
    /// Leave out inputs whose result is already in the output folder, so
    /// that a re-run does only what is missing (a result is only ever
    /// there whole: it is written under another name, then renamed).
    #[arg(long)]
    pub skip_existing: bool,
}

impl Args {
    /// The output folder (clap requires it unless a subcommand is given).
    pub fn output(&self) -> &Path {
        self.output.as_deref().unwrap_or(Path::new("."))
    }
}

/// The model and how it runs: one session's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Model: an .onnx path or a name (u2netp, u2net, u2net_human_seg, silueta, ...).
    #[arg(short, long, default_value = "u2netp")]
    pub model: String,
    /// Frames per inference run.
    #[arg(short, long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub batch_size: u32,
    /// Run the model at this square size instead of its own (0), 32..2048:
    /// faster on a CPU, coarser masks; outputs keep their size.
    #[arg(long, default_value_t = 0, value_parser = parse_inference_size)]
    pub inference_size: u32,
    /// The longest (ms, 0..60000) a photo waits for its batch to fill; 0:
    /// no wait, the model takes what is decoded whenever it is free.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=60_000))]
    pub batch_timeout: u32,
    #[arg(long, value_enum, default_value_t = Provider::Auto)]
    pub provider: Provider,
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    pub precision: Precision,
    /// Threads inference computes on (0: every core); to share a machine
    /// with other jobs.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1024))]
    pub threads: u32,
    /// CUDA device.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..))]
    pub device_id: i32,
    /// libonnxruntime to load (default: $ORT_DYLIB_PATH, else the copy
    /// beside the plugin or the project's, else the system's).
    #[arg(long)]
    pub ort_library: Option<PathBuf>,
}

/// What an output looks like: the element's mode and its settings.
#[derive(Debug, Clone, Copy, PartialEq, clap::Args)]
pub struct LookArgs {
    #[arg(long, value_enum, default_value_t = Mode::Alpha)]
    pub mode: Mode,
    /// --mode composite keeps pixels whose mask is above this (0..1).
    #[arg(long, default_value_t = 0.5, value_parser = parse_unit)]
    pub threshold: f64,
    /// --mode composite: width of the soft edge around --threshold (0..1 of
    /// the mask's range); 0: a hard cut.
    #[arg(long, default_value_t = 0.0, value_parser = parse_unit)]
    pub feather: f64,
    /// --mode composite background, as 0xAARRGGBB (or AARRGGBB).
    #[arg(long, default_value = "0x00000000", value_parser = parse_argb)]
    pub fill_color: u32,
    /// --mode blur: how far (pixels) the background is blurred (1..256).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub blur_radius: u32,
}

pub fn parse_argb(s: &str) -> Result<u32, String> {
    let hex = s
        .trim_start_matches("0x")
        .trim_start_matches("0X")
        .trim_start_matches('#');
    u32::from_str_radix(hex, 16).map_err(|e| format!("'{s}' is not a 0xAARRGGBB colour: {e}"))
}

pub fn parse_unit(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        Ok(_) => Err(format!("{s} is not within 0..1")),
        Err(e) => Err(format!("'{s}' is not a number: {e}")),
    }
}

fn parse_inference_size(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(v) if v == 0 || (32..=2048).contains(&v) => Ok(v),
        Ok(_) => Err(format!(
            "{s} is not 0 (the model's own size) nor within 32..2048"
        )),
        Err(e) => Err(format!("'{s}' is not a size: {e}")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Serve(serve)) => serve::main(&serve),
        None => folder_main(&cli.folder),
    }
}

fn folder_main(args: &Args) -> ExitCode {
    if args.format == Format::Jpg && args.look.mode == Mode::Alpha {
        eprintln!(
            "error: jpg has no alpha channel for a cut-out: use --format png or webp, \
             or --mode composite with an opaque --fill-color"
        );
        return ExitCode::from(2);
    }
    match run::run(args) {
        Ok(summary) if summary.total == 0 => {
            eprintln!("nothing to do: no input is left for this run");
            ExitCode::SUCCESS
        }
        Ok(summary) => {
            // Skipped files were named as they failed: not again here.
            let failed = if summary.failed.is_empty() {
                String::new()
            } else {
                format!(", {} failed", summary.failed.len())
            };
            if let Some(e) = &summary.fatal {
                eprintln!("error: {e}");
                eprintln!(
                    "{} of {} files written to {} before the error{failed}; not done:",
                    summary.written,
                    summary.total,
                    args.output().display(),
                );
                for path in &summary.not_done {
                    eprintln!("  {}", path.display());
                }
                return ExitCode::from(2);
            }
            eprintln!(
                "{} of {} files written to {} in {:.1} s ({:.2} files/s){failed}",
                summary.written,
                summary.total,
                args.output().display(),
                summary.seconds,
                summary.written as f64 / summary.seconds.max(1e-9),
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
