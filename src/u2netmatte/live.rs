// SPDX-License-Identifier: MPL-2.0
//! Liveness and latency: whether upstream is live, how long frames may wait
//! for their batch, and the LATENCY answer, re-announced when it changes.

use std::time::{Duration, Instant};

use gst::prelude::*;
use gst::subclass::prelude::*;

use super::imp::{CAT, U2NetMatte, lock};
use super::latency::{batch_wait, initial_processing, keep_up_budget};
use crate::engine::Policy;

/// The longest a LATENCY query waits for the engine's warm-up to time a
/// frame (it is normally done, or one frame away, when a pipeline asks).
const WARM_UP_WAIT: Duration = Duration::from_secs(30);

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

    /// The first processing budget, from the engine's warm-up.
    fn estimate_processing(&self) {
        if !self.shared.lock().latency.processing.is_zero() {
            return;
        }
        let Some(engine) = lock(&self.loaded).as_ref().map(|l| l.engine.clone()) else {
            return;
        };
        let Ok(Some(frame_time)) = engine.frame_time(WARM_UP_WAIT) else {
            return;
        };
        let mut state = self.shared.lock();
        if let Some(config) = state.config
            && state.latency.processing.is_zero()
        {
            if state.keeps_up() {
                let (wait, processing) = keep_up_budget(frame_time);
                state.latency.leave_after = wait;
                state.latency.processing = processing;
                // Frames that came before the budget was known get their
                // deadline too: none may hold up the ones behind it.
                state.set_deadlines(wait);
                self.shared.cond.notify_all();
            } else {
                state.latency.processing = initial_processing(frame_time, config.batch_size);
            }
        }
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
            self.estimate_processing();
        }
        let own = {
            let mut state = self.shared.lock();
            if live {
                state.latency_answered.get_or_insert_with(Instant::now);
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
