// SPDX-License-Identifier: MPL-2.0
//! When a batch may run, and which frames it takes: pure rules over the
//! clients' queues, so that they can be tested without a model or a clock.
//!
//! Frames are taken in arrival order (job ids are handed out in arrival
//! order across all clients), up to the largest batch size among the
//! clients that have frames waiting. A batch runs when it is full, when a
//! client has asked for its frames to go now (EOS, a serialized query), or
//! when a client's oldest frame has waited its client's `wait` (zero: as
//! soon as the model is free, as Triton's dynamic batcher does by default).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Identifies one submitted frame; increases with arrival.
pub type JobId = u64;

/// A prepared frame waiting for the model.
#[derive(Debug)]
pub struct Job {
    pub id: JobId,
    /// The model input for this frame (3 x H x W).
    pub tensor: Vec<f32>,
    pub arrived: Instant,
}

/// One client's frames and its batching rules.
#[derive(Debug)]
pub struct ClientQueue {
    pub jobs: VecDeque<Job>,
    /// The most frames this client wants in one run.
    pub batch_size: usize,
    /// The longest its oldest frame may wait for a batch to fill.
    pub wait: Duration,
    /// Its jobs up to this id must go without waiting (0: none).
    pub urgent_through: JobId,
}

impl ClientQueue {
    pub fn new(batch_size: usize, wait: Duration) -> Self {
        Self {
            jobs: VecDeque::new(),
            batch_size: batch_size.max(1),
            wait,
            urgent_through: 0,
        }
    }

    fn is_ready(&self, now: Instant) -> bool {
        self.jobs
            .front()
            .is_some_and(|j| j.id <= self.urgent_through || j.arrived + self.wait <= now)
    }

    fn deadline(&self) -> Option<Instant> {
        self.jobs.front().map(|j| j.arrived + self.wait)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Take this many jobs from the front of each client's queue (by index
    /// in the slice given), in this order of clients.
    Take(Vec<(usize, usize)>),
    /// Nothing may go before this instant, unless something new arrives.
    WaitUntil(Instant),
    /// Nothing is waiting.
    Idle,
}

/// Decides what runs next among `queues`.
pub fn decide(queues: &[&ClientQueue], now: Instant) -> Decision {
    let with_jobs = || queues.iter().filter(|q| !q.jobs.is_empty());
    let Some(limit) = with_jobs().map(|q| q.batch_size).max() else {
        return Decision::Idle;
    };
    let total: usize = with_jobs().map(|q| q.jobs.len()).sum();
    let ready = total >= limit || with_jobs().any(|q| q.is_ready(now));
    if !ready {
        return match with_jobs().filter_map(|q| q.deadline()).min() {
            Some(deadline) => Decision::WaitUntil(deadline),
            None => Decision::Idle,
        };
    }

    // Merge the queues by job id, `limit` jobs at most.
    let mut taken = vec![0usize; queues.len()];
    for _ in 0..limit {
        let next = queues
            .iter()
            .enumerate()
            .filter_map(|(i, q)| q.jobs.get(taken[i]).map(|j| (j.id, i)))
            .min();
        match next {
            Some((_, i)) => taken[i] += 1,
            None => break,
        }
    }
    let mut order: Vec<(usize, usize)> = taken
        .into_iter()
        .enumerate()
        .filter(|(_, n)| *n > 0)
        .collect();
    // Clients in the order of their first job taken.
    order.sort_by_key(|&(i, _)| queues[i].jobs.front().map_or(JobId::MAX, |j| j.id));
    Decision::Take(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(batch: usize, wait_ms: u64, jobs: &[(JobId, u64)], t0: Instant) -> ClientQueue {
        let mut q = ClientQueue::new(batch, Duration::from_millis(wait_ms));
        for &(id, at) in jobs {
            q.jobs.push_back(Job {
                id,
                tensor: Vec::new(),
                arrived: t0 + Duration::from_millis(at),
            });
        }
        q
    }

    #[test]
    fn nothing_waiting_is_idle() {
        let t0 = Instant::now();
        assert_eq!(decide(&[&queue(4, 0, &[], t0)], t0), Decision::Idle);
        assert_eq!(decide(&[], t0), Decision::Idle);
    }

    #[test]
    fn a_zero_wait_takes_what_is_there_at_once() {
        let t0 = Instant::now();
        let q = queue(4, 0, &[(1, 0), (2, 0)], t0);
        assert_eq!(decide(&[&q], t0), Decision::Take(vec![(0, 2)]));
    }

    #[test]
    fn a_partial_batch_waits_for_its_deadline_then_goes() {
        let t0 = Instant::now();
        let q = queue(4, 100, &[(1, 0), (2, 50)], t0);
        assert_eq!(
            decide(&[&q], t0 + Duration::from_millis(60)),
            Decision::WaitUntil(t0 + Duration::from_millis(100))
        );
        assert_eq!(
            decide(&[&q], t0 + Duration::from_millis(100)),
            Decision::Take(vec![(0, 2)])
        );
    }

    #[test]
    fn a_full_batch_goes_at_once_and_takes_no_more_than_the_batch() {
        let t0 = Instant::now();
        let q = queue(3, 10_000, &[(1, 0), (2, 0), (3, 0), (4, 0)], t0);
        assert_eq!(decide(&[&q], t0), Decision::Take(vec![(0, 3)]));
    }

    #[test]
    fn urgent_jobs_go_without_waiting() {
        let t0 = Instant::now();
        let mut q = queue(4, 10_000, &[(1, 0), (2, 0)], t0);
        assert!(matches!(decide(&[&q], t0), Decision::WaitUntil(_)));
        q.urgent_through = 1;
        assert_eq!(decide(&[&q], t0), Decision::Take(vec![(0, 2)]));
    }

    #[test]
    fn clients_are_merged_in_arrival_order_up_to_the_largest_batch() {
        let t0 = Instant::now();
        let a = queue(2, 10_000, &[(1, 0), (4, 0), (6, 0)], t0);
        let b = queue(4, 10_000, &[(2, 0), (3, 0), (5, 0)], t0);
        // Six frames, a batch of four: ids 1..=4, b's first (2) after a's.
        assert_eq!(decide(&[&a, &b], t0), Decision::Take(vec![(0, 2), (1, 2)]));
        // b first when its oldest frame is older.
        let b = queue(4, 10_000, &[(0, 0)], t0);
        let a = queue(1, 10_000, &[(1, 0)], t0);
        assert_eq!(decide(&[&a, &b], t0), Decision::Take(vec![(1, 1), (0, 1)]));
    }

    #[test]
    fn the_earliest_deadline_among_clients_is_waited_for() {
        let t0 = Instant::now();
        let a = queue(4, 300, &[(1, 0)], t0);
        let b = queue(4, 100, &[(2, 50)], t0);
        assert_eq!(
            decide(&[&a, &b], t0),
            Decision::WaitUntil(t0 + Duration::from_millis(150))
        );
        // When b's deadline passes, a's frame rides along.
        assert_eq!(
            decide(&[&a, &b], t0 + Duration::from_millis(150)),
            Decision::Take(vec![(0, 1), (1, 1)])
        );
    }
}
