// SPDX-License-Identifier: MPL-2.0
//! A U2Net-family model in an ONNX Runtime session: loading, provider choice,
//! and batch -> masks. No GStreamer types here.

pub mod graph;
pub mod names;
pub mod providers;
pub mod recentre;
pub mod split_input;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ort::session::{RunOptions, Session};
use ort::value::TensorRef;

use crate::matte::prediction_to_mask;
use crate::prep::{InputLayout, Normalization};
use crate::runtime::Runtime;
use crate::stable_hash::fnv1a64;

/// The input size rembg uses for U2Net models whose size is not fixed.
pub const DEFAULT_INPUT_SIZE: (u32, u32) = (320, 320);

/// Which execution provider to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Provider {
    /// CUDA when it can be used, else the CPU.
    #[default]
    Auto,
    /// CUDA or an error.
    Cuda,
    Cpu,
    /// ONNX Runtime's OpenVINO provider on the CPU, or an error.
    OpenVino,
}

/// The number format the model computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Masks equal rembg's.
    #[default]
    Fp32,
    /// bfloat16 on a CPU with AMX or AVX512-BF16, through OpenVINO; the
    /// model's near-constant large channels re-centred first.
    Bf16,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Fp32 => "fp32",
            Self::Bf16 => "bf16",
        })
    }
}

/// The execution provider a session actually runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderUsed {
    Cpu,
    Cuda { device_id: i32 },
    OpenVino { precision: Precision },
}

impl std::fmt::Display for ProviderUsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => f.write_str("CPU"),
            Self::Cuda { device_id } => write!(f, "CUDA (device {device_id})"),
            Self::OpenVino { precision } => write!(f, "OpenVINO (CPU, {precision})"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelOptions {
    pub provider: Provider,
    pub device_id: i32,
    /// Run at this square size instead of the model's own (None: its own).
    pub input_size: Option<u32>,
    pub cuda: CudaOptions,
    pub precision: Precision,
    /// Threads the model computes on; 0: one a core.
    pub threads: usize,
    /// Where OpenVINO keeps compiled models; None: compile at every start.
    pub cache_dir: Option<PathBuf>,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            provider: Provider::Auto,
            device_id: 0,
            input_size: None,
            cuda: CudaOptions::default(),
            precision: Precision::Fp32,
            threads: 0,
            cache_dir: None,
        }
    }
}

/// The user's cache folder for OpenVINO's compiled models:
/// `$XDG_CACHE_HOME/u2netmatte/openvino`, by default
/// `~/.cache/u2netmatte/openvino`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("u2netmatte/openvino"))
}

/// How the CUDA provider is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CudaOptions {
    /// The most device memory ONNX Runtime's arena may hold, in bytes; 0:
    /// no limit. The arena grows by what is asked for, not to the next
    /// power of two, so that it holds about what the batch needs.
    pub memory_limit: usize,
    pub conv_search: ConvSearch,
}

/// How cuDNN picks each convolution's algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvSearch {
    /// cuDNN's heuristics, at once. ONNX Runtime's own default, the
    /// exhaustive search, benchmarks every algorithm for each new input
    /// shape: each first batch of a new size (every partial batch) stalls.
    #[default]
    Heuristic,
    /// Benchmark every algorithm for each new input shape, then use the
    /// fastest.
    Exhaustive,
    /// cuDNN's default algorithm.
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("model file {path} could not be read: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("model file {path} is {reason}")]
    Graph { path: PathBuf, reason: String },
    #[error("ONNX Runtime could not load model {path}: {reason}")]
    Session { path: PathBuf, reason: String },
    #[error("provider=cuda but CUDA cannot be used: {0}")]
    CudaUnavailable(String),
    #[error("provider=openvino but OpenVINO cannot be used: {0}")]
    OpenVinoUnavailable(String),
    /// A CUDA setting no provider can make right (device-id out of range).
    #[error("{0}")]
    CudaSetting(String),
    #[error("inference failed: {0}")]
    Run(String),
    #[error("inference was interrupted")]
    Interrupted,
    #[error("model output has shape {shape:?}, expected {batch} masks")]
    OutputShape { shape: Vec<i64>, batch: usize },
    #[error("batch input holds {got} values, {batch} frames need {needed}")]
    InputSize {
        got: usize,
        batch: usize,
        needed: usize,
    },
}

/// A loaded model, ready to run batches.
pub struct Model {
    session: Session,
    path: PathBuf,
    input_name: String,
    input_size: (u32, u32),
    normalization: Normalization,
    provider: ProviderUsed,
    /// Set when `provider=auto` fell back to the CPU, with the reason.
    fallback_reason: Option<String>,
    /// Set when the precision asked for is not the one that runs, with why.
    precision_warning: Option<String>,
    /// What bf16's re-centring changed in the graph, when it ran.
    recentring: Option<String>,
    /// How frames are laid out in the input tensor.
    input_layout: InputLayout,
    /// Threads, for a session made again at a fallback.
    threads: usize,
    /// `provider=auto` on CUDA: the most frames a run has held so far. A
    /// run of more frames than any before that fails (the first run, or
    /// the first at a larger batch: a missing kernel library, out of
    /// memory) moves the model to the CPU. None: no fallback.
    trial: Option<usize>,
    /// The size asked for at load, to build the CPU session from the file
    /// again at a fallback.
    requested_size: Option<(u32, u32)>,
    /// What CUDA runs with (device, driver, libraries), for the log.
    cuda_description: Option<String>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.path)
            .field("input_size", &self.input_size)
            .field("provider", &self.provider)
            .finish()
    }
}

impl Model {
    /// Loads `path`, checks that it is U2Net-shaped, makes its batch
    /// dimension symbolic and opens a session on the provider asked for.
    pub fn load(
        runtime: &Runtime,
        path: &Path,
        options: &ModelOptions,
    ) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let requested = options.input_size.map(|s| (s, s));
        let prepared = graph::prepare(&bytes, requested).map_err(|e| ModelError::Graph {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        drop(bytes);
        let own_size = prepared.signature.input_size.unwrap_or(DEFAULT_INPUT_SIZE);
        let input_size = requested.unwrap_or(own_size);

        // bf16 runs only on OpenVINO, on a CPU that has it: only there is
        // the graph re-centred (exact in fp32, so harmless elsewhere).
        let bf16 = options.precision == Precision::Bf16
            && matches!(options.provider, Provider::Auto | Provider::OpenVino)
            && providers::openvino::available()
            && providers::cpu_has_bf16();
        let normalization = normalization_for(path, own_size);
        let mut recentring_warning = None;
        let (graph_bytes, recentring) = if bf16 {
            match recentred(
                runtime,
                &prepared.bytes,
                input_size,
                normalization,
                options.threads,
                options.cache_dir.as_deref(),
            ) {
                Ok((bytes, description, complete)) => {
                    if !complete {
                        recentring_warning = Some(format!(
                            "precision=bf16: not every near-constant channel could be re-centred \
                             ({description}); masks may be further from fp32's"
                        ));
                    }
                    (bytes, Some(description))
                }
                // An accuracy pass that failed is no reason not to run.
                Err(reason) => {
                    recentring_warning = Some(format!(
                        "precision=bf16 without re-centring (masks may be further from fp32's): \
                         {reason}"
                    ));
                    (prepared.bytes, None)
                }
            }
        } else {
            (prepared.bytes, None)
        };
        let (graph_bytes, input_layout, recentring) = if bf16 {
            match split_input::split_input(&graph_bytes) {
                Ok(split) => (split, InputLayout::Bf16Split, recentring),
                Err(reason) => {
                    let warning = format!(
                        "precision=bf16 with the picture rounded to bf16 (masks may be further \
                         from fp32's): {reason}"
                    );
                    recentring_warning = Some(match recentring_warning {
                        Some(earlier) => format!("{earlier}; {warning}"),
                        None => warning,
                    });
                    (graph_bytes, InputLayout::Planar, recentring)
                }
            }
        } else {
            (graph_bytes, InputLayout::Planar, recentring)
        };
        let (opened, fallback_reason) = providers::open(runtime, path, &graph_bytes, options)?;
        drop(graph_bytes);
        let provider = opened.used;
        let precision_warning = providers::effective_precision(
            options.precision,
            matches!(provider, ProviderUsed::OpenVino { .. }),
        )
        .1
        .or(recentring_warning);
        let session = opened.session;
        let cuda_description = opened.description;
        // Only CUDA's first runs can fail where the CPU's would not.
        let trial = (options.provider == Provider::Auto
            && matches!(provider, ProviderUsed::Cuda { .. }))
        .then_some(0);
        Ok(Self {
            session,
            path: path.to_path_buf(),
            input_name: prepared.signature.input_name,
            input_size,
            // The model's own size tells which family it is.
            normalization,
            provider,
            fallback_reason,
            precision_warning,
            recentring,
            input_layout,
            threads: options.threads,
            trial,
            requested_size: requested,
            cuda_description,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Input (height, width).
    pub fn input_size(&self) -> (u32, u32) {
        self.input_size
    }

    /// Values in one frame's input tensor.
    pub fn frame_len(&self) -> usize {
        self.input_layout.planes() * self.input_size.0 as usize * self.input_size.1 as usize
    }

    /// How frames are laid out in the input tensor (see
    /// [`crate::prep::Preparer::with_layout`]).
    pub fn input_layout(&self) -> InputLayout {
        self.input_layout
    }

    pub fn normalization(&self) -> Normalization {
        self.normalization
    }

    pub fn provider(&self) -> ProviderUsed {
        self.provider
    }

    /// Why `provider=auto` runs on the CPU, if it does.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// Why the precision asked for is not the one that runs, if it is not.
    pub fn precision_warning(&self) -> Option<&str> {
        self.precision_warning.as_deref()
    }

    /// The channels bf16's re-centring moved, when it ran.
    pub fn recentring(&self) -> Option<&str> {
        self.recentring.as_deref()
    }

    /// What CUDA runs with (device, driver, where each library came from),
    /// when the model runs on CUDA.
    pub fn cuda_description(&self) -> Option<&str> {
        self.cuda_description.as_deref()
    }

    /// `provider=auto`, after a failed run on CUDA: a CPU session from the
    /// model file, in place of the CUDA one.
    fn fall_back_to_cpu(&mut self, reason: String) -> Result<(), ModelError> {
        let session_error = |reason: String| ModelError::Session {
            path: self.path.clone(),
            reason,
        };
        let bytes = std::fs::read(&self.path).map_err(|e| session_error(e.to_string()))?;
        let prepared = graph::prepare(&bytes, self.requested_size)
            .map_err(|e| session_error(e.to_string()))?;
        // The frames keep coming in the layout the model was loaded with.
        let graph_bytes = match self.input_layout {
            InputLayout::Planar => prepared.bytes,
            InputLayout::Bf16Split => {
                split_input::split_input(&prepared.bytes).map_err(session_error)?
            }
        };
        let runtime = crate::runtime::loaded()
            .ok_or_else(|| session_error("ONNX Runtime is not loaded".into()))?;
        self.session = providers::cpu::session(&runtime, &graph_bytes, self.threads)
            .map_err(|e| session_error(e.to_string()))?;
        self.input_name = prepared.signature.input_name;
        self.provider = ProviderUsed::Cpu;
        self.fallback_reason = Some(reason);
        self.trial = None;
        self.cuda_description = None;
        Ok(())
    }

    /// The most frames one run should hold on this provider. On the CPU,
    /// batching gains nothing (U2NetP, 2 cores: 115 ms a frame at batch 1
    /// and at batch 4, 134 ms at batch 16) while ONNX Runtime's memory grows
    /// with the batch (peak RSS 310 MiB at 1, 1.09 GiB at 4, 3.9 GiB at 16):
    /// frame by frame. On a GPU a batch is one launch sequence for all.
    pub fn preferred_piece(&self, batch: usize) -> usize {
        match self.provider {
            ProviderUsed::Cpu | ProviderUsed::OpenVino { .. } => 1,
            ProviderUsed::Cuda { .. } => batch.max(1),
        }
    }

    /// Runs `batch` prepared frames (`batch x frame_len()` values) and writes
    /// each frame's u8 mask, min-max normalised on its own, to `masks`.
    /// Returns the masks' (height, width).
    pub fn run(
        &mut self,
        input: &[f32],
        batch: usize,
        masks: &mut Vec<u8>,
    ) -> Result<(u32, u32), ModelError> {
        let control = RunControl::for_onnx_runtime()?;
        self.run_controlled(input, batch, masks, &control)
    }

    /// As [`Model::run`], stoppable from another thread through `control`.
    /// With `provider=auto` on CUDA, a failed run of more frames than any
    /// before moves the model to the CPU, which then runs these frames.
    pub fn run_controlled(
        &mut self,
        input: &[f32],
        batch: usize,
        masks: &mut Vec<u8>,
        control: &RunControl,
    ) -> Result<(u32, u32), ModelError> {
        match self.run_session(input, batch, masks, control) {
            Ok(size) => {
                if let Some(largest) = self.trial.as_mut() {
                    *largest = (*largest).max(batch);
                }
                Ok(size)
            }
            Err(e) if falls_back(self.trial, batch, &e, control.is_stopped()) => {
                // falls_back() takes only ModelError::Run: its text alone.
                let cuda = match &e {
                    ModelError::Run(text) => text.clone(),
                    other => other.to_string(),
                };
                let reason = format!(
                    "the first run of {batch} frame(s) on {} failed: {cuda}",
                    self.provider
                );
                self.fall_back_to_cpu(reason)
                    .map_err(|cpu| ModelError::Run(format!("{cuda}; and on the CPU: {cpu}")))?;
                self.run_frame_by_frame(input, batch, masks, control)
            }
            Err(e) => Err(e),
        }
    }

    /// The CPU's way with a batch (see [`Model::preferred_piece`]).
    fn run_frame_by_frame(
        &mut self,
        input: &[f32],
        batch: usize,
        masks: &mut Vec<u8>,
        control: &RunControl,
    ) -> Result<(u32, u32), ModelError> {
        let len = self.frame_len();
        let mut one = Vec::new();
        let mut all = Vec::new();
        let mut size = (0, 0);
        for frame in input.chunks(len).take(batch) {
            size = self.run_session(frame, 1, &mut one, control)?;
            all.extend_from_slice(&one);
        }
        *masks = all;
        Ok(size)
    }

    fn run_session(
        &mut self,
        input: &[f32],
        batch: usize,
        masks: &mut Vec<u8>,
        control: &RunControl,
    ) -> Result<(u32, u32), ModelError> {
        if control.is_stopped() {
            return Err(ModelError::Interrupted);
        }
        let Some(run_options) = control.0.run_options.as_ref() else {
            return Err(ModelError::Run(
                "this run control has no ONNX Runtime run options".into(),
            ));
        };
        let needed = batch * self.frame_len();
        if batch == 0 || input.len() < needed {
            return Err(ModelError::InputSize {
                got: input.len(),
                batch,
                needed,
            });
        }
        let (h, w) = self.input_size;
        let shape = [
            batch as i64,
            self.input_layout.planes() as i64,
            i64::from(h),
            i64::from(w),
        ];
        let tensor = TensorRef::from_array_view((shape, &input[..needed]))
            .map_err(|e| ModelError::Run(e.to_string()))?;
        let outputs = self
            .session
            .run_with_options(
                ort::inputs![self.input_name.as_str() => tensor],
                run_options,
            )
            .map_err(|e| {
                if control.is_stopped() {
                    ModelError::Interrupted
                } else {
                    ModelError::Run(e.to_string())
                }
            })?;
        let (out_shape, data) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| ModelError::Run(e.to_string()))?;
        let dims: Vec<i64> = out_shape.iter().copied().collect();
        let shape_error = || ModelError::OutputShape {
            shape: dims.clone(),
            batch,
        };
        let (mh, mw) = match dims.as_slice() {
            [n, 1, mh, mw] | [n, mh, mw] if *n == batch as i64 => (*mh, *mw),
            _ => return Err(shape_error()),
        };
        let (mh, mw) = (
            u32::try_from(mh).map_err(|_| shape_error())?,
            u32::try_from(mw).map_err(|_| shape_error())?,
        );
        let plane = mh as usize * mw as usize;
        if plane == 0 || data.len() != batch * plane {
            return Err(shape_error());
        }
        masks.resize(batch * plane, 0);
        for (prediction, mask) in data.chunks_exact(plane).zip(masks.chunks_exact_mut(plane)) {
            prediction_to_mask(prediction, mask);
        }
        Ok((mh, mw))
    }
}

struct RunControlState {
    /// ONNX Runtime's handle on one run; None for runners that are not
    /// ONNX Runtime (tests).
    run_options: Option<RunOptions>,
    stopped: AtomicBool,
}

/// Stops one model run from another thread. Each run gets a fresh one, so
/// nothing needs re-arming: a stop reaches exactly the run it was meant for,
/// and a run that was stopped is known to have been (never a real error).
#[derive(Clone)]
pub struct RunControl(Arc<RunControlState>);

impl RunControl {
    /// A control backed by ONNX Runtime's run options.
    pub fn for_onnx_runtime() -> Result<Self, ModelError> {
        let run_options = RunOptions::new().map_err(|e| ModelError::Run(e.to_string()))?;
        Ok(Self(Arc::new(RunControlState {
            run_options: Some(run_options),
            stopped: AtomicBool::new(false),
        })))
    }

    /// A control that only records the stop (for runners without ONNX
    /// Runtime).
    pub fn flag_only() -> Self {
        Self(Arc::new(RunControlState {
            run_options: None,
            stopped: AtomicBool::new(false),
        }))
    }

    /// Makes the run stop with [`ModelError::Interrupted`] as soon as ONNX
    /// Runtime checks (between nodes).
    pub fn stop(&self) {
        self.0.stopped.store(true, Ordering::SeqCst);
        if let Some(options) = &self.0.run_options {
            let _ = options.terminate();
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.0.stopped.load(Ordering::SeqCst)
    }
}

/// Whether a failed run moves a `provider=auto` model from CUDA to the CPU:
/// only a run of more frames than any before that really failed (not
/// stopped, not bad input).
fn falls_back(trial: Option<usize>, batch: usize, error: &ModelError, stopped: bool) -> bool {
    trial.is_some_and(|largest| batch > largest) && !stopped && matches!(error, ModelError::Run(_))
}

/// What runs batches for the engine: the model, or a stand-in in tests.
pub trait Runner: Send + 'static {
    /// Values in one frame's input tensor.
    fn frame_len(&self) -> usize;
    /// Where it runs now: `provider=auto` may move to the CPU after a
    /// failed run on CUDA.
    fn provider(&self) -> ProviderUsed;
    /// Why it runs on the CPU although CUDA was asked for, if it does.
    fn fallback_reason(&self) -> Option<String>;
    /// The most frames one run should hold (see [`Model::preferred_piece`]).
    fn preferred_piece(&self, batch: usize) -> usize;
    /// A control for the next run.
    fn control(&self) -> Result<RunControl, ModelError>;
    /// Runs `batch` frames; writes their masks to `masks`; returns the
    /// masks' (height, width).
    fn run(
        &mut self,
        input: &[f32],
        batch: usize,
        masks: &mut Vec<u8>,
        control: &RunControl,
    ) -> Result<(u32, u32), ModelError>;
}

impl Runner for Model {
    fn frame_len(&self) -> usize {
        Model::frame_len(self)
    }

    fn provider(&self) -> ProviderUsed {
        self.provider
    }

    fn fallback_reason(&self) -> Option<String> {
        self.fallback_reason.clone()
    }

    fn preferred_piece(&self, batch: usize) -> usize {
        Model::preferred_piece(self, batch)
    }

    fn control(&self) -> Result<RunControl, ModelError> {
        RunControl::for_onnx_runtime()
    }

    fn run(
        &mut self,
        input: &[f32],
        batch: usize,
        masks: &mut Vec<u8>,
        control: &RunControl,
    ) -> Result<(u32, u32), ModelError> {
        self.run_controlled(input, batch, masks, control)
    }
}

/// What the bf16 re-centring cache holds, and its first line: a file of
/// another format (or another version of the rule) is no choice.
const SHIFTS_HEADER: &str = "u2netmatte-recentre v1";

/// `bytes` re-centred for bf16 ([`recentre`]), what was done, and whether
/// every channel chosen could be re-centred. The channels chosen are kept
/// in `cache_dir` under a hash of the graph, the size, the normalisation and
/// the rule: the calibration (seconds on two cores) runs once per model and
/// size; later loads re-apply its choice at once.
fn recentred(
    runtime: &Runtime,
    bytes: &[u8],
    size: (u32, u32),
    normalization: Normalization,
    threads: usize,
    cache_dir: Option<&Path>,
) -> Result<(Vec<u8>, String, bool), String> {
    let key = fnv1a64(&[
        bytes,
        format!(
            "{SHIFTS_HEADER} {size:?} {normalization:?} {} {}",
            recentre::MIN_MEAN,
            recentre::MAX_LEVELS
        )
        .as_bytes(),
    ]);
    let cached = cache_dir.map(|d| d.join(format!("recentre-{key:016x}.txt")));
    let all_done = |applied: &[recentre::Applied]| {
        applied
            .iter()
            .all(|a| matches!(a.outcome, recentre::Outcome::Recentred { .. }))
    };
    if let Some(shifts) = cached.as_deref().and_then(read_shifts) {
        // A cached choice that no longer applies cleanly is recalibrated.
        if let Ok((patched, applied)) = recentre::recentre(bytes, &shifts)
            && all_done(&applied)
        {
            return Ok((
                patched,
                recentre::describe(&applied) + " (choice cached)",
                true,
            ));
        }
    }
    let done = recentre::calibrate_and_recentre(runtime, bytes, size, normalization, threads)
        .map_err(|e| e.to_string())?;
    if let Some(file) = cached {
        let shifts: Vec<recentre::Shift> = done.applied.iter().map(|a| a.shift.clone()).collect();
        // A cache that cannot be written only costs the next start a
        // calibration.
        let _ = write_shifts(&file, &shifts);
    }
    let complete = all_done(&done.applied);
    Ok((done.bytes, done.description, complete))
}

/// The header, the number of shifts, then one line a shift: producer Conv,
/// output channel, value (f32 bits, so that the cached choice is the
/// calibrated one exactly). None unless the file is whole.
fn read_shifts(file: &Path) -> Option<Vec<recentre::Shift>> {
    let text = std::fs::read_to_string(file).ok()?;
    let mut lines = text.lines();
    let count: usize = lines
        .next()?
        .strip_prefix(SHIFTS_HEADER)?
        .trim()
        .parse()
        .ok()?;
    let shifts: Vec<recentre::Shift> = lines
        .map(|line| {
            let mut fields = line.split(' ');
            let conv = fields.next()?.to_string();
            let channel = fields.next()?.parse().ok()?;
            let by = f32::from_bits(u32::from_str_radix(fields.next()?, 16).ok()?);
            fields
                .next()
                .is_none()
                .then_some(recentre::Shift { conv, channel, by })
        })
        .collect::<Option<_>>()?;
    (shifts.len() == count).then_some(shifts)
}

fn write_shifts(file: &Path, shifts: &[recentre::Shift]) -> std::io::Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let mut text = format!("{SHIFTS_HEADER} {}\n", shifts.len());
    for s in shifts {
        text += &format!("{} {} {:08x}\n", s.conv, s.channel, s.by.to_bits());
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Written whole under a name no other writer uses, then renamed: a
    // reader sees the old file or the new one, never half of one.
    let partial = file.with_extension(format!(
        "{}-{}.part",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&partial, file));
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// The input size of rembg's ISNet models, which no U2Net uses.
const ISNET_INPUT_SIZE: (u32, u32) = (1024, 1024);

/// rembg runs its ISNet models (isnet-general-use, isnet-anime) with other
/// statistics than U2Net's; they are known by name or by their input size.
fn normalization_for(path: &Path, input_size: (u32, u32)) -> Normalization {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if stem.to_ascii_lowercase().starts_with("isnet") || input_size == ISNET_INPUT_SIZE {
        Normalization::ISNET
    } else {
        Normalization::IMAGENET
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_real_failure_of_a_larger_run_on_cuda_falls_back() {
        let failed = ModelError::Run("CUDA error: out of memory".into());
        // provider=auto on CUDA, nothing run yet: the first run.
        assert!(falls_back(Some(0), 1, &failed, false));
        // The first run at a larger batch than any before.
        assert!(falls_back(Some(1), 8, &failed, false));
        // A size that ran before: CUDA works, the error is the stream's.
        assert!(!falls_back(Some(8), 8, &failed, false));
        assert!(!falls_back(Some(8), 4, &failed, false));
        // Not auto on CUDA (cuda, cpu, or auto already on the CPU).
        assert!(!falls_back(None, 1, &failed, false));
        // A stopped run (flush) or bad input is not CUDA's failure.
        assert!(!falls_back(Some(0), 1, &failed, true));
        assert!(!falls_back(Some(0), 1, &ModelError::Interrupted, false));
        let input = ModelError::InputSize {
            got: 1,
            batch: 1,
            needed: 2,
        };
        assert!(!falls_back(Some(0), 1, &input, false));
    }

    /// The real U2NetP on the CPU, made to look like `provider=auto` on
    /// CUDA whose first run fails (ONNX Runtime refuses the input's name):
    /// the run moves to a fresh CPU session from the file, and gives each
    /// frame the mask a plain CPU run gives.
    #[test]
    fn a_failed_first_run_on_cuda_gives_every_frame_its_mask_from_the_cpu() {
        let runtime = crate::runtime::load(None, None, ort::logging::LogLevel::Warning)
            .expect("ONNX Runtime loads (make setup)")
            .runtime;
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/u2netp.onnx");
        let cpu = ModelOptions {
            provider: Provider::Cpu,
            ..ModelOptions::default()
        };
        let mut plain = Model::load(&runtime, &path, &cpu).expect("U2NetP loads");
        let frames = 2;
        let input: Vec<f32> = (0..frames * plain.frame_len())
            .map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.5)
            .collect();
        let mut expected = Vec::new();
        let mut one = Vec::new();
        for frame in input.chunks(plain.frame_len()) {
            plain.run(frame, 1, &mut one).unwrap();
            expected.extend_from_slice(&one);
        }

        let mut moving = Model::load(&runtime, &path, &cpu).expect("U2NetP loads");
        moving.provider = ProviderUsed::Cuda { device_id: 0 };
        moving.trial = Some(0);
        moving.input_name = "not-the-input".into();
        let mut masks = Vec::new();
        let size = moving
            .run(&input, frames, &mut masks)
            .expect("runs on the CPU");
        assert_eq!(size, (320, 320));
        assert_eq!(masks, expected);
        assert_eq!(moving.provider(), ProviderUsed::Cpu);
        assert_eq!(moving.preferred_piece(8), 1);
        let reason = moving.fallback_reason().unwrap();
        assert!(
            reason.starts_with("the first run of 2 frame(s) on CUDA (device 0) failed: ")
                && reason.contains("not-the-input")
                && !reason.contains("inference failed"),
            "{reason}"
        );

        // provider=cuda (no trial): the same failure is the stream's error.
        let mut fixed = Model::load(&runtime, &path, &cpu).expect("U2NetP loads");
        fixed.provider = ProviderUsed::Cuda { device_id: 0 };
        fixed.input_name = "not-the-input".into();
        assert!(matches!(
            fixed.run(&input, frames, &mut masks),
            Err(ModelError::Run(_))
        ));
        assert_eq!(fixed.provider(), ProviderUsed::Cuda { device_id: 0 });
    }

    #[test]
    fn cached_shifts_read_back_exactly_and_a_damaged_file_is_no_choice() {
        let dir = std::env::temp_dir().join(format!("u2netmatte-shifts-{}", std::process::id()));
        let file = dir.join("recentre-0.txt");
        let shifts = vec![
            recentre::Shift {
                conv: "Conv_765".into(),
                channel: 14,
                by: 226.0,
            },
            recentre::Shift {
                conv: "Conv_898".into(),
                channel: 12,
                by: 53.253_1,
            },
        ];
        write_shifts(&file, &shifts).unwrap();
        assert_eq!(read_shifts(&file), Some(shifts.clone()));
        let whole = std::fs::read_to_string(&file).unwrap();
        // Cut short at a line's end: fewer shifts than the header says.
        let first_two_lines: String = whole.lines().take(2).map(|l| format!("{l}\n")).collect();
        std::fs::write(&file, first_two_lines).unwrap();
        assert_eq!(read_shifts(&file), None);
        std::fs::write(&file, "").unwrap();
        assert_eq!(read_shifts(&file), None);
        std::fs::write(&file, "Conv_765 14 43620000\n").unwrap();
        assert_eq!(read_shifts(&file), None, "no header");
        std::fs::write(&file, format!("{SHIFTS_HEADER} 1\nConv_765 x 43620000\n")).unwrap();
        assert_eq!(read_shifts(&file), None);
        // No shift at all is a valid choice (a model without such channels).
        write_shifts(&file, &[]).unwrap();
        assert_eq!(read_shifts(&file), Some(vec![]));
        // Nothing is left behind but the file.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn isnet_is_known_by_name_or_size() {
        let n = |p: &str, s| normalization_for(Path::new(p), s);
        assert_eq!(
            n("/m/isnet-general-use.onnx", (1024, 1024)),
            Normalization::ISNET
        );
        assert_eq!(n("/m/ISNet-anime.onnx", (320, 320)), Normalization::ISNET);
        assert_eq!(n("/m/custom.onnx", (1024, 1024)), Normalization::ISNET);
        assert_eq!(n("/m/u2net.onnx", (320, 320)), Normalization::IMAGENET);
        assert_eq!(n("/m/silueta.onnx", (320, 320)), Normalization::IMAGENET);
    }
}
