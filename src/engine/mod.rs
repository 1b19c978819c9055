// SPDX-License-Identifier: MPL-2.0
//! The inference engine: one model, one thread that runs it, and any number
//! of clients (streams) that submit prepared frames and get their masks back.
//! No GStreamer types here.
//!
//! A client submits a frame's model input and gets a [`JobId`]; when the
//! frame's batch has run, the client's delivery callback receives the
//! frame's model-size mask (or the error). Batches are formed across clients
//! by the rules in [`batcher`]. On the CPU a batch runs frame by frame
//! ([`Runner::preferred_piece`]), and each frame's mask is delivered as soon
//! as it is ready.
//!
//! Delivery callbacks run on the engine's thread with no engine lock held,
//! so a callback may take its own locks, and a client may call into the
//! engine while holding them: the lock order is always client, then engine.
//!
//! The thread is shared by every stream, so no panic may end it quietly: a
//! panic in a run or around it (cutting masks, delivering) fails the frames
//! of its batch not delivered yet, one in a client's callback is that
//! client's, and should the thread end anyway, every queued frame and every
//! later submit fails. Dropping the engine stops the run under way, warm-up
//! runs included, before it joins the thread.

pub mod batcher;

use std::collections::{BTreeMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use batcher::JobId;
use batcher::{ClientQueue, Decision, Job};

use crate::model::{ModelError, ProviderUsed, RunControl, Runner};

/// A frame's mask at the model's size, min-max normalised to u8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    pub data: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("the inference thread panicked: {0}")]
    Panicked(String),
    #[error("the inference engine has stopped")]
    Stopped,
}

/// One frame's result, handed to its client's callback.
#[derive(Debug)]
pub struct Delivery {
    pub job: JobId,
    pub result: Result<Mask, EngineError>,
    /// This client's share of the batch: identifies the batch, and how many
    /// of its frames it held.
    pub batch: BatchShare,
    /// When the batch holding this frame was taken.
    pub batch_started: Instant,
    /// Model time spent on this frame (its share of its run).
    pub inference: Duration,
    /// Where the run went: `provider=auto` may have moved to the CPU.
    pub provider: ProviderUsed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchShare {
    pub id: u64,
    pub frames: usize,
    /// Frames of the whole run, every client's: a shared session's batch.
    pub run_frames: usize,
}

pub type DeliverFn = Arc<dyn Fn(Delivery) + Send + Sync>;

/// How a client's frames are batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The most frames of this client in one run.
    pub batch_size: usize,
    /// The longest its oldest frame waits for the batch to fill; zero: it
    /// goes as soon as the model is free.
    pub wait: Duration,
}

struct ClientState {
    queue: ClientQueue,
    deliver: DeliverFn,
}

struct Running {
    /// Clients with frames in the running batch.
    clients: HashSet<u64>,
    /// Clients that no longer want their frames in it (flushed, gone).
    cancelled: HashSet<u64>,
}

struct State {
    clients: BTreeMap<u64, ClientState>,
    next_client: u64,
    next_job: JobId,
    next_batch: u64,
    running: Option<Running>,
    /// The control of the model run in progress (a warm-up run or a piece
    /// of a batch), where a flush and the shutdown find it.
    run_control: Option<RunControl>,
    /// Time of one warm frame; None until measured.
    frame_time: Option<Duration>,
    /// The runner moved (CUDA to the CPU): `frame_time` stands until the
    /// next run measures the new provider.
    frame_time_stale: bool,
    /// A warm-up run is under way: the first frame submitted stops it.
    warming_up: bool,
    /// The first warm-up run was cut short: the first real run sets the
    /// runtime up (seconds on CUDA), so the next run is timed instead.
    first_run_cold: bool,
    /// Set when the model cannot run at all; every frame then fails.
    failure: Option<EngineError>,
    shutdown: bool,
    spare_tensors: Vec<Vec<f32>>,
    /// Where the runner runs, as of its last run.
    provider: ProviderUsed,
    /// Why it runs on the CPU although CUDA was asked for.
    fallback_reason: Option<String>,
}

impl State {
    /// Stops the running batch if every frame in it belongs to a client
    /// that no longer wants it.
    fn cancel_running(&mut self, client: u64) {
        if let Some(running) = self.running.as_mut()
            && running.clients.contains(&client)
        {
            running.cancelled.insert(client);
            if running.clients.is_subset(&running.cancelled)
                && let Some(control) = &self.run_control
            {
                control.stop();
            }
        }
    }

    fn recycle(&mut self, tensor: Vec<f32>) {
        // Enough for a batch being prepared while another runs.
        if self.spare_tensors.len() < 2 * 64 {
            self.spare_tensors.push(tensor);
        }
    }
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
    frame_len: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A model and the thread that runs it. Dropping it stops the thread.
pub struct Engine {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts the engine's thread with `runner`. The thread first warms the
    /// runner up with one frame (ONNX Runtime sets itself up on the first
    /// run) and, when nothing waits, times a second: start-up does not depend
    /// on the batch size, and does not hold the caller.
    pub fn start(runner: Box<dyn Runner>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                clients: BTreeMap::new(),
                next_client: 0,
                next_job: 1,
                next_batch: 0,
                running: None,
                run_control: None,
                frame_time: None,
                frame_time_stale: false,
                warming_up: false,
                first_run_cold: false,
                failure: None,
                shutdown: false,
                spare_tensors: Vec::new(),
                provider: runner.provider(),
                fallback_reason: runner.fallback_reason(),
            }),
            cond: Condvar::new(),
            frame_len: runner.frame_len(),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("u2netmatte-inference".into())
            .spawn(move || {
                let worker = Worker::new(thread_shared.clone(), runner);
                // Whatever ends the thread before its shutdown (a panic that
                // got past the batch's guard), no stream may wait for it.
                let ended = match std::panic::catch_unwind(AssertUnwindSafe(|| worker.run())) {
                    Ok(()) => EngineError::Stopped,
                    Err(panic) => EngineError::Panicked(panic_message(&*panic)),
                };
                fail_everything(&thread_shared, ended);
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// A new client with `policy`, whose results go to `deliver`.
    pub fn client(&self, policy: Policy, deliver: DeliverFn) -> Client {
        let mut state = self.shared.lock();
        let id = state.next_client;
        state.next_client += 1;
        state.clients.insert(
            id,
            ClientState {
                queue: ClientQueue::new(policy.batch_size, policy.wait),
                deliver,
            },
        );
        Client {
            id,
            shared: self.shared.clone(),
        }
    }

    /// Values in one frame's model input.
    pub fn frame_len(&self) -> usize {
        self.shared.frame_len
    }

    /// Where the model runs, as of its last run.
    pub fn provider(&self) -> ProviderUsed {
        self.shared.lock().provider
    }

    /// Why the model runs on the CPU although CUDA was asked for, if it
    /// does.
    pub fn fallback_reason(&self) -> Option<String> {
        self.shared.lock().fallback_reason.clone()
    }

    /// The time of one warm frame, waiting up to `timeout` for the warm-up
    /// to measure it. Err if the model cannot run.
    pub fn frame_time(&self, timeout: Duration) -> Result<Option<Duration>, EngineError> {
        let state = self.shared.lock();
        let (state, _) = self
            .shared
            .cond
            .wait_timeout_while(state, timeout, |s| {
                s.frame_time.is_none() && s.failure.is_none() && !s.shutdown
            })
            .unwrap_or_else(PoisonError::into_inner);
        match &state.failure {
            Some(e) => Err(e.clone()),
            None => Ok(state.frame_time),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.shutdown = true;
            // Also a warm-up run: nothing else would stop it.
            if let Some(control) = &state.run_control {
                control.stop();
            }
            self.shared.cond.notify_all();
        }
        if let Some(thread) = self.thread.take() {
            // Dropped from a delivery callback (an element finalized while
            // streaming), the thread ends by itself once it returns.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

/// A stream's handle on an engine. Dropping it withdraws its frames.
pub struct Client {
    id: u64,
    shared: Arc<Shared>,
}

impl Client {
    /// A zeroed model-input buffer, reused when one is spare.
    pub fn take_tensor(&self) -> Vec<f32> {
        let len = self.shared.frame_len;
        match self.shared.lock().spare_tensors.pop() {
            Some(mut t) => {
                t.clear();
                t.resize(len, 0.0);
                t
            }
            None => vec![0.0; len],
        }
    }

    /// Queues a prepared frame. Err when the model cannot run at all.
    pub fn submit(&self, tensor: Vec<f32>) -> Result<JobId, EngineError> {
        self.queue(tensor, false).map(|(id, _)| id)
    }

    /// Queues a prepared frame in place of this client's frames that still
    /// wait for the model (not those running): a live stream that keeps up
    /// has the model run on its newest frame whenever it is free. Returns
    /// the new job and the ones it replaced, which will not be delivered.
    pub fn submit_latest(&self, tensor: Vec<f32>) -> Result<(JobId, Vec<JobId>), EngineError> {
        self.queue(tensor, true)
    }

    fn queue(&self, tensor: Vec<f32>, replace: bool) -> Result<(JobId, Vec<JobId>), EngineError> {
        let mut state = self.shared.lock();
        if let Some(e) = &state.failure {
            return Err(e.clone());
        }
        if state.shutdown {
            return Err(EngineError::Stopped);
        }
        let id = state.next_job;
        state.next_job += 1;
        let client = state
            .clients
            .get_mut(&self.id)
            .ok_or(EngineError::Stopped)?;
        let replaced = if replace {
            std::mem::take(&mut client.queue.jobs)
        } else {
            Default::default()
        };
        client.queue.jobs.push_back(Job {
            id,
            tensor,
            arrived: Instant::now(),
        });
        let replaced_ids = replaced.iter().map(|j| j.id).collect();
        for job in replaced {
            state.recycle(job.tensor);
        }
        if state.warming_up
            && let Some(control) = &state.run_control
        {
            // A blank frame's run would hold up a real one.
            control.stop();
        }
        self.shared.cond.notify_all();
        Ok((id, replaced_ids))
    }

    /// Lets every frame queued so far go without waiting for its batch to
    /// fill (EOS, a serialized query).
    pub fn urge(&self) {
        let mut state = self.shared.lock();
        let through = state.next_job - 1;
        if let Some(client) = state.clients.get_mut(&self.id) {
            client.queue.urgent_through = through;
        }
        self.shared.cond.notify_all();
    }

    /// Drops this client's queued frames, and stops the running batch when
    /// it holds only this client's frames. Nothing of what was submitted
    /// before is delivered after this returns... except a result the engine
    /// was delivering at this very moment, which the client must ignore by
    /// its id.
    pub fn flush(&self) {
        let mut state = self.shared.lock();
        let jobs = match state.clients.get_mut(&self.id) {
            Some(client) => {
                client.queue.urgent_through = 0;
                std::mem::take(&mut client.queue.jobs)
            }
            None => Default::default(),
        };
        for job in jobs {
            state.recycle(job.tensor);
        }
        state.cancel_running(self.id);
        self.shared.cond.notify_all();
    }

    pub fn set_policy(&self, policy: Policy) {
        let mut state = self.shared.lock();
        if let Some(client) = state.clients.get_mut(&self.id) {
            client.queue.batch_size = policy.batch_size.max(1);
            client.queue.wait = policy.wait;
        }
        self.shared.cond.notify_all();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if let Some(client) = state.clients.remove(&self.id) {
            for job in client.queue.jobs {
                state.recycle(job.tensor);
            }
        }
        state.cancel_running(self.id);
        self.shared.cond.notify_all();
    }
}

/// A batch taken from the queues: each job with its client.
struct Batch {
    id: u64,
    started: Instant,
    jobs: Vec<(u64, Job)>,
}

/// The engine's thread.
struct Worker {
    shared: Arc<Shared>,
    runner: Box<dyn Runner>,
    input: Vec<f32>,
    masks: Vec<u8>,
}

impl Worker {
    fn new(shared: Arc<Shared>, runner: Box<dyn Runner>) -> Self {
        Self {
            shared,
            runner,
            input: Vec::new(),
            masks: Vec::new(),
        }
    }

    fn run(mut self) {
        // The model runs below the streaming threads (crate::priority).
        crate::priority::lower_this_thread();
        self.warm_up();
        while let Some(batch) = self.next_batch() {
            self.run_batch(batch);
        }
    }

    /// One blank frame to set the runtime up; a second, timed, when no
    /// frame is waiting (otherwise the first real frame is timed). Each
    /// run's control is where the shutdown stops it: ONNX Runtime's first
    /// run can take seconds, and an element going to NULL waits for it.
    /// The first frame submitted stops them too: a file or a stream that
    /// starts at once gets its masks one model run sooner.
    fn warm_up(&mut self) {
        for timed in [false, true] {
            let control = {
                let mut state = self.shared.lock();
                if state.shutdown
                    || (timed && state.clients.values().any(|c| !c.queue.jobs.is_empty()))
                {
                    return;
                }
                match self.runner.control() {
                    Ok(control) => {
                        state.run_control = Some(control.clone());
                        state.warming_up = true;
                        control
                    }
                    Err(e) => {
                        state.failure = Some(EngineError::Model(e));
                        self.shared.cond.notify_all();
                        return;
                    }
                }
            };
            self.input.clear();
            self.input.resize(self.shared.frame_len, 0.0);
            let start = Instant::now();
            let result = self.guarded_run_with(1, &control);
            let mut state = self.shared.lock();
            state.run_control = None;
            state.warming_up = false;
            if state.shutdown {
                // Stopped by the shutdown: not the model's failure.
                return;
            }
            self.note_provider(&mut state);
            // A run that ended before the stop came is a whole run.
            if result.is_err() && control.is_stopped() {
                // Stopped by a frame, which the next run times.
                state.first_run_cold = !timed;
                self.shared.cond.notify_all();
                return;
            }
            match result {
                Ok(_) if timed => state.frame_time = Some(start.elapsed()),
                Ok(_) => {}
                Err(e) => state.failure = Some(e),
            }
            self.shared.cond.notify_all();
            if state.failure.is_some() {
                return;
            }
        }
    }

    /// Waits until a batch may go and takes it; None at shutdown.
    fn next_batch(&mut self) -> Option<Batch> {
        let mut state = self.shared.lock();
        loop {
            if state.shutdown {
                return None;
            }
            if let Some(error) = state.failure.clone() {
                // The model cannot run: every waiting frame fails at once.
                let failed = take_all(&mut state);
                let provider = state.provider;
                drop(state);
                fail_all(failed, &error, provider, Instant::now());
                state = self.shared.lock();
                if state.clients.values().all(|c| c.queue.jobs.is_empty()) && !state.shutdown {
                    state = self.wait(state, None);
                }
                continue;
            }
            let ids: Vec<u64> = state.clients.keys().copied().collect();
            let queues: Vec<&ClientQueue> = state.clients.values().map(|c| &c.queue).collect();
            match batcher::decide(&queues, Instant::now()) {
                Decision::Take(takes) => {
                    let mut jobs = Vec::new();
                    for (index, count) in takes {
                        let id = ids[index];
                        let Some(client) = state.clients.get_mut(&id) else {
                            continue;
                        };
                        jobs.extend(client.queue.jobs.drain(..count).map(|j| (id, j)));
                    }
                    jobs.sort_by_key(|(_, j)| j.id);
                    let batch = Batch {
                        id: state.next_batch,
                        started: Instant::now(),
                        jobs,
                    };
                    state.next_batch += 1;
                    state.running = Some(Running {
                        clients: batch.jobs.iter().map(|(c, _)| *c).collect(),
                        cancelled: HashSet::new(),
                    });
                    return Some(batch);
                }
                Decision::WaitUntil(deadline) => state = self.wait(state, Some(deadline)),
                Decision::Idle => state = self.wait(state, None),
            }
        }
    }

    fn wait<'a>(
        &self,
        state: MutexGuard<'a, State>,
        until: Option<Instant>,
    ) -> MutexGuard<'a, State> {
        match until {
            Some(deadline) => {
                let timeout = deadline.saturating_duration_since(Instant::now());
                self.shared
                    .cond
                    .wait_timeout(state, timeout)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => self
                .shared
                .cond
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Runs `batch`, each of its frames delivered once or dropped for its
    /// client. A panic outside the model run (which `guarded_run_with`
    /// catches closer) fails the frames not delivered yet, and the thread
    /// goes on with the next batch: it is shared by every stream.
    fn run_batch(&mut self, batch: Batch) {
        let mut progress = Progress {
            shares: client_shares(&batch),
            started: batch.started,
            pending: batch.jobs.iter().map(|(c, j)| (j.id, *c)).collect(),
        };
        let run =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.run_pieces(batch, &mut progress)));
        if let Err(panic) = run {
            self.fail_pending(&progress, EngineError::Panicked(panic_message(&*panic)));
        }
        let mut state = self.shared.lock();
        state.running = None;
        state.run_control = None;
    }

    /// Runs `batch` in the runner's preferred pieces, delivering each
    /// piece's masks as soon as they are ready.
    fn run_pieces(&mut self, batch: Batch, progress: &mut Progress) {
        let piece = self.runner.preferred_piece(batch.jobs.len()).max(1);
        let mut jobs = batch.jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let mut this_piece: Vec<(u64, Job)> = jobs.by_ref().take(piece).collect();
            // Frames whose client flushed or left meanwhile are not run.
            let control = {
                let mut state = self.shared.lock();
                let cancelled = state
                    .running
                    .as_ref()
                    .map(|r| r.cancelled.clone())
                    .unwrap_or_default();
                let (dropped, kept): (Vec<_>, Vec<_>) = this_piece
                    .into_iter()
                    .partition(|(c, _)| cancelled.contains(c) || state.shutdown);
                for (_, job) in dropped {
                    progress.pending.remove(&job.id);
                    state.recycle(job.tensor);
                }
                this_piece = kept;
                if this_piece.is_empty() {
                    continue;
                }
                let control = self.runner.control();
                if let Ok(control) = &control {
                    state.run_control = Some(control.clone());
                }
                control
            };

            self.input.clear();
            for (_, job) in &this_piece {
                self.input.extend_from_slice(&job.tensor);
            }
            let start = Instant::now();
            let result = match control {
                Ok(control) => self.guarded_run_with(this_piece.len(), &control),
                Err(e) => Err(EngineError::Model(e)),
            };
            let inference = start.elapsed() / this_piece.len() as u32;

            let mut state = self.shared.lock();
            state.run_control = None;
            if self.note_provider(&mut state) {
                // This run's time holds the failed run and the new
                // session's set-up: the next run is timed instead (the old
                // time stands meanwhile, so that nobody waits for one).
                state.frame_time_stale = true;
            } else if result.is_ok() && std::mem::take(&mut state.first_run_cold) {
                // Cold: not the time of a warm frame.
            } else if !state.shutdown
                && (state.frame_time.is_none() || state.frame_time_stale)
                && result.is_ok()
            {
                state.frame_time = Some(inference);
                state.frame_time_stale = false;
                self.shared.cond.notify_all();
            }
            let provider = state.provider;
            let cancelled = state
                .running
                .as_ref()
                .map(|r| r.cancelled.clone())
                .unwrap_or_default();
            let mut deliveries = Vec::new();
            for (index, (client, job)) in this_piece.into_iter().enumerate() {
                let wanted = !cancelled.contains(&client);
                let deliver = state.clients.get(&client).map(|c| c.deliver.clone());
                state.recycle(job.tensor);
                let (Some(deliver), true) = (deliver, wanted) else {
                    progress.pending.remove(&job.id);
                    continue;
                };
                let result = match &result {
                    Ok((w, h)) => {
                        let plane = *w as usize * *h as usize;
                        Ok(Mask {
                            data: self.masks[index * plane..(index + 1) * plane].to_vec(),
                            width: *w,
                            height: *h,
                        })
                    }
                    // A stopped run only ever held cancelled frames.
                    Err(EngineError::Model(ModelError::Interrupted)) => {
                        progress.pending.remove(&job.id);
                        continue;
                    }
                    Err(e) => Err(e.clone()),
                };
                deliveries.push((
                    deliver,
                    Delivery {
                        job: job.id,
                        result,
                        batch: progress.shares[&client],
                        batch_started: progress.started,
                        inference,
                        provider,
                    },
                ));
            }
            drop(state);
            for (deliver, delivery) in deliveries {
                progress.pending.remove(&delivery.job);
                deliver_guarded(&deliver, delivery);
            }
        }
    }

    /// After a panic in `run_batch`: the frames it had not delivered yet
    /// get `error`, unless their client no longer wants them.
    fn fail_pending(&self, progress: &Progress, error: EngineError) {
        let (failed, provider) = {
            let state = self.shared.lock();
            let cancelled = state.running.as_ref().map(|r| &r.cancelled);
            let failed: Vec<_> = progress
                .pending
                .iter()
                .filter(|(_, client)| !cancelled.is_some_and(|c| c.contains(client)))
                .filter_map(|(job, client)| {
                    let deliver = state.clients.get(client)?.deliver.clone();
                    Some((deliver, *job, *progress.shares.get(client)?))
                })
                .collect();
            (failed, state.provider)
        };
        fail_all(failed, &error, provider, progress.started);
    }

    /// Records where the runner runs after a run; true when that changed
    /// (`provider=auto` moved to the CPU).
    fn note_provider(&self, state: &mut State) -> bool {
        let now = self.runner.provider();
        if state.provider == now {
            return false;
        }
        state.provider = now;
        state.fallback_reason = self.runner.fallback_reason();
        true
    }

    /// Runs `batch` frames of `self.input`; returns the masks' (width,
    /// height). A panic in the runner is caught and becomes an error, so
    /// that the thread lives on and the streams hear of it.
    fn guarded_run_with(
        &mut self,
        batch: usize,
        control: &RunControl,
    ) -> Result<(u32, u32), EngineError> {
        let Self {
            runner,
            input,
            masks,
            ..
        } = self;
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
            runner.run(input, batch, masks, control)
        }));
        match run {
            Ok(Ok((h, w))) => Ok((w, h)),
            Ok(Err(e)) => Err(EngineError::Model(e)),
            Err(panic) => Err(EngineError::Panicked(panic_message(&*panic))),
        }
    }
}

/// What is left to deliver of the batch that runs.
struct Progress {
    shares: BTreeMap<u64, BatchShare>,
    started: Instant,
    /// Its frames neither delivered nor dropped yet: job -> client.
    pending: BTreeMap<JobId, u64>,
}

/// Calls a client's callback. A panic in it is that client's: the thread
/// goes on, and the other clients get their masks.
fn deliver_guarded(deliver: &DeliverFn, delivery: Delivery) {
    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| deliver(delivery)));
}

/// The engine's thread has ended before its shutdown: every queued frame
/// fails with `error`, and so does every later submit, so that no stream
/// waits for a thread that is gone.
fn fail_everything(shared: &Shared, error: EngineError) {
    let mut state = shared.lock();
    if state.shutdown {
        return;
    }
    let error = state.failure.get_or_insert(error).clone();
    state.running = None;
    state.run_control = None;
    let failed = take_all(&mut state);
    let provider = state.provider;
    shared.cond.notify_all();
    drop(state);
    fail_all(failed, &error, provider, Instant::now());
}

/// How many frames each client has in `batch`.
fn client_shares(batch: &Batch) -> BTreeMap<u64, BatchShare> {
    let mut shares = BTreeMap::new();
    for (client, _) in &batch.jobs {
        shares
            .entry(*client)
            .or_insert(BatchShare {
                id: batch.id,
                frames: 0,
                run_frames: batch.jobs.len(),
            })
            .frames += 1;
    }
    shares
}

/// Delivers `error` for each of `failed`, jobs of a batch taken at
/// `batch_started` (or of none, from [`take_all`]).
fn fail_all(
    failed: Vec<(DeliverFn, JobId, BatchShare)>,
    error: &EngineError,
    provider: ProviderUsed,
    batch_started: Instant,
) {
    for (deliver, job, share) in failed {
        deliver_guarded(
            &deliver,
            Delivery {
                job,
                result: Err(error.clone()),
                batch: share,
                batch_started,
                inference: Duration::ZERO,
                provider,
            },
        );
    }
}

/// Takes every queued job, for failing them.
fn take_all(state: &mut State) -> Vec<(DeliverFn, JobId, BatchShare)> {
    let mut all = Vec::new();
    let mut tensors = Vec::new();
    for client in state.clients.values_mut() {
        let frames = client.queue.jobs.len();
        for job in client.queue.jobs.drain(..) {
            all.push((
                client.deliver.clone(),
                job.id,
                BatchShare {
                    id: 0,
                    frames,
                    run_frames: frames,
                },
            ));
            tensors.push(job.tensor);
        }
    }
    for t in tensors {
        state.recycle(t);
    }
    all
}

pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests;
