// SPDX-License-Identifier: MPL-2.0
//! The sink pad: frames are prepared here, on upstream's streaming thread,
//! submitted to the engine, and queued with the serialized events around
//! them. Upstream's buffer is given back as soon as the frame is prepared.

use std::time::Instant;

use gst::prelude::*;
use gst::subclass::prelude::*;

use super::frames;
use super::imp::{CAT, U2NetMatte, lock};
use super::state::{JobInfo, PendingFrame};

/// Flow results that nobody has told the application about when the src
/// pad's task stops on them (GstQueue reports the same ones).
pub(super) fn unreported(flow: gst::FlowError) -> bool {
    matches!(
        flow,
        gst::FlowError::NotLinked | gst::FlowError::NotNegotiated | gst::FlowError::NotSupported
    )
}

impl U2NetMatte {
    pub(super) fn sink_activatemode(
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
            let mut state = self.shared.lock();
            state.eos = false;
            state.in_info = None;
            state.out_info = None;
            state.live = None;
            state.synced = None;
        }
        Ok(())
    }

    pub(super) fn sink_chain(
        &self,
        _pad: &gst::Pad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.check_live();
        self.check_synced();
        let (smoothing, follow_motion) = {
            let settings = lock(&self.settings);
            (settings.temporal_smoothing, settings.motion_compensation)
        };
        let (config, client, in_info, out_info, keeps_up) = {
            let mut state = self.shared.lock();
            // Hold upstream while two batches' worth of frames are in the
            // element (one running, one waiting), and while keeping up, the
            // frames of one latency too.
            loop {
                state.srcresult?;
                if state.eos {
                    return Err(gst::FlowError::Eos);
                }
                if state.config.is_none() {
                    return Err(gst::FlowError::Flushing);
                }
                if state.frames < state.frame_limit() {
                    break;
                }
                state = self.shared.wait(state);
            }
            let config = state.config.ok_or(gst::FlowError::Flushing)?;
            let client = state.client.clone().ok_or(gst::FlowError::Flushing)?;
            let (Some(in_info), Some(out_info)) = (state.in_info.clone(), state.out_info.clone())
            else {
                drop(state);
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    ("received a buffer before caps")
                );
                return Err(gst::FlowError::NotNegotiated);
            };
            (config, client, in_info, out_info, state.keeps_up())
        };
        // The frame at the model's size: what smoothing compares, and what
        // a borrowed mask is moved to (keeping up).
        let keep_small = smoothing > 0.0 || (keeps_up && follow_motion);

        let arrived = Instant::now();
        let pts = buffer.pts();
        let mut tensor = client.take_tensor();
        let mut small_rgb = Vec::new();
        let prepared = frames::new_output(&self.pools, &out_info, config.mode).and_then(|output| {
            let mut preparer = lock(&self.preparer);
            let preparer = preparer
                .as_mut()
                .ok_or_else(|| "the element is not started".to_string())?;
            let prepared = frames::prepare(
                preparer,
                &buffer,
                &in_info,
                &out_info,
                config.mode,
                &mut tensor,
                output,
            )?;
            if keep_small && let Some(layout) = super::caps::layout_of(in_info.format()) {
                preparer.small_rgb(layout, &mut small_rgb);
            }
            Ok(prepared)
        });
        drop(buffer);
        let prepared = match prepared {
            Ok(p) => p,
            Err(reason) => {
                gst::element_imp_error!(self, gst::StreamError::Format, ("{reason}"));
                return Err(gst::FlowError::Error);
            }
        };
        let prepare_time = arrived.elapsed();
        let small_rgb: Option<std::sync::Arc<[u8]>> =
            (!small_rgb.is_empty()).then(|| small_rgb.into());

        let mut state = self.shared.lock();
        // A flush while preparing: this frame belongs to the old stream.
        state.srcresult?;
        let keep_up = state.keeps_up();
        let submitted = if keep_up {
            client.submit_latest(tensor)
        } else {
            client.submit(tensor).map(|job| (job, Vec::new()))
        };
        let (job, replaced) = match submitted {
            Ok(submitted) => submitted,
            Err(e) => {
                state.srcresult = Err(gst::FlowError::Error);
                drop(state);
                gst::element_imp_error!(self, gst::StreamError::Failed, ("{e}"));
                return Err(gst::FlowError::Error);
            }
        };
        state.superseded(&replaced);
        let caps_generation = state.caps_generation;
        let running_time = state
            .segment
            .as_ref()
            .zip(pts)
            .and_then(|(segment, pts)| segment.to_running_time(pts));
        state.jobs.insert(
            job,
            JobInfo {
                pts,
                small_rgb: small_rgb.clone(),
                caps_generation,
            },
        );
        // Keeping up, a frame waits for its own mask no longer than the
        // latency allows (once it is known).
        let wait = state.latency.leave_after;
        let leave_by = (keep_up && !wait.is_zero()).then(|| arrived + wait);
        state.push_frame(PendingFrame {
            job: Some(job),
            pts,
            running_time,
            caps_generation,
            buffer: prepared,
            out_info,
            arrived,
            leave_by,
            prepare_time,
            mask: None,
            mask_age: Default::default(),
            own_mask: false,
            borrowed_from: None,
            small_rgb,
            lent_rgb: None,
            inference: Default::default(),
            batch: None,
            batch_started: None,
            mask_ready: None,
        });
        let provisional = state.latency_provisional;
        self.shared.cond.notify_all();
        drop(state);
        if provisional {
            self.settle_latency();
        }
        Ok(gst::FlowSuccess::Ok)
    }

    pub(super) fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
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
                let kept = {
                    let mut state = self.shared.lock();
                    state.eos = false;
                    state.live = None;
                    state.clear();
                    std::mem::take(&mut state.kept_sticky)
                };
                let ret = self.srcpad.push_event(event);
                // Caps, stream-start and tags that the flush dropped before
                // they were pushed: the src pad sends them before the next
                // buffer (GstQueue does the same).
                for sticky in kept {
                    if let Err(e) = self.srcpad.store_sticky_event(&sticky) {
                        gst::debug!(CAT, obj = pad, "cannot keep {:?}: {e:?}", sticky.type_());
                    }
                }
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
                        // A caps event is final: refusing it stops the stream,
                        // so say why where the application will look.
                        gst::element_imp_error!(
                            self,
                            gst::CoreError::Negotiation,
                            ("cannot take {caps}: {reason}")
                        );
                        false
                    }
                }
            }
            gst::EventView::Eos(_) => {
                if let Some(client) = self.shared.lock().client.clone() {
                    // The partial batch goes now.
                    client.urge();
                }
                self.queue_event(event)
            }
            gst::EventView::StreamStart(_) | gst::EventView::Segment(_) => {
                // A new stream: whatever EOS downstream gave is past.
                let restart = {
                    let mut state = self.shared.lock();
                    if event.type_() == gst::EventType::StreamStart {
                        state.eos = false;
                    }
                    if let gst::EventView::Segment(s) = event.view() {
                        // Running times (deadlines) of the frames after it.
                        state.segment = s.segment().downcast_ref::<gst::ClockTime>().cloned();
                    }
                    let downstream_eos = state.srcresult == Err(gst::FlowError::Eos);
                    if downstream_eos {
                        state.eos = false;
                    }
                    downstream_eos
                };
                if restart && let Err(e) = self.start_task() {
                    gst::error!(CAT, obj = pad, "failed to restart task: {e}");
                    return false;
                }
                self.queue_event(event)
            }
            _ if event.is_serialized() => self.queue_event(event),
            _ => self.srcpad.push_event(event),
        }
    }

    /// Queues a serialized event among the frames. After a downstream error
    /// only sticky events are taken (for a later flush to keep), and EOS is
    /// refused with an error on the bus, as GstQueue does: it would never
    /// be pushed.
    fn queue_event(&self, event: gst::Event) -> bool {
        let mut state = self.shared.lock();
        match state.srcresult {
            Ok(_) => {}
            Err(gst::FlowError::Flushing) => return false,
            Err(flow) => {
                if event.type_() == gst::EventType::Eos {
                    drop(state);
                    if unreported(flow) {
                        gst::element_imp_error!(
                            self,
                            gst::StreamError::Failed,
                            ("Internal data stream error."),
                            ["streaming stopped, reason {flow:?}"]
                        );
                    }
                    return false;
                }
                if !event.is_sticky() {
                    return false;
                }
            }
        }
        if state.eos && event.type_() != gst::EventType::Eos {
            gst::debug!(CAT, imp = self, "refusing {:?} after EOS", event.type_());
            return false;
        }
        if event.type_() == gst::EventType::Eos {
            state.eos = true;
        }
        state.push_event(event);
        self.shared.cond.notify_all();
        true
    }

    /// Takes new input caps; returns the output caps they give.
    fn set_caps(&self, caps: &gst::Caps) -> Result<gst::Caps, String> {
        let mode = self
            .shared
            .lock()
            .config
            .map(|c| c.mode)
            .ok_or_else(|| "element is not started".to_string())?;
        let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| e.to_string())?;
        if super::caps::layout_of(info.format()).is_none() {
            return Err(format!(
                "format {} is not one of RGBA, BGRA, ARGB, ABGR, RGBx, BGRx, xRGB, xBGR, RGB, BGR \
                 (put videoconvert before u2netmatte)",
                info.format().to_str()
            ));
        }
        if u32::try_from(info.size()).is_err() {
            return Err(format!(
                "a {}x{} frame ({} bytes) is too large",
                info.width(),
                info.height(),
                info.size()
            ));
        }
        let out_info = super::caps::output_info(&info, mode).map_err(|e| e.to_string())?;
        let out_caps = out_info.to_caps().map_err(|e| e.to_string())?;
        if self.srcpad.peer().is_some() && !self.srcpad.peer_query_accept_caps(&out_caps) {
            return Err(format!("downstream does not accept {out_caps}"));
        }
        {
            let mut state = self.shared.lock();
            state.in_info = Some(info);
            state.out_info = Some(out_info);
            state.caps_generation += 1;
        }
        // The batch wait follows the framerate.
        self.update_timing();
        Ok(out_caps)
    }

    pub(super) fn sink_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        gst::log!(CAT, obj = pad, "handling {query:?}");
        if query.is_serialized() && query.type_() != gst::QueryType::Allocation {
            // Everything before a serialized query must have left first.
            return self.drain() && self.srcpad.peer_query(query);
        }
        match query.view_mut() {
            gst::QueryViewMut::Caps(q) => {
                let mode = self.mode();
                let downstream = self.srcpad.peer_query_caps(None);
                let mut caps = super::caps::transform(&downstream, false, mode)
                    .intersect_with_mode(&pad.pad_template_caps(), gst::CapsIntersectMode::First);
                if let Some(filter) = q.filter() {
                    caps = filter.intersect_with_mode(&caps, gst::CapsIntersectMode::First);
                }
                q.set_result(&caps);
                true
            }
            gst::QueryViewMut::Allocation(q) => {
                // Strided frames are welcome. No buffers of upstream's are
                // held once a frame is prepared, so upstream's pool needs
                // nothing extra for this element.
                q.add_allocation_meta::<gst_video::VideoMeta>(None);
                true
            }
            _ => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }

    /// Runs and pushes everything queued, to the end of its push; false if
    /// flushing or failing meanwhile.
    fn drain(&self) -> bool {
        let mut state = self.shared.lock();
        if let Some(client) = &state.client {
            client.urge();
        }
        while !state.is_drained() && state.srcresult.is_ok() {
            state = self.shared.wait(state);
        }
        state.srcresult.is_ok()
    }
}
