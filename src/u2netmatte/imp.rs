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
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_video::prelude::*;

use super::queue::{Frame, Item, Next, Queue};
use super::worker::BatchRunner;
use super::{U2NetMatteMode, U2NetMatteProvider, caps};
use crate::matte::{Composite, Mode};
use crate::model::{Interrupter, Model, ModelOptions, names};
use crate::prep::Preparer;
use crate::runtime;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
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

const DEFAULT_MODEL: &str = "u2netp";
const DEFAULT_BATCH_SIZE: u32 = 4;
const MAX_BATCH_SIZE: u32 = 64;
const DEFAULT_MODE: U2NetMatteMode = U2NetMatteMode::Composite;
const DEFAULT_THRESHOLD: f64 = 0.5;
const DEFAULT_FILL_COLOR: u32 = 0x0000_0000;
const DEFAULT_PROVIDER: U2NetMatteProvider = U2NetMatteProvider::Auto;
const DEFAULT_DEVICE_ID: i32 = 0;
/// 0: derived from the framerate.
const DEFAULT_BATCH_TIMEOUT_MS: u32 = 0;
const MAX_BATCH_TIMEOUT_MS: u32 = 60_000;
/// Live batch wait when the framerate is unknown and batch-timeout is auto.
const FALLBACK_BATCH_WAIT: Duration = Duration::from_millis(100);
/// Head room over the measured processing time in the reported latency.
const PROCESSING_MARGIN: f64 = 1.5;

#[derive(Debug, Clone)]
struct Settings {
    model: String,
    batch_size: u32,
    mode: U2NetMatteMode,
    threshold: f64,
    fill_color: u32,
    provider: U2NetMatteProvider,
    device_id: i32,
    ort_library: Option<String>,
    batch_timeout_ms: u32,
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
            ort_library: None,
            batch_timeout_ms: DEFAULT_BATCH_TIMEOUT_MS,
        }
    }
}

/// What stays fixed from READY to NULL.
#[derive(Debug, Clone, Copy)]
struct RunConfig {
    mode: Mode,
    batch_size: usize,
    batch_timeout: Option<Duration>,
}

/// The sink side's own state; only the streaming thread and state changes
/// touch it.
#[derive(Default)]
struct SinkState {
    preparer: Option<Preparer>,
    tensor_len: usize,
    in_info: Option<gst_video::VideoInfo>,
    out_info: Option<gst_video::VideoInfo>,
    eos: bool,
    /// Whether upstream's liveness has been asked since the last start/flush.
    live_checked: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct Latency {
    live: bool,
    /// The longest a live frame waits for its batch to fill.
    batch_wait: Duration,
    /// The time budgeted to process a full batch.
    processing: Duration,
}

impl Latency {
    fn own(&self) -> gst::ClockTime {
        let total = self.processing
            + if self.live {
                self.batch_wait
            } else {
                Duration::ZERO
            };
        gst::ClockTime::from_nseconds(total.as_nanos() as u64)
    }
}

pub struct U2NetMatte {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    config: Mutex<Option<RunConfig>>,
    sink: Mutex<SinkState>,
    queue: Mutex<Queue>,
    /// Signals any change of `queue`.
    cond: Condvar,
    runner: Mutex<Option<BatchRunner>>,
    interrupter: Mutex<Option<Interrupter>>,
    latency: Mutex<Latency>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl U2NetMatte {
    fn config(&self) -> Result<RunConfig, gst::FlowError> {
        lock(&self.config).ok_or(gst::FlowError::Flushing)
    }

    // ---- start / stop ---------------------------------------------------

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = lock(&self.settings).clone();
        let ort_sink: runtime::LogSink = std::sync::Arc::new(|level, category, message| {
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
        let explicit = settings.ort_library.as_deref().map(std::path::Path::new);
        let loaded = runtime::load(explicit, Some(ort_sink), ort_level)
            .map_err(|e| gst::error_msg!(gst::LibraryError::Init, ["{e}"]))?;
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

        let path = names::resolve(&settings.model, &names::SearchPath::from_env())
            .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ["{e}"]))?;
        let options = ModelOptions {
            provider: settings.provider.into(),
            device_id: settings.device_id,
        };
        let model = Model::load(&loaded.runtime, &path, &options)
            .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ["{e}"]))?;
        if let Some(reason) = model.fallback_reason() {
            gst::warning!(
                CAT,
                imp = self,
                "CUDA cannot be used, running on the CPU: {reason}"
            );
        }
        let (height, width) = model.input_size();
        gst::info!(
            CAT,
            imp = self,
            "model {} ({}x{} input) on {}",
            path.display(),
            width,
            height,
            model.provider()
        );

        let batch_size = settings.batch_size as usize;
        let interrupter = model.interrupter();
        let normalization = model.normalization();
        let tensor_len = model.frame_len();
        let mut runner = BatchRunner::new(model);
        // Twice: the first run sets ONNX Runtime up, the second is what a
        // batch costs.
        let timed = runner
            .warm_up(batch_size)
            .and_then(|_| runner.warm_up(batch_size));
        let elapsed = timed.map_err(|e| {
            gst::error_msg!(
                gst::LibraryError::Settings,
                [
                    "model {} cannot run a batch of {}: {}",
                    path.display(),
                    batch_size,
                    e
                ]
            )
        })?;
        gst::debug!(CAT, imp = self, "a batch of {batch_size} takes {elapsed:?}");

        *lock(&self.latency) = Latency {
            live: false,
            batch_wait: Duration::ZERO,
            processing: elapsed.mul_f64(PROCESSING_MARGIN),
        };
        *lock(&self.sink) = SinkState {
            preparer: Some(Preparer::new(width, height, normalization)),
            tensor_len,
            ..Default::default()
        };
        *lock(&self.config) = Some(RunConfig {
            mode: settings.mode.into(),
            batch_size,
            batch_timeout: (settings.batch_timeout_ms > 0)
                .then(|| Duration::from_millis(settings.batch_timeout_ms.into())),
        });
        *lock(&self.interrupter) = Some(interrupter);
        *lock(&self.runner) = Some(runner);
        Ok(())
    }

    fn stop(&self) {
        *lock(&self.runner) = None;
        *lock(&self.interrupter) = None;
        *lock(&self.config) = None;
        *lock(&self.sink) = SinkState::default();
        *lock(&self.queue) = Queue::default();
    }

    // ---- flushing and the task ---------------------------------------------

    fn set_flushing(&self) {
        let mut q = lock(&self.queue);
        q.srcresult = Err(gst::FlowError::Flushing);
        q.clear();
        self.cond.notify_all();
        drop(q);
        if let Some(i) = lock(&self.interrupter).as_ref() {
            i.interrupt();
        }
    }

    fn start_task(&self) -> Result<(), glib::BoolError> {
        if let Some(i) = lock(&self.interrupter).as_ref() {
            i.rearm();
        }
        lock(&self.queue).srcresult = Ok(gst::FlowSuccess::Ok);
        let imp = self.ref_counted();
        let ret = self.srcpad.start_task(move || imp.src_loop());
        if ret.is_err() {
            lock(&self.queue).srcresult = Err(gst::FlowError::Error);
        }
        ret
    }

    fn src_loop(&self) {
        let Err(err) = self.src_iteration() else {
            return;
        };
        let mut q = lock(&self.queue);
        let err = match q.srcresult {
            Err(gst::FlowError::Flushing) => gst::FlowError::Flushing,
            _ => {
                q.srcresult = Err(err);
                err
            }
        };
        self.cond.notify_all();
        drop(q);
        gst::debug!(CAT, imp = self, "pausing task: {err:?}");
        // Upstream hears of the error from its next push; after EOS there is
        // none, so tell the application here, as GstQueue does. Errors of
        // our own were posted with their cause already.
        let eos = lock(&self.sink).eos;
        if eos
            && matches!(
                err,
                gst::FlowError::NotLinked | gst::FlowError::NotNegotiated
            )
        {
            gst::element_imp_error!(
                self,
                gst::StreamError::Failed,
                ("Internal data flow error."),
                ["streaming task paused, reason {err:?}"]
            );
        }
        let _ = self.srcpad.pause_task();
    }

    /// Waits for work, runs it, pushes the results.
    fn src_iteration(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        let config = self.config()?;
        let items = {
            let mut q = lock(&self.queue);
            loop {
                q.srcresult?;
                match q.next(config.batch_size, Instant::now()) {
                    Next::Work(items) => {
                        q.busy = true;
                        break items;
                    }
                    Next::WaitUntil(deadline) => {
                        let timeout = deadline.saturating_duration_since(Instant::now());
                        q = self
                            .cond
                            .wait_timeout(q, timeout)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                    }
                    Next::Wait => q = self.cond.wait(q).unwrap_or_else(PoisonError::into_inner),
                }
            }
        };
        self.cond.notify_all();
        let result = self.process_and_push(items, config);
        let mut q = lock(&self.queue);
        q.busy = false;
        self.cond.notify_all();
        result
    }

    fn process_and_push(
        &self,
        items: Vec<Item>,
        config: RunConfig,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let frames: Vec<&Frame> = items
            .iter()
            .filter_map(|i| match i {
                Item::Frame(f) => Some(&**f),
                Item::Event(_) => None,
            })
            .collect();
        let mut outputs = if frames.is_empty() {
            Vec::new()
        } else {
            self.run_batch(&frames, config)?
        }
        .into_iter();
        drop(frames);

        let mut result = Ok(gst::FlowSuccess::Ok);
        for item in items {
            match item {
                Item::Event(event) => {
                    if result.is_ok() {
                        gst::log!(CAT, imp = self, "pushing {:?}", event.type_());
                        self.srcpad.push_event(event);
                    }
                }
                Item::Frame(frame) => {
                    lock(&self.queue).recycle_tensor(frame.tensor);
                    if result.is_ok() {
                        match outputs.next() {
                            Some(out) => result = self.srcpad.push(out),
                            None => result = Err(gst::FlowError::Error),
                        }
                    }
                }
            }
        }
        result
    }

    fn run_batch(
        &self,
        frames: &[&Frame],
        config: RunConfig,
    ) -> Result<Vec<gst::Buffer>, gst::FlowError> {
        let Some(mut runner) = lock(&self.runner).take() else {
            return Err(gst::FlowError::Flushing);
        };
        let composite = {
            let s = lock(&self.settings);
            Composite {
                threshold: s.threshold,
                fill_argb: s.fill_color,
            }
        };
        let started = Instant::now();
        let result = runner.run(frames, config.mode, composite);
        *lock(&self.runner) = Some(runner);
        match result {
            Ok((buffers, timings)) => {
                gst::trace!(
                    CAT,
                    imp = self,
                    "batch of {}: inference {:?}, compose {:?}",
                    frames.len(),
                    timings.inference,
                    timings.compose
                );
                self.account_processing(started.elapsed(), frames.len(), config.batch_size);
                Ok(buffers)
            }
            Err(super::worker::BatchError::Model(crate::model::ModelError::Interrupted)) => {
                Err(gst::FlowError::Flushing)
            }
            Err(e) => {
                if lock(&self.queue).srcresult == Err(gst::FlowError::Flushing) {
                    return Err(gst::FlowError::Flushing);
                }
                gst::element_imp_error!(self, gst::StreamError::Failed, ["{e}"]);
                Err(gst::FlowError::Error)
            }
        }
    }

    /// Raises the reported latency when a batch took longer than budgeted,
    /// and tells the pipeline to ask again.
    fn account_processing(&self, took: Duration, frames: usize, batch_size: usize) {
        // Scale a partial batch to what a full one would cost.
        let full = took.mul_f64(batch_size as f64 / frames.max(1) as f64);
        let mut latency = lock(&self.latency);
        if full <= latency.processing {
            return;
        }
        latency.processing = full.mul_f64(PROCESSING_MARGIN);
        let live = latency.live;
        drop(latency);
        if live {
            gst::info!(
                CAT,
                imp = self,
                "a batch took {took:?}; raising the latency"
            );
            let _ = self
                .obj()
                .post_message(gst::message::Latency::builder().src(&*self.obj()).build());
        }
    }

    // ---- sink pad ---------------------------------------------------------

    fn sink_activatemode(
        &self,
        pad: &gst::Pad,
        mode: gst::PadMode,
        active: bool,
    ) -> Result<(), gst::LoggableError> {
        if mode != gst::PadMode::Push {
            return Err(gst::loggable_error!(CAT, "only push mode is supported"));
        }
        if !active {
            self.set_flushing();
            let _stream = pad.stream_lock();
            let mut sink = lock(&self.sink);
            sink.eos = false;
            sink.in_info = None;
            sink.out_info = None;
            sink.live_checked = false;
        }
        Ok(())
    }

    fn sink_chain(
        &self,
        _pad: &gst::Pad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        lock(&self.queue).srcresult?;
        let config = self.config()?;
        self.check_live();

        let mut sink = lock(&self.sink);
        if sink.eos {
            return Err(gst::FlowError::Eos);
        }
        let (Some(in_info), Some(out_info)) = (sink.in_info.clone(), sink.out_info.clone()) else {
            drop(sink);
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ["received a buffer before caps"]
            );
            return Err(gst::FlowError::NotNegotiated);
        };
        let tensor_len = sink.tensor_len;
        let mut tensor = lock(&self.queue).take_tensor(tensor_len);
        let Some(preparer) = sink.preparer.as_mut() else {
            return Err(gst::FlowError::Flushing);
        };
        if let Err(reason) = prepare_frame(preparer, &buffer, &in_info, &mut tensor) {
            drop(sink);
            gst::element_imp_error!(self, gst::StreamError::Format, ["{reason}"]);
            return Err(gst::FlowError::Error);
        }
        drop(sink);

        // Mask mode needs no pixels after preparation: let upstream have its
        // buffer back at once.
        let buffer = if config.mode == Mode::Mask {
            metadata_only(&buffer)
        } else {
            buffer
        };
        let frame = Frame {
            buffer,
            in_info,
            out_info,
            tensor,
            arrived: Instant::now(),
        };

        let mut q = lock(&self.queue);
        // One batch may wait while another runs; beyond that, hold upstream.
        while q.frames() >= config.batch_size {
            q.srcresult?;
            q = self.cond.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
        q.srcresult?;
        q.push_frame(frame);
        self.cond.notify_all();
        Ok(gst::FlowSuccess::Ok)
    }

    /// Asks upstream once per stream whether it is live: live frames must
    /// not wait for a batch longer than the latency we report.
    fn check_live(&self) {
        if std::mem::replace(&mut lock(&self.sink).live_checked, true) {
            return;
        }
        let mut query = gst::query::Latency::new();
        let live = self.sinkpad.peer_query(&mut query) && query.result().0;
        self.set_live(live);
    }

    fn set_live(&self, live: bool) {
        let Ok(config) = self.config() else { return };
        let fps = lock(&self.sink).in_info.as_ref().map(|i| i.fps());
        let batch_wait = batch_wait(config, fps);
        {
            let mut latency = lock(&self.latency);
            if latency.live == live && latency.batch_wait == batch_wait {
                return;
            }
            latency.live = live;
            latency.batch_wait = batch_wait;
        }
        gst::debug!(CAT, imp = self, "live: {live}, batch wait {batch_wait:?}");
        let mut q = lock(&self.queue);
        q.batch_wait = live.then_some(batch_wait);
        self.cond.notify_all();
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        gst::log!(CAT, obj = pad, "handling {event:?}");
        match event.view() {
            gst::EventView::FlushStart(_) => {
                let ret = self.srcpad.push_event(event);
                self.set_flushing();
                if let Err(e) = self.srcpad.pause_task() {
                    gst::error!(CAT, obj = pad, "failed to pause task: {e}");
                    return false;
                }
                ret
            }
            gst::EventView::FlushStop(_) => {
                {
                    let mut sink = lock(&self.sink);
                    sink.eos = false;
                    sink.live_checked = false;
                }
                lock(&self.queue).clear();
                let ret = self.srcpad.push_event(event);
                if let Err(e) = self.start_task() {
                    gst::error!(CAT, obj = pad, "failed to start task: {e}");
                    return false;
                }
                ret
            }
            gst::EventView::Caps(c) => {
                let caps = c.caps_owned();
                match self.set_caps(&caps) {
                    Ok(out_caps) => {
                        let out_event = gst::event::Caps::builder(&out_caps)
                            .seqnum(event.seqnum())
                            .build();
                        self.queue_event(out_event)
                    }
                    Err(reason) => {
                        gst::warning!(CAT, obj = pad, "refusing caps {caps}: {reason}");
                        false
                    }
                }
            }
            gst::EventView::Eos(_) => {
                lock(&self.sink).eos = true;
                self.queue_event(event)
            }
            gst::EventView::StreamStart(_) => {
                lock(&self.sink).eos = false;
                self.queue_event(event)
            }
            _ if event.is_serialized() => self.queue_event(event),
            _ => self.srcpad.push_event(event),
        }
    }

    fn queue_event(&self, event: gst::Event) -> bool {
        let mut q = lock(&self.queue);
        if q.srcresult == Err(gst::FlowError::Flushing) {
            return false;
        }
        q.push_event(event);
        self.cond.notify_all();
        true
    }

    /// Takes new input caps; returns the output caps they give.
    fn set_caps(&self, caps: &gst::Caps) -> Result<gst::Caps, String> {
        let config = self
            .config()
            .map_err(|_| "element is not started".to_string())?;
        let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| e.to_string())?;
        if caps::layout_of(info.format()).is_none() {
            return Err(format!("format {:?} is not supported", info.format()));
        }
        let out_info = caps::output_info(&info, config.mode).map_err(|e| e.to_string())?;
        let out_caps = out_info.to_caps().map_err(|e| e.to_string())?;
        if self.srcpad.peer().is_some() && !self.srcpad.peer_query_accept_caps(&out_caps) {
            return Err(format!("downstream does not accept {out_caps}"));
        }
        {
            let mut sink = lock(&self.sink);
            sink.in_info = Some(info);
            sink.out_info = Some(out_info);
        }
        // The batch wait follows the framerate.
        let live = lock(&self.latency).live;
        self.set_live(live);
        Ok(out_caps)
    }

    fn sink_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        gst::log!(CAT, obj = pad, "handling {query:?}");
        if query.is_serialized() && query.type_() != gst::QueryType::Allocation {
            // Everything before a serialized query must have left first.
            return self.drain() && self.srcpad.peer_query(query);
        }
        match query.view_mut() {
            gst::QueryViewMut::Caps(q) => {
                let mode = self.mode();
                let downstream = self.srcpad.peer_query_caps(None);
                let mut caps = caps::transform(&downstream, false, mode)
                    .intersect_with_mode(&pad.pad_template_caps(), gst::CapsIntersectMode::First);
                if let Some(filter) = q.filter() {
                    caps = filter.intersect_with_mode(&caps, gst::CapsIntersectMode::First);
                }
                q.set_result(&caps);
                true
            }
            gst::QueryViewMut::Allocation(q) => {
                // Strided frames are welcome; and frames are held until their
                // batch has run, so upstream's pool must not run dry.
                q.add_allocation_meta::<gst_video::VideoMeta>(None);
                let held = self
                    .config()
                    .map_or(DEFAULT_BATCH_SIZE as usize, |c| c.batch_size)
                    * 2
                    + 1;
                let (caps, _) = q.get();
                if let Some(info) = caps.and_then(|c| gst_video::VideoInfo::from_caps(c).ok()) {
                    q.add_allocation_pool(
                        None::<&gst::BufferPool>,
                        info.size() as u32,
                        held as u32,
                        0,
                    );
                }
                true
            }
            _ => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }

    /// Runs and pushes everything queued; false if flushing meanwhile.
    fn drain(&self) -> bool {
        let mut q = lock(&self.queue);
        q.request_drain();
        self.cond.notify_all();
        while !q.is_idle() && q.srcresult.is_ok() {
            q = self.cond.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
        q.end_drain();
        q.srcresult.is_ok()
    }

    fn mode(&self) -> Mode {
        match *lock(&self.config) {
            Some(c) => c.mode,
            None => lock(&self.settings).mode.into(),
        }
    }

    // ---- src pad ------------------------------------------------------------

    fn src_activatemode(
        &self,
        pad: &gst::Pad,
        mode: gst::PadMode,
        active: bool,
    ) -> Result<(), gst::LoggableError> {
        if mode != gst::PadMode::Push {
            return Err(gst::loggable_error!(CAT, "only push mode is supported"));
        }
        if active {
            self.start_task()
                .map_err(|e| gst::LoggableError::new(*CAT, e))?;
        } else {
            self.set_flushing();
            pad.stop_task()?;
        }
        Ok(())
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        gst::log!(CAT, obj = pad, "handling {query:?}");
        match query.view_mut() {
            gst::QueryViewMut::Latency(q) => {
                let mut upstream = gst::query::Latency::new();
                if !self.sinkpad.peer_query(&mut upstream) {
                    return false;
                }
                let (live, min, max) = upstream.result();
                self.set_live(live);
                let own = lock(&self.latency).own();
                gst::debug!(
                    CAT,
                    imp = self,
                    "upstream latency {min} (live: {live}), ours {own}"
                );
                q.set(live, min + own, max.map(|m| m + own));
                true
            }
            gst::QueryViewMut::Caps(q) => {
                let mode = self.mode();
                let upstream = self.sinkpad.peer_query_caps(None);
                let mut caps = caps::transform(&upstream, true, mode)
                    .intersect_with_mode(&pad.pad_template_caps(), gst::CapsIntersectMode::First);
                if let Some(filter) = q.filter() {
                    caps = filter.intersect_with_mode(&caps, gst::CapsIntersectMode::First);
                }
                q.set_result(&caps);
                true
            }
            _ => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }
}

/// How long a live frame may wait for its batch to fill.
fn batch_wait(config: RunConfig, fps: Option<gst::Fraction>) -> Duration {
    if config.batch_size <= 1 {
        return Duration::ZERO;
    }
    if let Some(timeout) = config.batch_timeout {
        return timeout;
    }
    match fps {
        Some(fps) if fps.numer() > 0 && fps.denom() > 0 => {
            let frame = Duration::from_secs_f64(f64::from(fps.denom()) / f64::from(fps.numer()));
            // The rest of the batch arrives in (n - 1) frame times; half a
            // frame more absorbs jitter.
            frame.mul_f64(config.batch_size as f64 - 0.5)
        }
        _ => FALLBACK_BATCH_WAIT,
    }
}

/// A buffer with `buffer`'s timestamps and flags but none of its memory.
fn metadata_only(buffer: &gst::Buffer) -> gst::Buffer {
    let mut copy = gst::Buffer::new();
    {
        let copy = copy.make_mut();
        copy.set_pts(buffer.pts());
        copy.set_dts(buffer.dts());
        copy.set_duration(buffer.duration());
        copy.set_offset(buffer.offset());
        copy.set_offset_end(buffer.offset_end());
        copy.set_flags(buffer.flags());
    }
    copy
}

/// Maps `buffer` as a frame of `info` and prepares it into `tensor`.
fn prepare_frame(
    preparer: &mut Preparer,
    buffer: &gst::Buffer,
    info: &gst_video::VideoInfo,
    tensor: &mut [f32],
) -> Result<(), String> {
    let has_meta = buffer.meta::<gst_video::VideoMeta>().is_some();
    if !has_meta && buffer.size() < info.size() {
        return Err(format!(
            "buffer of {} bytes is smaller than the {} bytes a {}x{} {} frame needs",
            buffer.size(),
            info.size(),
            info.width(),
            info.height(),
            info.format().to_str()
        ));
    }
    let map =
        gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), info).map_err(|e| {
            format!(
                "cannot map a {}x{} {} frame: {e}",
                info.width(),
                info.height(),
                info.format().to_str()
            )
        })?;
    let layout = caps::layout_of(info.format())
        .ok_or_else(|| format!("unsupported format {:?}", info.format()))?;
    let frame = crate::prep::Frame {
        data: map.plane_data(0).map_err(|e| e.to_string())?,
        width: map.width(),
        height: map.height(),
        stride: map.plane_stride()[0] as usize,
        layout,
    };
    preparer.prepare(&frame, tensor).map_err(|e| e.to_string())
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
            config: Mutex::new(None),
            sink: Mutex::new(SinkState::default()),
            queue: Mutex::new(Queue::default()),
            cond: Condvar::new(),
            runner: Mutex::new(None),
            interrupter: Mutex::new(None),
            latency: Mutex::new(Latency::default()),
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
                         then the project's models/ folder",
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
                    .blurb("What the output holds: composite (RGBA), mask (GRAY8) or alpha (RGBA)")
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
                    .blurb("Where inference runs: auto (CUDA if it can be used, else CPU), cuda, cpu")
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
                        "Live sources: the longest (ms) a frame waits for its batch to fill before a \
                         partial batch runs; 0: (batch-size - 0.5) frame durations, or 100 ms if the \
                         framerate is unknown. Part of the reported latency",
                    )
                    .maximum(MAX_BATCH_TIMEOUT_MS)
                    .default_value(DEFAULT_BATCH_TIMEOUT_MS)
                    .mutable_ready()
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

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
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
            "device-id" => s.device_id = value.get().unwrap_or(DEFAULT_DEVICE_ID),
            "ort-library" => {
                s.ort_library = value
                    .get::<Option<String>>()
                    .ok()
                    .flatten()
                    .filter(|p| !p.is_empty())
            }
            "batch-timeout" => s.batch_timeout_ms = value.get().unwrap_or(DEFAULT_BATCH_TIMEOUT_MS),
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
            "device-id" => s.device_id.to_value(),
            "ort-library" => s.ort_library.to_value(),
            "batch-timeout" => s.batch_timeout_ms.to_value(),
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
        if transition == gst::StateChange::NullToReady
            && let Err(e) = self.start()
        {
            self.post_error_message(e);
            return Err(gst::StateChangeError);
        }
        let result = self.parent_change_state(transition);
        if transition == gst::StateChange::ReadyToNull
            || (result.is_err() && transition == gst::StateChange::NullToReady)
        {
            self.stop();
        }
        result
    }
}
