// SPDX-License-Identifier: MPL-2.0
/**
 * SECTION:element-u2netmatte
 *
 * Removes the background of video frames with a U2Net-family model (U2NetP by
 * default) run by ONNX Runtime, on CUDA when it can be used and on the CPU
 * otherwise. Frames are gathered into batches of `batch-size` and run as one
 * inference; every input frame gives one output frame with the same
 * timestamps, in order.
 *
 * The masks are those rembg computes for the same model: Lanczos3 down to the
 * model's input size, per-frame normalisation, Lanczos3 back up.
 *
 * ## Example launch lines
 *
 * ```shell
 * gst-launch-1.0 multifilesrc location=in/%04d.png caps=image/png ! pngdec ! videoconvert ! \
 *     u2netmatte mode=alpha ! pngenc ! multifilesink location=out/%04d.png
 * gst-launch-1.0 v4l2src ! videoconvert ! u2netmatte batch-size=1 mode=composite \
 *     fill-color=0xff00ff00 ! videoconvert ! autovideosink
 * ```
 */
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::frames::OutputPools;
use super::sessions;
use super::state::{Shared, Smoothing, StreamConfig};
use super::{U2NetMatteConvSearch, U2NetMatteMode, U2NetMattePrecision, U2NetMatteProvider, caps};
use crate::edge_snap::EdgeSnap;
use crate::engine::{Delivery, Engine, Policy};
use crate::matte::Matter;
use crate::model::{CudaOptions, Model, ModelOptions, Precision, ProviderUsed, names};
use crate::motion::MotionEstimator;
use crate::prep::{InputLayout, Normalization, Preparer};
use crate::runtime;

pub(super) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "u2netmatte",
        gst::DebugColorFlags::empty(),
        Some("U2Net background removal"),
    )
});

/// ONNX Runtime's own log, apart from the element's.
static ORT_CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "u2netmatte-ort",
        gst::DebugColorFlags::empty(),
        Some("ONNX Runtime, as used by u2netmatte"),
    )
});

pub(super) const DEFAULT_MODEL: &str = "u2netp";
pub(super) const DEFAULT_BATCH_SIZE: u32 = 4;
const MAX_BATCH_SIZE: u32 = 64;
const DEFAULT_MODE: U2NetMatteMode = U2NetMatteMode::Composite;
const DEFAULT_THRESHOLD: f64 = 0.5;
const DEFAULT_FILL_COLOR: u32 = 0x0000_0000;
const DEFAULT_PROVIDER: U2NetMatteProvider = U2NetMatteProvider::Auto;
const DEFAULT_DEVICE_ID: i32 = 0;
/// 0: no limit.
const DEFAULT_GPU_MEMORY_LIMIT_MIB: u32 = 0;
const DEFAULT_CONV_SEARCH: U2NetMatteConvSearch = U2NetMatteConvSearch::Heuristic;
/// 0: derived from the framerate.
const DEFAULT_BATCH_TIMEOUT_MS: u32 = 0;
const MAX_BATCH_TIMEOUT_MS: u32 = 60_000;
const DEFAULT_STATS: bool = false;
const DEFAULT_KEEP_UP: bool = true;
const DEFAULT_TEMPORAL_SMOOTHING: f64 = 0.0;
const DEFAULT_MOTION_COMPENSATION: bool = true;
const DEFAULT_FEATHER: f64 = 0.0;
const DEFAULT_BLUR_RADIUS: u32 = 12;
const MAX_BLUR_RADIUS: u32 = 256;
/// 0: the model's own input size.
const DEFAULT_INFERENCE_SIZE: u32 = 0;
const DEFAULT_PRECISION: U2NetMattePrecision = U2NetMattePrecision::Fp32;
/// 0: one a core.
const DEFAULT_THREADS: u32 = 0;
const MAX_THREADS: u32 = 1024;
const MIN_INFERENCE_SIZE: u32 = 32;
const MAX_INFERENCE_SIZE: u32 = 2048;

#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub model: String,
    pub batch_size: u32,
    pub mode: U2NetMatteMode,
    pub threshold: f64,
    pub fill_color: u32,
    pub provider: U2NetMatteProvider,
    pub device_id: i32,
    pub gpu_memory_limit_mib: u32,
    pub conv_search: U2NetMatteConvSearch,
    pub ort_library: Option<String>,
    pub batch_timeout_ms: u32,
    pub stats: bool,
    pub keep_up: bool,
    pub temporal_smoothing: f64,
    pub motion_compensation: bool,
    pub feather: f64,
    pub blur_radius: u32,
    pub inference_size: u32,
    pub precision: U2NetMattePrecision,
    pub threads: u32,
    /// Empty: a session of its own.
    pub shared_session: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            model: DEFAULT_MODEL.to_string(),
            batch_size: DEFAULT_BATCH_SIZE,
            mode: DEFAULT_MODE,
            threshold: DEFAULT_THRESHOLD,
            fill_color: DEFAULT_FILL_COLOR,
            provider: DEFAULT_PROVIDER,
            device_id: DEFAULT_DEVICE_ID,
            gpu_memory_limit_mib: DEFAULT_GPU_MEMORY_LIMIT_MIB,
            conv_search: DEFAULT_CONV_SEARCH,
            ort_library: None,
            batch_timeout_ms: DEFAULT_BATCH_TIMEOUT_MS,
            stats: DEFAULT_STATS,
            keep_up: DEFAULT_KEEP_UP,
            temporal_smoothing: DEFAULT_TEMPORAL_SMOOTHING,
            motion_compensation: DEFAULT_MOTION_COMPENSATION,
            feather: DEFAULT_FEATHER,
            blur_radius: DEFAULT_BLUR_RADIUS,
            inference_size: DEFAULT_INFERENCE_SIZE,
            precision: DEFAULT_PRECISION,
            threads: DEFAULT_THREADS,
            shared_session: String::new(),
        }
    }
}

/// What a loaded model was loaded from: when any of it changes, the
/// model is loaded again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ModelKey {
    pub path: PathBuf,
    pub provider: U2NetMatteProvider,
    pub device_id: i32,
    pub gpu_memory_limit_mib: u32,
    pub conv_search: U2NetMatteConvSearch,
    pub ort_library: Option<String>,
    /// Square input size to run at; None: the model's own.
    pub inference_size: Option<u32>,
    pub precision: U2NetMattePrecision,
    pub threads: u32,
}

/// A model running in its engine, from NULL->READY to READY->NULL; held
/// by every element of its `shared-session`.
pub(super) struct Loaded {
    pub key: ModelKey,
    /// The `shared-session` it was loaded for; empty: one element's own.
    pub session: String,
    pub engine: Arc<Engine>,
    /// Where the model was loaded to run; a delivery from elsewhere means
    /// `provider=auto` moved to the CPU since (`Engine::provider`).
    pub provider: ProviderUsed,
    /// The model's input (width, height).
    pub input_size: (u32, u32),
    pub normalization: Normalization,
    /// How frames are laid out in the model's input.
    pub input_layout: InputLayout,
}

/// Three threads share the element: the sink pad's streaming thread
/// prepares frames (`sink.rs`), the engine's thread runs the model
/// (`crate::engine`), the src pad's task composes and pushes (`src.rs`).
/// The streaming state they share is one `State` under one lock
/// (`state.rs`); the tools each thread uses alone sit in their own mutexes,
/// never contended.
pub struct U2NetMatte {
    pub(super) sinkpad: gst::Pad,
    pub(super) srcpad: gst::Pad,
    pub(super) settings: Mutex<Settings>,
    pub(super) shared: Arc<Shared>,
    pub(super) loaded: Mutex<Option<Arc<Loaded>>>,
    /// The sink pad's: model-input preparation.
    pub(super) preparer: Mutex<Option<Preparer>>,
    /// The src pad task's: mask scaling and compositing.
    pub(super) matter: Mutex<Matter>,
    /// The src pad task's: moving borrowed masks with the picture.
    pub(super) motion: Mutex<MotionEstimator>,
    /// The src pad task's: smoothing moved masks where the picture does
    /// not back their edges.
    pub(super) edge_snap: Mutex<EdgeSnap>,
    pub(super) pools: Mutex<OutputPools>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl U2NetMatte {
    pub(super) fn mode(&self) -> crate::matte::Mode {
        match self.shared.lock().config {
            Some(c) => c.mode,
            None => lock(&self.settings).mode.into(),
        }
    }

    /// Loads ONNX Runtime and the model as the settings say, unless the
    /// model loaded already is that one, and starts its engine. The engine
    /// warms up on its own thread: this does not wait for a model run.
    fn load(&self) -> Result<(), gst::ErrorMessage> {
        let settings = lock(&self.settings).clone();
        let path = names::resolve(&settings.model, &names::SearchPath::from_env())
            .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("{e}")))?;
        let inference_size = match settings.inference_size {
            0 => None,
            s if s < MIN_INFERENCE_SIZE => {
                return Err(gst::error_msg!(
                    gst::LibraryError::Settings,
                    ("inference-size={s} is too small: 0 (the model's own size) or {MIN_INFERENCE_SIZE}..{MAX_INFERENCE_SIZE}")
                ));
            }
            s => Some(s),
        };
        let key = ModelKey {
            path,
            provider: settings.provider,
            device_id: settings.device_id,
            gpu_memory_limit_mib: settings.gpu_memory_limit_mib,
            conv_search: settings.conv_search,
            ort_library: settings.ort_library.clone(),
            inference_size,
            precision: settings.precision,
            threads: settings.threads,
        };
        let session = settings.shared_session;
        if lock(&self.loaded)
            .as_ref()
            .is_some_and(|l| l.key == key && l.session == session)
        {
            return Ok(());
        }
        self.unload();
        let loaded = if session.is_empty() {
            Arc::new(self.load_model(key, session)?)
        } else {
            let name = session.clone();
            let joined = sessions::SESSIONS.join(
                &name,
                &key,
                || self.load_model(key.clone(), session),
                |diff| {
                    gst::error_msg!(
                        gst::LibraryError::Settings,
                        ("shared-session \"{name}\" runs with other settings: {diff}")
                    )
                },
            )?;
            gst::info!(CAT, imp = self, "in shared session \"{name}\"");
            joined
        };
        *lock(&self.loaded) = Some(loaded);
        Ok(())
    }

    /// Loads ONNX Runtime and the model `key` names and starts its engine.
    fn load_model(&self, key: ModelKey, session: String) -> Result<Loaded, gst::ErrorMessage> {
        // OpenVINO and bf16 are in ONNX Runtime's OpenVINO build: where no
        // library is named, that build is looked for first.
        // bf16 with provider=auto only where no NVIDIA driver is: the
        // OpenVINO build has no CUDA provider, and the choice is the
        // process's.
        let wants_openvino = key.provider == U2NetMatteProvider::OpenVino
            || (key.precision == U2NetMattePrecision::Bf16
                && key.provider == U2NetMatteProvider::Auto
                && !std::path::Path::new("/proc/driver/nvidia/version").exists());
        let runtime = self.load_runtime(key.ort_library.as_deref(), wants_openvino)?;
        let options = ModelOptions {
            provider: key.provider.into(),
            device_id: key.device_id,
            input_size: key.inference_size,
            cuda: CudaOptions {
                memory_limit: (key.gpu_memory_limit_mib as usize) << 20,
                conv_search: key.conv_search.into(),
            },
            precision: key.precision.into(),
            threads: key.threads as usize,
            cache_dir: crate::model::default_cache_dir(),
        };
        // ONNX Runtime's threads, made with the session, run below the
        // streaming threads (crate::priority).
        let started = std::time::Instant::now();
        let model = crate::priority::on_inference_priority(|| {
            Model::load(&runtime, &key.path, &options).map_err(|e| e.to_string())
        })
        .and_then(|loaded| loaded)
        .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("{e}")))?;
        if let Some(reason) = model.fallback_reason() {
            let on = match model.provider() {
                ProviderUsed::Cpu => "the CPU".to_string(),
                other => other.to_string(),
            };
            gst::warning!(
                CAT,
                imp = self,
                "CUDA cannot be used, running on {on}: {reason}"
            );
        }
        if let Some(warning) = model.precision_warning() {
            gst::warning!(CAT, imp = self, "{warning}");
        }
        if let Some(recentring) = model.recentring() {
            gst::info!(CAT, imp = self, "bf16: {recentring}");
        }
        // The split graph is exact in fp32 too: said only where bf16 runs.
        let runs_bf16 = matches!(
            model.provider(),
            ProviderUsed::OpenVino {
                precision: Precision::Bf16
            }
        );
        if runs_bf16 && model.input_layout() == InputLayout::Bf16Split {
            gst::info!(
                CAT,
                imp = self,
                "bf16: the picture goes in as two bf16 parts, so that the first convolution \
                 keeps its precision"
            );
        }
        if let Some(cuda) = model.cuda_description() {
            gst::info!(CAT, imp = self, "{cuda}");
        }
        let (height, width) = model.input_size();
        let provider = model.provider();
        gst::info!(
            CAT,
            imp = self,
            "model {} ({}x{} input) on {}, ready in {} ms",
            key.path.display(),
            width,
            height,
            model.provider(),
            started.elapsed().as_millis()
        );
        let normalization = model.normalization();
        let input_layout = model.input_layout();
        let engine = Engine::start(Box::new(model)).map_err(|e| {
            gst::error_msg!(
                gst::CoreError::Thread,
                ("cannot start the inference thread: {e}")
            )
        })?;
        Ok(Loaded {
            key,
            session,
            engine: Arc::new(engine),
            provider,
            input_size: (width, height),
            normalization,
            input_layout,
        })
    }

    fn load_runtime(
        &self,
        explicit: Option<&str>,
        wants_openvino: bool,
    ) -> Result<std::sync::Arc<runtime::Runtime>, gst::ErrorMessage> {
        let ort_log: runtime::LogSink = std::sync::Arc::new(|level, category, message| {
            let level = match level {
                ort::logging::LogLevel::Verbose => gst::DebugLevel::Log,
                ort::logging::LogLevel::Info => gst::DebugLevel::Info,
                ort::logging::LogLevel::Warning => gst::DebugLevel::Warning,
                ort::logging::LogLevel::Error | ort::logging::LogLevel::Fatal => {
                    gst::DebugLevel::Error
                }
            };
            gst::log_with_level!(ORT_CAT, level, "[{category}] {message}");
        });
        let ort_level = match ORT_CAT.threshold() {
            l if l >= gst::DebugLevel::Log => ort::logging::LogLevel::Verbose,
            l if l >= gst::DebugLevel::Info => ort::logging::LogLevel::Info,
            _ => ort::logging::LogLevel::Warning,
        };
        let build = if wants_openvino {
            runtime::Build::OpenVino
        } else {
            runtime::Build::Plain
        };
        let loaded = runtime::load_build(
            explicit.map(std::path::Path::new),
            build,
            Some(ort_log),
            ort_level,
        )
        .map_err(|e| gst::error_msg!(gst::LibraryError::Init, ("{e}")))?;
        if let Some(ignored) = &loaded.ignored_request {
            gst::warning!(
                CAT,
                imp = self,
                "ONNX Runtime is already loaded in this process from {}; ignoring {}",
                loaded.runtime.library().display(),
                ignored.display()
            );
        }
        gst::info!(
            CAT,
            imp = self,
            "ONNX Runtime library: {}",
            loaded.runtime.library().display()
        );
        Ok(loaded.runtime)
    }

    /// Lets go of the model: its engine stops (its thread ends) with the
    /// last element that holds it.
    fn unload(&self) {
        let loaded = lock(&self.loaded).take();
        drop(loaded);
    }

    /// READY->PAUSED: the settings as they are now (also those set in
    /// READY) become the stream's; a model whose settings changed in READY
    /// is loaded again.
    fn start_stream(&self) -> Result<(), gst::ErrorMessage> {
        self.load()?;
        let settings = lock(&self.settings).clone();
        let loaded = lock(&self.loaded);
        let Some(loaded) = loaded.as_ref() else {
            return Err(gst::error_msg!(
                gst::CoreError::StateChange,
                ("no model is loaded")
            ));
        };
        let config = StreamConfig {
            mode: settings.mode.into(),
            batch_size: settings.batch_size as usize,
            batch_timeout: (settings.batch_timeout_ms > 0)
                .then(|| Duration::from_millis(settings.batch_timeout_ms.into())),
            // The first delivery from elsewhere tells this element, at
            // WARNING, that auto moved to the CPU (also when that happened
            // in the warm-up, or before it joined a shared session).
            provider: loaded.provider,
            keep_up: settings.keep_up,
        };
        let weak = Arc::downgrade(&self.shared);
        let weak_obj = self.obj().downgrade();
        let weak_engine = Arc::downgrade(&loaded.engine);
        let deliver = Arc::new(move |mut delivery: Delivery| {
            let (Some(shared), Some(obj)) = (weak.upgrade(), weak_obj.upgrade()) else {
                return;
            };
            let smoothing = {
                let settings = lock(&obj.imp().settings);
                Smoothing {
                    strength: settings.temporal_smoothing,
                    follow_motion: settings.motion_compensation,
                }
            };
            shared.smooth(&mut delivery, smoothing);
            let mut state = shared.lock();
            // provider=auto moved to the CPU after a failed run on CUDA.
            let moved = match state.config.as_mut() {
                Some(c) if c.provider != delivery.provider => {
                    c.provider = delivery.provider;
                    true
                }
                _ => false,
            };
            if state.deliver(delivery) {
                shared.cond.notify_all();
            }
            drop(state);
            if moved {
                let reason = weak_engine
                    .upgrade()
                    .and_then(|e| e.fallback_reason())
                    .unwrap_or_default();
                gst::warning!(
                    CAT,
                    obj = obj,
                    "CUDA cannot be used, running on the CPU: {reason}"
                );
            }
        });
        let client = loaded.engine.client(
            Policy {
                batch_size: config.batch_size,
                wait: super::latency::batch_wait(
                    config.batch_size,
                    config.batch_timeout,
                    false,
                    None,
                ),
            },
            deliver,
        );
        let (width, height) = loaded.input_size;
        *lock(&self.preparer) = Some(
            Preparer::new(width, height, loaded.normalization).with_layout(loaded.input_layout),
        );
        let mut state = self.shared.lock();
        *state = super::state::State {
            config: Some(config),
            client: Some(Arc::new(client)),
            ..Default::default()
        };
        Ok(())
    }

    /// PAUSED->READY: the stream's state goes, the model stays.
    fn stop_stream(&self) {
        let old = std::mem::take(&mut *self.shared.lock());
        self.shared.cond.notify_all();
        drop(old);
        *lock(&self.preparer) = None;
        lock(&self.pools).clear();
    }

    /// Drops everything in flight and makes every stage return Flushing.
    pub(super) fn set_flushing(&self) {
        let mut state = self.shared.lock();
        state.srcresult = Err(gst::FlowError::Flushing);
        state.clear();
        if let Some(client) = &state.client {
            client.flush();
        }
        self.shared.cond.notify_all();
    }
}

#[glib::object_subclass]
impl ObjectSubclass for U2NetMatte {
    const NAME: &'static str = "GstU2NetMatte";
    type Type = super::U2NetMatte;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = klass
            .pad_template("sink")
            .expect("sink template is registered");
        let sinkpad = gst::Pad::builder_from_template(&templ)
            .chain_function(|pad, parent, buffer| {
                U2NetMatte::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.sink_chain(pad, buffer),
                )
            })
            .event_function(|pad, parent, event| {
                U2NetMatte::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_event(pad, event),
                )
            })
            .query_function(|pad, parent, query| {
                U2NetMatte::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_query(pad, query),
                )
            })
            .activatemode_function(|pad, parent, mode, active| {
                U2NetMatte::catch_panic_pad_function(
                    parent,
                    || Err(gst::loggable_error!(CAT, "panic in sink activatemode")),
                    |imp| imp.sink_activatemode(pad, mode, active),
                )
            })
            .build();

        let templ = klass
            .pad_template("src")
            .expect("src template is registered");
        let srcpad = gst::Pad::builder_from_template(&templ)
            .event_function(|pad, parent, event| {
                U2NetMatte::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.src_event(pad, event),
                )
            })
            .query_function(|pad, parent, query| {
                U2NetMatte::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.src_query(pad, query),
                )
            })
            .activatemode_function(|pad, parent, mode, active| {
                U2NetMatte::catch_panic_pad_function(
                    parent,
                    || Err(gst::loggable_error!(CAT, "panic in src activatemode")),
                    |imp| imp.src_activatemode(pad, mode, active),
                )
            })
            .build();

        Self {
            sinkpad,
            srcpad,
            settings: Mutex::new(Settings::default()),
            shared: Arc::new(Shared::default()),
            loaded: Mutex::new(None),
            preparer: Mutex::new(None),
            matter: Mutex::new(Matter::new()),
            motion: Mutex::new(MotionEstimator::new()),
            edge_snap: Mutex::new(EdgeSnap::new()),
            pools: Mutex::new(OutputPools::default()),
        }
    }
}

impl ObjectImpl for U2NetMatte {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("model")
                    .nick("Model")
                    .blurb(
                        "Path of an .onnx file, or a model name (u2netp, u2net, u2net_human_seg, silueta, ...) \
                         looked up as <name>.onnx in $U2NETMATTE_MODEL_DIR, $U2NET_HOME (default ~/.u2net), \
                         ~/.local/share/u2netmatte/models (make install), then the project's models/ folder",
                    )
                    .default_value(Some(DEFAULT_MODEL))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("batch-size")
                    .nick("Batch size")
                    .blurb("Frames per inference run")
                    .minimum(1)
                    .maximum(MAX_BATCH_SIZE)
                    .default_value(DEFAULT_BATCH_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("mode", DEFAULT_MODE)
                    .nick("Mode")
                    .blurb(
                        "What the output holds: composite (RGBA), mask (GRAY8), alpha (RGBA) or blur \
                         (RGBA)",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("threshold")
                    .nick("Threshold")
                    .blurb("mode=composite keeps the pixels whose mask is above this (0..1)")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_THRESHOLD)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("fill-color")
                    .nick("Fill color")
                    .blurb("mode=composite paints the background this colour, as 0xAARRGGBB")
                    .default_value(DEFAULT_FILL_COLOR)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("provider", DEFAULT_PROVIDER)
                    .nick("Provider")
                    .blurb(
                        "Where inference runs: auto (CUDA if it can be used, else OpenVINO where ONNX \
                         Runtime's OpenVINO build is loaded, else the CPU), cuda, cpu, openvino (the \
                         CPU through OpenVINO: loads ONNX Runtime's OpenVINO build unless ort-library \
                         names another)",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("precision", DEFAULT_PRECISION)
                    .nick("Precision")
                    .blurb(
                        "fp32 (masks equal rembg's) or bf16 (faster on a CPU with AMX or AVX512-BF16, \
                         through OpenVINO; masks within 0.5 % of fp32's; elsewhere fp32 with a warning)",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("threads")
                    .nick("Threads")
                    .blurb(
                        "Threads inference computes on (ONNX Runtime's or OpenVINO's), so that several \
                         elements or processes share a machine; 0: one a core",
                    )
                    .maximum(MAX_THREADS)
                    .default_value(DEFAULT_THREADS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt::builder("device-id")
                    .nick("Device ID")
                    .blurb("CUDA device to run on")
                    .minimum(0)
                    .maximum(i32::MAX)
                    .default_value(DEFAULT_DEVICE_ID)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("gpu-memory-limit")
                    .nick("GPU memory limit")
                    .blurb(
                        "The most CUDA device memory ONNX Runtime's arena may hold, in MiB (0: no limit); \
                         the arena grows by what a run asks for",
                    )
                    .default_value(DEFAULT_GPU_MEMORY_LIMIT_MIB)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("cudnn-conv-search", DEFAULT_CONV_SEARCH)
                    .nick("cuDNN convolution search")
                    .blurb(
                        "How cuDNN picks convolution algorithms on CUDA: heuristic (at once), exhaustive \
                         (benchmarks each new batch size first, stalling its first run), default",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("ort-library")
                    .nick("ONNX Runtime library")
                    .blurb(
                        "Path of libonnxruntime; unset: $ORT_DYLIB_PATH, else the copy set-up put beside \
                         the plugin or in the project, else the system's loader",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("batch-timeout")
                    .nick("Batch timeout")
                    .blurb(
                        "The longest (ms) a frame waits for its batch to fill before a partial batch \
                         runs, whatever the source; 0: with a live source (batch-size - 0.5) frame \
                         durations (100 ms if the framerate is unknown), otherwise no wait (the model \
                         takes what is queued whenever it is free). Part of the reported latency",
                    )
                    .maximum(MAX_BATCH_TIMEOUT_MS)
                    .default_value(DEFAULT_BATCH_TIMEOUT_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("keep-up")
                    .nick("Keep up")
                    .blurb(
                        "With a live source, keep up with it when inference cannot: every frame leaves \
                         in time, with its own mask or else the newest one (the model runs on the newest \
                         frame whenever it is free). false: every frame waits for its own mask",
                    )
                    .default_value(DEFAULT_KEEP_UP)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("temporal-smoothing")
                    .nick("Temporal smoothing")
                    .blurb(
                        "0: every frame's own mask (rembg's); above 0, masks are averaged over time with \
                         this weight where the picture did not change, and follow it where it did",
                    )
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_TEMPORAL_SMOOTHING)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("motion-compensation")
                    .nick("Motion compensation")
                    .blurb(
                        "Move a frame's borrowed mask (keep-up: an older frame's) and the running \
                         average of temporal-smoothing along with the picture, by the motion \
                         estimated between the two frames at the model's size. false: as they are",
                    )
                    .default_value(DEFAULT_MOTION_COMPENSATION)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("feather")
                    .nick("Feather")
                    .blurb(
                        "mode=composite: width of the soft edge around threshold (0..1 of the mask's \
                         range); 0: a hard cut",
                    )
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_FEATHER)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("blur-radius")
                    .nick("Blur radius")
                    .blurb("mode=blur: how far (pixels) the background is blurred")
                    .minimum(1)
                    .maximum(MAX_BLUR_RADIUS)
                    .default_value(DEFAULT_BLUR_RADIUS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("inference-size")
                    .nick("Inference size")
                    .blurb(
                        "Run the model at this square size instead of its own (0), e.g. 256 or 192: \
                         faster on a CPU, coarser masks; the masks still have the frame's size",
                    )
                    .maximum(MAX_INFERENCE_SIZE)
                    .default_value(DEFAULT_INFERENCE_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("shared-session")
                    .nick("Shared session")
                    .blurb(
                        "Elements of one process with the same name here share one model session and \
                         inference thread, their frames batched together (up to the largest batch-size \
                         among them); their model, provider, device-id, gpu-memory-limit, \
                         cudnn-conv-search, ort-library, inference-size, precision and threads must \
                         agree. Empty: a session of its own",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("stats")
                    .nick("Stats")
                    .blurb(
                        "Post an element message \"u2netmatte-stats\" after each batch: frames, \
                         batch-id, run-frames (with a shared-session, every element's), \
                         batch-size, inference-ms, prepare-ms, compose-ms, frames-out, \
                         mask-age-ms, mask-age-max-ms, provider",
                    )
                    .default_value(DEFAULT_STATS)
                    .mutable_playing()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad)
            .expect("a fresh element takes its sink pad");
        obj.add_pad(&self.srcpad)
            .expect("a fresh element takes its src pad");
    }

    fn set_property(&self, id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        // A stream takes these at READY->PAUSED; one set later would only
        // seem to apply. Refused, as GStreamer's elements refuse them.
        let obj = self.obj();
        let state = obj.current_state().max(obj.pending_state());
        if pspec.flags().contains(gst::PARAM_FLAG_MUTABLE_READY) && state > gst::State::Ready {
            gst::warning!(
                CAT,
                imp = self,
                "{} cannot change in {state:?}, only in NULL or READY: keeping {}",
                pspec.name(),
                self.property(id, pspec)
                    .serialize()
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            );
            return;
        }
        let mut s = lock(&self.settings);
        match pspec.name() {
            "model" => {
                s.model = value
                    .get::<Option<String>>()
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| DEFAULT_MODEL.to_string())
            }
            "batch-size" => s.batch_size = value.get().unwrap_or(DEFAULT_BATCH_SIZE),
            "mode" => s.mode = value.get().unwrap_or(DEFAULT_MODE),
            "threshold" => s.threshold = value.get().unwrap_or(DEFAULT_THRESHOLD),
            "fill-color" => s.fill_color = value.get().unwrap_or(DEFAULT_FILL_COLOR),
            "provider" => s.provider = value.get().unwrap_or(DEFAULT_PROVIDER),
            "precision" => s.precision = value.get().unwrap_or(DEFAULT_PRECISION),
            "threads" => s.threads = value.get().unwrap_or(DEFAULT_THREADS),
            "device-id" => s.device_id = value.get().unwrap_or(DEFAULT_DEVICE_ID),
            "gpu-memory-limit" => {
                s.gpu_memory_limit_mib = value.get().unwrap_or(DEFAULT_GPU_MEMORY_LIMIT_MIB)
            }
            "cudnn-conv-search" => s.conv_search = value.get().unwrap_or(DEFAULT_CONV_SEARCH),
            "ort-library" => {
                s.ort_library = value
                    .get::<Option<String>>()
                    .ok()
                    .flatten()
                    .filter(|p| !p.is_empty())
            }
            "batch-timeout" => s.batch_timeout_ms = value.get().unwrap_or(DEFAULT_BATCH_TIMEOUT_MS),
            "stats" => s.stats = value.get().unwrap_or(DEFAULT_STATS),
            "keep-up" => s.keep_up = value.get().unwrap_or(DEFAULT_KEEP_UP),
            "temporal-smoothing" => {
                s.temporal_smoothing = value.get().unwrap_or(DEFAULT_TEMPORAL_SMOOTHING)
            }
            "motion-compensation" => {
                s.motion_compensation = value.get().unwrap_or(DEFAULT_MOTION_COMPENSATION)
            }
            "feather" => s.feather = value.get().unwrap_or(DEFAULT_FEATHER),
            "blur-radius" => s.blur_radius = value.get().unwrap_or(DEFAULT_BLUR_RADIUS),
            "inference-size" => s.inference_size = value.get().unwrap_or(DEFAULT_INFERENCE_SIZE),
            "shared-session" => {
                s.shared_session = value
                    .get::<Option<String>>()
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            }
            other => gst::warning!(CAT, imp = self, "unknown property {other}"),
        }
        gst::debug!(CAT, imp = self, "{} = {:?}", pspec.name(), value);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = lock(&self.settings);
        match pspec.name() {
            "model" => s.model.to_value(),
            "batch-size" => s.batch_size.to_value(),
            "mode" => s.mode.to_value(),
            "threshold" => s.threshold.to_value(),
            "fill-color" => s.fill_color.to_value(),
            "provider" => s.provider.to_value(),
            "precision" => s.precision.to_value(),
            "threads" => s.threads.to_value(),
            "device-id" => s.device_id.to_value(),
            "gpu-memory-limit" => s.gpu_memory_limit_mib.to_value(),
            "cudnn-conv-search" => s.conv_search.to_value(),
            "ort-library" => s.ort_library.to_value(),
            "batch-timeout" => s.batch_timeout_ms.to_value(),
            "stats" => s.stats.to_value(),
            "keep-up" => s.keep_up.to_value(),
            "temporal-smoothing" => s.temporal_smoothing.to_value(),
            "motion-compensation" => s.motion_compensation.to_value(),
            "feather" => s.feather.to_value(),
            "blur-radius" => s.blur_radius.to_value(),
            "inference-size" => s.inference_size.to_value(),
            "shared-session" => s.shared_session.to_value(),
            _ => pspec.default_value().clone(),
        }
    }
}

impl GstObjectImpl for U2NetMatte {}

impl ElementImpl for U2NetMatte {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "U2Net background removal",
                "Filter/Effect/Video",
                "Removes the background of video frames with U2Net models through ONNX Runtime, \
                 in batches, on CUDA or the CPU",
                "u2netmatte developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink = gst::PadTemplate::new(
                "sink",
                gst::PadDirection::Sink,
                gst::PadPresence::Always,
                &caps::sink_template_caps(),
            )
            .expect("sink template is valid");
            let src = gst::PadTemplate::new(
                "src",
                gst::PadDirection::Src,
                gst::PadPresence::Always,
                &caps::src_template_caps(),
            )
            .expect("src template is valid");
            vec![sink, src]
        });
        PAD_TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        gst::debug!(CAT, imp = self, "changing state: {transition:?}");
        let prepared = match transition {
            gst::StateChange::NullToReady => self.load(),
            gst::StateChange::ReadyToPaused => self.start_stream(),
            // Deadlines follow the clock only while it runs for us: the
            // base time is set by now, the current state not yet.
            gst::StateChange::PausedToPlaying | gst::StateChange::PlayingToPaused => {
                self.shared.lock().playing = transition == gst::StateChange::PausedToPlaying;
                self.shared.cond.notify_all();
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(e) = prepared {
            self.post_error_message(e);
            return Err(gst::StateChangeError);
        }
        let result = self.parent_change_state(transition);
        match transition {
            gst::StateChange::PausedToReady => self.stop_stream(),
            gst::StateChange::ReadyToNull => self.unload(),
            gst::StateChange::ReadyToPaused if result.is_err() => self.stop_stream(),
            gst::StateChange::NullToReady if result.is_err() => self.unload(),
            gst::StateChange::PausedToPlaying => self.recheck_synced(),
            _ => {}
        }
        result
    }
}
