// SPDX-License-Identifier: MPL-2.0
//! The src pad: its task takes frames in order as their masks come in,
//! composes them and pushes them with the events between them, so that a
//! downstream that blocks (a sink syncing to the clock) never stalls
//! inference.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::frames;
use super::imp::{CAT, U2NetMatte, lock};
use super::sink::unreported;
use super::state::{BatchStats, Item, Next, PendingFrame};

fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
use crate::engine::{Mask, panic_message};
use crate::matte::Composite;

impl U2NetMatte {
    pub(super) fn start_task(&self) -> Result<(), glib::BoolError> {
        self.shared.lock().srcresult = Ok(gst::FlowSuccess::Ok);
        self.launch_task()
    }

    /// Starts the src pad's task on whatever `srcresult` says.
    fn launch_task(&self) -> Result<(), glib::BoolError> {
        self.shared.cond.notify_all();
        let imp = self.ref_counted();
        let ret = self.srcpad.start_task(move || imp.src_loop());
        if ret.is_err() {
            self.shared.lock().srcresult = Err(gst::FlowError::Error);
        }
        ret
    }

    fn src_loop(&self) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.push_next()));
        let err = match result {
            Ok(Ok(_)) => return,
            Ok(Err(err)) => err,
            Err(panic) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    ("the src pad's task panicked: {}", panic_message(&*panic))
                );
                gst::FlowError::Error
            }
        };
        let eos = {
            let mut state = self.shared.lock();
            state.pushing = false;
            if state.srcresult != Err(gst::FlowError::Flushing) {
                state.srcresult = Err(err);
            }
            state.eos
        };
        self.shared.cond.notify_all();
        gst::debug!(CAT, imp = self, "pausing task: {err:?}");
        // Upstream hears of the error from its next push; after EOS there is
        // none, so tell the application here, as GstQueue does.
        if eos && unreported(err) {
            gst::element_imp_error!(
                self,
                gst::StreamError::Failed,
                ("Internal data stream error."),
                ["streaming task paused, reason {err:?}"]
            );
        }
        let _ = self.srcpad.pause_task();
    }

    /// Waits for the next item that may leave and pushes it.
    fn push_next(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        let item = loop {
            let mut state = self.shared.lock();
            state.srcresult?;
            // Under the state lock, so that a change to PLAYING (which sets
            // `playing` under it and wakes this) is never missed.
            let clock_origin = if state.playing {
                self.clock_origin()
            } else {
                None
            };
            state.clock_origin = clock_origin;
            match state.pop_ready(Instant::now()) {
                Next::Ready(item) => {
                    if let (Item::Frame(f), Some(origin)) = (&item, clock_origin)
                        && let Some(rt) = f.running_time
                    {
                        let render = origin + Duration::from(rt);
                        let now = Instant::now();
                        gst::log!(
                            CAT,
                            imp = self,
                            "frame {:?}: own mask {}, {} ms before its render time, mask age {:?}",
                            f.pts,
                            f.own_mask,
                            render.saturating_duration_since(now).as_millis() as i64
                                - now.saturating_duration_since(render).as_millis() as i64,
                            f.mask_age
                        );
                    }
                    state.pushing = true;
                    break item;
                }
                Next::WaitUntil(deadline) => drop(self.shared.wait_until(state, deadline)),
                Next::Wait => drop(self.shared.wait(state)),
            }
        };
        // Room for the sink pad.
        self.shared.cond.notify_all();
        let result = match item {
            Item::Event(event) => {
                let type_ = event.type_();
                if !self.srcpad.push_event(event) {
                    gst::debug!(CAT, imp = self, "downstream refused {type_:?}");
                }
                Ok(gst::FlowSuccess::Ok)
            }
            Item::Frame(frame) => self.finish_frame(*frame),
        };
        self.shared.lock().pushing = false;
        // Drains may be done.
        self.shared.cond.notify_all();
        result
    }

    /// Composes a frame whose mask is in and pushes it.
    fn finish_frame(&self, frame: PendingFrame) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mask = match frame.mask {
            Some(Ok(mask)) => mask,
            Some(Err(e)) => {
                gst::element_imp_error!(self, gst::StreamError::Failed, ("{e}"));
                return Err(gst::FlowError::Error);
            }
            None => return Err(gst::FlowError::Error),
        };
        let (composite, post_stats, follow_motion) = {
            let settings = lock(&self.settings);
            (
                Composite {
                    threshold: settings.threshold,
                    fill_argb: settings.fill_color,
                    feather: settings.feather,
                    blur_radius: settings.blur_radius,
                },
                settings.stats,
                settings.motion_compensation,
            )
        };
        let config = self.shared.lock().config.ok_or(gst::FlowError::Flushing)?;
        let mode = config.mode;
        super::allocation::decide_once(&self.srcpad, &self.pools, &frame.out_info);
        let started = Instant::now();
        let (mask, motion_shift) = match (&frame.lent_rgb, &frame.small_rgb) {
            (Some(from), Some(to)) if follow_motion => {
                self.follow_motion(mask, from, to, &frame.out_info)
            }
            (lent, own) => {
                if follow_motion && frame.borrowed_from.is_some() {
                    gst::log!(
                        CAT,
                        imp = self,
                        "borrowed mask left unmoved: small copy of its frame {}, of this one {}",
                        lent.is_some(),
                        own.is_some()
                    );
                }
                (mask, 0.0)
            }
        };
        let output = frames::output_of(&self.pools, frame.buffer, &frame.out_info, mode).and_then(
            |mut output| {
                frames::apply_mask(
                    &mut lock(&self.matter),
                    &mut output,
                    &frame.out_info,
                    mode,
                    mask.as_ref(),
                    composite,
                )
                .map(|()| output)
            },
        );
        let output = match output {
            Ok(output) => output,
            Err(reason) => {
                gst::element_imp_error!(self, gst::StreamError::Failed, ("{reason}"));
                return Err(gst::FlowError::Error);
            }
        };
        let compose = started.elapsed();
        if let (true, Some(batch_started), Some(mask_ready)) =
            (frame.own_mask, frame.batch_started, frame.mask_ready)
        {
            self.account_processing(frame.arrived, batch_started, mask_ready + compose);
        }
        let finished = {
            let mut state = self.shared.lock();
            let stats = &mut state.stats;
            stats.frames_out += 1;
            stats.mask_age_total += frame.mask_age;
            stats.mask_age_max = stats.mask_age_max.max(frame.mask_age);
            stats.motion_shift_total += motion_shift;
            stats.motion_shift_max = stats.motion_shift_max.max(motion_shift);
            // One message per batch: when its last frame leaves with its
            // own mask, or (keeping up) when a frame first leaves with a
            // mask borrowed from it.
            let report = |stats: &mut BatchStats| {
                let done = *stats;
                stats.reported = Some(stats.id);
                stats.frames_out = 0;
                stats.mask_age_total = Duration::ZERO;
                stats.mask_age_max = Duration::ZERO;
                stats.motion_shift_total = 0.0;
                stats.motion_shift_max = 0.0;
                done
            };
            let restart = |stats: &mut BatchStats, share: crate::engine::BatchShare| {
                *stats = BatchStats {
                    id: share.id,
                    frames: share.frames,
                    run_frames: share.run_frames,
                    frames_out: stats.frames_out,
                    mask_age_total: stats.mask_age_total,
                    mask_age_max: stats.mask_age_max,
                    motion_shift_total: stats.motion_shift_total,
                    motion_shift_max: stats.motion_shift_max,
                    reported: stats.reported,
                    ..Default::default()
                };
            };
            match (frame.batch.filter(|_| frame.own_mask), frame.borrowed_from) {
                (Some(share), _) => {
                    if stats.id != share.id || stats.frames != share.frames {
                        restart(stats, share);
                    }
                    stats.done += 1;
                    stats.inference += frame.inference;
                    stats.prepare += frame.prepare_time;
                    stats.compose += compose;
                    (stats.done == stats.frames).then(|| report(stats))
                }
                (None, Some(run)) if stats.reported != Some(run.batch.id) => {
                    restart(stats, run.batch);
                    stats.done = run.batch.frames;
                    stats.inference = run.inference * count_u32(run.batch.frames);
                    stats.prepare = frame.prepare_time;
                    stats.compose = compose;
                    Some(report(stats))
                }
                _ => None,
            }
        };
        if let (Some(stats), true) = (finished, post_stats) {
            self.post_stats(stats, config.batch_size, config.provider);
        }
        self.srcpad.push(output)
    }

    /// Moves a mask borrowed from another frame (`from`, at the model's
    /// size) along with the picture to this one (`to`). Returns the mask
    /// to apply and how far it moved its subject, in output pixels. A mask
    /// of another size than the small frames, or a still picture, is lent
    /// as it is.
    fn follow_motion(
        &self,
        mask: Arc<Mask>,
        from: &[u8],
        to: &[u8],
        out_info: &gst_video::VideoInfo,
    ) -> (Arc<Mask>, f64) {
        let (w, h) = (mask.width, mask.height);
        let mut estimator = lock(&self.motion);
        let Some(field) = estimator.estimate(from, to, w, h) else {
            return (mask, 0.0);
        };
        if field.is_still() {
            return (mask, 0.0);
        }
        let mut data = Vec::new();
        field.warp_mask_onto(&mask.data, to, &mut lock(&self.edge_snap), &mut data);
        let scale = (
            out_info.width() as f32 / w.max(1) as f32,
            out_info.height() as f32 / h.max(1) as f32,
        );
        let shift = f64::from(field.mean_shift(&data, scale));
        (
            Arc::new(Mask {
                data,
                width: w,
                height: h,
            }),
            shift,
        )
    }

    /// With `stats=true`, tells the application what a batch cost.
    ///
    /// Keeping up, a batch's frames may have left with older masks: the
    /// figures are then the run's, and one frame's preparation and
    /// composition.
    fn post_stats(
        &self,
        stats: BatchStats,
        batch_size: usize,
        provider: crate::model::ProviderUsed,
    ) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mean_age = stats.mask_age_total / count_u32(stats.frames_out.max(1));
        let mean_shift = stats.motion_shift_total / stats.frames_out.max(1) as f64;
        let s = gst::Structure::builder("u2netmatte-stats")
            .field("frames", count_u32(stats.frames))
            .field("batch-id", stats.id)
            .field("run-frames", count_u32(stats.run_frames))
            .field("batch-size", count_u32(batch_size))
            .field("inference-ms", ms(stats.inference))
            .field("prepare-ms", ms(stats.prepare))
            .field("compose-ms", ms(stats.compose))
            .field("frames-out", count_u32(stats.frames_out))
            .field("mask-age-ms", ms(mean_age))
            .field("mask-age-max-ms", ms(stats.mask_age_max))
            .field("motion-shift-px", mean_shift)
            .field("motion-shift-max-px", stats.motion_shift_max)
            .field("provider", provider.to_string())
            .build();
        let obj = self.obj();
        let _ = obj.post_message(gst::message::Element::builder(s).src(&*obj).build());
    }

    pub(super) fn src_activatemode(
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

    pub(super) fn src_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        gst::log!(CAT, obj = pad, "handling {event:?}");
        match event.view() {
            gst::EventView::Qos(_) if self.keep_up_with_qos() => true,
            gst::EventView::Reconfigure(_) => {
                // Downstream may propose another pool now.
                lock(&self.pools).forget_decisions();
                self.restart_if_not_linked();
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    /// Downstream asks for a renegotiation (RECONFIGURE), e.g. the src pad
    /// linked again after the task stopped on NOT_LINKED: the task starts
    /// again, as GstQueue's does, and the frames still queued go out.
    fn restart_if_not_linked(&self) {
        {
            // Checked and set together: a flush meanwhile must stay one.
            let mut state = self.shared.lock();
            if state.srcresult != Err(gst::FlowError::NotLinked) {
                return;
            }
            state.srcresult = Ok(gst::FlowSuccess::Ok);
        }
        gst::debug!(CAT, imp = self, "linked again: restarting the task");
        if let Err(e) = self.launch_task() {
            gst::error!(CAT, imp = self, "failed to restart the task: {e}");
        }
    }

    pub(super) fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        gst::log!(CAT, obj = pad, "handling {query:?}");
        match query.view_mut() {
            gst::QueryViewMut::Latency(q) => self.answer_latency(q),
            gst::QueryViewMut::Caps(q) => {
                let upstream = self.sinkpad.peer_query_caps(None);
                let mut caps = super::caps::transform(&upstream, true, self.mode())
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
