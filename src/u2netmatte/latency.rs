// SPDX-License-Identifier: MPL-2.0
//! The element's own latency, as arithmetic: how long a frame may wait for
//! its batch, and the time budgeted to process a batch; both go into the
//! LATENCY answer of a live stream.

use std::time::Duration;

/// Batch wait of a live stream when batch-timeout is auto and the framerate
/// unknown.
pub const FALLBACK_BATCH_WAIT: Duration = Duration::from_millis(100);
/// Head room over the longest batch seen.
const PROCESSING_MARGIN: f64 = 1.5;
/// Keeping up, the longest a frame waits for its own mask before it leaves
/// with the newest one: what video calls tolerate end to end. Below it, one
/// model run with margin, so that a frame the model took at once mostly
/// leaves with its own mask.
pub const KEEP_UP_LONGEST_WAIT: Duration = Duration::from_millis(400);
/// Keeping up, the time budgeted to compose and push a frame once it may
/// leave: on a CPU busy with the model, the src pad's task may wait a
/// while to be scheduled (measured: up to 65 ms over a 50 ms allowance on
/// 2 cores).
pub const COMPOSE_ALLOWANCE: Duration = Duration::from_millis(100);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    /// The longest a frame waits for its batch to fill.
    pub batch_wait: Duration,
    /// The time budgeted from a frame's arrival (past its batch wait) to
    /// its being ready to leave.
    pub processing: Duration,
    /// Keeping up: how long a frame waits for its own mask (zero: not
    /// keeping up, or not known yet).
    pub leave_after: Duration,
}

impl Latency {
    /// What the element adds to upstream's latency.
    pub fn own(&self) -> Duration {
        self.batch_wait + self.processing
    }

    /// Counts a batch whose last mask came `took` after it started; true if
    /// the budget had to grow.
    pub fn account(&mut self, took: Duration) -> bool {
        if took <= self.processing {
            return false;
        }
        self.processing = took.mul_f64(PROCESSING_MARGIN);
        true
    }
}

/// The first processing budget: a batch of `batch_size` frames at
/// `frame_time` a frame (a GPU runs a batch in less than that, so this errs
/// on the long side until real batches are timed).
pub fn initial_processing(frame_time: Duration, batch_size: usize) -> Duration {
    frame_time
        .mul_f64(batch_size as f64)
        .mul_f64(PROCESSING_MARGIN)
}

/// Keeping up: (how long a frame waits for its own mask, the processing
/// budget that goes into the latency), from the time of one warm frame.
pub fn keep_up_budget(frame_time: Duration) -> (Duration, Duration) {
    let wait = frame_time
        .mul_f64(PROCESSING_MARGIN)
        .min(KEEP_UP_LONGEST_WAIT);
    (wait, wait + COMPOSE_ALLOWANCE)
}

/// How long a frame may wait for its batch to fill. `timeout` is the
/// batch-timeout property (None: auto). Auto waits nothing when the source
/// is not live (the model takes what is queued whenever it is free), and
/// (batch-size - 0.5) frame durations when it is live: the rest of the
/// batch arrives in (n - 1) frame times, half a frame more absorbs jitter.
pub fn batch_wait(
    batch_size: usize,
    timeout: Option<Duration>,
    live: bool,
    fps: Option<gst::Fraction>,
) -> Duration {
    if batch_size <= 1 {
        return Duration::ZERO;
    }
    if let Some(timeout) = timeout {
        return timeout;
    }
    if !live {
        return Duration::ZERO;
    }
    match fps {
        Some(fps) if fps.numer() > 0 && fps.denom() > 0 => {
            let frame = Duration::from_secs_f64(f64::from(fps.denom()) / f64::from(fps.numer()));
            frame.mul_f64(batch_size as f64 - 0.5)
        }
        _ => FALLBACK_BATCH_WAIT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_wait_follows_timeout_liveness_and_framerate() {
        let fps = Some(gst::Fraction::new(4, 1));
        let ms = Duration::from_millis;
        assert_eq!(batch_wait(1, Some(ms(500)), true, fps), Duration::ZERO);
        // A set timeout applies to any source.
        assert_eq!(batch_wait(4, Some(ms(300)), true, fps), ms(300));
        assert_eq!(batch_wait(4, Some(ms(300)), false, fps), ms(300));
        // Auto: nothing when not live, 3.5 frames when live.
        assert_eq!(batch_wait(4, None, false, fps), Duration::ZERO);
        assert_eq!(batch_wait(4, None, true, fps), ms(875));
        assert_eq!(
            batch_wait(4, None, true, Some(gst::Fraction::new(0, 1))),
            FALLBACK_BATCH_WAIT
        );
        assert_eq!(batch_wait(4, None, true, None), FALLBACK_BATCH_WAIT);
    }

    #[test]
    fn own_latency_is_the_wait_plus_the_budget() {
        let l = Latency {
            batch_wait: Duration::from_millis(300),
            processing: Duration::from_millis(150),
            leave_after: Duration::ZERO,
        };
        assert_eq!(l.own(), Duration::from_millis(450));
    }

    #[test]
    fn a_slow_batch_raises_the_budget_with_margin() {
        let mut l = Latency {
            batch_wait: Duration::ZERO,
            processing: Duration::from_millis(150),
            leave_after: Duration::ZERO,
        };
        assert!(!l.account(Duration::from_millis(140)));
        assert!(l.account(Duration::from_millis(200)));
        assert_eq!(l.processing, Duration::from_millis(300));
    }

    #[test]
    fn the_first_budget_covers_a_whole_batch() {
        assert_eq!(
            initial_processing(Duration::from_millis(100), 4),
            Duration::from_millis(600)
        );
    }

    #[test]
    fn keeping_up_waits_one_run_with_margin_at_most_the_cap() {
        let ms = Duration::from_millis;
        assert_eq!(keep_up_budget(ms(100)), (ms(150), ms(250)));
        assert_eq!(
            keep_up_budget(ms(700)),
            (
                KEEP_UP_LONGEST_WAIT,
                KEEP_UP_LONGEST_WAIT + COMPOSE_ALLOWANCE
            )
        );
    }
}
