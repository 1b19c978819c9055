// SPDX-License-Identifier: MPL-2.0
//! The streaming state the element's threads share, under one lock: the
//! sink pad's streaming thread queues frames and events in arrival order,
//! the engine's thread fills in masks, the src pad's task takes them in the
//! same order and pushes. One Condvar wakes whoever waits on it.
//!
//! A stream that keeps up (`keep-up`: a live one, or a played one whose
//! synchronised sink sends QoS) does not make its frames wait for their
//! own masks: the model runs on the newest frame whenever it is free (a
//! newer frame replaces one still waiting for the model), and a frame
//! leaves with its own mask, or at its deadline (or at once, when it will
//! get none) with the newest mask there is. Deadlines follow the clock: a
//! frame leaves in time for its sink to render it at its running time
//! (plus the pipeline's latency when live).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::engine::{BatchShare, Client, EngineError, JobId, Mask};
use crate::matte::Mode;
use crate::model::ProviderUsed;
use crate::temporal::TemporalSmoother;

use super::latency::{COMPOSE_ALLOWANCE, Latency};

/// Keeping up, how much of a source the element takes in before its first
/// mask (or before it knows how long a model run takes), and the most
/// frames of one window it holds.
const START_UP_WINDOW: Duration = Duration::from_secs(2);
const MAX_WINDOW_FRAMES: usize = 120;
/// Keeping up, the most bytes of frames the element holds (beyond two
/// batches, which it always may): the RGBA modes hold each frame's colours
/// (a 4K frame is 33 MB), mask mode only timestamps and metas.
pub const MAX_HELD_BYTES: usize = 256 << 20;
/// What a frame held in mask mode costs, for [`MAX_HELD_BYTES`].
const MASK_MODE_FRAME_BYTES: usize = 1024;

/// What stays fixed from READY->PAUSED to PAUSED->READY.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamConfig {
    pub mode: Mode,
    pub batch_size: usize,
    /// The batch-timeout property; None: auto.
    pub batch_timeout: Option<Duration>,
    pub provider: ProviderUsed,
    /// The keep-up property: with a live source, frames do not wait for
    /// their own masks.
    pub keep_up: bool,
}

/// A frame on its way through the element.
#[derive(Debug)]
pub struct PendingFrame {
    /// Its model run; None when a newer frame took its place (keep-up).
    pub job: Option<JobId>,
    pub pts: Option<gst::ClockTime>,
    /// Its running time in its segment: when a synchronised sink renders it
    /// (plus the pipeline's latency).
    pub running_time: Option<gst::ClockTime>,
    /// The caps it came under: masks are not lent across a caps change.
    pub caps_generation: u64,
    /// The RGBA modes: the output buffer, already holding the frame's
    /// colours, timestamps and metas. Mask mode: a buffer without memory
    /// that carries the timestamps, flags and metas. Either way upstream's
    /// buffer was given back when the frame arrived.
    pub buffer: gst::Buffer,
    pub out_info: gst_video::VideoInfo,
    /// When the frame reached the sink pad.
    pub arrived: Instant,
    /// Keep-up: when it leaves with the newest mask if its own is not in,
    /// counted from its arrival (where the clock cannot tell: no running
    /// time, or not PLAYING).
    pub leave_by: Option<Instant>,
    pub prepare_time: Duration,
    /// Set by the engine, or from the newest mask when it leaves without
    /// its own.
    pub mask: Option<Result<Arc<Mask>, EngineError>>,
    /// How much older than this frame the frame its mask came from is.
    pub mask_age: Duration,
    /// Whether `mask` is the frame's own.
    pub own_mask: bool,
    /// The run whose mask it borrowed.
    pub borrowed_from: Option<RunFigures>,
    /// The frame at the model's size (packed RGB), kept while keeping up
    /// (or smoothing) so that a borrowed mask can be moved to it.
    pub small_rgb: Option<Arc<[u8]>>,
    /// The same of the frame whose mask it borrowed (of the same caps).
    pub lent_rgb: Option<Arc<[u8]>>,
    pub inference: Duration,
    pub batch: Option<BatchShare>,
    pub batch_started: Option<Instant>,
    /// When its own mask came in.
    pub mask_ready: Option<Instant>,
}

#[derive(Debug)]
pub enum Item {
    Frame(Box<PendingFrame>),
    Event(gst::Event),
}

/// The figures of one batch, gathered frame by frame for the stats message,
/// with the frames that left since the last message (keep-up: also those
/// that borrowed a newer mask).
#[derive(Debug, Default, Clone, Copy)]
pub struct BatchStats {
    pub id: u64,
    pub frames: usize,
    /// Frames of the run, every client's (a shared session batches
    /// several elements' frames together).
    pub run_frames: usize,
    pub done: usize,
    pub inference: Duration,
    pub prepare: Duration,
    pub compose: Duration,
    pub frames_out: usize,
    pub mask_age_total: Duration,
    pub mask_age_max: Duration,
    /// How far borrowed masks were moved (output pixels, each the mean
    /// over the subject), added up over the frames out, and the most.
    pub motion_shift_total: f64,
    pub motion_shift_max: f64,
    /// The last batch a message was posted for.
    pub reported: Option<u64>,
}

/// What the deliveries of a job need once its frame may have left.
#[derive(Debug)]
pub struct JobInfo {
    pub pts: Option<gst::ClockTime>,
    /// The frame at the model's size (packed RGB), when smoothing or
    /// keeping up.
    pub small_rgb: Option<Arc<[u8]>>,
    /// Caps changes so far: smoothing does not reach across one.
    pub caps_generation: u64,
}

/// The newest mask of the stream, for frames that leave without their own.
#[derive(Debug, Clone)]
pub struct NewestMask {
    pub job: JobId,
    pub pts: Option<gst::ClockTime>,
    pub caps_generation: u64,
    pub mask: Arc<Mask>,
    /// The run that made it.
    pub run: RunFigures,
    /// Its frame at the model's size, if kept.
    pub small_rgb: Option<Arc<[u8]>>,
}

/// How `temporal-smoothing` runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Smoothing {
    /// The property: 0 is off.
    pub strength: f64,
    /// `motion-compensation`: the average follows the picture's motion.
    pub follow_motion: bool,
}

/// A model run, for the stats of frames that borrow its mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunFigures {
    pub batch: BatchShare,
    pub inference: Duration,
}

pub struct State {
    pub items: VecDeque<Item>,
    /// Frames in `items`.
    pub frames: usize,
    /// The src pad task holds an item it took and has not pushed yet.
    pub pushing: bool,
    /// The last flow result downstream gave, or Flushing.
    pub srcresult: Result<gst::FlowSuccess, gst::FlowError>,
    pub eos: bool,
    pub config: Option<StreamConfig>,
    pub client: Option<Arc<Client>>,
    pub in_info: Option<gst_video::VideoInfo>,
    pub out_info: Option<gst_video::VideoInfo>,
    /// Whether upstream is live; None until asked in this stream.
    pub live: Option<bool>,
    /// Whether a sink downstream synchronises to the clock (it answers a
    /// LATENCY query as live, or sends QoS); None until asked in this
    /// stream. A stream that is not live then keeps up with the clock too
    /// (keep-up): frames leave in time for their sink.
    pub synced: Option<bool>,
    /// The model's time for a frame, as of its last run for this stream.
    pub frame_time: Option<Duration>,
    /// The segment of the frames arriving now.
    pub segment: Option<gst::FormattedSegment<gst::ClockTime>>,
    /// The element is PLAYING (set in its state change, before the parent
    /// class makes it so: the base time is set by then).
    pub playing: bool,
    /// Where running time 0 falls on this process's clock while PLAYING
    /// (None otherwise); refreshed by the src pad's task.
    pub clock_origin: Option<Instant>,
    /// Live: upstream's minimum latency, from the last LATENCY answer.
    pub upstream_latency: Option<Duration>,
    pub latency: Latency,
    /// The latency answered before the model's time was known (a guess,
    /// replaced and re-announced once it is).
    pub latency_provisional: bool,
    /// When a live pipeline first had the LATENCY answer: frames that came
    /// before (the first ones, while sinks preroll and the model warms up)
    /// were held by no promise.
    pub latency_answered: Option<Instant>,
    /// Sticky events a flush took out of `items`, for the src pad to keep
    /// (as GstQueue does): downstream must not keep caps of the wrong size.
    pub kept_sticky: Vec<gst::Event>,
    pub stats: BatchStats,
    /// Jobs submitted and not delivered yet.
    pub jobs: HashMap<JobId, JobInfo>,
    pub newest: Option<NewestMask>,
    /// The newest job failed: frames that gave their jobs way to it, and
    /// have no mask to borrow, leave with its error rather than wait.
    pub newest_error: Option<EngineError>,
    pub caps_generation: u64,
    /// Flushes so far: smoothing does not reach across one.
    pub flushes: u64,
}

impl Default for State {
    fn default() -> Self {
        Self {
            items: VecDeque::new(),
            frames: 0,
            pushing: false,
            srcresult: Err(gst::FlowError::Flushing),
            eos: false,
            config: None,
            client: None,
            in_info: None,
            out_info: None,
            live: None,
            synced: None,
            frame_time: None,
            segment: None,
            playing: false,
            clock_origin: None,
            upstream_latency: None,
            latency: Latency::default(),
            latency_provisional: false,
            latency_answered: None,
            kept_sticky: Vec::new(),
            stats: BatchStats::default(),
            jobs: HashMap::new(),
            newest: None,
            newest_error: None,
            flushes: 0,
            caps_generation: 0,
        }
    }
}

/// What [`State::pop_ready`] found at the front.
#[derive(Debug)]
pub enum Next {
    Ready(Item),
    /// Nothing may leave before this instant (keep-up), unless a mask
    /// comes first.
    WaitUntil(Instant),
    Wait,
}

impl State {
    pub fn push_frame(&mut self, frame: PendingFrame) {
        self.frames += 1;
        self.items.push_back(Item::Frame(Box::new(frame)));
    }

    pub fn push_event(&mut self, event: gst::Event) {
        self.items.push_back(Item::Event(event));
    }

    /// Whether frames leave by a deadline without waiting for their own
    /// masks.
    pub fn keeps_up(&self) -> bool {
        (self.live == Some(true) || self.synced == Some(true))
            && self.config.is_some_and(|c| c.keep_up)
    }

    /// Keeping up, when a frame still waiting for its own mask leaves with
    /// the newest one: in time for the sink to render it (its running time,
    /// plus the pipeline's latency when live, less the time to compose and
    /// push it); where the clock cannot tell, `wait` after it arrived.
    pub fn deadline(&self, frame: &PendingFrame) -> Option<Instant> {
        if !self.keeps_up() {
            return frame.leave_by;
        }
        let latency = if self.live == Some(true) {
            // Unknown until the pipeline has asked and the model was timed.
            let known = !self.latency.leave_after.is_zero();
            match self.upstream_latency {
                Some(upstream) if known => Some(upstream + self.latency.own()),
                _ => None,
            }
        } else {
            Some(Duration::ZERO)
        };
        let clocked = match (self.clock_origin, frame.running_time, latency) {
            (Some(origin), Some(running_time), Some(latency)) => {
                let render = origin + Duration::from(running_time) + latency;
                Some(render.checked_sub(COMPOSE_ALLOWANCE).unwrap_or(render))
            }
            _ => None,
        };
        clocked.or(frame.leave_by)
    }

    /// The mask a frame without its own may borrow: the newest of the same
    /// caps (another scene's mask would cut out the wrong shape); a frame
    /// that will never get its own takes a later scene's rather than wait
    /// forever.
    fn loan_for(&self, frame: &PendingFrame) -> Option<NewestMask> {
        self.newest
            .as_ref()
            .filter(|n| {
                n.caps_generation == frame.caps_generation
                    || (frame.job.is_none() && n.caps_generation > frame.caps_generation)
            })
            .cloned()
    }

    /// Keeping up a stream that is not live, how far ahead of the sink the
    /// element holds frames: so that the model, run on the newest one, has
    /// its mask in before that frame is due (one run with margin, plus the
    /// time to compose and push).
    pub fn look_ahead_for(frame_time: Option<Duration>) -> Duration {
        frame_time.map_or(START_UP_WINDOW, |t| {
            (t.mul_f64(1.5) + COMPOSE_ALLOWANCE).min(START_UP_WINDOW)
        })
    }

    /// The most frames the sink pad lets in before it waits: two batches
    /// (one running, one filling); keeping up, also every frame that may
    /// arrive while one waits for its deadline (live: one latency, so that
    /// the source is never held back; played: the look-ahead), within
    /// [`MAX_HELD_BYTES`].
    pub fn frame_limit(&self) -> usize {
        let Some(config) = self.config else { return 1 };
        let batches = 2 * config.batch_size;
        if !self.keeps_up() {
            return batches;
        }
        let fps = self
            .in_info
            .as_ref()
            .map(|i| i.fps())
            .filter(|f| f.numer() > 0 && f.denom() > 0);
        let window = if self.live == Some(true) {
            // Until the latency is known, the first mask is still to come
            // (the model warming up): take the frames of a start-up window
            // rather than hold a live source back (its frames would come
            // late).
            match self.latency.own() {
                d if d.is_zero() => START_UP_WINDOW,
                d => d,
            }
        } else {
            Self::look_ahead_for(self.frame_time)
        };
        let in_window = match fps {
            // In whole numbers: 500 ms at 30 fps is 15 frames, not 16.
            Some(fps) => usize::try_from(
                (window.as_nanos() * fps.numer().unsigned_abs() as u128)
                    .div_ceil(fps.denom().unsigned_abs() as u128 * 1_000_000_000),
            )
            .unwrap_or(usize::MAX),
            None => 30,
        };
        let by_time = batches + in_window.min(MAX_WINDOW_FRAMES) + 2;
        let frame_bytes = match (config.mode, &self.out_info) {
            (Mode::Mask, _) | (_, None) => MASK_MODE_FRAME_BYTES,
            (_, Some(info)) => info.size().max(1),
        };
        by_time.min((MAX_HELD_BYTES / frame_bytes).max(batches))
    }

    /// Takes the next item if it may leave: an event, a frame whose mask
    /// is there, or (keep-up) a frame that is due or will get no mask of
    /// its own, with the newest mask.
    pub fn pop_ready(&mut self, now: Instant) -> Next {
        enum Leaves {
            AsItIs,
            Borrowing(NewestMask),
            Failing(EngineError),
        }
        let leaves = match self.items.front() {
            None => return Next::Wait,
            Some(Item::Frame(f)) if f.mask.is_none() => {
                let deadline = self.deadline(f);
                match (self.loan_for(f), f.job) {
                    (Some(_), Some(_)) if deadline.is_none_or(|t| t > now) => {
                        return deadline.map_or(Next::Wait, Next::WaitUntil);
                    }
                    (Some(newest), _) => Leaves::Borrowing(newest),
                    // The job that took its place failed: so does it.
                    (None, None) if self.newest_error.is_some() => {
                        Leaves::Failing(self.newest_error.clone().unwrap_or(EngineError::Stopped))
                    }
                    (None, _) => return Next::Wait,
                }
            }
            Some(_) => Leaves::AsItIs,
        };
        if let Some(Item::Frame(f)) = self.items.front_mut() {
            match leaves {
                Leaves::AsItIs => {}
                Leaves::Borrowing(newest) => {
                    // Played ahead, the newest mask may be a later frame's.
                    f.mask_age = match (f.pts, newest.pts) {
                        (Some(this), Some(that)) => {
                            Duration::from_nanos(this.nseconds().abs_diff(that.nseconds()))
                        }
                        _ => Duration::ZERO,
                    };
                    f.mask = Some(Ok(newest.mask));
                    f.borrowed_from = Some(newest.run);
                    // Motion is only estimated within one scene.
                    f.lent_rgb = newest
                        .small_rgb
                        .filter(|_| newest.caps_generation == f.caps_generation);
                }
                Leaves::Failing(error) => f.mask = Some(Err(error)),
            }
        }
        let Some(item) = self.items.pop_front() else {
            return Next::Wait;
        };
        if matches!(item, Item::Frame(_)) {
            self.frames -= 1;
        }
        Next::Ready(item)
    }

    /// Takes a job's mask: smooths it over time (`smoothing`), keeps it as
    /// the newest, and hands it to its frame if the frame is still here.
    /// False if the job is unknown (flushed).
    pub fn deliver(&mut self, delivery: crate::engine::Delivery) -> bool {
        let Some(info) = self.jobs.remove(&delivery.job) else {
            return false;
        };
        if delivery.result.is_ok() {
            self.frame_time = Some(delivery.inference);
        }
        let result = delivery.result.map(Arc::new);
        if let Err(e) = &result
            && self.newest.as_ref().is_none_or(|n| n.job < delivery.job)
        {
            self.newest_error = Some(e.clone());
        }
        if let Ok(mask) = &result
            && self.newest.as_ref().is_none_or(|n| n.job < delivery.job)
        {
            self.newest = Some(NewestMask {
                job: delivery.job,
                pts: info.pts,
                caps_generation: info.caps_generation,
                mask: mask.clone(),
                run: RunFigures {
                    batch: delivery.batch,
                    inference: delivery.inference,
                },
                small_rgb: info.small_rgb.clone(),
            });
        }
        let frame = self.items.iter_mut().find_map(|item| match item {
            Item::Frame(f) if f.job == Some(delivery.job) && f.mask.is_none() => Some(f),
            _ => None,
        });
        if let Some(frame) = frame {
            frame.mask = Some(result);
            frame.own_mask = true;
            frame.inference = delivery.inference;
            frame.batch = Some(delivery.batch);
            frame.batch_started = Some(delivery.batch_started);
            frame.mask_ready = Some(Instant::now());
        }
        true
    }

    /// Gives the frames queued without a deadline one, `wait` after they
    /// came.
    pub fn set_deadlines(&mut self, wait: Duration) {
        for item in &mut self.items {
            if let Item::Frame(f) = item
                && f.leave_by.is_none()
            {
                f.leave_by = Some(f.arrived + wait);
            }
        }
    }

    /// Frames whose jobs a newer frame replaced get no mask of their own.
    pub fn superseded(&mut self, jobs: &[JobId]) {
        for job in jobs {
            self.jobs.remove(job);
        }
        for item in &mut self.items {
            if let Item::Frame(f) = item
                && f.job.is_some_and(|j| jobs.contains(&j))
            {
                f.job = None;
            }
        }
    }

    /// Drops everything queued (flushing). Sticky events other than SEGMENT
    /// and EOS are kept aside, in order, for the src pad to store (it keeps
    /// the last of each kind).
    pub fn clear(&mut self) {
        for item in std::mem::take(&mut self.items) {
            if let Item::Event(e) = item
                && e.is_sticky()
                && !matches!(e.type_(), gst::EventType::Segment | gst::EventType::Eos)
            {
                self.kept_sticky.push(e);
            }
        }
        self.frames = 0;
        self.stats = BatchStats::default();
        self.jobs.clear();
        // The smoother (see `Shared::smooth`) starts afresh.
        self.flushes += 1;
        // The frames after a flush (a seek) are of another scene.
        self.newest = None;
        self.newest_error = None;
    }

    /// True when nothing is queued or being pushed.
    pub fn is_drained(&self) -> bool {
        self.items.is_empty() && !self.pushing
    }
}

/// The state and the Condvar that goes with it. Shared with the engine's
/// delivery callback, which holds it weakly.
#[derive(Default)]
pub struct Shared {
    state: Mutex<State>,
    pub cond: Condvar,
    /// `temporal-smoothing`'s past, apart from the state: following the
    /// motion takes milliseconds, which must not hold the state's lock
    /// (the streaming threads wait on it).
    smoother: Mutex<SmootherSlot>,
}

#[derive(Default)]
struct SmootherSlot {
    smoother: TemporalSmoother,
    /// The (caps generation, flushes) of the last mask it smoothed.
    stream: (u64, u64),
}

impl Shared {
    /// Smooths a delivered mask over time as `smoothing` says, before it
    /// is delivered; called by the delivery thread alone. A job already
    /// flushed is left as it is (`State::deliver` drops it).
    pub fn smooth(&self, delivery: &mut crate::engine::Delivery, smoothing: Smoothing) {
        let job = {
            let state = self.lock();
            state.jobs.get(&delivery.job).map(|info| {
                (
                    info.small_rgb.clone(),
                    (info.caps_generation, state.flushes),
                )
            })
        };
        let Some((rgb, stream)) = job else { return };
        let mut slot = self.smoother.lock().unwrap_or_else(PoisonError::into_inner);
        if smoothing.strength <= 0.0 {
            slot.smoother.reset();
            return;
        }
        if slot.stream != stream {
            slot.smoother.reset();
            slot.stream = stream;
        }
        if let Ok(mask) = &mut delivery.result {
            let (w, h) = (mask.width, mask.height);
            slot.smoother.smooth(
                smoothing.strength,
                smoothing.follow_motion,
                rgb.as_deref().unwrap_or_default(),
                &mut mask.data,
                w,
                h,
            );
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.cond
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn wait_until<'a>(
        &self,
        guard: MutexGuard<'a, State>,
        deadline: Instant,
    ) -> MutexGuard<'a, State> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        self.cond
            .wait_timeout(guard, timeout)
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(job: JobId, pts_ms: u64) -> PendingFrame {
        PendingFrame {
            job: Some(job),
            pts: Some(gst::ClockTime::from_mseconds(pts_ms)),
            running_time: Some(gst::ClockTime::from_mseconds(pts_ms)),
            caps_generation: 0,
            buffer: gst::Buffer::new(),
            out_info: gst_video::VideoInfo::builder(gst_video::VideoFormat::Gray8, 4, 4)
                .build()
                .unwrap(),
            arrived: Instant::now(),
            leave_by: None,
            prepare_time: Duration::ZERO,
            mask: None,
            mask_age: Duration::ZERO,
            own_mask: false,
            borrowed_from: None,
            small_rgb: None,
            lent_rgb: None,
            inference: Duration::ZERO,
            batch: None,
            batch_started: None,
            mask_ready: None,
        }
    }

    fn delivery(job: JobId) -> crate::engine::Delivery {
        crate::engine::Delivery {
            job,
            result: Ok(Mask {
                data: vec![job as u8],
                width: 1,
                height: 1,
            }),
            batch: BatchShare {
                id: 0,
                frames: 1,
                run_frames: 1,
            },
            batch_started: Instant::now(),
            inference: Duration::ZERO,
            provider: ProviderUsed::Cpu,
        }
    }

    /// Queues a frame and its job, as the sink pad does.
    fn queue(s: &mut State, f: PendingFrame) {
        if let Some(job) = f.job {
            s.jobs.insert(
                job,
                JobInfo {
                    pts: f.pts,
                    small_rgb: None,
                    caps_generation: f.caps_generation,
                },
            );
        }
        s.push_frame(f);
    }

    #[track_caller]
    fn left(s: &mut State, now: Instant) -> (Option<JobId>, u8, Duration, bool) {
        match s.pop_ready(now) {
            Next::Ready(Item::Frame(f)) => {
                let mask = f.mask.unwrap().unwrap();
                (f.job, mask.data[0], f.mask_age, f.own_mask)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn frames_leave_in_order_once_their_masks_are_in() {
        gst::init().unwrap();
        let mut s = State::default();
        let now = Instant::now();
        s.push_event(gst::event::StreamStart::new("s"));
        queue(&mut s, frame(1, 0));
        queue(&mut s, frame(2, 40));
        assert!(matches!(s.pop_ready(now), Next::Ready(Item::Event(_))));
        // Frame 2's mask does not let it overtake frame 1.
        assert!(s.deliver(delivery(2)));
        assert!(matches!(s.pop_ready(now), Next::Wait));
        assert!(s.deliver(delivery(1)));
        assert_eq!(left(&mut s, now), (Some(1), 1, Duration::ZERO, true));
        assert_eq!(left(&mut s, now), (Some(2), 2, Duration::ZERO, true));
        assert_eq!(s.frames, 0);
        assert!(!s.deliver(delivery(3)), "an unknown job is ignored");
    }

    #[test]
    fn keeping_up_frames_leave_at_their_deadline_with_the_newest_mask() {
        gst::init().unwrap();
        let mut s = State::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Frame 1 ran; frame 2 is running; frame 3's job gave way to 4's.
        for (job, pts) in [(1, 0), (2, 40), (3, 80), (4, 120)] {
            let mut f = frame(job, pts);
            f.leave_by = Some(t0 + ms(300 + pts));
            queue(&mut s, f);
        }
        s.superseded(&[3]);
        // No mask at all yet: nothing to leave with, whatever the deadline.
        assert!(matches!(s.pop_ready(t0 + ms(400)), Next::Wait));
        assert!(s.deliver(delivery(1)));
        assert_eq!(left(&mut s, t0), (Some(1), 1, Duration::ZERO, true));
        // Frame 2 waits for its own mask until its deadline...
        assert!(matches!(s.pop_ready(t0), Next::WaitUntil(t) if t == t0 + ms(340)));
        // ...then leaves with frame 1's, 40 ms older.
        assert_eq!(left(&mut s, t0 + ms(340)), (Some(2), 1, ms(40), false));
        // Frame 3 will get no mask: it leaves at once with the newest.
        assert_eq!(left(&mut s, t0 + ms(340)), (None, 1, ms(80), false));
        // Frame 2's mask, late, becomes the newest; frame 4 still waits for
        // its own until its deadline, then takes frame 2's.
        assert!(s.deliver(delivery(2)));
        assert!(matches!(s.pop_ready(t0 + ms(350)), Next::WaitUntil(_)));
        assert_eq!(left(&mut s, t0 + ms(420)), (Some(4), 2, ms(80), false));
        // A mask older than the newest does not replace it.
        assert!(s.deliver(delivery(4)));
        s.jobs.insert(
            1,
            JobInfo {
                pts: None,
                small_rgb: None,
                caps_generation: 0,
            },
        );
        assert!(s.deliver(delivery(1)));
        assert_eq!(s.newest.as_ref().unwrap().job, 4);
    }

    #[test]
    fn a_flush_keeps_sticky_events_but_segment_and_eos() {
        gst::init().unwrap();
        let mut s = State::default();
        let caps = |w: i32| {
            gst::event::Caps::new(&gst::Caps::builder("video/x-raw").field("width", w).build())
        };
        s.push_event(caps(10));
        s.push_frame(frame(1, 0));
        s.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
            gst::ClockTime,
        >::new()));
        s.push_event(caps(20));
        s.push_event(gst::event::Tag::new(gst::TagList::new()));
        s.push_event(gst::event::Gap::builder(gst::ClockTime::ZERO).build());
        s.push_event(gst::event::Eos::new());
        s.clear();
        assert!(s.is_drained());
        assert_eq!(s.frames, 0);
        let kept: Vec<_> = s.kept_sticky.iter().map(|e| e.type_()).collect();
        assert_eq!(
            kept,
            [
                gst::EventType::Caps,
                gst::EventType::Caps,
                gst::EventType::Tag
            ]
        );
        match s.kept_sticky[1].view() {
            gst::EventView::Caps(c) => {
                assert_eq!(c.caps().structure(0).unwrap().get::<i32>("width"), Ok(20))
            }
            _ => unreachable!(),
        }
    }

    fn keeping_up(live: bool) -> State {
        let mut s = State {
            config: Some(StreamConfig {
                mode: Mode::Composite,
                batch_size: 4,
                batch_timeout: None,
                provider: ProviderUsed::Cpu,
                keep_up: true,
            }),
            live: Some(live),
            synced: Some(!live),
            ..Default::default()
        };
        s.newest = None;
        s
    }

    #[test]
    fn played_frames_leave_by_their_render_time_on_the_clock() {
        gst::init().unwrap();
        let mut s = keeping_up(false);
        let origin = Instant::now();
        let ms = Duration::from_millis;
        queue(&mut s, frame(1, 0));
        queue(&mut s, frame(2, 500));
        assert!(s.deliver(delivery(1)));
        assert_eq!(left(&mut s, origin), (Some(1), 1, Duration::ZERO, true));
        // Not PLAYING: no clock, so frame 2 waits for its own mask.
        assert!(matches!(s.pop_ready(origin + ms(900)), Next::Wait));
        // PLAYING: it leaves by its running time less the time to compose.
        s.clock_origin = Some(origin);
        let due = origin + ms(500) - COMPOSE_ALLOWANCE;
        assert!(matches!(s.pop_ready(origin), Next::WaitUntil(t) if t == due));
        assert_eq!(left(&mut s, due), (Some(2), 1, ms(500), false));
        // Without a sink that syncs, frames wait for their own masks.
        let mut s = keeping_up(false);
        s.synced = Some(false);
        s.clock_origin = Some(origin);
        queue(&mut s, frame(3, 0));
        assert!(s.deliver(delivery(3)));
        queue(&mut s, frame(4, 40));
        left(&mut s, origin);
        assert!(matches!(s.pop_ready(origin + ms(5000)), Next::Wait));
    }

    #[test]
    fn live_frames_leave_by_their_running_time_plus_the_latency() {
        gst::init().unwrap();
        let mut s = keeping_up(true);
        let origin = Instant::now();
        let ms = Duration::from_millis;
        s.latency.leave_after = ms(300);
        s.latency.processing = ms(400);
        s.upstream_latency = Some(ms(50));
        s.clock_origin = Some(origin);
        let mut f = frame(1, 1000);
        // Came late: the clock, not its arrival, says when it must go.
        f.arrived = origin + ms(1200);
        f.leave_by = Some(f.arrived + ms(300));
        assert_eq!(
            s.deadline(&f),
            Some(origin + ms(1000 + 50 + 400) - COMPOSE_ALLOWANCE)
        );
        // Until the pipeline has asked for the latency: its arrival.
        s.upstream_latency = None;
        assert_eq!(s.deadline(&f), f.leave_by);
    }

    #[test]
    fn no_mask_is_lent_across_a_flush_or_a_caps_change() {
        gst::init().unwrap();
        let mut s = keeping_up(true);
        let t0 = Instant::now();
        queue(&mut s, frame(1, 0));
        assert!(s.deliver(delivery(1)));
        left(&mut s, t0);
        // New caps: frame 2 is due but waits for a mask of its own scene.
        let mut f = frame(2, 40);
        f.caps_generation = 1;
        f.leave_by = Some(t0);
        queue(&mut s, f);
        assert!(matches!(s.pop_ready(t0), Next::Wait));
        // Its job gave way to frame 3's (same caps): it waits for that mask.
        let mut f = frame(3, 80);
        f.caps_generation = 1;
        queue(&mut s, f);
        s.superseded(&[2]);
        assert!(matches!(s.pop_ready(t0), Next::Wait));
        assert!(s.deliver(delivery(3)));
        assert_eq!(
            left(&mut s, t0),
            (None, 3, Duration::from_millis(40), false)
        );
        left(&mut s, t0);
        // A frame that will never get its own mask takes a later scene's
        // rather than wait forever (two caps changes within one model run).
        let mut f = frame(4, 120);
        f.job = None;
        queue(&mut s, f);
        assert_eq!(
            left(&mut s, t0),
            (None, 3, Duration::from_millis(40), false)
        );
        // A flush forgets the newest mask.
        s.clear();
        assert!(s.newest.is_none());
        let mut f = frame(5, 160);
        f.leave_by = Some(t0);
        queue(&mut s, f);
        assert!(matches!(s.pop_ready(t0), Next::Wait));
    }

    #[test]
    fn frames_whose_jobs_gave_way_to_one_that_failed_fail_too() {
        gst::init().unwrap();
        let mut s = keeping_up(true);
        let t0 = Instant::now();
        // No mask yet; frame 1's job gave way to frame 2's, which fails.
        queue(&mut s, frame(1, 0));
        queue(&mut s, frame(2, 40));
        s.superseded(&[1]);
        assert!(matches!(s.pop_ready(t0), Next::Wait));
        let mut failed = delivery(2);
        failed.result = Err(EngineError::Stopped);
        assert!(s.deliver(failed));
        for job in [None, Some(2)] {
            match s.pop_ready(t0) {
                Next::Ready(Item::Frame(f)) => {
                    assert_eq!(f.job, job);
                    assert_eq!(f.mask.unwrap().unwrap_err(), EngineError::Stopped);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn keeping_up_holds_a_bounded_number_of_bytes() {
        gst::init().unwrap();
        let mut s = keeping_up(true);
        let uhd = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgba, 3840, 2160)
            .fps(gst::Fraction::new(60, 1))
            .build()
            .unwrap();
        s.in_info = Some(uhd.clone());
        s.out_info = Some(uhd.clone());
        // Before the latency is known: a start-up window of 2 s at 60 fps
        // would be 120 frames (4 GB); two batches is what the bytes allow.
        assert_eq!(s.frame_limit(), 8);
        // Small frames: the window decides.
        let small = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgba, 320, 240)
            .fps(gst::Fraction::new(30, 1))
            .build()
            .unwrap();
        s.in_info = Some(small.clone());
        s.out_info = Some(small);
        s.latency.processing = Duration::from_millis(500);
        assert_eq!(s.frame_limit(), 8 + 15 + 2);
        // Mask mode holds no colours.
        s.config.as_mut().unwrap().mode = Mode::Mask;
        s.in_info = Some(uhd.clone());
        s.out_info = Some(uhd);
        assert_eq!(s.frame_limit(), 8 + 30 + 2);
    }
}
