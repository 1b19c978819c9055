// SPDX-License-Identifier: MPL-2.0
//! The queues between the three stages of the element: the sink pad
//! prepares frames, the inference thread runs batches, the src pad's task
//! pushes. Input: frames and serialized events in arrival order, and the
//! rules for when a batch may leave. Output: finished buffers and the events
//! between them, in the same order.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A prepared input frame waiting for its batch.
#[derive(Debug)]
pub struct Frame {
    /// The input buffer: its pixels for the RGBA modes, only its metadata
    /// (timestamps, flags) in mask mode.
    pub buffer: gst::Buffer,
    pub in_info: gst_video::VideoInfo,
    pub out_info: gst_video::VideoInfo,
    /// The model input for this frame (3 x H x W).
    pub tensor: Vec<f32>,
    pub arrived: Instant,
    /// How long preparing it took (for the stats messages).
    pub prepare_time: Duration,
}

#[derive(Debug)]
pub enum Item {
    Frame(Box<Frame>),
    Event(gst::Event),
}

/// Something finished, waiting to be pushed.
#[derive(Debug)]
pub enum Output {
    Buffer(gst::Buffer),
    Event(gst::Event),
}

/// What the worker should do next.
#[derive(Debug)]
pub enum Next {
    /// Process and push these, in order.
    Work(Vec<Item>),
    /// Nothing can leave before this instant (a live batch deadline).
    WaitUntil(Instant),
    /// Nothing can leave until something is queued.
    Wait,
}

#[derive(Debug)]
pub struct Queue {
    items: VecDeque<Item>,
    frames: usize,
    /// EOS events queued: everything before them leaves without waiting for a
    /// full batch.
    eos_queued: usize,
    /// Serialized queries waiting for everything before them to be pushed.
    drain_requests: usize,
    /// Set while the inference thread holds items it took.
    pub busy: bool,
    /// Finished items for the src pad's task.
    output: VecDeque<Output>,
    output_frames: usize,
    /// Bumped by every flush: work taken before it must not come out.
    pub epoch: u64,
    /// Tells the inference thread to end.
    pub shutdown: bool,
    /// The last flow result downstream gave, or Flushing.
    pub srcresult: Result<gst::FlowSuccess, gst::FlowError>,
    /// Live pipelines: the longest a frame may wait for its batch to fill.
    pub batch_wait: Option<Duration>,
    /// Model-input buffers of frames that have been processed, for reuse.
    spare_tensors: Vec<Vec<f32>>,
}

impl Default for Queue {
    fn default() -> Self {
        Self {
            items: VecDeque::new(),
            frames: 0,
            eos_queued: 0,
            drain_requests: 0,
            busy: false,
            output: VecDeque::new(),
            output_frames: 0,
            epoch: 0,
            shutdown: false,
            srcresult: Err(gst::FlowError::Flushing),
            batch_wait: None,
            spare_tensors: Vec::new(),
        }
    }
}

impl Queue {
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Finished frames not pushed yet.
    pub fn output_frames(&self) -> usize {
        self.output_frames
    }

    /// True when nothing is queued, running or waiting to be pushed.
    pub fn is_idle(&self) -> bool {
        self.items.is_empty() && !self.busy && self.output.is_empty()
    }

    pub fn push_output(&mut self, out: Output) {
        if matches!(out, Output::Buffer(_)) {
            self.output_frames += 1;
        }
        self.output.push_back(out);
    }

    pub fn pop_output(&mut self) -> Option<Output> {
        let out = self.output.pop_front()?;
        if matches!(out, Output::Buffer(_)) {
            self.output_frames -= 1;
        }
        Some(out)
    }

    pub fn push_frame(&mut self, frame: Frame) {
        self.frames += 1;
        self.items.push_back(Item::Frame(Box::new(frame)));
    }

    pub fn push_event(&mut self, event: gst::Event) {
        if event.type_() == gst::EventType::Eos {
            self.eos_queued += 1;
        }
        self.items.push_back(Item::Event(event));
    }

    pub fn request_drain(&mut self) {
        self.drain_requests += 1;
    }

    pub fn end_drain(&mut self) {
        self.drain_requests = self.drain_requests.saturating_sub(1);
    }

    /// Drops everything queued or finished (flushing), keeping the tensors
    /// for reuse; what is running now will be dropped when it ends.
    pub fn clear(&mut self) {
        for item in std::mem::take(&mut self.items) {
            if let Item::Frame(frame) = item {
                self.recycle_tensor(frame.tensor);
            }
        }
        self.frames = 0;
        self.eos_queued = 0;
        self.output.clear();
        self.output_frames = 0;
        self.epoch += 1;
    }

    /// A model-input buffer of `len` values, reused when one is spare.
    pub fn take_tensor(&mut self, len: usize) -> Vec<f32> {
        match self.spare_tensors.pop() {
            Some(mut t) => {
                t.resize(len, 0.0);
                t
            }
            None => vec![0.0; len],
        }
    }

    pub fn recycle_tensor(&mut self, tensor: Vec<f32>) {
        // Enough for a full batch being prepared while another runs.
        if self.spare_tensors.len() < 2 * 64 {
            self.spare_tensors.push(tensor);
        }
    }

    /// Takes what may leave now: leading events at once; frames when a full
    /// batch is queued, when draining, or when the oldest frame's live
    /// deadline has passed; with them the events that follow, up to the next
    /// frame.
    pub fn next(&mut self, batch_size: usize, now: Instant) -> Next {
        let Some(head) = self.items.front() else {
            return Next::Wait;
        };
        let take_frames = match head {
            Item::Event(_) => 0,
            Item::Frame(oldest) => {
                if self.frames >= batch_size || self.eos_queued > 0 || self.drain_requests > 0 {
                    batch_size
                } else if let Some(wait) = self.batch_wait {
                    let deadline = oldest.arrived + wait;
                    if now < deadline {
                        return Next::WaitUntil(deadline);
                    }
                    self.frames
                } else {
                    return Next::Wait;
                }
            }
        };

        let mut taken = Vec::new();
        let mut frames = 0;
        while let Some(item) = self.items.front() {
            if matches!(item, Item::Frame(_)) {
                if frames == take_frames {
                    break;
                }
                frames += 1;
            }
            let Some(item) = self.items.pop_front() else {
                break;
            };
            if let Item::Event(e) = &item
                && e.type_() == gst::EventType::Eos
            {
                self.eos_queued -= 1;
            }
            taken.push(item);
        }
        self.frames -= frames;
        Next::Work(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u64, arrived: Instant) -> Frame {
        let mut buffer = gst::Buffer::new();
        buffer
            .get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_seconds(n));
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, 4, 4)
            .build()
            .unwrap();
        Frame {
            buffer,
            in_info: info.clone(),
            out_info: info,
            tensor: vec![n as f32],
            arrived,
            prepare_time: Duration::ZERO,
        }
    }

    /// The order of what was taken: 'F<pts>' for frames, event names else.
    fn describe(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                Item::Frame(f) => format!("F{}", f.buffer.pts().unwrap().seconds()),
                Item::Event(e) => format!("{:?}", e.type_()),
            })
            .collect()
    }

    #[track_caller]
    fn work(next: Next) -> Vec<String> {
        match next {
            Next::Work(items) => describe(&items),
            other => panic!("expected work, got {other:?}"),
        }
    }

    fn setup() -> (Queue, Instant) {
        gst::init().unwrap();
        (Queue::default(), Instant::now())
    }

    #[test]
    fn leading_events_leave_at_once() {
        let (mut q, now) = setup();
        q.push_event(gst::event::StreamStart::new("s"));
        q.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
            gst::ClockTime,
        >::new()));
        q.push_frame(frame(0, now));
        assert_eq!(work(q.next(2, now)), ["StreamStart", "Segment"]);
        assert!(matches!(q.next(2, now), Next::Wait));
    }

    #[test]
    fn a_full_batch_leaves_with_the_events_after_it() {
        let (mut q, now) = setup();
        q.push_frame(frame(0, now));
        q.push_event(gst::event::Tag::new(gst::TagList::new()));
        q.push_frame(frame(1, now));
        assert!(matches!(q.next(3, now), Next::Wait));
        q.push_frame(frame(2, now));
        q.push_event(gst::event::Gap::builder(gst::ClockTime::ZERO).build());
        q.push_frame(frame(3, now));
        assert_eq!(work(q.next(3, now)), ["F0", "Tag", "F1", "F2", "Gap"]);
        assert_eq!(q.frames(), 1);
    }

    #[test]
    fn eos_drains_a_partial_batch_then_itself() {
        let (mut q, now) = setup();
        for n in 0..5 {
            q.push_frame(frame(n, now));
        }
        q.push_event(gst::event::Eos::new());
        assert_eq!(work(q.next(4, now)), ["F0", "F1", "F2", "F3"]);
        assert_eq!(work(q.next(4, now)), ["F4", "Eos"]);
        assert!(matches!(q.next(4, now), Next::Wait));
    }

    #[test]
    fn live_deadline_runs_a_partial_batch() {
        let (mut q, now) = setup();
        q.batch_wait = Some(Duration::from_millis(100));
        q.push_frame(frame(0, now));
        q.push_frame(frame(1, now + Duration::from_millis(50)));
        match q.next(4, now + Duration::from_millis(60)) {
            Next::WaitUntil(t) => assert_eq!(t, now + Duration::from_millis(100)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            work(q.next(4, now + Duration::from_millis(100))),
            ["F0", "F1"]
        );
    }

    #[test]
    fn drain_request_runs_a_partial_batch() {
        let (mut q, now) = setup();
        q.push_frame(frame(0, now));
        assert!(matches!(q.next(4, now), Next::Wait));
        q.request_drain();
        assert_eq!(work(q.next(4, now)), ["F0"]);
        q.end_drain();
        q.push_frame(frame(1, now));
        assert!(matches!(q.next(4, now), Next::Wait));
    }

    #[test]
    fn outputs_leave_in_order_and_are_counted() {
        let (mut q, _) = setup();
        q.push_output(Output::Event(
            gst::event::Gap::builder(gst::ClockTime::ZERO).build(),
        ));
        q.push_output(Output::Buffer(gst::Buffer::new()));
        assert_eq!(q.output_frames(), 1);
        assert!(!q.is_idle());
        assert!(matches!(q.pop_output(), Some(Output::Event(_))));
        assert!(matches!(q.pop_output(), Some(Output::Buffer(_))));
        assert_eq!(q.output_frames(), 0);
        assert!(q.is_idle());
    }

    #[test]
    fn clear_keeps_tensors_for_reuse() {
        let (mut q, now) = setup();
        q.push_frame(frame(7, now));
        q.push_event(gst::event::Eos::new());
        q.push_output(Output::Buffer(gst::Buffer::new()));
        let epoch = q.epoch;
        q.clear();
        assert_eq!(q.epoch, epoch + 1);
        assert_eq!((q.frames(), q.output_frames()), (0, 0));
        assert!(q.is_idle());
        assert_eq!(q.take_tensor(3), vec![7.0, 0.0, 0.0]);
        assert_eq!(q.take_tensor(2), vec![0.0, 0.0]);
    }
}
