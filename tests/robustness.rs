// SPDX-License-Identifier: MPL-2.0
//! What the pipelines people build around the element do to it: a tee over
//! a decoder's bounded pool, a pool that upstream cannot grow, properties
//! set in READY, a batch-timeout with a source that is not live, start-up
//! and memory that do not grow with the batch size, a live pipeline told
//! when the element's latency changes and never made to wait for the
//! model's warm-up, and a src pad linked again after NOT_LINKED.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use gst::prelude::*;
use gst_video::VideoFormat;

fn clip(name: &str) -> PathBuf {
    let p = PathBuf::from(TOP).join(".deps/clips").join(name);
    assert!(p.is_file(), "{} is missing: run `make setup`", p.display());
    p
}

fn png_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    files.sort();
    files
}

#[test]
fn a_tee_over_a_decoders_pool_does_not_deadlock() {
    // A real Cinepak clip (320x240, 15 fps, 68 frames) decoded by
    // gst-libav, split by a tee into a plain branch and a matted one: the
    // element must not keep upstream's buffers while a batch fills, or the
    // decoder's pool runs dry and neither branch prerolls.
    let clip = clip("tree.avi");
    for mode in ["mask", "alpha", "composite"] {
        let dir = temp_dir(&format!("tee-{mode}"));
        let (plain, matted) = (dir.join("plain"), dir.join("matted"));
        std::fs::create_dir_all(&plain).unwrap();
        std::fs::create_dir_all(&matted).unwrap();
        let pipeline = parse_pipeline(&format!(
            "filesrc location={} ! decodebin ! videoconvert ! video/x-raw,format=RGB ! tee name=t \
             t. ! queue ! pngenc ! multifilesink location={}/%04d.png \
             t. ! queue ! u2netmatte batch-size=4 mode={mode} ! pngenc ! multifilesink location={}/%04d.png",
            clip.display(),
            plain.display(),
            matted.display()
        ));
        run_pipeline(&pipeline, Duration::from_secs(300))
            .unwrap_or_else(|e| panic!("mode={mode}: {e}"));
        assert_eq!(png_files(&plain).len(), 68, "mode={mode}: plain branch");
        let out = png_files(&matted);
        assert_eq!(out.len(), 68, "mode={mode}: matted branch");
        let last = image::open(out.last().unwrap()).unwrap();
        assert_eq!((last.width(), last.height()), (320, 240), "mode={mode}");
        let expected = if mode == "mask" {
            image::ColorType::L8
        } else {
            image::ColorType::Rgba8
        };
        assert_eq!(last.color(), expected, "mode={mode}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn upstreams_buffers_go_back_while_their_batch_waits() {
    // A pool of two buffers that upstream cannot grow, and a batch of four
    // that waits a minute: all four frames can still be allocated, because
    // the element gives each buffer back once the frame is prepared.
    let info = info(VideoFormat::Rgbx, 64, 48);
    let scene = scene(64, 48, Shape::Disc, 5);
    let packed = frame_buffer(&scene.rgb, &info);
    for mode in ["mask", "alpha", "composite"] {
        let pool = gst_video::VideoBufferPool::new();
        let mut config = pool.config();
        config.set_params(Some(&info.to_caps().unwrap()), info.size() as u32, 2, 2);
        pool.set_config(config).unwrap();
        pool.set_active(true).unwrap();

        let mut h = harness(&[
            ("batch-size", 4u32.to_value()),
            ("batch-timeout", 60_000u32.to_value()),
            ("mode", mode.to_value()),
        ]);
        h.set_src_caps(info.to_caps().unwrap());
        for n in 0..4u64 {
            let params =
                gst::BufferPoolAcquireParams::with_flags(gst::BufferPoolAcquireFlags::DONTWAIT);
            let mut buffer = pool.acquire_buffer(Some(&params)).unwrap_or_else(|e| {
                panic!("mode={mode}: buffer {n} cannot be allocated ({e:?}): the element holds the pool's")
            });
            {
                let b = buffer.get_mut().unwrap();
                let map = packed.map_readable().unwrap();
                b.copy_from_slice(0, &map).unwrap();
                b.set_pts(gst::ClockTime::from_mseconds(40 * n));
            }
            h.push(buffer).unwrap();
        }
        for n in 0..4u64 {
            let out = h.pull().unwrap();
            assert_eq!(out.pts(), Some(gst::ClockTime::from_mseconds(40 * n)));
        }
        drop(h);
        pool.set_active(false).unwrap();
    }
}

#[test]
fn properties_set_in_ready_are_applied() {
    // Applications build a pipeline, bring it to READY, then set
    // properties: the mode, and even the model, must follow.
    let dir = temp_dir("ready-props");
    let tiny = dir.join("tiny.onnx");
    write_tiny_model(&tiny, &[0, 3, 64, 64], false);
    let info = info(VideoFormat::Rgb, 96, 64);
    let scene = scene(96, 64, Shape::Box, 7);

    let run = |el: gst::Element| {
        let mut h = gst_check::Harness::with_element(&el, Some("sink"), Some("src"));
        h.set_src_caps(info.to_caps().unwrap());
        h.push(frame_buffer(&scene.rgb, &info)).unwrap();
        let out = h.pull().unwrap();
        let caps = h.sinkpad().unwrap().current_caps().unwrap();
        let out_info = gst_video::VideoInfo::from_caps(&caps).unwrap();
        (out_info.format(), packed_plane(&out, &out_info))
    };

    let el = element(&[]);
    el.set_state(gst::State::Ready).unwrap();
    el.set_property_from_str("mode", "mask");
    el.set_property("model", tiny.to_str().unwrap());
    let (format, in_ready) = run(el);
    assert_eq!(format, VideoFormat::Gray8, "mode=mask set in READY");

    let from_null = element(&[
        ("mode", "mask".to_value()),
        ("model", tiny.to_str().unwrap().to_value()),
    ]);
    let (_, expected) = run(from_null);
    assert_eq!(in_ready, expected, "the model set in READY made the mask");
    let u2netp = element(&[("mode", "mask".to_value())]);
    let (_, other) = run(u2netp);
    assert_ne!(in_ready, other, "the mask is not U2NetP's");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_batch_timeout_applies_without_a_live_source() {
    // An application pushes one frame and waits for its result, without EOS.
    let pipeline = parse_pipeline(
        "appsrc name=src is-live=false format=time \
         caps=video/x-raw,format=RGB,width=64,height=48,framerate=25/1 ! \
         u2netmatte batch-size=4 batch-timeout=300 mode=mask ! appsink name=sink sync=false",
    );
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let sink = sink_of(&pipeline);
    pipeline.set_state(gst::State::Playing).unwrap();
    let info = info(VideoFormat::Rgb, 64, 48);
    let scene = scene(64, 48, Shape::Disc, 1);
    let mut frame = frame_buffer(&scene.rgb, &info);
    frame
        .get_mut()
        .unwrap()
        .set_pts(gst::ClockTime::from_mseconds(0));
    let pushed = Instant::now();
    src.push_buffer(frame).unwrap();
    let sample = sink
        .try_pull_sample(gst::ClockTime::from_seconds(60))
        .expect("the frame leaves after its batch-timeout, without EOS");
    let waited = pushed.elapsed();
    assert_eq!(sample.buffer().unwrap().pts(), Some(gst::ClockTime::ZERO));
    assert!(
        waited >= Duration::from_millis(300),
        "a partial batch went after {waited:?}, before its 300 ms timeout"
    );
    pipeline.set_state(gst::State::Null).unwrap();
}

/// Seconds from PLAYING to EOS for one 320x240 frame at `batch` (the
/// first frame waits for nothing but the model's start-up).
fn one_frame_seconds(batch: u32) -> f64 {
    let pipeline = parse_pipeline(&format!(
        "videotestsrc num-buffers=1 ! video/x-raw,width=320,height=240 ! \
         u2netmatte batch-size={batch} ! fakesink"
    ));
    let start = Instant::now();
    run_pipeline(&pipeline, Duration::from_secs(300)).unwrap();
    start.elapsed().as_secs_f64()
}

#[test]
fn start_up_does_not_grow_with_the_batch_size() {
    // The first run in a process sets ONNX Runtime up; not counted.
    one_frame_seconds(1);
    let at_16 = one_frame_seconds(16);
    let at_1 = one_frame_seconds(1);
    println!("one frame from PLAYING to EOS: {at_1:.2} s at batch 1, {at_16:.2} s at batch 16");
    // Warming up a whole batch made this 8x; the bound is loose enough for
    // a busy machine.
    assert!(
        at_16 <= 1.5 * at_1 + 0.5,
        "batch 16 took {at_16:.2} s, batch 1 {at_1:.2} s"
    );
}

const RSS_CHILD_ENV: &str = "U2NETMATTE_RSS_CHILD_BATCH";

/// Run by [`cpu_memory_does_not_grow_with_the_batch_size`] in a process of
/// its own, so that its peak RSS is its alone.
#[test]
#[ignore = "a child process of cpu_memory_does_not_grow_with_the_batch_size"]
fn peak_rss_child() {
    let Some(batch) = std::env::var(RSS_CHILD_ENV).ok() else {
        return;
    };
    let pipeline = parse_pipeline(&format!(
        "videotestsrc num-buffers=16 pattern=ball ! video/x-raw,format=RGB,width=1920,height=1080 ! \
         u2netmatte batch-size={batch} batch-timeout=60000 provider=cpu ! fakesink"
    ));
    run_pipeline(&pipeline, Duration::from_secs(600)).unwrap();
    print_peak_rss();
}

#[test]
fn cpu_memory_does_not_grow_with_the_batch_size() {
    let at_1 = child_peak_rss_kib("peak_rss_child", RSS_CHILD_ENV, "1");
    let at_16 = child_peak_rss_kib("peak_rss_child", RSS_CHILD_ENV, "16");
    println!(
        "peak RSS, sixteen 1080p frames: {} MiB at batch 1, {} MiB at batch 16",
        at_1 / 1024,
        at_16 / 1024
    );
    assert!(
        at_16 as f64 <= 1.5 * at_1 as f64,
        "batch 16 peaked at {at_16} KiB, batch 1 at {at_1} KiB"
    );
}

#[test]
fn a_live_pipeline_hears_when_the_latency_changes() {
    // The pipeline asks for the latency before caps arrive, and the
    // framerate changes later: each time the element's batch wait (3.5
    // frame durations at batch 4, every frame waiting for its own mask)
    // changes, it must post a LATENCY message and answer the new figure.
    let pipeline = parse_pipeline(
        "appsrc name=src is-live=true format=time do-timestamp=false \
         caps=video/x-raw,format=RGB,width=64,height=48,framerate=10/1 ! \
         u2netmatte name=m batch-size=4 keep-up=false mode=mask ! appsink name=sink sync=false",
    );
    let m = pipeline.by_name("m").unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let sink = sink_of(&pipeline);
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let info = info(VideoFormat::Rgb, 64, 48);
    let scene = scene(64, 48, Shape::Disc, 1);
    let push = |n: u64, step_ms: u64| {
        let mut frame = frame_buffer(&scene.rgb, &info);
        frame
            .get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(n * step_ms));
        src.push_buffer(frame).unwrap();
    };
    let own_latency = || {
        let mut ours = gst::query::Latency::new();
        let mut upstream = gst::query::Latency::new();
        assert!(m.static_pad("src").unwrap().query(&mut ours));
        assert!(m.static_pad("sink").unwrap().peer_query(&mut upstream));
        ours.result().1 - upstream.result().1
    };
    let latency_message_from_m = || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(msg) = bus.timed_pop_filtered(
                gst::ClockTime::from_mseconds(100),
                &[gst::MessageType::Latency],
            ) && msg.src() == Some(m.upcast_ref())
            {
                return true;
            }
        }
        false
    };

    for n in 0..4 {
        push(n, 100);
    }
    for _ in 0..4 {
        sink.try_pull_sample(gst::ClockTime::from_seconds(60))
            .expect("frames at 10 fps");
    }
    assert!(
        latency_message_from_m(),
        "no LATENCY message once caps came"
    );
    let at_10 = own_latency();
    while bus.pop_filtered(&[gst::MessageType::Latency]).is_some() {}

    src.set_caps(Some(
        &gst::Caps::builder("video/x-raw")
            .field("format", "RGB")
            .field("width", 64)
            .field("height", 48)
            .field("framerate", gst::Fraction::new(5, 1))
            .build(),
    ));
    for n in 4..8 {
        push(n, 200);
    }
    for _ in 0..4 {
        sink.try_pull_sample(gst::ClockTime::from_seconds(60))
            .expect("frames at 5 fps");
    }
    assert!(
        latency_message_from_m(),
        "no LATENCY message after the framerate changed"
    );
    let at_5 = own_latency();
    println!("own latency: {at_10} at 10 fps, {at_5} at 5 fps");
    // The batch wait doubles (350 -> 700 ms); the processing budget stays
    // or grows.
    assert!(
        at_5 >= at_10 + gst::ClockTime::from_mseconds(350),
        "{at_10} at 10 fps, {at_5} at 5 fps"
    );
    pipeline.set_state(gst::State::Null).unwrap();
}

#[test]
fn a_latency_query_never_waits_for_the_models_warm_up() {
    // Live and keeping up, asked at once after start: the answer comes
    // before the model has run at all (U2NetP's first run takes seconds
    // here), with the most the budget can be (400 ms to wait for a mask,
    // 100 ms to compose), settled once the model is timed.
    let pipeline = parse_pipeline(
        "appsrc name=src is-live=true format=time \
         caps=video/x-raw,format=RGB,width=64,height=48,framerate=30/1 ! \
         u2netmatte name=m mode=mask ! fakesink",
    );
    let m = pipeline.by_name("m").unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let started = Instant::now();
    let mut q = gst::query::Latency::new();
    assert!(m.static_pad("src").unwrap().query(&mut q));
    let took = started.elapsed();
    let (live, min, _) = q.result();
    println!("answered in {took:?}: live {live}, min {min}");
    assert!(live);
    // The provisional budget, or (on a machine whose warm-up was done at
    // once) the settled one: never more.
    assert!(
        min > gst::ClockTime::from_mseconds(100) && min <= gst::ClockTime::from_mseconds(500),
        "{min}"
    );
    assert!(
        took < Duration::from_millis(500),
        "the answer took {took:?}"
    );
    // Down again at once: READY->NULL stops the warm-up rather than wait.
    let stopping = Instant::now();
    pipeline.set_state(gst::State::Null).unwrap();
    let stop = stopping.elapsed();
    println!("stopped in {stop:?}");
    assert!(stop < Duration::from_secs(2), "stopping took {stop:?}");
}

#[test]
fn a_src_pad_linked_again_after_not_linked_carries_on() {
    // A tee that allows unlinked branches feeds the element, whose src pad
    // is linked later: the frames from then on come out, with their
    // timestamps, instead of a stream dead on NOT_LINKED.
    init();
    let pipeline = parse_pipeline(
        "appsrc name=src format=time \
         caps=video/x-raw,format=RGB,width=64,height=48,framerate=30/1 ! \
         tee allow-not-linked=true ! u2netmatte name=m mode=mask batch-size=1",
    );
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let m = pipeline.by_name("m").unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let info = info(VideoFormat::Rgb, 64, 48);
    let scene = scene(64, 48, Shape::Disc, 3);
    let push = |n: u64| {
        let mut frame = frame_buffer(&scene.rgb, &info);
        frame
            .get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(100 * n));
        src.push_buffer(frame).unwrap();
    };
    push(0);
    // The element's task stops on NOT_LINKED; the tee goes on.
    let deadline = Instant::now() + Duration::from_secs(60);
    while m.static_pad("src").unwrap().task_state() == gst::TaskState::Started {
        assert!(Instant::now() < deadline, "the task never met NOT_LINKED");
        std::thread::sleep(Duration::from_millis(20));
    }
    let sink = gst_app::AppSink::builder().sync(false).build();
    pipeline.add(&sink).unwrap();
    sink.sync_state_with_parent().unwrap();
    m.link(&sink).unwrap();
    for n in 1..4 {
        push(n);
    }
    let mut pts = Vec::new();
    for _ in 1..4 {
        let sample = sink
            .try_pull_sample(gst::ClockTime::from_seconds(60))
            .expect("a frame after the src pad was linked again");
        pts.push(sample.buffer().unwrap().pts().unwrap().mseconds());
    }
    assert_eq!(pts, [100, 200, 300]);
    pipeline.set_state(gst::State::Null).unwrap();
}
