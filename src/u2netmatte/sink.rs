// SPDX-License-Identifier: MPL-2.0
//! The sink pad: frames are prepared here, on upstream's streaming thread,
//! and queued with the serialized events around them.

use std::time::Instant;

use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_video::prelude::*;

use super::caps;
use super::imp::{CAT, DEFAULT_BATCH_SIZE, U2NetMatte, lock, wait};
use super::queue::Frame;
use crate::matte::Mode;
use crate::prep::Preparer;

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
            let mut sink = lock(&self.sink);
            sink.eos = false;
            sink.in_info = None;
            sink.out_info = None;
            sink.live_checked = false;
        }
        Ok(())
    }

    pub(super) fn sink_chain(
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
                ("received a buffer before caps")
            );
            return Err(gst::FlowError::NotNegotiated);
        };
        let tensor_len = sink.tensor_len;
        let mut tensor = lock(&self.queue).take_tensor(tensor_len);
        let Some(preparer) = sink.preparer.as_mut() else {
            return Err(gst::FlowError::Flushing);
        };
        let prepare_start = Instant::now();
        if let Err(reason) = prepare_frame(preparer, &buffer, &in_info, &mut tensor) {
            drop(sink);
            gst::element_imp_error!(self, gst::StreamError::Format, ("{reason}"));
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
            prepare_time: prepare_start.elapsed(),
        };

        let mut q = lock(&self.queue);
        // One batch may wait while another runs; beyond that, hold upstream.
        while q.frames() >= config.batch_size {
            q.srcresult?;
            q = wait(&self.cond, q);
        }
        q.srcresult?;
        q.push_frame(frame);
        self.cond.notify_all();
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
            return Err(format!(
                "format {} is not one of RGBA, BGRA, ARGB, ABGR, RGBx, BGRx, xRGB, xBGR, RGB, BGR \
                 (put videoconvert before u2netmatte)",
                info.format().to_str()
            ));
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
            q = wait(&self.cond, q);
        }
        q.end_drain();
        q.srcresult.is_ok()
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
