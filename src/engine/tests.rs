// SPDX-License-Identifier: MPL-2.0
//! The engine with a stand-in runner: batching, pieces, urging, flushing,
//! failures and panics, without ONNX Runtime; and one real batch on it.
//!
//! Nothing here assumes that the engine's thread runs within some time:
//! tests that need a run to be under way wait for the runner to say so,
//! and runs that must not end by themselves wait at a [`Gate`]. Timeouts
//! only bound a failure.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use super::*;
use crate::model::{Model, ModelOptions, Provider};
use crate::prep::{Frame, PixelLayout, Preparer};

/// A frame whose first value is this makes the runner panic.
const PANIC: f32 = -1.0;
/// ... or fail.
const FAIL: f32 = -2.0;
/// ... or write one mask byte fewer than its frames need.
const SHORT: f32 = -3.0;

/// How long a test waits for something that must happen.
const BOUND: Duration = Duration::from_secs(10);

/// The runs a runner has begun (their frame counts), to be waited on.
#[derive(Default)]
struct RunLog {
    runs: Mutex<Vec<usize>>,
    cond: Condvar,
}

impl RunLog {
    fn push(&self, frames: usize) {
        self.runs.lock().unwrap().push(frames);
        self.cond.notify_all();
    }

    fn get(&self) -> Vec<usize> {
        self.runs.lock().unwrap().clone()
    }

    fn clear(&self) {
        self.runs.lock().unwrap().clear();
    }

    /// Waits until `count` runs have begun.
    #[track_caller]
    fn wait_for(&self, count: usize) {
        let runs = self.runs.lock().unwrap();
        let (runs, _) = self
            .cond
            .wait_timeout_while(runs, BOUND, |r| r.len() < count)
            .unwrap();
        assert!(
            runs.len() >= count,
            "{} run(s) began, not {count}",
            runs.len()
        );
    }
}

/// Holds a runner's runs until the test lets them end, one permit a run;
/// a stopped run leaves without one.
#[derive(Default)]
struct Gate {
    permits: Mutex<usize>,
    cond: Condvar,
}

impl Gate {
    fn open(&self, runs: usize) {
        *self.permits.lock().unwrap() += runs;
        self.cond.notify_all();
    }

    /// True when the run may end; false when `control` stopped it. Gives up
    /// after 60 s, so that a test whose stop never comes fails instead of
    /// hanging.
    fn pass(&self, control: &RunControl) -> bool {
        let give_up = Instant::now() + Duration::from_secs(60);
        let mut permits = self.permits.lock().unwrap();
        while Instant::now() < give_up {
            if control.is_stopped() {
                return false;
            }
            if *permits > 0 {
                *permits -= 1;
                return true;
            }
            // A stop does not notify the gate: look again every millisecond.
            permits = self
                .cond
                .wait_timeout(permits, Duration::from_millis(1))
                .unwrap()
                .0;
        }
        true
    }
}

/// Masks are 2x1, both pixels the frame's first input value; each frame
/// takes `delay`, checking for a stop every millisecond; with a gate, a
/// run then waits at it.
struct FakeRunner {
    piece: usize,
    delay: Duration,
    runs: Arc<RunLog>,
    stops_seen: Arc<Mutex<usize>>,
    gate: Option<Arc<Gate>>,
    always_fail: bool,
    provider: ProviderUsed,
    /// On CUDA, a run of more frames than this fails and moves the runner
    /// to the CPU, which runs them (as `provider=auto` does).
    cuda_runs_up_to: Option<usize>,
    fallback_reason: Option<String>,
    /// Once set, asking where the runner runs panics (outside any run).
    provider_panics: Arc<AtomicBool>,
}

fn fake(piece: usize, delay: Duration) -> FakeRunner {
    FakeRunner {
        piece,
        delay,
        runs: Default::default(),
        stops_seen: Default::default(),
        gate: None,
        always_fail: false,
        provider: ProviderUsed::Cpu,
        cuda_runs_up_to: None,
        fallback_reason: None,
        provider_panics: Default::default(),
    }
}

impl Runner for FakeRunner {
    fn frame_len(&self) -> usize {
        4
    }

    fn preferred_piece(&self, batch: usize) -> usize {
        self.piece.min(batch)
    }

    fn provider(&self) -> ProviderUsed {
        if self.provider_panics.load(Ordering::SeqCst) {
            panic!("stand-in panic outside the run");
        }
        self.provider
    }

    fn fallback_reason(&self) -> Option<String> {
        self.fallback_reason.clone()
    }

    fn control(&self) -> Result<RunControl, ModelError> {
        Ok(RunControl::flag_only())
    }

    fn run(
        &mut self,
        input: &[f32],
        batch: usize,
        masks: &mut Vec<u8>,
        control: &RunControl,
    ) -> Result<(u32, u32), ModelError> {
        if self.always_fail {
            return Err(ModelError::Run("cannot run".into()));
        }
        if let (ProviderUsed::Cuda { .. }, Some(most)) = (self.provider, self.cuda_runs_up_to)
            && batch > most
        {
            self.provider = ProviderUsed::Cpu;
            self.fallback_reason =
                Some(format!("the first run of {batch} frame(s) on CUDA failed"));
        }
        self.runs.push(batch);
        // A runner that moved from CUDA runs slower: the engine's frame
        // time must follow.
        let slower = if self.cuda_runs_up_to.is_some() && self.provider == ProviderUsed::Cpu {
            20
        } else {
            1
        };
        let until = Instant::now() + self.delay * (slower * batch) as u32;
        let mut stopped = false;
        while Instant::now() < until && !stopped {
            stopped = control.is_stopped();
            std::thread::sleep(Duration::from_millis(1));
        }
        if stopped || self.gate.as_ref().is_some_and(|g| !g.pass(control)) {
            *self.stops_seen.lock().unwrap() += 1;
            return Err(ModelError::Interrupted);
        }
        masks.clear();
        for frame in input.chunks_exact(4).take(batch) {
            if frame[0] == PANIC {
                panic!("stand-in panic");
            }
            if frame[0] == FAIL {
                return Err(ModelError::Run("stand-in failure".into()));
            }
            masks.extend_from_slice(&[frame[0] as u8; 2]);
        }
        if input[..4 * batch].chunks_exact(4).any(|f| f[0] == SHORT) {
            masks.pop();
        }
        Ok((1, 2))
    }
}

struct Fixture {
    engine: Engine,
    runs: Arc<RunLog>,
    stops_seen: Arc<Mutex<usize>>,
    /// Present when the runs wait at it.
    gate: Option<Arc<Gate>>,
}

impl Fixture {
    fn gate(&self) -> &Gate {
        self.gate.as_ref().expect("a gated engine")
    }
}

/// An engine on `runner`, warmed up, its warm-up's runs forgotten (they are
/// not the tests' business).
fn start(runner: FakeRunner) -> Fixture {
    let runs = runner.runs.clone();
    let stops_seen = runner.stops_seen.clone();
    let gate = runner.gate.clone();
    if let Some(gate) = &gate {
        // The warm-up: a blank frame, then a timed one.
        gate.open(2);
    }
    let engine = Engine::start(Box::new(runner)).unwrap();
    engine
        .frame_time(BOUND)
        .unwrap()
        .expect("a warm frame's time");
    runs.clear();
    Fixture {
        engine,
        runs,
        stops_seen,
        gate,
    }
}

fn engine(piece: usize, delay_ms: u64) -> Fixture {
    start(fake(piece, Duration::from_millis(delay_ms)))
}

/// An engine whose runs end only when the test opens the gate for them
/// (or a stop ends them).
fn gated_engine(piece: usize) -> Fixture {
    start(FakeRunner {
        gate: Some(Default::default()),
        ..fake(piece, Duration::ZERO)
    })
}

fn client(f: &Fixture, batch_size: usize, wait_ms: u64) -> (Client, mpsc::Receiver<Delivery>) {
    client_of(&f.engine, batch_size, wait_ms)
}

fn client_of(
    engine: &Engine,
    batch_size: usize,
    wait_ms: u64,
) -> (Client, mpsc::Receiver<Delivery>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let client = engine.client(
        Policy {
            batch_size,
            wait: Duration::from_millis(wait_ms),
        },
        Arc::new(move |d| {
            let _ = tx.lock().unwrap().send(d);
        }),
    );
    (client, rx)
}

fn submit(client: &Client, value: f32) -> JobId {
    let mut t = client.take_tensor();
    t[0] = value;
    client.submit(t).unwrap()
}

#[track_caller]
fn next(rx: &mpsc::Receiver<Delivery>) -> Delivery {
    rx.recv_timeout(BOUND).expect("a delivery within 10 s")
}

#[track_caller]
fn mask_value(d: &Delivery) -> u8 {
    let mask = d.result.as_ref().expect("a mask");
    assert_eq!((mask.width, mask.height), (2, 1));
    mask.data[0]
}

#[test]
fn frames_come_back_in_order_with_their_own_masks() {
    let f = engine(1, 1);
    let (c, rx) = client(&f, 4, 0);
    let ids: Vec<JobId> = (1..=6).map(|v| submit(&c, v as f32)).collect();
    for (n, id) in ids.iter().enumerate() {
        let d = next(&rx);
        assert_eq!(d.job, *id);
        assert_eq!(mask_value(&d), n as u8 + 1);
    }
}

#[test]
fn a_full_batch_runs_as_one_on_a_batching_runner() {
    let f = engine(64, 1);
    let (c, rx) = client(&f, 4, 60_000);
    for v in 1..=4 {
        submit(&c, v as f32);
    }
    let got: Vec<u8> = (0..4).map(|_| mask_value(&next(&rx))).collect();
    assert_eq!(got, [1, 2, 3, 4]);
    assert_eq!(f.runs.get(), [4]);
}

#[test]
fn the_cpu_runs_a_batch_frame_by_frame_and_delivers_each_at_once() {
    let f = gated_engine(1);
    let (c, rx) = client(&f, 4, 60_000);
    for v in 1..=4 {
        submit(&c, v as f32);
    }
    // Only the first frame's run may end: its mask does not wait for the
    // rest of its batch.
    f.gate().open(1);
    let first = next(&rx);
    assert_eq!(mask_value(&first), 1);
    assert_eq!(first.batch.frames, 4);
    f.runs.wait_for(2);
    assert!(rx.try_recv().is_err(), "the second frame is still running");
    f.gate().open(3);
    for v in 2..=4 {
        let d = next(&rx);
        assert_eq!((mask_value(&d), d.batch), (v, first.batch));
    }
    assert_eq!(f.runs.get(), [1, 1, 1, 1]);
}

#[test]
fn a_partial_batch_waits_until_urged() {
    let f = engine(64, 1);
    let (c, rx) = client(&f, 4, 60_000);
    submit(&c, 1.0);
    submit(&c, 2.0);
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    c.urge();
    assert_eq!(mask_value(&next(&rx)), 1);
    assert_eq!(mask_value(&next(&rx)), 2);
    // Urging covers what was queued then, not what comes later.
    submit(&c, 3.0);
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
}

#[test]
fn a_partial_batch_goes_after_its_wait() {
    let f = engine(64, 1);
    let (c, rx) = client(&f, 4, 200);
    let start = Instant::now();
    submit(&c, 1.0);
    assert_eq!(mask_value(&next(&rx)), 1);
    assert!(start.elapsed() >= Duration::from_millis(200));
}

#[test]
fn flushing_stops_a_run_of_only_its_frames_and_delivers_none_of_them() {
    let f = gated_engine(64);
    let (c, rx) = client(&f, 2, 60_000);
    submit(&c, 1.0);
    submit(&c, 2.0);
    f.runs.wait_for(1);
    c.flush();
    submit(&c, 3.0);
    c.urge();
    // One permit: the flushed run can only have ended by being stopped.
    f.gate().open(1);
    let d = next(&rx);
    assert_eq!(mask_value(&d), 3);
    assert_eq!(*f.stops_seen.lock().unwrap(), 1);
    assert_eq!(f.runs.get(), [2, 1]);
    assert!(rx.try_recv().is_err());
}

#[test]
fn a_flush_does_not_stop_a_run_shared_with_another_client() {
    let f = gated_engine(64);
    let (a, rx_a) = client(&f, 2, 60_000);
    let (b, rx_b) = client(&f, 2, 60_000);
    submit(&a, 1.0);
    submit(&b, 2.0);
    f.runs.wait_for(1);
    a.flush();
    f.gate().open(1);
    assert_eq!(mask_value(&next(&rx_b)), 2);
    assert_eq!(*f.stops_seen.lock().unwrap(), 0);
    assert_eq!(f.runs.get(), [2]);
    // a's frame came first in the run: it would have been delivered first.
    assert!(rx_a.try_recv().is_err());
}

#[test]
fn clients_share_batches_in_arrival_order() {
    let f = engine(64, 1);
    let (a, rx_a) = client(&f, 2, 60_000);
    let (b, rx_b) = client(&f, 4, 60_000);
    submit(&a, 1.0);
    submit(&b, 2.0);
    submit(&a, 3.0);
    submit(&b, 4.0);
    assert_eq!(mask_value(&next(&rx_a)), 1);
    assert_eq!(mask_value(&next(&rx_a)), 3);
    let d = next(&rx_b);
    assert_eq!(mask_value(&d), 2);
    assert_eq!(d.batch.frames, 2);
    assert_eq!(mask_value(&next(&rx_b)), 4);
    assert_eq!(f.runs.get(), [4]);
}

#[test]
fn a_panic_in_the_runner_fails_its_frames_and_the_engine_lives_on() {
    let f = engine(1, 1);
    let (c, rx) = client(&f, 1, 0);
    submit(&c, PANIC);
    let d = next(&rx);
    assert_eq!(
        d.result,
        Err(EngineError::Panicked("stand-in panic".into()))
    );
    submit(&c, 5.0);
    assert_eq!(mask_value(&next(&rx)), 5);
}

#[test]
fn a_failing_run_is_reported_per_frame() {
    let f = engine(1, 1);
    let (c, rx) = client(&f, 2, 0);
    submit(&c, 1.0);
    submit(&c, FAIL);
    assert_eq!(mask_value(&next(&rx)), 1);
    assert_eq!(
        next(&rx).result,
        Err(EngineError::Model(ModelError::Run(
            "stand-in failure".into()
        )))
    );
}

#[test]
fn a_model_that_cannot_run_fails_the_warm_up_and_every_submit() {
    let runner = FakeRunner {
        always_fail: true,
        ..fake(1, Duration::ZERO)
    };
    let engine = Engine::start(Box::new(runner)).unwrap();
    let expected = EngineError::Model(ModelError::Run("cannot run".into()));
    assert_eq!(engine.frame_time(BOUND), Err(expected.clone()));
    let c = engine.client(
        Policy {
            batch_size: 1,
            wait: Duration::ZERO,
        },
        Arc::new(|_| {}),
    );
    assert_eq!(c.submit(c.take_tensor()), Err(expected));
}

#[test]
fn a_client_dropped_with_frames_queued_gets_nothing_and_others_go_on() {
    let f = gated_engine(1);
    let (a, rx_a) = client(&f, 4, 0);
    let (b, rx_b) = client(&f, 4, 0);
    for v in 1..=4 {
        submit(&a, v as f32);
    }
    f.runs.wait_for(1);
    drop(a);
    submit(&b, 9.0);
    f.gate().open(1);
    assert_eq!(mask_value(&next(&rx_b)), 9);
    // a's running frame was stopped, the others never ran.
    assert_eq!(rx_a.try_iter().count(), 0);
    assert_eq!(*f.stops_seen.lock().unwrap(), 1);
    assert_eq!(f.runs.get(), [1, 1]);
}

#[test]
fn a_newer_frame_takes_the_place_of_one_still_waiting() {
    let f = gated_engine(1);
    let (c, rx) = client(&f, 4, 0);
    let first = submit(&c, 1.0);
    f.runs.wait_for(1);
    let mut replaced = Vec::new();
    let mut last = 0;
    for v in 2..=5 {
        let mut t = c.take_tensor();
        t[0] = v as f32;
        let (id, gone) = c.submit_latest(t).unwrap();
        replaced.extend(gone);
        last = id;
    }
    // The running frame stays; 2, 3 and 4 gave way in turn; 5 runs next.
    assert_eq!(replaced, [first + 1, first + 2, first + 3]);
    f.gate().open(2);
    let d = next(&rx);
    assert_eq!((d.job, mask_value(&d)), (first, 1));
    let d = next(&rx);
    assert_eq!((d.job, mask_value(&d)), (last, 5));
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    assert_eq!(f.runs.get(), [1, 1]);
}

/// An engine whose runner starts on CUDA and moves to the CPU on a run of
/// more than `cuda_runs_up_to` frames.
fn cuda_engine(cuda_runs_up_to: usize) -> Engine {
    let runner = FakeRunner {
        provider: ProviderUsed::Cuda { device_id: 0 },
        cuda_runs_up_to: Some(cuda_runs_up_to),
        ..fake(64, Duration::from_millis(1))
    };
    Engine::start(Box::new(runner)).unwrap()
}

#[test]
fn a_failed_first_run_on_cuda_runs_on_the_cpu_and_says_so() {
    // The warm-up (one frame) is the first run: it already moves.
    let engine = cuda_engine(0);
    assert!(engine.frame_time(BOUND).unwrap().is_some());
    assert_eq!(engine.provider(), ProviderUsed::Cpu);
    assert_eq!(
        engine.fallback_reason().as_deref(),
        Some("the first run of 1 frame(s) on CUDA failed")
    );
    let (c, rx) = client_of(&engine, 1, 0);
    submit(&c, 7.0);
    let d = next(&rx);
    assert_eq!(mask_value(&d), 7);
    assert_eq!(d.provider, ProviderUsed::Cpu);
}

#[test]
fn a_larger_batch_that_fails_on_cuda_moves_the_stream_to_the_cpu_with_its_frames() {
    let engine = cuda_engine(2);
    let warm = engine.frame_time(BOUND).unwrap();
    assert!(warm.is_some());
    assert_eq!(engine.provider(), ProviderUsed::Cuda { device_id: 0 });
    assert_eq!(engine.fallback_reason(), None);
    let (c, rx) = client_of(&engine, 4, 60_000);
    for v in 1..=4 {
        submit(&c, v as f32);
    }
    // No frame is lost: each comes back with its own mask, from the CPU.
    for v in 1..=4 {
        let d = next(&rx);
        assert_eq!(mask_value(&d), v);
        assert_eq!(d.provider, ProviderUsed::Cpu);
    }
    assert_eq!(engine.provider(), ProviderUsed::Cpu);
    assert_eq!(
        engine.fallback_reason().as_deref(),
        Some("the first run of 4 frame(s) on CUDA failed")
    );
    // The run that moved is not taken for a frame's time, the next one is;
    // the CUDA time stands meanwhile (a latency query does not wait).
    assert_eq!(engine.frame_time(Duration::ZERO).unwrap(), warm);
    submit(&c, 5.0);
    c.urge();
    assert_eq!(mask_value(&next(&rx)), 5);
    let cpu = engine.frame_time(Duration::ZERO).unwrap().unwrap();
    assert!(
        cpu >= Duration::from_millis(20),
        "{cpu:?} is the CPU's time"
    );
}

/// A gated engine whose warm-up run `run` (1: the blank one, 2: the timed
/// one) has begun and waits at the gate.
fn in_warm_up_run(run: usize) -> (Engine, Arc<Gate>, Arc<RunLog>, Arc<Mutex<usize>>) {
    let gate = Arc::new(Gate::default());
    let runner = FakeRunner {
        gate: Some(gate.clone()),
        ..fake(1, Duration::ZERO)
    };
    let (runs, stops_seen) = (runner.runs.clone(), runner.stops_seen.clone());
    gate.open(run - 1);
    let engine = Engine::start(Box::new(runner)).unwrap();
    runs.wait_for(run);
    (engine, gate, runs, stops_seen)
}

#[test]
fn dropping_the_engine_stops_its_warm_up_runs() {
    // The blank first run, then the timed second.
    for runs_done in [0, 1] {
        let (engine, _gate, runs, stops_seen) = in_warm_up_run(runs_done + 1);
        // The run would wait 60 s at the gate: only a stop ends it sooner.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            drop(engine);
            let _ = tx.send(());
        });
        rx.recv_timeout(BOUND)
            .unwrap_or_else(|_| panic!("dropped within 10 s, warm-up run {}", runs_done + 1));
        assert_eq!(*stops_seen.lock().unwrap(), 1);
        assert_eq!(runs.get().len(), runs_done + 1);
    }
}

#[test]
fn a_panic_while_slicing_masks_fails_every_frame_of_its_batch_and_the_next_batch_runs() {
    let f = engine(64, 1);
    let (c, rx) = client(&f, 3, 60_000);
    let ids = [submit(&c, 1.0), submit(&c, SHORT), submit(&c, 3.0)];
    // 5 mask bytes for 3 frames of 2: the third frame's slice is out of range.
    let panicked =
        EngineError::Panicked("range end index 6 out of range for slice of length 5".into());
    for id in ids {
        let d = next(&rx);
        assert_eq!((d.job, d.result), (id, Err(panicked.clone())));
        assert_eq!(d.batch.frames, 3);
    }
    for v in 4..=6 {
        submit(&c, v as f32);
    }
    for v in 4..=6 {
        assert_eq!(mask_value(&next(&rx)), v);
    }
    assert_eq!(f.runs.get(), [3, 3]);
}

#[test]
fn a_delivery_callback_that_panics_keeps_no_other_client_from_its_masks() {
    let f = engine(64, 1);
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let a = f.engine.client(
        Policy {
            batch_size: 2,
            wait: Duration::from_secs(60),
        },
        Arc::new(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            panic!("stand-in panic in a delivery");
        }),
    );
    let (b, rx_b) = client(&f, 2, 60_000);
    // a's frame comes first in each run, so its callback is called first.
    for v in [2, 3] {
        submit(&a, 1.0);
        submit(&b, v as f32);
        assert_eq!(mask_value(&next(&rx_b)), v);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(f.runs.get(), [2, 2]);
}

#[test]
fn a_panic_that_ends_the_thread_fails_every_queued_frame_and_every_later_submit() {
    let gate = Arc::new(Gate::default());
    let runner = FakeRunner {
        gate: Some(gate.clone()),
        ..fake(1, Duration::ZERO)
    };
    let (runs, panics) = (runner.runs.clone(), runner.provider_panics.clone());
    let engine = Engine::start(Box::new(runner)).unwrap();
    runs.wait_for(1);
    // The first frame stops the warm-up run, which then asks where it ran:
    // outside any batch's guard.
    panics.store(true, Ordering::SeqCst);
    let (c, rx) = client_of(&engine, 1, 0);
    // One frame: a second submit could already find the thread gone.
    let queued = [submit(&c, 1.0)];
    let ended = EngineError::Panicked("stand-in panic outside the run".into());
    for id in queued {
        let d = next(&rx);
        assert_eq!((d.job, d.result), (id, Err(ended.clone())));
    }
    assert_eq!(engine.frame_time(BOUND), Err(ended.clone()));
    assert_eq!(c.submit(c.take_tensor()), Err(ended));
    assert_eq!(runs.get(), [1]);
}

/// The real model made to run a whole batch in one run (on the CPU it
/// runs frame by frame), its runs logged.
struct WholeBatches {
    model: Model,
    runs: Arc<RunLog>,
}

impl Runner for WholeBatches {
    fn frame_len(&self) -> usize {
        self.model.frame_len()
    }

    fn provider(&self) -> ProviderUsed {
        self.model.provider()
    }

    fn fallback_reason(&self) -> Option<String> {
        self.model.fallback_reason().map(str::to_string)
    }

    fn preferred_piece(&self, batch: usize) -> usize {
        batch
    }

    fn control(&self) -> Result<RunControl, ModelError> {
        RunControl::for_onnx_runtime()
    }

    fn run(
        &mut self,
        input: &[f32],
        batch: usize,
        masks: &mut Vec<u8>,
        control: &RunControl,
    ) -> Result<(u32, u32), ModelError> {
        self.runs.push(batch);
        self.model.run_controlled(input, batch, masks, control)
    }
}

/// Packed RGB, `size` square: a disc of `colour` around `centre` on a
/// noisy gradient.
fn disc_scene(size: u32, centre: (u32, u32), radius: u32, colour: [u8; 3], seed: u32) -> Vec<u8> {
    let mut noise = seed.wrapping_mul(2_654_435_761) | 1;
    let mut rgb = Vec::with_capacity((size * size * 3) as usize);
    for y in 0..size {
        for x in 0..size {
            let (dx, dy) = (x.abs_diff(centre.0), y.abs_diff(centre.1));
            if dx * dx + dy * dy <= radius * radius {
                rgb.extend_from_slice(&colour);
                continue;
            }
            noise ^= noise << 13;
            noise ^= noise >> 17;
            noise ^= noise << 5;
            let n = (noise % 31) as i32 - 15;
            let (t, u) = (x * 100 / size, y * 100 / size);
            for base in [40 + t / 2, 90 + u * 7 / 10, 140 + t * 6 / 10] {
                rgb.push((base as i32 + n).clamp(0, 255) as u8);
            }
        }
    }
    rgb
}

/// ONNX Runtime with 4 different frames in one run: the batched output is
/// cut into the right frames' masks (the engine's slicing and the model's).
#[test]
fn a_real_batch_gives_each_frame_the_mask_it_gets_alone() {
    let runtime = crate::runtime::load(None, None, ort::logging::LogLevel::Warning)
        .expect("ONNX Runtime loads (make setup)")
        .runtime;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/u2netp.onnx");
    let cpu = ModelOptions {
        provider: Provider::Cpu,
        ..ModelOptions::default()
    };
    let mut model = Model::load(&runtime, &path, &cpu).expect("U2NetP loads");
    let (h, w) = model.input_size();
    let mut preparer = Preparer::new(w, h, model.normalization()).with_layout(model.input_layout());
    let discs = [
        ((90, 90), [220, 40, 40]),
        ((230, 90), [40, 200, 60]),
        ((90, 230), [240, 220, 30]),
        ((230, 230), [30, 60, 220]),
    ];
    let frames: Vec<Vec<f32>> = discs
        .iter()
        .zip(1..)
        .map(|(&(centre, colour), seed)| {
            let rgb = disc_scene(w, centre, 60, colour, seed);
            let frame = Frame {
                data: &rgb,
                width: w,
                height: h,
                stride: 3 * w as usize,
                layout: PixelLayout::RGB,
            };
            let mut tensor = vec![0.0; model.frame_len()];
            preparer.prepare(&frame, &mut tensor).unwrap();
            tensor
        })
        .collect();
    let alone: Vec<Vec<u8>> = frames
        .iter()
        .map(|frame| {
            let mut mask = Vec::new();
            assert_eq!(model.run(frame, 1, &mut mask).unwrap(), (h, w));
            mask
        })
        .collect();
    // Each mask holds its own frame's disc and no other's, so a swap shows.
    for (i, mask) in alone.iter().enumerate() {
        let at: Vec<u8> = discs
            .iter()
            .map(|&((x, y), _)| mask[(y * w + x) as usize])
            .collect();
        for (j, value) in at.iter().enumerate() {
            assert!(
                if i == j { *value > 200 } else { *value < 50 },
                "frame {i}'s mask at the discs: {at:?}"
            );
        }
    }

    let runs = Arc::new(RunLog::default());
    let engine = Engine::start(Box::new(WholeBatches {
        model,
        runs: runs.clone(),
    }))
    .unwrap();
    engine.frame_time(Duration::from_secs(120)).unwrap();
    runs.clear();
    let (c, rx) = client_of(&engine, discs.len(), 60_000);
    let ids: Vec<JobId> = frames
        .iter()
        .map(|frame| {
            let mut tensor = c.take_tensor();
            tensor.copy_from_slice(frame);
            c.submit(tensor).unwrap()
        })
        .collect();
    // ORT 1.31.1's CPU kernels give a frame in a batch exactly the mask it
    // gets alone (measured: no pixel differs).
    for (n, (id, alone)) in ids.into_iter().zip(&alone).enumerate() {
        let d = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the batch's masks within 120 s");
        assert_eq!((d.job, d.batch.frames), (id, discs.len()));
        let mask = d.result.expect("a mask");
        assert_eq!((mask.width, mask.height), (w, h));
        let differ = mask.data.iter().zip(alone).filter(|(a, b)| a != b).count();
        assert_eq!(
            differ, 0,
            "frame {n}: pixels that differ from its mask alone"
        );
    }
    assert_eq!(runs.get(), [discs.len()]);
}

#[test]
fn the_first_frame_stops_a_warm_up_run_and_runs_at_once() {
    // Stopped in the blank first run, then in the timed second.
    for runs_done in [0, 1] {
        let (engine, gate, runs, stops_seen) = in_warm_up_run(runs_done + 1);
        // The warm-up run waits at the gate for 60 s unless stopped.
        let (c, rx) = client_of(&engine, 1, 0);
        let mut t = c.take_tensor();
        t[0] = 7.0;
        let id = c.submit(t).unwrap();
        runs.wait_for(runs_done + 2);
        assert_eq!(
            *stops_seen.lock().unwrap(),
            1,
            "warm-up run {}",
            runs_done + 1
        );
        gate.open(1);
        let d = next(&rx);
        assert_eq!((d.job, mask_value(&d)), (id, 7));
        // No warm-up run came after the frame's.
        assert_eq!(runs.get(), vec![1; runs_done + 2]);
        // After a cut blank run the frame's run set the runtime up: not a
        // warm frame's time; the next run's is. After a cut timed run the
        // frame's run is warm and timed.
        let timed = engine.frame_time(Duration::ZERO).unwrap();
        assert_eq!(
            timed.is_some(),
            runs_done == 1,
            "warm-up run {}",
            runs_done + 1
        );
        gate.open(1);
        submit(&c, 8.0);
        assert_eq!(mask_value(&next(&rx)), 8);
        assert!(engine.frame_time(BOUND).unwrap().is_some());
    }
}
