// SPDX-License-Identifier: MPL-2.0
//! The streaming state the element's threads share, under one lock: the
//! sink pad's streaming thread queues frames and events in arrival order,
//! the engine's thread fills in masks, the src pad's task takes them in the
//! same order and pushes. One Condvar wakes whoever waits on it.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::engine::{BatchShare, Client, EngineError, JobId, Mask};
use crate::matte::Mode;
use crate::model::ProviderUsed;

use super::latency::Latency;

/// What stays fixed from READY->PAUSED to PAUSED->READY.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamConfig {
    pub mode: Mode,
    pub batch_size: usize,
    /// The batch-timeout property; None: auto.
    pub batch_timeout: Option<Duration>,
    pub provider: ProviderUsed,
}

/// A frame on its way through the element.
#[derive(Debug)]
pub struct PendingFrame {
    pub job: JobId,
    /// The RGBA modes: the output buffer, already holding the frame's
    /// colours, timestamps and metas. Mask mode: a buffer without memory
    /// that carries the timestamps, flags and metas. Either way upstream's
    /// buffer was given back when the frame arrived.
    pub buffer: gst::Buffer,
    pub out_info: gst_video::VideoInfo,
    /// When the frame reached the sink pad.
    pub arrived: Instant,
    pub prepare_time: Duration,
    /// Set by the engine.
    pub mask: Option<Result<Mask, EngineError>>,
    pub inference: Duration,
    pub batch: Option<BatchShare>,
    pub batch_started: Option<Instant>,
}

#[derive(Debug)]
pub enum Item {
    Frame(Box<PendingFrame>),
    Event(gst::Event),
}

/// The figures of one batch, gathered frame by frame for the stats message.
#[derive(Debug, Default, Clone, Copy)]
pub struct BatchStats {
    pub id: u64,
    pub frames: usize,
    pub done: usize,
    pub inference: Duration,
    pub prepare: Duration,
    pub compose: Duration,
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
    pub latency: Latency,
    /// When a live pipeline first had the LATENCY answer: frames that came
    /// before (the first ones, while sinks preroll and the model warms up)
    /// were held by no promise.
    pub latency_answered: Option<Instant>,
    /// Sticky events a flush took out of `items`, for the src pad to keep
    /// (as GstQueue does): downstream must not keep caps of the wrong size.
    pub kept_sticky: Vec<gst::Event>,
    pub stats: BatchStats,
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
            latency: Latency::default(),
            latency_answered: None,
            kept_sticky: Vec::new(),
            stats: BatchStats::default(),
        }
    }
}

impl State {
    pub fn push_frame(&mut self, frame: PendingFrame) {
        self.frames += 1;
        self.items.push_back(Item::Frame(Box::new(frame)));
    }

    pub fn push_event(&mut self, event: gst::Event) {
        self.items.push_back(Item::Event(event));
    }

    /// Takes the next item if it may leave: an event, or a frame whose mask
    /// is there.
    pub fn pop_ready(&mut self) -> Option<Item> {
        let ready = match self.items.front()? {
            Item::Event(_) => true,
            Item::Frame(f) => f.mask.is_some(),
        };
        if !ready {
            return None;
        }
        let item = self.items.pop_front()?;
        if matches!(item, Item::Frame(_)) {
            self.frames -= 1;
        }
        Some(item)
    }

    /// Hands a mask to its frame; false if the frame is gone (flushed).
    pub fn deliver(&mut self, delivery: crate::engine::Delivery) -> bool {
        let frame = self.items.iter_mut().find_map(|item| match item {
            Item::Frame(f) if f.job == delivery.job => Some(f),
            _ => None,
        });
        let Some(frame) = frame else {
            return false;
        };
        frame.mask = Some(delivery.result);
        frame.inference = delivery.inference;
        frame.batch = Some(delivery.batch);
        frame.batch_started = Some(delivery.batch_started);
        true
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
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.cond
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(job: JobId) -> PendingFrame {
        PendingFrame {
            job,
            buffer: gst::Buffer::new(),
            out_info: gst_video::VideoInfo::builder(gst_video::VideoFormat::Gray8, 4, 4)
                .build()
                .unwrap(),
            arrived: Instant::now(),
            prepare_time: Duration::ZERO,
            mask: None,
            inference: Duration::ZERO,
            batch: None,
            batch_started: None,
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
            batch: BatchShare { id: 0, frames: 1 },
            batch_started: Instant::now(),
            inference: Duration::ZERO,
        }
    }

    #[test]
    fn frames_leave_in_order_once_their_masks_are_in() {
        gst::init().unwrap();
        let mut s = State::default();
        s.push_event(gst::event::StreamStart::new("s"));
        s.push_frame(frame(1));
        s.push_frame(frame(2));
        assert!(matches!(s.pop_ready(), Some(Item::Event(_))));
        // Frame 2's mask does not let it overtake frame 1.
        assert!(s.deliver(delivery(2)));
        assert!(s.pop_ready().is_none());
        assert!(s.deliver(delivery(1)));
        for job in [1, 2] {
            match s.pop_ready() {
                Some(Item::Frame(f)) => assert_eq!(f.job, job),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(s.frames, 0);
        assert!(!s.deliver(delivery(3)), "an unknown frame is ignored");
    }

    #[test]
    fn a_flush_keeps_sticky_events_but_segment_and_eos() {
        gst::init().unwrap();
        let mut s = State::default();
        let caps = |w: i32| {
            gst::event::Caps::new(&gst::Caps::builder("video/x-raw").field("width", w).build())
        };
        s.push_event(caps(10));
        s.push_frame(frame(1));
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
}
