// SPDX-License-Identifier: MPL-2.0
//! Liveness, latency and keeping up: whether upstream is live, how long
//! frames may wait for their batch, the LATENCY answer (re-announced when
//! it changes), the clock that deadlines follow, and QoS from a
//! synchronised sink, which makes a played stream keep up as a live one.

use std::time::{Duration, Instant};

use gst::prelude::*;
use gst::subclass::prelude::*;

use super::imp::{CAT, U2NetMatte, lock};
use super::latency::{KEEP_UP_LONGEST_WAIT, batch_wait, initial_processing, keep_up_budget};
use super::state::State;
use crate::engine::Policy;

impl U2NetMatte {
    /// Asks upstream once per stream whether it is live.
    pub(super) fn check_live(&self) {
        if self.shared.lock().live.is_some() {
            return;
        }
        let mut query = gst::query::Latency::new();
        let live = self.sinkpad.peer_query(&mut query) && query.result().0;
        self.set_live(live);
    }

    fn set_live(&self, live: bool) {
        let changed = {
            let mut state = self.shared.lock();
            state.live.replace(live) != Some(live)
        };
        if changed {
            self.update_timing();
        }
    }

    /// Recomputes the batch wait from the settings, liveness and framerate;
    /// gives it to the engine; tells the pipeline when a live stream's
    /// latency changed.
    pub(super) fn update_timing(&self) {
        let (client, policy, changed) = {
            let mut state = self.shared.lock();
            let Some(config) = state.config else { return };
            let live = state.live.unwrap_or(false);
            let fps = state.in_info.as_ref().map(|i| i.fps());
            // Keeping up, frames never wait for a batch to fill.
            let wait = if state.keeps_up() {
                Duration::ZERO
            } else {
                batch_wait(config.batch_size, config.batch_timeout, live, fps)
            };
            let before = state.latency;
            state.latency.batch_wait = wait;
            gst::debug!(CAT, imp = self, "live: {live}, batch wait {wait:?}");
            (
                state.client.clone(),
                Policy {
                    batch_size: config.batch_size,
                    wait,
                },
                live && before != state.latency,
            )
        };
        if let Some(client) = client {
            client.set_policy(policy);
        }
        if changed {
            self.announce_latency();
        }
    }

    fn announce_latency(&self) {
        gst::info!(CAT, imp = self, "latency changed");
        let obj = self.obj();
        let _ = obj.post_message(gst::message::Latency::builder().src(&*obj).build());
    }

    /// Counts what a frame that is ready to leave took; raises the budget
    /// (and tells a live pipeline) when it was longer than budgeted. Live,
    /// that is its whole hold but the part of its batch wait that the
    /// latency counts already: waiting for a busy model is processing too.
    ///
    /// `ready` is when the frame could leave (its mask in, composed): what
    /// downstream then makes it wait is downstream's latency, not ours.
    /// Keeping up, the budget is fixed: a frame leaves by its deadline.
    pub(super) fn account_processing(
        &self,
        arrived: Instant,
        batch_started: Instant,
        ready: Instant,
    ) {
        let (raised, took) = {
            let mut state = self.shared.lock();
            if state.keeps_up() {
                return;
            }
            let took = if state.live == Some(true) {
                if state.latency_answered.is_none_or(|t| arrived < t) {
                    return;
                }
                let waited = batch_started.saturating_duration_since(arrived);
                ready
                    .saturating_duration_since(arrived)
                    .saturating_sub(waited.min(state.latency.batch_wait))
            } else {
                ready.saturating_duration_since(batch_started)
            };
            (
                state.latency.account(took) && state.live == Some(true),
                took,
            )
        };
        if raised {
            gst::info!(
                CAT,
                imp = self,
                "a batch took {took:?}; raising the latency"
            );
            self.announce_latency();
        }
    }

    /// The time of one warm frame, if the engine has measured it (never
    /// waits for it).
    fn frame_time(&self) -> Option<Duration> {
        let engine = lock(&self.loaded).as_ref().map(|l| l.engine.clone())?;
        engine.frame_time(Duration::ZERO).ok().flatten()
    }

    /// The first processing budget, from the engine's timed warm frame,
    /// without waiting for it (no query or state change waits for a model
    /// run): until the model is timed, the budget is provisional (keeping
    /// up: the most it can be; otherwise none, raised as batches are
    /// timed), and it is settled, and re-announced if it changed, once the
    /// time is known (the sink pad asks again with each frame).
    pub(super) fn settle_latency(&self) {
        let frame_time = self.frame_time();
        let changed = {
            let mut state = self.shared.lock();
            let Some(config) = state.config else { return };
            if !state.latency_provisional && !state.latency.processing.is_zero() {
                return;
            }
            let before = state.latency;
            if state.keeps_up() {
                let (wait, processing) = keep_up_budget(frame_time.unwrap_or(KEEP_UP_LONGEST_WAIT));
                state.latency.leave_after = wait;
                state.latency.processing = processing;
                // Frames that came before the budget was known get their
                // deadline too: none may hold up the ones behind it.
                state.set_deadlines(wait);
                self.shared.cond.notify_all();
            } else if let Some(frame_time) = frame_time {
                state.latency.processing = state
                    .latency
                    .processing
                    .max(initial_processing(frame_time, config.batch_size));
            }
            state.latency_provisional = frame_time.is_none();
            state.live == Some(true) && state.latency_answered.is_some() && before != state.latency
        };
        if changed {
            self.announce_latency();
        }
    }

    /// Where running time 0 falls on this process's clock, from the
    /// element's clock and base time (meaningful while PLAYING).
    pub(super) fn clock_origin(&self) -> Option<Instant> {
        let obj = self.obj();
        let clock = obj.clock()?;
        let base = obj.base_time()?;
        let (clock_now, now) = (clock.time(), Instant::now());
        if clock_now >= base {
            now.checked_sub((clock_now - base).into())
        } else {
            now.checked_add((base - clock_now).into())
        }
    }

    /// Looks downstream once per stream for a sink that synchronises to the
    /// clock and sends QoS (a video sink does; appsink and fakesink do not
    /// unless told).
    pub(super) fn check_synced(&self) {
        if self.shared.lock().synced.is_none() {
            self.ask_synced();
        }
    }

    /// PAUSED->PLAYING: looks again (the pipeline may have been linked
    /// since).
    pub(super) fn recheck_synced(&self) {
        if self.shared.lock().synced == Some(false) {
            self.ask_synced();
        }
    }

    fn ask_synced(&self) {
        let live = self.shared.lock().live;
        let synced = live == Some(false) && sink_reports_lateness(&self.srcpad);
        gst::debug!(
            CAT,
            imp = self,
            "the sink syncs to the clock with QoS: {synced}"
        );
        self.set_synced(synced);
    }

    /// A stream that is not live, into a sink that synchronises to the
    /// clock, keeps up with it (`keep-up`): frames leave in time to be
    /// rendered, with their own mask or the newest one.
    fn set_synced(&self, synced: bool) {
        if self.shared.lock().synced == Some(synced) {
            return;
        }
        let frame_time = self.frame_time();
        {
            let mut state = self.shared.lock();
            if state.synced == Some(synced) {
                return;
            }
            state.synced = Some(synced);
            if !state.keeps_up() || state.live == Some(true) {
                return;
            }
            state.frame_time = state.frame_time.or(frame_time);
            gst::info!(
                CAT,
                imp = self,
                "a sink synchronises to the clock: keeping up with it, {:?} ahead",
                State::look_ahead_for(state.frame_time)
            );
        }
        self.update_timing();
        // More frames may come in, and the queued ones have deadlines now.
        self.shared.cond.notify_all();
    }

    /// QoS from downstream: a sink synchronises to the clock and reports
    /// lateness (found here even where no sink could be seen downstream,
    /// past a tee). A stream that is not live keeps up with it
    /// (`keep-up`), and the event goes no further: upstream would drop
    /// frames to catch up, and they would be lost, while keeping up makes
    /// them come in time. True if taken.
    pub(super) fn keep_up_with_qos(&self) -> bool {
        if self.shared.lock().live != Some(false) {
            return false;
        }
        self.set_synced(true);
        self.shared.lock().keeps_up()
    }

    /// Answers a LATENCY query: upstream's, plus ours.
    pub(super) fn answer_latency(&self, q: &mut gst::query::Latency) -> bool {
        let mut upstream = gst::query::Latency::new();
        if !self.sinkpad.peer_query(&mut upstream) {
            return false;
        }
        let (live, min, max) = upstream.result();
        self.set_live(live);
        if live {
            self.settle_latency();
        }
        let own = {
            let mut state = self.shared.lock();
            if live {
                state.latency_answered.get_or_insert_with(Instant::now);
                state.upstream_latency = Some(min.into());
            }
            state.latency.own()
        };
        let own = gst::ClockTime::from_nseconds(u64::try_from(own.as_nanos()).unwrap_or(u64::MAX));
        gst::debug!(
            CAT,
            imp = self,
            "upstream latency {min} (live: {live}), ours {own}"
        );
        q.set(live, min + own, max.map(|m| m + own));
        true
    }
}

/// Whether the stream from `pad` reaches a sink that syncs to the clock
/// and sends QoS: follows it downstream, into and out of bins, through
/// elements with one src pad (where it forks, a tee, it cannot tell).
fn sink_reports_lateness(pad: &gst::Pad) -> bool {
    use gst_base::prelude::*;
    let Some(mut next) = pad.peer() else {
        return false;
    };
    // Bounded: a pipeline is not this deep, and a loop must not hang.
    for _ in 0..64 {
        // Into a bin: its ghost pad's target.
        while let Some(target) = next
            .downcast_ref::<gst::GhostPad>()
            .and_then(|ghost| ghost.target())
        {
            next = target;
        }
        // Out of a bin: from the ghost pad's inner side to its peer.
        if let Some(ghost) = next
            .parent()
            .and_then(|p| p.downcast::<gst::GhostPad>().ok())
        {
            let Some(peer) = ghost.peer() else {
                return false;
            };
            next = peer;
            continue;
        }
        let Some(element) = next.parent_element() else {
            return false;
        };
        if let Some(sink) = element.downcast_ref::<gst_base::BaseSink>() {
            return sink.is_sync() && sink.property::<bool>("qos");
        }
        let src_pads = element.src_pads();
        let [src] = src_pads.as_slice() else {
            return false;
        };
        let Some(peer) = src.peer() else { return false };
        next = peer;
    }
    false
}
