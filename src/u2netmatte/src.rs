// SPDX-License-Identifier: MPL-2.0
//! The src pad: its task pushes finished frames and the events between them,
//! so that a downstream that blocks (a sink syncing to the clock) never
//! stalls inference.

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::caps;
use super::imp::{CAT, U2NetMatte, lock, wait};
use super::queue::Output;

impl U2NetMatte {
    pub(super) fn start_task(&self) -> Result<(), glib::BoolError> {
        if let Some(i) = lock(&self.interrupter).as_ref() {
            i.rearm();
        }
        lock(&self.queue).srcresult = Ok(gst::FlowSuccess::Ok);
        self.cond.notify_all();
        let imp = self.ref_counted();
        let ret = self.srcpad.start_task(move || imp.src_loop());
        if ret.is_err() {
            lock(&self.queue).srcresult = Err(gst::FlowError::Error);
        }
        ret
    }

    fn src_loop(&self) {
        let Err(err) = self.push_next() else {
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

    /// Waits for the next finished item and pushes it.
    fn push_next(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        let item = {
            let mut q = lock(&self.queue);
            loop {
                q.srcresult?;
                if let Some(item) = q.pop_output() {
                    break item;
                }
                q = wait(&self.cond, q);
            }
        };
        // Room for the inference thread's next batch; drains may be done.
        self.cond.notify_all();
        match item {
            Output::Event(event) => {
                gst::log!(CAT, imp = self, "pushing {:?}", event.type_());
                self.srcpad.push_event(event);
                Ok(gst::FlowSuccess::Ok)
            }
            Output::Buffer(buffer) => self.srcpad.push(buffer),
        }
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

    pub(super) fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        gst::log!(CAT, obj = pad, "handling {query:?}");
        match query.view_mut() {
            gst::QueryViewMut::Latency(q) => self.answer_latency(q),
            gst::QueryViewMut::Caps(q) => {
                let upstream = self.sinkpad.peer_query_caps(None);
                let mut caps = caps::transform(&upstream, true, self.mode())
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
