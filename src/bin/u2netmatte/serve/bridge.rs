// SPDX-License-Identifier: MPL-2.0
//! Requests -> the u2netmatte element -> responses.
//!
//! One pipeline (`appsrc ! u2netmatte ! appsink`) per look a request asks
//! for (mode, threshold, fill, ...: the element's own properties, so that
//! outputs equal the folder tool's), every element in one `shared-session`:
//! one model and one inference thread batch the frames of every request in
//! the service together, whatever they asked for. A frame's buffer offset
//! names its request; the appsink's callback hands each output to the
//! request waiting for it. An element error fails the requests waiting on
//! that pipeline, and the next request builds it anew.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use gst::prelude::*;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use crate::codec::Picture;
use crate::element;
use crate::{LookArgs, ModelArgs};

/// What comes back for a request: its output frame, or why not.
pub type Outcome = Result<gst::Sample, String>;

/// Called with (batch id, frames in the model run) once per model run.
pub type OnBatch = Arc<dyn Fn(u64, u32) + Send + Sync>;

/// Pipelines kept at most: past this, an idle one (the least recently
/// asked for) is let go for a new look.
const MOST_LINES: usize = 16;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A frame in the pipeline: where its output goes, and its request's
/// place in the service (--max-queue), freed only when the frame is out:
/// a request that gave up (timed out, client gone) still has its frame in
/// the pipeline, and that frame still counts.
struct Waiter {
    tx: oneshot::Sender<Outcome>,
    _slot: OwnedSemaphorePermit,
}

#[derive(Default)]
struct Waiting {
    by_id: HashMap<u64, Waiter>,
    /// Set by an element error: the pipeline takes nothing more.
    broken: Option<String>,
}

impl Waiting {
    fn fail_all(&mut self, reason: &str) {
        self.broken.get_or_insert_with(|| reason.to_string());
        for (_, waiter) in self.by_id.drain() {
            let _ = waiter.tx.send(Err(reason.to_string()));
        }
    }
}

/// One look's pipeline.
struct Line {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    waiting: Arc<Mutex<Waiting>>,
    /// Held across `push_sample` (caps, then buffer: two requests
    /// interleaving there would send a frame under the other's caps), with
    /// the next timestamp.
    push_turn: Mutex<u64>,
}

impl Line {
    fn build(
        model: &ModelArgs,
        look: LookArgs,
        session: &str,
        on_batch: OnBatch,
    ) -> Result<Self, String> {
        let src = gst_app::AppSrc::builder()
            .format(gst::Format::Time)
            .block(false)
            // The service bounds what is in flight (--max-queue).
            .max_buffers(0)
            .max_bytes(0)
            .build();
        let matte = element::make(model, &look, Some(session))?;
        matte.set_property("stats", true);
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .max_buffers(0)
            .build();
        let pipeline = gst::Pipeline::new();
        pipeline
            .add_many([src.upcast_ref(), &matte, sink.upcast_ref()])
            .map_err(|e| e.to_string())?;
        gst::Element::link_many([src.upcast_ref(), &matte, sink.upcast_ref()])
            .map_err(|e| e.to_string())?;

        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let delivered = Arc::clone(&waiting);
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let id = sample.buffer().map(|b| b.offset());
                    let waiter = id.and_then(|id| lock(&delivered).by_id.remove(&id));
                    // A send fails when the request has given up (timed
                    // out, or its client gone); its slot is freed anyway.
                    if let Some(waiter) = waiter {
                        let _ = waiter.tx.send(Ok(sample));
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );

        let failed = Arc::clone(&waiting);
        let bus = pipeline.bus().ok_or("a pipeline without a bus")?;
        // Read where the messages are posted: nobody runs a main loop here.
        bus.set_sync_handler(move |_, msg| {
            match msg.view() {
                gst::MessageView::Error(e) => {
                    // Clients get the error; its debug text (source
                    // paths, internal names) goes to the service's log.
                    let reason = e.error().to_string();
                    let debug = e.debug().filter(|d| !d.is_empty());
                    eprintln!(
                        "u2netmatte serve: pipeline error: {reason}{}",
                        debug.map(|d| format!(" ({d})")).unwrap_or_default()
                    );
                    lock(&failed).fail_all(&reason);
                }
                gst::MessageView::Element(m) => {
                    if let Some(s) = m.structure().filter(|s| s.name() == "u2netmatte-stats")
                        && let (Ok(id), Ok(frames)) =
                            (s.get::<u64>("batch-id"), s.get::<u32>("run-frames"))
                    {
                        on_batch(id, frames);
                    }
                }
                _ => {}
            }
            gst::BusSyncReply::Drop
        });

        if pipeline.set_state(gst::State::Playing).is_err() {
            let reason = lock(&waiting)
                .broken
                .clone()
                .unwrap_or_else(|| "the pipeline did not start".into());
            let _ = pipeline.set_state(gst::State::Null);
            return Err(reason);
        }
        Ok(Self {
            pipeline,
            src,
            waiting,
            push_turn: Mutex::new(0),
        })
    }

    fn broken(&self) -> bool {
        lock(&self.waiting).broken.is_some()
    }

    /// No frame of this pipeline is waiting for its output.
    fn idle(&self) -> bool {
        lock(&self.waiting).by_id.is_empty()
    }

    fn push(
        &self,
        id: u64,
        pic: Picture,
        slot: OwnedSemaphorePermit,
    ) -> Result<oneshot::Receiver<Outcome>, String> {
        let (tx, rx) = oneshot::channel();
        {
            let mut waiting = lock(&self.waiting);
            if let Some(reason) = &waiting.broken {
                return Err(reason.clone());
            }
            waiting.by_id.insert(id, Waiter { tx, _slot: slot });
        }
        let info =
            gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgba, pic.width, pic.height)
                .build()
                .map_err(|e| e.to_string())?;
        let caps = info.to_caps().map_err(|e| e.to_string())?;
        let mut buffer = gst::Buffer::from_mut_slice(pic.rgba);
        let pushed = {
            let mut next_pts = lock(&self.push_turn);
            if let Some(b) = buffer.get_mut() {
                b.set_offset(id);
                // Timestamps only need to rise: 1 ms a frame.
                b.set_pts(gst::ClockTime::from_mseconds(*next_pts));
                b.set_duration(gst::ClockTime::from_mseconds(1));
            }
            *next_pts += 1;
            let sample = gst::Sample::builder().buffer(&buffer).caps(&caps).build();
            self.src.push_sample(&sample)
        };
        if let Err(flow) = pushed {
            lock(&self.waiting).by_id.remove(&id);
            let reason = lock(&self.waiting).broken.clone();
            return Err(reason.unwrap_or_else(|| format!("the pipeline took no frame: {flow:?}")));
        }
        Ok(rx)
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        lock(&self.waiting).fail_all("the service is shutting down");
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Why a frame was not taken.
#[derive(Debug)]
pub enum Refused {
    /// Try again shortly: the service is stopping, or has as many
    /// pipelines as it keeps and none of them is idle.
    Busy(String),
    /// The pipeline could not be built, or failed.
    Failed(String),
}

/// One look's place among the pipelines; its own lock is held while its
/// pipeline is built, so that building one never holds up requests for
/// another look.
struct Slot {
    look: LookArgs,
    line: Mutex<Option<Arc<Line>>>,
}

impl Slot {
    /// Nobody is building its pipeline, using it, or waiting on it. Called
    /// under the bridge's lock, under which every other holder of the
    /// slot took its reference.
    fn unused(self: &Arc<Self>) -> bool {
        if Arc::strong_count(self) > 1 {
            return false;
        }
        match self.line.try_lock() {
            Ok(line) => line
                .as_ref()
                .is_none_or(|l| Arc::strong_count(l) == 1 && l.idle()),
            Err(_) => false,
        }
    }
}

/// Every pipeline of the service, by look.
pub struct Bridge {
    model: ModelArgs,
    session: String,
    on_batch: OnBatch,
    /// The least recently asked for first; never more than MOST_LINES.
    slots: Mutex<VecDeque<Arc<Slot>>>,
    next_id: AtomicU64,
    stopped: AtomicBool,
}

impl Bridge {
    pub fn new(model: ModelArgs, on_batch: OnBatch) -> Self {
        Self {
            model,
            // Process-wide: shared sessions are found by name.
            session: format!("u2netmatte-serve-{}", std::process::id()),
            on_batch,
            slots: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        }
    }

    fn stopping() -> Refused {
        Refused::Busy("the service is stopping".into())
    }

    /// The place for `look`, made when there is none. Every look costs a
    /// pipeline and its threads, so their number is bounded: with
    /// MOST_LINES in use, a new look waits for one to be idle (Busy).
    fn slot(&self, look: LookArgs) -> Result<Arc<Slot>, Refused> {
        let mut evicted = None;
        let slot = {
            let mut slots = lock(&self.slots);
            if self.stopped.load(Ordering::SeqCst) {
                return Err(Self::stopping());
            }
            let slot = match slots.iter().position(|s| s.look == look) {
                Some(i) => slots.remove(i).expect("position is in the deque"),
                None => {
                    if slots.len() >= MOST_LINES {
                        // Only an unused pipeline is let go: stopping one
                        // fails the frames in it.
                        let Some(i) = slots.iter().position(|s| s.unused()) else {
                            return Err(Refused::Busy(format!(
                                "{MOST_LINES} different looks (mode, threshold, feather, fill, \
                                 blur) are in the service at once, the most it keeps; try \
                                 again shortly"
                            )));
                        };
                        evicted = slots.remove(i);
                    }
                    Arc::new(Slot {
                        look,
                        line: Mutex::new(None),
                    })
                }
            };
            slots.push_back(Arc::clone(&slot));
            slot
        };
        // Its pipeline stops here, outside the lock: that waits for threads.
        drop(evicted);
        Ok(slot)
    }

    /// The pipeline for `look`, built (the model loaded, for the first)
    /// when there is none or the last one broke. Blocks: call it off the
    /// async threads.
    fn line(&self, look: LookArgs) -> Result<Arc<Line>, Refused> {
        let slot = self.slot(look)?;
        let mut line = lock(&slot.line);
        if self.stopped.load(Ordering::SeqCst) {
            return Err(Self::stopping());
        }
        if let Some(l) = line.as_ref().filter(|l| !l.broken()) {
            return Ok(Arc::clone(l));
        }
        // A broken pipeline stops before its replacement starts.
        drop(line.take());
        let built = Arc::new(
            Line::build(&self.model, look, &self.session, Arc::clone(&self.on_batch))
                .map_err(Refused::Failed)?,
        );
        if self.stopped.load(Ordering::SeqCst) {
            return Err(Self::stopping());
        }
        *line = Some(Arc::clone(&built));
        Ok(built)
    }

    /// Starts the pipeline for `look` now: a model that cannot load is
    /// found when the service starts, not by its first client.
    pub fn start(&self, look: LookArgs) -> Result<(), String> {
        self.line(look).map(|_| ()).map_err(|e| match e {
            Refused::Busy(m) | Refused::Failed(m) => m,
        })
    }

    /// Sends `pic` through the element as `look` says; `slot` (the
    /// request's place in the service) is held until the frame is out.
    /// Blocks while a new pipeline starts.
    pub fn submit(
        &self,
        pic: Picture,
        look: LookArgs,
        slot: OwnedSemaphorePermit,
    ) -> Result<oneshot::Receiver<Outcome>, Refused> {
        let line = self.line(look)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        line.push(id, pic, slot).map_err(|reason| {
            if self.stopped.load(Ordering::SeqCst) {
                Self::stopping()
            } else {
                Refused::Failed(reason)
            }
        })
    }

    /// The pipelines kept, and of those the ones in use (being built, or
    /// with frames in them).
    pub fn pipelines(&self) -> (usize, usize) {
        let slots = lock(&self.slots);
        let in_use = slots.iter().filter(|s| !s.unused()).count();
        (slots.len(), in_use)
    }

    /// Stops every pipeline (requests still waiting get an error); a
    /// request that comes later is refused rather than starting one.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let slots = std::mem::take(&mut *lock(&self.slots));
        drop(slots);
    }
}
