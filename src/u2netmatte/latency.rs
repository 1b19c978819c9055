// SPDX-License-Identifier: MPL-2.0
//! The element's own latency: how long a live frame may wait for its batch,
//! and the time budgeted to process one; both go into the LATENCY answer.

use std::time::Duration;

use gst::prelude::*;
use gst::subclass::prelude::*;

use super::imp::{CAT, RunConfig, U2NetMatte, lock};

/// Live batch wait when batch-timeout is auto and the framerate unknown.
const FALLBACK_BATCH_WAIT: Duration = Duration::from_millis(100);
/// Head room over the longest batch seen.
const PROCESSING_MARGIN: f64 = 1.5;

#[derive(Debug, Default, Clone, Copy)]
pub struct Latency {
    pub live: bool,
    /// The longest a live frame waits for its batch to fill.
    pub batch_wait: Duration,
    /// The time budgeted to process a batch.
    pub processing: Duration,
}

impl Latency {
    /// Starts from what one full warm batch took.
    pub fn new(full_batch: Duration) -> Self {
        Self {
            live: false,
            batch_wait: Duration::ZERO,
            processing: full_batch.mul_f64(PROCESSING_MARGIN),
        }
    }

    /// What the element adds to upstream's latency.
    pub fn own(&self) -> gst::ClockTime {
        let wait = if self.live {
            self.batch_wait
        } else {
            Duration::ZERO
        };
        gst::ClockTime::from_nseconds((self.processing + wait).as_nanos() as u64)
    }

    /// Counts a batch that took `took`; true if the budget had to grow.
    pub fn account(&mut self, took: Duration) -> bool {
        if took <= self.processing {
            return false;
        }
        self.processing = took.mul_f64(PROCESSING_MARGIN);
        true
    }
}

/// How long a live frame may wait for its batch to fill.
pub fn batch_wait(config: RunConfig, fps: Option<gst::Fraction>) -> Duration {
    if config.batch_size <= 1 {
        return Duration::ZERO;
    }
    if let Some(timeout) = config.batch_timeout {
        return timeout;
    }
    match fps {
        Some(fps) if fps.numer() > 0 && fps.denom() > 0 => {
            let frame = Duration::from_secs_f64(f64::from(fps.denom()) / f64::from(fps.numer()));
            // The rest of the batch arrives in (n - 1) frame times; half a
            // frame more absorbs jitter.
            frame.mul_f64(config.batch_size as f64 - 0.5)
        }
        _ => FALLBACK_BATCH_WAIT,
    }
}

impl U2NetMatte {
    /// Records whether upstream is live; live frames get a batch deadline.
    pub(super) fn set_live(&self, live: bool) {
        let Ok(config) = self.config() else { return };
        let fps = lock(&self.sink).in_info.as_ref().map(|i| i.fps());
        let wait = batch_wait(config, fps);
        {
            let mut latency = lock(&self.latency);
            if latency.live == live && latency.batch_wait == wait {
                return;
            }
            latency.live = live;
            latency.batch_wait = wait;
        }
        gst::debug!(CAT, imp = self, "live: {live}, batch wait {wait:?}");
        let mut q = lock(&self.queue);
        q.batch_wait = live.then_some(wait);
        self.cond.notify_all();
    }

    /// Asks upstream once per stream whether it is live.
    pub(super) fn check_live(&self) {
        if std::mem::replace(&mut lock(&self.sink).live_checked, true) {
            return;
        }
        let mut query = gst::query::Latency::new();
        let live = self.sinkpad.peer_query(&mut query) && query.result().0;
        self.set_live(live);
    }

    /// Raises the reported latency when a batch took longer than budgeted,
    /// and tells the pipeline to ask again.
    pub(super) fn account_processing(&self, took: Duration) {
        let mut latency = lock(&self.latency);
        if !latency.account(took) {
            return;
        }
        let live = latency.live;
        drop(latency);
        if live {
            gst::info!(
                CAT,
                imp = self,
                "a batch took {took:?}; raising the latency"
            );
            let obj = self.obj();
            let _ = obj.post_message(gst::message::Latency::builder().src(&*obj).build());
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
        let own = lock(&self.latency).own();
        gst::debug!(
            CAT,
            imp = self,
            "upstream latency {min} (live: {live}), ours {own}"
        );
        q.set(live, min + own, max.map(|m| m + own));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matte::Mode;

    fn config(batch_size: usize, timeout_ms: Option<u64>) -> RunConfig {
        RunConfig {
            mode: Mode::Mask,
            batch_size,
            batch_timeout: timeout_ms.map(Duration::from_millis),
            provider: crate::model::ProviderUsed::Cpu,
        }
    }

    #[test]
    fn batch_wait_follows_batch_size_timeout_and_framerate() {
        let fps = Some(gst::Fraction::new(4, 1));
        assert_eq!(batch_wait(config(1, Some(500)), fps), Duration::ZERO);
        assert_eq!(
            batch_wait(config(4, Some(300)), fps),
            Duration::from_millis(300)
        );
        assert_eq!(batch_wait(config(4, None), fps), Duration::from_millis(875));
        assert_eq!(
            batch_wait(config(4, None), Some(gst::Fraction::new(0, 1))),
            FALLBACK_BATCH_WAIT
        );
        assert_eq!(batch_wait(config(4, None), None), FALLBACK_BATCH_WAIT);
    }

    #[test]
    fn own_latency_counts_the_wait_only_when_live() {
        let mut l = Latency::new(Duration::from_millis(100));
        l.batch_wait = Duration::from_millis(300);
        assert_eq!(l.own(), gst::ClockTime::from_mseconds(150));
        l.live = true;
        assert_eq!(l.own(), gst::ClockTime::from_mseconds(450));
    }

    #[test]
    fn a_slow_batch_raises_the_budget_with_margin() {
        let mut l = Latency::new(Duration::from_millis(100));
        assert!(!l.account(Duration::from_millis(140)));
        assert!(l.account(Duration::from_millis(200)));
        assert_eq!(l.processing, Duration::from_millis(300));
    }
}
