// SPDX-License-Identifier: MPL-2.0
//! `shared-session`: several elements, one model session and one inference
//! thread; each stream keeps its own frames, events, flushes and EOS.

mod common;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use common::*;
use gst::glib;
use gst::prelude::*;
use gst_video::VideoFormat;

/// The tests here count the process's inference threads: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Threads of this process running a model (an engine's thread each):
/// once the count is `expected` (or after 10 s), the count after another
/// 300 ms. A new thread names itself when it first runs, and until then has
/// its parent's name: a count may be short for a moment, never long.
fn inference_threads(expected: usize) -> usize {
    let count = || {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            // Linux keeps 15 bytes of "u2netmatte-inference".
            .filter(|name| name.trim_end().starts_with("u2netmatte-inf"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = count();
        if n == expected || Instant::now() > deadline {
            std::thread::sleep(Duration::from_millis(300));
            return count();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tiny_model(tag: &str) -> String {
    let path = temp_dir(tag).join("tiny.onnx");
    write_tiny_model(&path, &[0, 3, 64, 64], false);
    path.to_str().unwrap().to_string()
}

/// One stream's output: (pts ms, duration ms, mask rows packed).
type Stream = Vec<(u64, u64, Vec<u8>)>;

const STREAMS: [(&str, u32, u32); 4] = [
    ("ball", 320, 240),
    ("smpte", 160, 120),
    ("pinwheel", 256, 256),
    ("circular", 200, 150),
];

/// The masks of `count` streams (sizes and pictures from [`STREAMS`]), all
/// in one pipeline, `frames` frames each, with `props` on every element;
/// with `mixed_batches`, stream n has batch-size n + 1.
fn run_streams(count: usize, frames: u32, props: &str, mixed_batches: bool) -> Vec<Stream> {
    let desc: Vec<String> = STREAMS[..count]
        .iter()
        .enumerate()
        .map(|(n, (pattern, w, h))| {
            let batch = if mixed_batches {
                format!("batch-size={}", n + 1)
            } else {
                String::new()
            };
            format!(
                "videotestsrc num-buffers={frames} pattern={pattern} ! \
                 video/x-raw,format=RGB,width={w},height={h},framerate=25/1 ! \
                 u2netmatte name=m{n} mode=mask {props} {batch} ! appsink name=s{n} sync=false"
            )
        })
        .collect();
    let pipeline = parse_pipeline(&desc.join("  "));
    pipeline.set_state(gst::State::Playing).unwrap();
    let streams = (0..count)
        .map(|n| {
            let sink = pipeline
                .by_name(&format!("s{n}"))
                .unwrap()
                .downcast::<gst_app::AppSink>()
                .unwrap();
            collect_samples(&sink)
                .into_iter()
                .map(|s| {
                    let info = gst_video::VideoInfo::from_caps(s.caps().unwrap()).unwrap();
                    let b = s.buffer_owned().unwrap();
                    (
                        b.pts().unwrap().mseconds(),
                        b.duration().unwrap().mseconds(),
                        packed_plane(&b, &info),
                    )
                })
                .collect()
        })
        .collect();
    pipeline.set_state(gst::State::Null).unwrap();
    streams
}

#[track_caller]
fn assert_same_streams(shared: &[Stream], alone: &[Stream]) {
    for (n, (s, a)) in shared.iter().zip(alone).enumerate() {
        let times = |st: &Stream| st.iter().map(|(p, d, _)| (*p, *d)).collect::<Vec<_>>();
        assert_eq!(times(s), times(a), "stream {n}: timestamps");
        for ((pts, _, sm), (_, _, am)) in s.iter().zip(a) {
            assert_eq!(sm.len(), am.len(), "stream {n} frame {pts}: mask size");
            let worst = sm.iter().zip(am).map(|(x, y)| x.abs_diff(*y)).max();
            assert!(
                worst <= Some(1),
                "stream {n} frame at {pts} ms: shared mask differs from its own by {worst:?}"
            );
        }
    }
}

#[test]
fn shared_streams_get_the_frames_and_masks_they_get_alone() {
    let _serial = serial();
    let frames = 3;
    let alone = run_streams(4, frames, "batch-size=1 provider=cpu", false);
    for stream in &alone {
        assert_eq!(stream.len(), frames as usize);
        assert_eq!(
            stream.iter().map(|f| f.0).collect::<Vec<_>>(),
            [0, 40, 80],
            "timestamps in order"
        );
    }
    // Two and four elements, batch sizes that differ among them.
    for count in [2, 4] {
        let shared = run_streams(count, frames, "provider=cpu shared-session=equal", true);
        assert_eq!(shared.len(), count);
        assert_same_streams(&shared, &alone[..count]);
    }
    assert_eq!(
        inference_threads(0),
        0,
        "the session went with its elements"
    );
}

#[test]
fn four_elements_run_one_session_on_one_thread() {
    let _serial = serial();
    let model = tiny_model("shared-threads");
    let desc: Vec<String> = (0..4)
        .map(|n| {
            format!(
                "videotestsrc is-live=true pattern=ball ! video/x-raw,format=RGB,width=64,height=48,framerate=30/1 ! \
                 u2netmatte model={model} shared-session=one-thread batch-size={} ! fakesink",
                n + 1
            )
        })
        .collect();
    let pipeline = parse_pipeline(&desc.join("  "));
    pipeline.set_state(gst::State::Playing).unwrap();
    let (state_change, _, _) = pipeline.state(gst::ClockTime::from_seconds(60));
    state_change.expect("the four streams play");
    assert_eq!(inference_threads(1), 1, "four elements, one engine");
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(
        inference_threads(0),
        0,
        "the last element took the session away"
    );

    // Unshared, each element has its own.
    let desc = desc.join("  ").replace("shared-session=one-thread", "");
    let pipeline = parse_pipeline(&desc);
    pipeline.set_state(gst::State::Playing).unwrap();
    let (state_change, _, _) = pipeline.state(gst::ClockTime::from_seconds(60));
    state_change.expect("the four streams play");
    assert_eq!(inference_threads(4), 4);
    pipeline.set_state(gst::State::Null).unwrap();
}

fn frame(info: &gst_video::VideoInfo, seed: u32, ms: u64) -> gst::Buffer {
    let s = scene(info.width(), info.height(), Shape::Disc, seed);
    let mut b = frame_buffer(&s.rgb, info);
    let bm = b.get_mut().unwrap();
    bm.set_pts(gst::ClockTime::from_mseconds(ms));
    bm.set_duration(gst::ClockTime::from_mseconds(40));
    b
}

fn shared_harness(model: &str, session: &str, batch: u32) -> (gst_check::Harness, Log) {
    let el = element(&[
        ("model", model.to_value()),
        ("shared-session", session.to_value()),
        ("batch-size", batch.to_value()),
        ("mode", "mask".to_value()),
        ("provider", "cpu".to_value()),
    ]);
    let log = record(&el.static_pad("src").unwrap());
    (harness_around(el, false), log)
}

fn frames_after_last_flush(log: &Log) -> Vec<String> {
    let all = entries(log);
    let from = all
        .iter()
        .rposition(|e| e == "FlushStop")
        .map_or(0, |i| i + 1);
    all[from..]
        .iter()
        .filter(|e| e.starts_with('F') && *e != "FlushStop" && *e != "FlushStart")
        .cloned()
        .collect()
}

#[test]
fn a_flushing_seek_on_one_stream_leaves_the_others_alone() {
    let _serial = serial();
    // The real model, so that the flush comes while a batch holding both
    // streams' frames runs.
    let model = format!("{TOP}/models/u2netp.onnx");
    let i = info(VideoFormat::Rgb, 96, 72);
    let (mut a, a_log) = shared_harness(&model, "seek", 4);
    let (mut b, b_log) = shared_harness(&model, "seek", 4);
    a.set_src_caps(i.to_caps().unwrap());
    b.set_src_caps(i.to_caps().unwrap());
    for n in 0..4 {
        a.push(frame(&i, n, n as u64 * 40)).unwrap();
        b.push(frame(&i, 10 + n, n as u64 * 40)).unwrap();
    }
    assert!(a.push_event(gst::event::FlushStart::new()));
    assert!(a.push_event(gst::event::FlushStop::new(true)));
    a.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
        gst::ClockTime,
    >::new()));
    for n in 0..2 {
        a.push(frame(&i, 20 + n, 5_000 + n as u64 * 40)).unwrap();
    }
    a.push_event(gst::event::Eos::new());
    b.push_event(gst::event::Eos::new());
    wait_for_eos(&mut a);
    wait_for_eos(&mut b);
    assert_eq!(frames_after_last_flush(&a_log), ["F5000", "F5040"]);
    assert_eq!(
        frames_after_last_flush(&b_log),
        ["F0", "F40", "F80", "F120"],
        "the other stream lost nothing"
    );
    assert!(
        !entries(&b_log).iter().any(|e| e.starts_with("Flush")),
        "the flush stayed in its stream"
    );
}

#[test]
fn eos_on_one_stream_while_the_others_go_on() {
    let _serial = serial();
    let model = tiny_model("shared-eos");
    let i = info(VideoFormat::Rgb, 64, 48);
    let (mut a, a_log) = shared_harness(&model, "eos", 4);
    let (mut b, b_log) = shared_harness(&model, "eos", 4);
    a.set_src_caps(i.to_caps().unwrap());
    b.set_src_caps(i.to_caps().unwrap());
    b.push(frame(&i, 1, 0)).unwrap();
    a.push(frame(&i, 2, 0)).unwrap();
    a.push(frame(&i, 3, 40)).unwrap();
    a.push_event(gst::event::Eos::new());
    wait_for_eos(&mut a);
    assert_eq!(frames_after_last_flush(&a_log), ["F0", "F40"]);
    // The other stream still runs, and its partial batch was not lost.
    for n in 1..6 {
        b.push(frame(&i, 1 + n, n as u64 * 40)).unwrap();
    }
    b.push_event(gst::event::Eos::new());
    wait_for_eos(&mut b);
    assert_eq!(
        frames_after_last_flush(&b_log),
        ["F0", "F40", "F80", "F120", "F160", "F200"]
    );
}

/// Brings `el`, alone in a pipeline, to READY; the bus error if it fails.
fn ready_error(el: &gst::Element) -> Option<String> {
    let pipeline = gst::Pipeline::new();
    pipeline.add(el).unwrap();
    let failed = pipeline.set_state(gst::State::Ready).is_err();
    let message = pipeline
        .bus()
        .unwrap()
        .pop_filtered(&[gst::MessageType::Error])
        .map(|m| match m.view() {
            gst::MessageView::Error(e) => e.error().to_string(),
            _ => unreachable!(),
        });
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(
        failed,
        message.is_some(),
        "an error message with the failure"
    );
    message
}

#[test]
fn elements_whose_settings_differ_are_refused_with_the_difference() {
    let _serial = serial();
    let model = tiny_model("shared-mismatch");
    let other_model = temp_dir("shared-mismatch-other").join("tiny.onnx");
    write_tiny_model(&other_model, &[0, 3, 64, 64], false);
    let running = element(&[
        ("model", model.to_value()),
        ("shared-session", "mismatch".to_value()),
        ("provider", "cpu".to_value()),
    ]);
    let pipeline = gst::Pipeline::new();
    pipeline.add(&running).unwrap();
    pipeline.set_state(gst::State::Ready).unwrap();

    let cases: [(&str, glib::Value, &str); 3] = [
        (
            "inference-size",
            128u32.to_value(),
            "inference-size=128 (the session has 0)",
        ),
        ("model", other_model.to_str().unwrap().to_value(), "model="),
        (
            "provider",
            "auto".to_value(),
            "provider=auto (the session has cpu)",
        ),
    ];
    for (property, value, named) in cases {
        let mut props = vec![
            ("model", model.to_value()),
            ("shared-session", "mismatch".to_value()),
            ("provider", "cpu".to_value()),
        ];
        props.retain(|(p, _)| *p != property);
        props.push((property, value));
        let error = ready_error(&element(&props)).expect("refused");
        assert!(
            error.contains("shared-session \"mismatch\"") && error.contains(named),
            "{property}: {error}"
        );
    }
    // Another batch size, mode or batch timeout is no difference.
    let joining = element(&[
        ("model", model.to_value()),
        ("shared-session", "mismatch".to_value()),
        ("provider", "cpu".to_value()),
        ("batch-size", 16u32.to_value()),
        ("mode", "alpha".to_value()),
        ("batch-timeout", 500u32.to_value()),
    ]);
    assert_eq!(ready_error(&joining), None);
    pipeline.set_state(gst::State::Null).unwrap();
    // Once the session's last element stopped, the name is free for other
    // settings.
    let after = element(&[
        ("model", model.to_value()),
        ("shared-session", "mismatch".to_value()),
        ("inference-size", 128u32.to_value()),
    ]);
    assert_eq!(ready_error(&after), None);
}

#[test]
fn elements_come_and_go_while_another_plays() {
    let _serial = serial();
    let model = tiny_model("shared-come-and-go");
    let i = info(VideoFormat::Rgb, 64, 48);
    let (mut a, a_log) = shared_harness(&model, "come-and-go", 2);
    a.set_src_caps(i.to_caps().unwrap());
    let mut a_pts = 0;
    for round in 0..3 {
        let (mut b, b_log) = shared_harness(&model, "come-and-go", 4);
        assert_eq!(
            inference_threads(1),
            1,
            "round {round}: one engine for both"
        );
        b.set_src_caps(i.to_caps().unwrap());
        for n in 0..3 {
            b.push(frame(&i, n, n as u64 * 40)).unwrap();
            a.push(frame(&i, 7, a_pts)).unwrap();
            a_pts += 40;
        }
        if round == 1 {
            // Stopped with its frames in flight, without EOS.
            drop(b);
        } else {
            b.push_event(gst::event::Eos::new());
            wait_for_eos(&mut b);
            assert_eq!(frames_after_last_flush(&b_log), ["F0", "F40", "F80"]);
            drop(b);
        }
        for _ in 0..3 {
            a.pull().expect("the playing stream goes on");
        }
    }
    a.push_event(gst::event::Eos::new());
    wait_for_eos(&mut a);
    let expected: Vec<String> = (0..9).map(|n| format!("F{}", n * 40)).collect();
    assert_eq!(frames_after_last_flush(&a_log), expected);
    drop(a);
    assert_eq!(inference_threads(0), 0);
}

#[test]
fn a_stream_stalled_downstream_does_not_stop_the_others() {
    let _serial = serial();
    let model = tiny_model("shared-stall");
    let branch = |src: &str, sink: &str| {
        format!(
            "videotestsrc num-buffers=40 pattern={src} ! video/x-raw,format=RGB,width=64,height=48 ! \
             u2netmatte model={model} shared-session=stall batch-size=4 ! {sink}"
        )
    };
    // Nobody pulls this appsink: its stream stops once its queues are full.
    let stalled = parse_pipeline(&branch(
        "ball",
        "appsink name=sink max-buffers=1 sync=false",
    ));
    stalled.set_state(gst::State::Playing).unwrap();
    let moving = parse_pipeline(&branch("smpte", "fakesink"));
    let start = Instant::now();
    run_pipeline(&moving, Duration::from_secs(60)).expect("the other stream runs to its end");
    println!("40 frames beside a stalled stream in {:?}", start.elapsed());
    // The stalled stream resumes when pulled, with its frames in order.
    let sink = sink_of(&stalled);
    let pts: Vec<u64> = collect_samples(&sink)
        .iter()
        .map(|s| s.buffer().unwrap().pts().unwrap().mseconds())
        .collect();
    assert_eq!(pts.len(), 40);
    assert!(pts.windows(2).all(|w| w[0] < w[1]));
    stalled.set_state(gst::State::Null).unwrap();
}

const RSS_CHILD_ENV: &str = "U2NETMATTE_SHARED_RSS_CHILD";

/// Run by [`four_shared_streams_take_the_memory_of_about_one`] in a
/// process of its own.
#[test]
#[ignore = "a child process of four_shared_streams_take_the_memory_of_about_one"]
fn shared_rss_child() {
    let Some(config) = std::env::var(RSS_CHILD_ENV).ok() else {
        return;
    };
    let (streams, shared) = config.split_once(':').unwrap();
    let session = if shared == "true" { "rss" } else { "" };
    let desc: Vec<String> = (0..streams.parse::<usize>().unwrap())
        .map(|_| {
            format!(
                "videotestsrc num-buffers=2 pattern=ball ! video/x-raw,format=RGB,width=640,height=480 ! \
                 u2netmatte provider=cpu shared-session=\"{session}\" ! fakesink"
            )
        })
        .collect();
    run_pipeline(&parse_pipeline(&desc.join("  ")), Duration::from_secs(600)).unwrap();
    print_peak_rss();
}

#[test]
fn four_shared_streams_take_the_memory_of_about_one() {
    let _serial = serial();
    let one = child_peak_rss_kib("shared_rss_child", RSS_CHILD_ENV, "1:false");
    let four_shared = child_peak_rss_kib("shared_rss_child", RSS_CHILD_ENV, "4:true");
    println!(
        "peak RSS, 640x480 streams: one element {} MiB, four sharing a session {} MiB",
        one / 1024,
        four_shared / 1024
    );
    assert!(
        four_shared * 2 <= one * 3,
        "four shared streams: {four_shared} KiB, more than 1.5x one element's {one} KiB"
    );
}

#[test]
fn stats_say_which_run_a_batch_was_and_all_of_its_frames() {
    let _serial = serial();
    let model = tiny_model("shared-stats");
    let desc: Vec<String> = (0..3)
        .map(|n| {
            format!(
                "videotestsrc num-buffers=12 pattern=ball ! video/x-raw,format=RGB,width=64,height=48 ! \
                 u2netmatte name=m{n} model={model} shared-session=stats-runs batch-size=4 stats=true ! \
                 fakesink"
            )
        })
        .collect();
    let pipeline = parse_pipeline(&desc.join("  "));
    // (batch id) -> (run-frames as each element said, frames it had, element).
    type Runs = std::collections::BTreeMap<u64, Vec<(u32, u32, String)>>;
    let runs = std::sync::Arc::new(Mutex::new(Runs::new()));
    let seen = std::sync::Arc::clone(&runs);
    // Taken where posted: running the pipeline pops only its end.
    pipeline.bus().unwrap().set_sync_handler(move |_, msg| {
        if let Some(s) = msg.structure().filter(|s| s.name() == "u2netmatte-stats") {
            let source = msg.src().map(|e| e.name().to_string()).unwrap_or_default();
            seen.lock()
                .unwrap()
                .entry(s.get::<u64>("batch-id").unwrap())
                .or_default()
                .push((
                    s.get::<u32>("run-frames").unwrap(),
                    s.get::<u32>("frames").unwrap(),
                    source,
                ));
        }
        gst::BusSyncReply::Pass
    });
    run_pipeline(&pipeline, Duration::from_secs(60)).unwrap();
    let runs = runs.lock().unwrap().clone();
    pipeline.set_state(gst::State::Null).unwrap();
    let mut total = 0;
    let mut shared_runs = 0;
    for (id, shares) in &runs {
        let frames: u32 = shares.iter().map(|(_, f, _)| f).sum();
        for (run_frames, _, _) in shares {
            assert_eq!(*run_frames, frames, "run {id}: {shares:?}");
        }
        total += frames;
        shared_runs += usize::from(shares.len() > 1);
    }
    assert_eq!(total, 36, "every frame in one run: {runs:?}");
    assert!(
        shared_runs > 0,
        "three streams at once shared runs: {runs:?}"
    );
}
