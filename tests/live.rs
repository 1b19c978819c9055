// SPDX-License-Identifier: MPL-2.0
//! Live sources: the element reports its latency, never holds a frame longer
//! than that once it has been asked, and the sink (syncing to the clock,
//! dropping what is more than 50 ms late) drops nothing. A queue after the
//! element keeps the sink's clock waits out of the measured hold times.
//!
//! A live pipeline asks for the latency only once every sink has its first
//! frame: the frames before that (the model still warming up) are bound by
//! no figure, and the hold times are counted from the first answer on.
//!
//! The tests here run one at a time: they measure time on a 2-core machine.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use gst::prelude::*;

static SERIAL: Mutex<()> = Mutex::new(());

/// A framerate this machine keeps up with at batch 1 and at batch 4, with
/// room to spare: U2NetP takes anything from 0.1 to 0.5 s a frame on 2 CPU
/// cores, so the tests measure it rather than assume it.
fn sustainable_fps() -> i32 {
    static FPS: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    *FPS.get_or_init(|| {
        // Not while another test runs a live pipeline: both would be slowed.
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        use gstu2netmatte::model::{Model, ModelOptions, Provider};
        let rt = gstu2netmatte::runtime::load(None, None, ort_warning())
            .unwrap()
            .runtime;
        let options = ModelOptions {
            provider: Provider::Cpu,
            device_id: 0,
            ..Default::default()
        };
        let path = std::path::Path::new(TOP).join("models/u2netp.onnx");
        let mut model = Model::load(&rt, &path, &options).unwrap();
        let input = vec![0f32; 4 * model.frame_len()];
        let mut masks = Vec::new();
        model.run(&input, 4, &mut masks).unwrap();
        let start = Instant::now();
        model.run(&input, 4, &mut masks).unwrap();
        let per_frame = start.elapsed().as_secs_f64() / 4.0;
        let fps = ((1.0 / (2.5 * per_frame)) as i32).clamp(1, 10);
        println!(
            "u2netp: {:.0} ms a frame at batch 4 -> {fps} fps",
            per_frame * 1000.0
        );
        fps
    })
}

fn ort_warning() -> ort::logging::LogLevel {
    ort::logging::LogLevel::Warning
}

type Times = Arc<Mutex<HashMap<u64, Instant>>>;

fn stamp_buffers(pad: &gst::Pad) -> Times {
    let times = Times::default();
    let t = times.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(pts) = info.buffer().and_then(|b| b.pts()) {
            t.lock().unwrap().insert(pts.nseconds(), Instant::now());
        }
        gst::PadProbeReturn::Ok
    });
    times
}

struct LiveRun {
    frames_out: usize,
    /// PTS (ns) of the frames in the order they left.
    order: Vec<u64>,
    /// PTS (ns) of the frames in the order they came.
    input: Vec<u64>,
    longest_hold: Duration,
    own_latency: gst::ClockTime,
    live: bool,
    dropped: u64,
    /// Frames that came before the pipeline had the latency.
    before_answer: usize,
}

/// The PTS of the buffers that pass `pad`, in order.
fn pts_order(pad: &gst::Pad) -> Arc<Mutex<Vec<u64>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(pts) = info.buffer().and_then(|b| b.pts()) {
            s.lock().unwrap().push(pts.nseconds());
        }
        gst::PadProbeReturn::Ok
    });
    seen
}

/// When the pad first answered a LATENCY query.
fn first_latency_answer(pad: &gst::Pad) -> Arc<Mutex<Option<Instant>>> {
    let at = Arc::new(Mutex::new(None));
    let a = at.clone();
    pad.add_probe(
        gst::PadProbeType::QUERY_UPSTREAM | gst::PadProbeType::PULL,
        move |_, info| {
            if let Some(gst::PadProbeData::Query(q)) = &info.data
                && q.type_() == gst::QueryType::Latency
            {
                a.lock().unwrap().get_or_insert_with(Instant::now);
            }
            gst::PadProbeReturn::Ok
        },
    );
    at
}

fn live_run(props: &str, fps: i32, frames: u32) -> LiveRun {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pipeline = parse_pipeline(&format!(
        "videotestsrc is-live=true num-buffers={frames} ! video/x-raw,width=64,height=48,framerate={fps}/1 ! \
         u2netmatte name=m mode=mask {props} ! queue max-size-buffers=0 max-size-bytes=0 max-size-time=0 ! \
         fakesink name=sink sync=true max-lateness=50000000 qos=true"
    ));
    let m = pipeline.by_name("m").unwrap();
    let arrived = stamp_buffers(&m.static_pad("sink").unwrap());
    let left = stamp_buffers(&m.static_pad("src").unwrap());
    let order = pts_order(&m.static_pad("src").unwrap());
    let input = pts_order(&m.static_pad("sink").unwrap());
    let answered = first_latency_answer(&m.static_pad("src").unwrap());
    pipeline.set_state(gst::State::Playing).unwrap();
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(120),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("the stream ends within 2 minutes");
    assert_eq!(msg.type_(), gst::MessageType::Eos, "{msg:?}");

    // Ask after the run, still playing: a slow batch raises the latency.
    let mut ours = gst::query::Latency::new();
    let mut upstream = gst::query::Latency::new();
    assert!(m.static_pad("src").unwrap().query(&mut ours));
    assert!(m.static_pad("sink").unwrap().peer_query(&mut upstream));
    let (live, min, _) = ours.result();
    let own_latency = min - upstream.result().1;
    let sink = pipeline.by_name("sink").unwrap();
    let dropped = sink
        .property::<gst::Structure>("stats")
        .get::<u64>("dropped")
        .unwrap();
    pipeline.set_state(gst::State::Null).unwrap();

    let arrived = arrived.lock().unwrap();
    let left = left.lock().unwrap();
    let answered = answered
        .lock()
        .unwrap()
        .expect("the pipeline asked for the latency");
    let holds: Vec<Duration> = left
        .iter()
        .filter(|(pts, _)| arrived[*pts] >= answered)
        .map(|(pts, out)| out.duration_since(arrived[pts]))
        .collect();
    assert!(
        holds.len() >= 3,
        "only {} of {frames} frames came after the latency answer",
        holds.len()
    );
    let before_answer = left.len() - holds.len();
    let longest_hold = holds.into_iter().max().unwrap_or_default();
    let order = order.lock().unwrap().clone();
    let input = input.lock().unwrap().clone();
    LiveRun {
        frames_out: left.len(),
        order,
        input,
        longest_hold,
        own_latency,
        live,
        dropped,
        before_answer,
    }
}

#[track_caller]
fn check(props: &str, fps: i32, frames: u32) -> LiveRun {
    let run = live_run(props, fps, frames);
    println!(
        "{props} at {fps} fps: {} frames ({} before the latency answer), longest hold {:?}, \
         reported own latency {}, {} dropped",
        run.frames_out, run.before_answer, run.longest_hold, run.own_latency, run.dropped
    );
    assert!(run.live, "{props}: the latency query must say live");
    assert_eq!(
        run.frames_out, frames as usize,
        "{props}: every frame leaves"
    );
    assert_eq!(
        run.order, run.input,
        "{props}: in order, with their timestamps"
    );
    assert!(
        run.longest_hold <= Duration::from_nanos(run.own_latency.nseconds()),
        "{props}: a frame was held {:?}, longer than the reported {}",
        run.longest_hold,
        run.own_latency
    );
    // Only frames that came before the pipeline had the latency (the model
    // still warming up) may reach the sink late.
    assert!(
        run.dropped as usize <= run.before_answer,
        "{props}: the sink dropped {} late frames, {} came before the latency was known",
        run.dropped,
        run.before_answer
    );
    run
}

#[test]
fn batch_of_one_leaves_at_once() {
    // Every frame leaves, in order, within the latency reported. That a
    // batch of one adds no batch wait is latency.rs's arithmetic (tested
    // there): how long the model takes here (its first runs on a cold
    // machine took 2.5 s in a fresh CI) is no business of this test.
    check("batch-size=1 keep-up=false", sustainable_fps(), 8);
}

#[test]
fn batch_of_four_waits_at_most_its_timeout() {
    // A batch of 4 takes 3 frame durations (at least 300 ms) to fill: a
    // 200 ms timeout runs partial batches, and the latency counts it.
    let run = check(
        "batch-size=4 batch-timeout=200 keep-up=false",
        sustainable_fps(),
        8,
    );
    assert!(run.own_latency >= gst::ClockTime::from_mseconds(200));
}

#[test]
fn batch_of_four_fills_at_its_framerate() {
    // Auto timeout: 3.5 frame durations, so full batches.
    let fps = sustainable_fps();
    let run = check("batch-size=4 keep-up=false", fps, 8);
    assert!(run.own_latency >= gst::ClockTime::from_mseconds(3500 / fps as u64));
}

#[test]
fn keeping_up_with_a_source_faster_than_the_model() {
    // 30 fps, far more than U2NetP manages on a CPU: with the default
    // keep-up, every frame still leaves, in order, within the latency, and
    // the sink drops none of them.
    check("", 30, 120);
}
