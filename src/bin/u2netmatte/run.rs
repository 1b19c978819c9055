// SPDX-License-Identifier: MPL-2.0
//! The work: decoders -> appsrc ! u2netmatte ! appsink -> encoders.
//!
//! Nothing waits on a part that is gone: the main thread pulls with a
//! timeout and watches the bus between pulls (an element error stops the
//! pipeline, which releases every decoder blocked in push); a decoder or
//! encoder that panics reports its file as failed, and the last decoder to
//! leave, by any way, ends the stream.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::Instant;

use gst::prelude::*;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::Args;
use crate::codec;
use crate::element;
use crate::inputs::{self, Job};

pub struct Summary {
    pub total: usize,
    pub written: usize,
    /// Inputs that could not be read or written, and why.
    pub failed: Vec<(PathBuf, String)>,
    pub seconds: f64,
    /// The error that stopped the run before every input was done.
    pub fatal: Option<String>,
    /// Inputs neither written nor failed when `fatal` stopped the run.
    pub not_done: Vec<PathBuf>,
}

impl Summary {
    fn nothing() -> Self {
        Self {
            total: 0,
            written: 0,
            failed: Vec::new(),
            seconds: 0.0,
            fatal: None,
            not_done: Vec::new(),
        }
    }
}

/// The jobs of this run: its shard's (outputs named from the whole
/// listing, so that no two shards write one name), less those already
/// written when --skip-existing; says what was left out.
fn select(jobs: Vec<Job>, args: &Args) -> Result<Vec<Job>, String> {
    let listed = jobs.len();
    let mut jobs = jobs;
    if let Some(shard) = args.shard {
        let shard = shard.resolve(|name| std::env::var(name).ok())?;
        jobs.retain(|j| shard.takes(&j.input));
        eprintln!("shard {shard}: {} of {listed} inputs", jobs.len());
    }
    if args.skip_existing {
        let before = jobs.len();
        jobs.retain(|j| !j.output.exists());
        let existing = before - jobs.len();
        if existing > 0 {
            eprintln!("{existing} already written, left out (--skip-existing)");
        }
    }
    Ok(jobs)
}

/// How often the main thread looks at the bus while no result comes.
const BUS_POLL: gst::ClockTime = gst::ClockTime::from_mseconds(50);

struct Pipeline {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    sink: gst_app::AppSink,
}

fn build(args: &Args, queue: u64) -> Result<Pipeline, String> {
    element::init()?;
    let src = gst_app::AppSrc::builder()
        .format(gst::Format::Time)
        .block(true)
        .max_buffers(queue)
        .max_bytes(0)
        .build();
    let matte = element::make(&args.model, &args.look, None)?;
    let sink = gst_app::AppSink::builder()
        .sync(false)
        .max_buffers(queue as u32)
        .build();
    let pipeline = gst::Pipeline::new();
    pipeline
        .add_many([src.upcast_ref(), &matte, sink.upcast_ref()])
        .map_err(|e| e.to_string())?;
    gst::Element::link_many([src.upcast_ref(), &matte, sink.upcast_ref()])
        .map_err(|e| e.to_string())?;
    Ok(Pipeline {
        pipeline,
        src,
        sink,
    })
}

/// The first error on the bus, as text.
fn bus_error(pipeline: &gst::Pipeline) -> Option<String> {
    let bus = pipeline.bus()?;
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
        if let gst::MessageView::Error(e) = msg.view() {
            return Some(e.error().to_string());
        }
    }
    None
}

fn progress(total: usize, quiet: bool) -> ProgressBar {
    let target = if quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    let bar = ProgressBar::with_draw_target(Some(total as u64), target);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} files  {per_sec}  ETA {eta}  {wide_msg}")
    {
        bar.set_style(style);
    }
    bar
}

fn sample_for(pic: codec::Picture, index: usize) -> Result<gst::Sample, String> {
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgba, pic.width, pic.height)
        .build()
        .map_err(|e| e.to_string())?;
    let caps = info.to_caps().map_err(|e| e.to_string())?;
    let mut buffer = gst::Buffer::from_mut_slice(pic.rgba);
    {
        let b = buffer.get_mut().ok_or("buffer not writable")?;
        // The offset names the file: the element keeps it on the output.
        b.set_offset(index as u64);
        b.set_pts(gst::ClockTime::from_mseconds(index as u64));
    }
    Ok(gst::Sample::builder().buffer(&buffer).caps(&caps).build())
}

fn write_sample(sample: &gst::Sample, args: &Args, job: &Job) -> Result<(), String> {
    element::with_output(sample, |pic| codec::write(pic, args.format, &job.output))
}

/// A job's state, for the summary.
const PENDING: u8 = 0;
const WRITTEN: u8 = 1;
const FAILED: u8 = 2;

/// What happened to each input, and its reporting: each failure is named
/// once, as it happens.
struct Report<'a> {
    jobs: &'a [Job],
    state: Vec<AtomicU8>,
    failed: Mutex<Vec<(PathBuf, String)>>,
    bar: ProgressBar,
}

impl<'a> Report<'a> {
    fn new(jobs: &'a [Job], quiet: bool) -> Self {
        Self {
            jobs,
            state: jobs.iter().map(|_| AtomicU8::new(PENDING)).collect(),
            failed: Mutex::new(Vec::new()),
            bar: progress(jobs.len(), quiet),
        }
    }

    fn fail(&self, index: usize, reason: String) {
        let Some(job) = self.jobs.get(index) else {
            return;
        };
        let line = format!("skipped {}: {reason}", job.input.display());
        // A hidden bar (quiet, or stderr not a terminal) prints nothing.
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
        self.state[index].store(FAILED, Ordering::SeqCst);
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((job.input.clone(), reason));
        self.bar.inc(1);
    }

    fn written(&self, index: usize) {
        self.state[index].store(WRITTEN, Ordering::SeqCst);
        self.bar.inc(1);
    }

    fn summary(self, started: Instant, fatal: Option<String>) -> Summary {
        self.bar.finish_and_clear();
        let written = self
            .state
            .iter()
            .filter(|s| s.load(Ordering::SeqCst) == WRITTEN)
            .count();
        let not_done = if fatal.is_some() {
            self.state
                .iter()
                .zip(self.jobs)
                .filter(|(s, _)| s.load(Ordering::SeqCst) == PENDING)
                .map(|(_, j)| j.input.clone())
                .collect()
        } else {
            Vec::new()
        };
        Summary {
            total: self.jobs.len(),
            written,
            failed: self.failed.into_inner().unwrap_or_else(|e| e.into_inner()),
            seconds: started.elapsed().as_secs_f64(),
            fatal,
            not_done,
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs `f`; a panic becomes an error carrying its message.
fn unpanicked<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|p| Err(format!("{what} panicked: {}", panic_message(p.as_ref()))))
}

/// The decoders' shared work: each thread running [`Decoders::work`] takes
/// the next index, decodes it and pushes it, until every index is taken or
/// a push is refused. `end` runs once, when the last of them is gone.
struct Decoders<D, P, F, E> {
    count: usize,
    next: AtomicUsize,
    left: AtomicUsize,
    decode: D,
    push: P,
    fail: F,
    end: E,
}

/// Counts a decoder out when dropped, also by a panic's unwinding: nobody
/// waits for the stream's end from a decoder that is gone.
struct CountedOut<'a>(&'a AtomicUsize, &'a (dyn Fn() + Sync));

impl Drop for CountedOut<'_> {
    fn drop(&mut self) {
        if self.0.fetch_sub(1, Ordering::SeqCst) == 1 {
            (self.1)();
        }
    }
}

impl<D, P, F, E> Decoders<D, P, F, E>
where
    F: Fn(usize, String) + Sync,
    E: Fn() + Sync,
{
    fn new(threads: usize, count: usize, decode: D, push: P, fail: F, end: E) -> Self {
        Self {
            count,
            next: AtomicUsize::new(0),
            left: AtomicUsize::new(threads),
            decode,
            push,
            fail,
            end,
        }
    }

    /// One decoder's loop; run it on as many threads as `new` was told.
    fn work<T>(&self)
    where
        D: Fn(usize) -> Result<T, String>,
        P: Fn(T) -> bool,
    {
        let _out = CountedOut(&self.left, &self.end);
        loop {
            let i = self.next.fetch_add(1, Ordering::SeqCst);
            if i >= self.count {
                break;
            }
            match unpanicked("decoding", || (self.decode)(i)) {
                Ok(item) => {
                    if !(self.push)(item) {
                        break;
                    }
                }
                Err(e) => (self.fail)(i, format!("cannot read it: {e}")),
            }
        }
    }
}

pub fn run(args: &Args) -> Result<Summary, String> {
    // Checked before the output folder is made: refusing must leave no trace.
    let jobs = inputs::collect(&args.inputs, args.output(), args.format.extension())
        .map_err(|e| e.to_string())?;
    if jobs.is_empty() {
        return Err("no images among the inputs".into());
    }
    let jobs = select(jobs, args)?;
    if jobs.is_empty() {
        return Ok(Summary::nothing());
    }
    std::fs::create_dir_all(args.output())
        .map_err(|e| format!("cannot create {}: {e}", args.output().display()))?;
    let threads = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let p = build(args, u64::from(args.model.batch_size) * 2)?;
    if p.pipeline.set_state(gst::State::Playing).is_err() {
        let e = bus_error(&p.pipeline).unwrap_or_else(|| "the pipeline did not start".into());
        let _ = p.pipeline.set_state(gst::State::Null);
        return Err(e);
    }

    let report = Report::new(&jobs, args.quiet);
    let started = Instant::now();
    let push_turn = Mutex::new(());
    let decoders = Decoders::new(
        threads,
        jobs.len(),
        |i: usize| codec::decode(&jobs[i].input).and_then(|pic| sample_for(pic, i)),
        |sample: gst::Sample| {
            // push_sample sets the caps, then queues the buffer: two
            // decoders interleaving there would send a frame under
            // another's caps.
            let _turn = push_turn.lock().unwrap_or_else(|e| e.into_inner());
            p.src.push_sample(&sample).is_ok()
        },
        |i, reason| report.fail(i, reason),
        || {
            let _ = p.src.end_of_stream();
        },
    );

    let (tx, rx) = mpsc::sync_channel::<gst::Sample>(threads * 2);
    let rx = Mutex::new(rx);
    let fatal = std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| decoders.work());
        }

        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let Ok(sample) = rx.lock().unwrap_or_else(|e| e.into_inner()).recv() else {
                        break;
                    };
                    let Some((i, job)) = sample.buffer().and_then(|b| {
                        let i = b.offset() as usize;
                        jobs.get(i).map(|j| (i, j))
                    }) else {
                        continue;
                    };
                    match unpanicked("encoding", || write_sample(&sample, args, job)) {
                        Ok(()) => report.written(i),
                        Err(e) => {
                            report.fail(i, format!("cannot write {}: {e}", job.output.display()))
                        }
                    }
                }
            });
        }

        let fatal = loop {
            // Read errors before the pipeline stops: going to NULL drops
            // its bus messages.
            if let Some(e) = bus_error(&p.pipeline) {
                break Some(e);
            }
            let Some(sample) = p.sink.try_pull_sample(BUS_POLL) else {
                if p.sink.is_eos() {
                    break bus_error(&p.pipeline);
                }
                continue;
            };
            if tx.send(sample).is_err() {
                break None;
            }
        };
        if fatal.is_some() {
            // What reached the sink before the error is complete: keep it.
            while let Some(sample) = p.sink.try_pull_sample(gst::ClockTime::ZERO) {
                if tx.send(sample).is_err() {
                    break;
                }
            }
        }
        drop(tx);
        // Makes every decoder's push return at once (after an error they
        // would wait in it for ever).
        let _ = p.pipeline.set_state(gst::State::Null);
        fatal
    });
    Ok(report.summary(started, fatal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decoder_that_panics_fails_its_file_and_the_stream_still_ends() {
        let pushed = Mutex::new(Vec::new());
        let failed = Mutex::new(Vec::new());
        // How many frames were pushed when the stream was ended, per end.
        let ends = Mutex::new(Vec::new());
        let decoders = Decoders::new(
            3,
            10,
            |i| {
                if i == 4 {
                    panic!("bad file {i}");
                }
                Ok(i)
            },
            |i| {
                pushed.lock().unwrap().push(i);
                true
            },
            |i, reason| failed.lock().unwrap().push((i, reason)),
            || ends.lock().unwrap().push(pushed.lock().unwrap().len()),
        );
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| decoders.work());
            }
        });
        let mut pushed = pushed.into_inner().unwrap();
        pushed.sort();
        assert_eq!(pushed, [0, 1, 2, 3, 5, 6, 7, 8, 9]);
        assert_eq!(
            failed.into_inner().unwrap(),
            [(
                4,
                "cannot read it: decoding panicked: bad file 4".to_string()
            )]
        );
        assert_eq!(
            ends.into_inner().unwrap(),
            [9],
            "ended once, after the last push"
        );
    }

    #[test]
    fn a_decoder_thread_that_dies_still_counts_out() {
        let ends = AtomicUsize::new(0);
        let decoders = Decoders::new(
            2,
            6,
            Ok,
            // A panic outside decoding kills its thread.
            |i: usize| {
                assert_ne!(i, 1, "push of 1");
                true
            },
            |_, _| {},
            || {
                ends.fetch_add(1, Ordering::SeqCst);
            },
        );
        let died = std::panic::catch_unwind(AssertUnwindSafe(|| {
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| decoders.work());
                }
            })
        }));
        assert!(died.is_err(), "one decoder thread panicked");
        assert_eq!(ends.load(Ordering::SeqCst), 1);
        assert_eq!(decoders.left.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_panic_becomes_an_error_with_its_message() {
        let owned = unpanicked::<()>("encoding", || panic!("{} px", 3));
        assert_eq!(owned, Err("encoding panicked: 3 px".to_string()));
        let fixed = unpanicked::<()>("decoding", || panic!("fixed"));
        assert_eq!(fixed, Err("decoding panicked: fixed".to_string()));
        assert_eq!(unpanicked("decoding", || Ok(5)), Ok(5));
    }
}
