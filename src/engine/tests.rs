// SPDX-License-Identifier: MPL-2.0
//! The engine with a stand-in runner: batching, pieces, urging, flushing,
//! failures and panics, without ONNX Runtime.

use std::sync::mpsc;

use super::*;

/// A frame whose first value is this makes the runner panic.
const PANIC: f32 = -1.0;
/// ... or fail.
const FAIL: f32 = -2.0;

/// Masks are 2x1, both pixels the frame's first input value; each frame
/// takes `delay`, checking for a stop every millisecond.
struct FakeRunner {
    piece: usize,
    delay: Duration,
    runs: Arc<Mutex<Vec<usize>>>,
    stops_seen: Arc<Mutex<usize>>,
    always_fail: bool,
    provider: ProviderUsed,
    /// On CUDA, a run of more frames than this fails and moves the runner
    /// to the CPU, which runs them (as `provider=auto` does).
    cuda_runs_up_to: Option<usize>,
    fallback_reason: Option<String>,
}

impl Runner for FakeRunner {
    fn frame_len(&self) -> usize {
        4
    }

    fn preferred_piece(&self, batch: usize) -> usize {
        self.piece.min(batch)
    }

    fn provider(&self) -> ProviderUsed {
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
        self.runs.lock().unwrap().push(batch);
        // A runner that moved from CUDA runs slower: the engine's frame
        // time must follow.
        let slower = if self.cuda_runs_up_to.is_some() && self.provider == ProviderUsed::Cpu {
            20
        } else {
            1
        };
        let until = Instant::now() + self.delay * (slower * batch) as u32;
        while Instant::now() < until {
            if control.is_stopped() {
                *self.stops_seen.lock().unwrap() += 1;
                return Err(ModelError::Interrupted);
            }
            std::thread::sleep(Duration::from_millis(1));
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
        Ok((1, 2))
    }
}

struct Fixture {
    engine: Engine,
    runs: Arc<Mutex<Vec<usize>>>,
    stops_seen: Arc<Mutex<usize>>,
}

fn engine(piece: usize, delay_ms: u64) -> Fixture {
    let runs = Arc::new(Mutex::new(Vec::new()));
    let stops_seen = Arc::new(Mutex::new(0));
    let runner = FakeRunner {
        piece,
        delay: Duration::from_millis(delay_ms),
        runs: runs.clone(),
        stops_seen: stops_seen.clone(),
        always_fail: false,
        provider: ProviderUsed::Cpu,
        cuda_runs_up_to: None,
        fallback_reason: None,
    };
    let engine = Engine::start(Box::new(runner)).unwrap();
    // The warm-up's runs are not the tests' business.
    engine.frame_time(Duration::from_secs(10)).unwrap();
    runs.lock().unwrap().clear();
    Fixture {
        engine,
        runs,
        stops_seen,
    }
}

fn client(f: &Fixture, batch_size: usize, wait_ms: u64) -> (Client, mpsc::Receiver<Delivery>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let client = f.engine.client(
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
    rx.recv_timeout(Duration::from_secs(10))
        .expect("a delivery within 10 s")
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
    assert_eq!(*f.runs.lock().unwrap(), [4]);
}

#[test]
fn the_cpu_runs_a_batch_frame_by_frame_and_delivers_each_at_once() {
    let f = engine(1, 30);
    let (c, rx) = client(&f, 4, 60_000);
    for v in 1..=4 {
        submit(&c, v as f32);
    }
    let first = next(&rx);
    // The first frame's mask does not wait for the rest of its batch.
    assert!(first.batch_started.elapsed() < Duration::from_millis(4 * 30));
    assert_eq!(first.batch.frames, 4);
    for _ in 0..3 {
        assert_eq!(next(&rx).batch, first.batch);
    }
    assert_eq!(*f.runs.lock().unwrap(), [1, 1, 1, 1]);
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
    let f = engine(64, 2_000);
    let (c, rx) = client(&f, 2, 0);
    submit(&c, 1.0);
    submit(&c, 2.0);
    std::thread::sleep(Duration::from_millis(100));
    let flushed = Instant::now();
    c.flush();
    submit(&c, 3.0);
    let d = next(&rx);
    assert_eq!(mask_value(&d), 3);
    // The stopped run did not finish its 4 s.
    assert!(flushed.elapsed() < Duration::from_millis(3_000));
    assert_eq!(*f.stops_seen.lock().unwrap(), 1);
    assert!(rx.try_recv().is_err());
}

#[test]
fn a_flush_does_not_stop_a_run_shared_with_another_client() {
    let f = engine(64, 300);
    let (a, rx_a) = client(&f, 2, 60_000);
    let (b, rx_b) = client(&f, 2, 60_000);
    submit(&a, 1.0);
    submit(&b, 2.0);
    std::thread::sleep(Duration::from_millis(100));
    a.flush();
    assert_eq!(mask_value(&next(&rx_b)), 2);
    assert_eq!(*f.stops_seen.lock().unwrap(), 0);
    assert!(rx_a.recv_timeout(Duration::from_millis(200)).is_err());
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
    assert_eq!(*f.runs.lock().unwrap(), [4]);
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
        piece: 1,
        delay: Duration::ZERO,
        runs: Default::default(),
        stops_seen: Default::default(),
        always_fail: true,
        provider: ProviderUsed::Cpu,
        cuda_runs_up_to: None,
        fallback_reason: None,
    };
    let engine = Engine::start(Box::new(runner)).unwrap();
    let expected = EngineError::Model(ModelError::Run("cannot run".into()));
    assert_eq!(
        engine.frame_time(Duration::from_secs(10)),
        Err(expected.clone())
    );
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
    let f = engine(1, 50);
    let (a, rx_a) = client(&f, 4, 0);
    let (b, rx_b) = client(&f, 4, 0);
    for v in 1..=4 {
        submit(&a, v as f32);
    }
    drop(a);
    submit(&b, 9.0);
    assert_eq!(mask_value(&next(&rx_b)), 9);
    // At most the frame running when `a` left was delivered.
    let late: Vec<_> = rx_a.try_iter().collect();
    assert!(
        late.len() <= 1,
        "{} deliveries after the client left",
        late.len()
    );
}

#[test]
fn a_newer_frame_takes_the_place_of_one_still_waiting() {
    let f = engine(1, 200);
    let (c, rx) = client(&f, 4, 0);
    let first = submit(&c, 1.0);
    // Let the first frame start running.
    std::thread::sleep(Duration::from_millis(50));
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
    let d = next(&rx);
    assert_eq!((d.job, mask_value(&d)), (first, 1));
    let d = next(&rx);
    assert_eq!((d.job, mask_value(&d)), (last, 5));
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    assert_eq!(*f.runs.lock().unwrap(), [1, 1]);
}

/// An engine whose runner starts on CUDA and moves to the CPU on a run of
/// more than `cuda_runs_up_to` frames.
fn cuda_engine(cuda_runs_up_to: usize) -> Engine {
    let runner = FakeRunner {
        piece: 64,
        delay: Duration::from_millis(1),
        runs: Default::default(),
        stops_seen: Default::default(),
        always_fail: false,
        provider: ProviderUsed::Cuda { device_id: 0 },
        cuda_runs_up_to: Some(cuda_runs_up_to),
        fallback_reason: None,
    };
    Engine::start(Box::new(runner)).unwrap()
}

#[test]
fn a_failed_first_run_on_cuda_runs_on_the_cpu_and_says_so() {
    // The warm-up (one frame) is the first run: it already moves.
    let engine = cuda_engine(0);
    assert!(
        engine
            .frame_time(Duration::from_secs(10))
            .unwrap()
            .is_some()
    );
    assert_eq!(engine.provider(), ProviderUsed::Cpu);
    assert_eq!(
        engine.fallback_reason().as_deref(),
        Some("the first run of 1 frame(s) on CUDA failed")
    );
    let f = Fixture {
        engine,
        runs: Default::default(),
        stops_seen: Default::default(),
    };
    let (c, rx) = client(&f, 1, 0);
    submit(&c, 7.0);
    let d = next(&rx);
    assert_eq!(mask_value(&d), 7);
    assert_eq!(d.provider, ProviderUsed::Cpu);
}

#[test]
fn a_larger_batch_that_fails_on_cuda_moves_the_stream_to_the_cpu_with_its_frames() {
    let engine = cuda_engine(2);
    let warm = engine.frame_time(Duration::from_secs(10)).unwrap();
    assert!(warm.is_some());
    assert_eq!(engine.provider(), ProviderUsed::Cuda { device_id: 0 });
    assert_eq!(engine.fallback_reason(), None);
    let f = Fixture {
        engine,
        runs: Default::default(),
        stops_seen: Default::default(),
    };
    let (c, rx) = client(&f, 4, 60_000);
    for v in 1..=4 {
        submit(&c, v as f32);
    }
    // No frame is lost: each comes back with its own mask, from the CPU.
    for v in 1..=4 {
        let d = next(&rx);
        assert_eq!(mask_value(&d), v);
        assert_eq!(d.provider, ProviderUsed::Cpu);
    }
    assert_eq!(f.engine.provider(), ProviderUsed::Cpu);
    assert_eq!(
        f.engine.fallback_reason().as_deref(),
        Some("the first run of 4 frame(s) on CUDA failed")
    );
    // The run that moved is not taken for a frame's time, the next one is;
    // the CUDA time stands meanwhile (a latency query does not wait).
    assert_eq!(f.engine.frame_time(Duration::ZERO).unwrap(), warm);
    submit(&c, 5.0);
    c.urge();
    assert_eq!(mask_value(&next(&rx)), 5);
    let cpu = f.engine.frame_time(Duration::ZERO).unwrap().unwrap();
    assert!(
        cpu >= Duration::from_millis(20),
        "{cpu:?} is the CPU's time"
    );
}
