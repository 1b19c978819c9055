// SPDX-License-Identifier: MPL-2.0
//! Streaming behaviour: events in order with frames, mixed sizes in one
//! batch, flushes and seeks, state changes and removal while running.

mod common;

use std::time::Duration;

use common::*;
use gst::glib;
use gst::prelude::*;
use gst_video::VideoFormat;

fn frame_at(rgb: &[u8], info: &gst_video::VideoInfo, ms: u64) -> gst::Buffer {
    let mut b = frame_buffer(rgb, info);
    let bm = b.get_mut().unwrap();
    bm.set_pts(gst::ClockTime::from_mseconds(ms));
    bm.set_duration(gst::ClockTime::from_mseconds(40));
    b
}

fn mask_harness(batch: u32) -> (gst_check::Harness, Log) {
    let el = element(&[
        ("batch-size", batch.to_value()),
        ("mode", "mask".to_value()),
    ]);
    let log = record(&el.static_pad("src").unwrap());
    (harness_around(el, false), log)
}

#[test]
fn serialized_events_keep_their_place_among_frames() {
    let small = info(VideoFormat::Rgb, 64, 48);
    let large = info(VideoFormat::Rgb, 80, 60);
    let s_small = scene(64, 48, Shape::Disc, 1);
    let s_large = scene(80, 60, Shape::Disc, 2);
    let (mut h, log) = mask_harness(4);
    h.set_src_caps(small.to_caps().unwrap()); // stream-start, caps, segment
    h.push(frame_at(&s_small.rgb, &small, 0)).unwrap();
    h.push_event(gst::event::Tag::new(gst::TagList::new()));
    h.push(frame_at(&s_small.rgb, &small, 40)).unwrap();
    let custom = gst::Structure::new_empty("u2netmatte-test");
    h.push_event(gst::event::CustomDownstream::new(custom));
    h.push(frame_at(&s_small.rgb, &small, 80)).unwrap();
    h.push_event(gst::event::Caps::new(&large.to_caps().unwrap()));
    h.push(frame_at(&s_large.rgb, &large, 120)).unwrap();
    h.push_event(gst::event::Gap::builder(gst::ClockTime::from_mseconds(160)).build());
    h.push(frame_at(&s_large.rgb, &large, 200)).unwrap();
    h.push_event(gst::event::Eos::new());
    wait_for_eos(&mut h);
    assert_eq!(
        entries(&log),
        [
            "StreamStart",
            "Caps GRAY8 64x48",
            "Segment",
            "F0",
            "Tag",
            "F40",
            "CustomDownstream",
            "F80",
            "Caps GRAY8 80x60",
            "F120",
            "Gap",
            "F200",
            "Eos"
        ]
    );
}

#[test]
fn mixed_sizes_share_a_batch_with_the_masks_they_get_alone() {
    let sizes = [(320, 240), (641, 479), (1280, 720)];
    let frames: Vec<_> = (0..6)
        .map(|n| {
            let (w, hh) = sizes[n % 3];
            (
                info(VideoFormat::Rgb, w, hh),
                scene(w, hh, Shape::Box, n as u32),
            )
        })
        .collect();

    // Each frame alone, batch 1.
    let alone: Vec<Vec<u8>> = frames
        .iter()
        .map(|(i, s)| {
            let mut h = harness(&[("batch-size", 1u32.to_value()), ("mode", "mask".to_value())]);
            h.set_src_caps(i.to_caps().unwrap());
            h.push(frame_buffer(&s.rgb, i)).unwrap();
            let gray = gst_video::VideoInfo::builder(VideoFormat::Gray8, i.width(), i.height())
                .build()
                .unwrap();
            packed_plane(&h.pull().unwrap(), &gray)
        })
        .collect();

    // All six through batches of 4, caps changing before every frame.
    let (mut h, log) = mask_harness(4);
    for (n, (i, s)) in frames.iter().enumerate() {
        h.set_src_caps(i.to_caps().unwrap());
        h.push(frame_at(&s.rgb, i, n as u64 * 40)).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    for (n, (i, _)) in frames.iter().enumerate() {
        let out = h.pull().unwrap();
        let gray = gst_video::VideoInfo::builder(VideoFormat::Gray8, i.width(), i.height())
            .build()
            .unwrap();
        assert_eq!(out.size(), gray.size(), "frame {n}: output size");
        let batched = packed_plane(&out, &gray);
        let worst = batched
            .iter()
            .zip(&alone[n])
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(
            worst <= 1,
            "frame {n}: batched mask differs from its own by up to {worst}"
        );
    }
    wait_for_eos(&mut h);
    // Output caps change exactly between the frames whose input did.
    let seen: Vec<String> = entries(&log)
        .into_iter()
        .filter(|e| e.starts_with('F') || e.starts_with("Caps"))
        .collect();
    let expected: Vec<String> = frames
        .iter()
        .enumerate()
        .flat_map(|(n, (i, _))| {
            let caps = format!("Caps GRAY8 {}x{}", i.width(), i.height());
            let frame = format!("F{}", n * 40);
            if n == 0 || sizes[n % 3] != sizes[(n - 1) % 3] {
                vec![caps, frame]
            } else {
                vec![frame]
            }
        })
        .collect();
    assert_eq!(seen, expected);
}

/// Buffers seen after the last FlushStop.
fn after_flush(log: &Log) -> Vec<String> {
    let all = entries(log);
    let from = all
        .iter()
        .rposition(|e| e == "FlushStop")
        .expect("flush-stop went downstream");
    all[from..]
        .iter()
        .filter(|e| e.starts_with('F') && *e != "FlushStop")
        .cloned()
        .collect()
}

#[test]
fn flush_drops_pending_frames_and_never_pushes_them_later() {
    let i = info(VideoFormat::Rgb, 64, 48);
    let s = scene(64, 48, Shape::Disc, 3);
    for pending in [3u64, 4] {
        // 3: an incomplete batch waits; 4: a batch is running at the flush.
        let (mut h, log) = mask_harness(4);
        h.set_src_caps(i.to_caps().unwrap());
        for n in 0..pending {
            h.push(frame_at(&s.rgb, &i, n * 40)).unwrap();
        }
        assert!(h.push_event(gst::event::FlushStart::new()));
        assert!(h.push_event(gst::event::FlushStop::new(true)));
        h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
            gst::ClockTime,
        >::new()));
        for n in 0..5 {
            h.push(frame_at(&s.rgb, &i, 10_000 + n * 40)).unwrap();
        }
        h.push_event(gst::event::Eos::new());
        wait_for_eos(&mut h);
        assert_eq!(
            after_flush(&log),
            ["F10000", "F10040", "F10080", "F10120", "F10160"],
            "{pending} frames pending at the flush"
        );
    }
}

#[test]
fn a_flush_keeps_the_newest_caps_for_the_frames_after_it() {
    // Caps that arrived behind frames still waiting for their batch were
    // accepted from upstream, which will not send them again after a seek:
    // the flush must not lose them, or downstream keeps the old size.
    let el = element(&[
        ("batch-size", 4u32.to_value()),
        ("batch-timeout", 60_000u32.to_value()),
        ("mode", "mask".to_value()),
    ]);
    let mut h = harness_around(el, false);
    let (big, small) = (
        info(VideoFormat::Rgb, 64, 48),
        info(VideoFormat::Rgb, 32, 24),
    );
    let (s_big, s_small) = (scene(64, 48, Shape::Disc, 3), scene(32, 24, Shape::Disc, 3));
    h.set_src_caps(big.to_caps().unwrap());
    h.push(frame_at(&s_big.rgb, &big, 0)).unwrap();
    h.push(frame_at(&s_big.rgb, &big, 40)).unwrap();
    h.set_src_caps(small.to_caps().unwrap());
    h.push(frame_at(&s_small.rgb, &small, 80)).unwrap();
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
        gst::ClockTime,
    >::new()));
    h.push(frame_at(&s_small.rgb, &small, 5000)).unwrap();
    h.push_event(gst::event::Eos::new());
    let out = h.pull().unwrap();
    assert_eq!(out.pts(), Some(gst::ClockTime::from_seconds(5)));
    let caps = h.sinkpad().unwrap().current_caps().unwrap();
    let out_info = gst_video::VideoInfo::from_caps(&caps).unwrap();
    assert_eq!(
        (out_info.format(), out_info.width(), out_info.height()),
        (VideoFormat::Gray8, 32, 24),
        "downstream's caps after the flush"
    );
    assert_eq!(out.size(), out_info.size());
}

#[test]
fn seeks_while_playing_restart_at_the_target() {
    let pipeline = parse_pipeline(
        "videotestsrc pattern=ball ! video/x-raw,width=64,height=48,framerate=10/1 ! \
         u2netmatte batch-size=4 mode=mask ! appsink name=sink sync=false max-buffers=2",
    );
    let sink = sink_of(&pipeline);
    pipeline.set_state(gst::State::Playing).unwrap();
    let pts = |s: &gst::Sample| s.buffer().unwrap().pts().unwrap().mseconds();
    for _ in 0..3 {
        sink.pull_sample().unwrap();
    }
    for target in [5000u64, 1000, 3000, 3000] {
        pipeline
            .seek_simple(
                gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
                gst::ClockTime::from_mseconds(target),
            )
            .unwrap();
        for k in 0..6 {
            let s = sink
                .try_pull_sample(gst::ClockTime::from_seconds(30))
                .expect("frames after the seek");
            assert_eq!(
                pts(&s),
                target + 100 * k,
                "sample {k} after seeking to {target} ms"
            );
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
}

fn cycle_states(model: &str, cycles: usize) {
    let pipeline = parse_pipeline(&format!(
        "videotestsrc ! video/x-raw,width=32,height=24 ! u2netmatte model={model} batch-size=2 mode=alpha ! \
         fakesink"
    ));
    for cycle in 0..cycles {
        pipeline.set_state(gst::State::Playing).unwrap();
        let (result, state, _) = pipeline.state(gst::ClockTime::from_seconds(60));
        assert_eq!(
            result,
            Ok(gst::StateChangeSuccess::Success),
            "cycle {cycle}"
        );
        assert_eq!(state, gst::State::Playing, "cycle {cycle}");
        pipeline.set_state(gst::State::Null).unwrap();
    }
}

#[test]
fn null_playing_null_a_hundred_times() {
    // The state machinery on a tiny model (a load and a warm-up take
    // milliseconds), then a few times on U2NetP itself.
    let dir = temp_dir("cycles");
    let tiny = dir.join("tiny.onnx");
    write_tiny_model(&tiny, &[1, 3, 64, 64], false);
    cycle_states(tiny.to_str().unwrap(), 100);
    cycle_states("u2netp", 5);
}

#[test]
fn pausing_and_resuming_with_frames_in_flight_loses_nothing() {
    let pipeline = parse_pipeline(
        "videotestsrc num-buffers=24 ! video/x-raw,width=64,height=48,framerate=25/1 ! \
         u2netmatte batch-size=4 mode=mask ! appsink name=sink sync=true",
    );
    let sink = sink_of(&pipeline);
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut pts = Vec::new();
    for _ in 0..8 {
        for _ in 0..2 {
            pts.push(
                sink.pull_sample()
                    .unwrap()
                    .buffer()
                    .unwrap()
                    .pts()
                    .unwrap()
                    .mseconds(),
            );
        }
        pipeline.set_state(gst::State::Paused).unwrap();
        assert_ne!(
            pipeline.state(gst::ClockTime::from_seconds(30)).0,
            Err(gst::StateChangeError)
        );
        pipeline.set_state(gst::State::Playing).unwrap();
    }
    while let Ok(s) = sink.pull_sample() {
        pts.push(s.buffer().unwrap().pts().unwrap().mseconds());
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(pts, (0..24).map(|n| n * 40).collect::<Vec<u64>>());
}

#[test]
fn element_removed_while_running_leaves_the_pipeline_working() {
    init();
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("videotestsrc").build().unwrap();
    let filter = gst::ElementFactory::make("capsfilter")
        .property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("format", "RGBA")
                .field("width", 64)
                .field("height", 48)
                .build(),
        )
        .build()
        .unwrap();
    let matte = element(&[
        ("batch-size", 2u32.to_value()),
        ("mode", "alpha".to_value()),
    ]);
    let sink = gst_app::AppSink::builder().sync(false).build();
    pipeline
        .add_many([&src, &filter, &matte, sink.upcast_ref()])
        .unwrap();
    gst::Element::link_many([&src, &filter, &matte, sink.upcast_ref()]).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    for _ in 0..4 {
        sink.pull_sample().unwrap();
    }

    // Block upstream, take u2netmatte out, link around it.
    let (tx, rx) = std::sync::mpsc::channel();
    let removed = matte.clone();
    let (filter2, sink2, pipeline2) = (filter.clone(), sink.clone(), pipeline.clone());
    filter.static_pad("src").unwrap().add_probe(
        gst::PadProbeType::BLOCK_DOWNSTREAM,
        move |_, _| {
            filter2.unlink(&removed);
            removed.unlink(&sink2);
            removed.set_state(gst::State::Null).unwrap();
            pipeline2.remove(&removed).unwrap();
            filter2.link(&sink2).unwrap();
            let _ = tx.send(());
            gst::PadProbeReturn::Remove
        },
    );
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the probe ran");
    assert_eq!(matte.current_state(), gst::State::Null);
    assert!(matte.parent().is_none());
    // Frames keep coming, now straight from the source.
    for _ in 0..4 {
        let s = sink
            .try_pull_sample(gst::ClockTime::from_seconds(30))
            .expect("frames after removal");
        assert_eq!(s.buffer().unwrap().size(), 64 * 48 * 4);
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let _ = glib::MainContext::default();
}
