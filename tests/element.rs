// SPDX-License-Identifier: MPL-2.0
//! The element on the real U2NetP model (CPU): batching, timestamps, caps per
//! mode, compositing, and masks against ground truth.

mod common;

use std::time::{Duration, Instant};

use common::*;
use gst::glib;
use gst::prelude::*;
use gst_video::VideoFormat;

fn caps_of(info: &gst_video::VideoInfo) -> gst::Caps {
    info.to_caps().unwrap()
}

/// Frame `n` of a 25 fps stream, with every field the element must keep.
fn timed_frame(rgb: &[u8], info: &gst_video::VideoInfo, n: u64) -> gst::Buffer {
    let mut buffer = frame_buffer(rgb, info);
    {
        let b = buffer.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_mseconds(40 * n + 1000));
        b.set_dts(gst::ClockTime::from_mseconds(40 * n + 990));
        b.set_duration(gst::ClockTime::from_mseconds(40));
        b.set_offset(n);
        b.set_offset_end(n + 1);
        b.set_flags(if n == 0 {
            gst::BufferFlags::DISCONT
        } else {
            gst::BufferFlags::DELTA_UNIT
        });
    }
    buffer
}

#[track_caller]
fn assert_same_timing(out: &gst::Buffer, n: u64) {
    assert_eq!(
        out.pts(),
        Some(gst::ClockTime::from_mseconds(40 * n + 1000)),
        "pts of frame {n}"
    );
    assert_eq!(
        out.dts(),
        Some(gst::ClockTime::from_mseconds(40 * n + 990)),
        "dts of frame {n}"
    );
    assert_eq!(
        out.duration(),
        Some(gst::ClockTime::from_mseconds(40)),
        "duration of frame {n}"
    );
    assert_eq!(out.offset(), n, "offset of frame {n}");
    assert_eq!(out.offset_end(), n + 1, "offset_end of frame {n}");
    let expected = if n == 0 {
        gst::BufferFlags::DISCONT
    } else {
        gst::BufferFlags::DELTA_UNIT
    };
    assert_eq!(out.flags(), expected, "flags of frame {n}");
}

#[test]
fn every_frame_comes_out_once_in_order_with_its_timestamps() {
    let info = info(VideoFormat::Rgb, 64, 48);
    let scene = scene(64, 48, Shape::Disc, 1);
    for batch in [1u32, 3, 4] {
        let mut h = harness(&[
            ("batch-size", batch.to_value()),
            ("mode", "mask".to_value()),
        ]);
        h.set_src_caps(caps_of(&info));
        for n in 0..10 {
            assert_eq!(
                h.push(timed_frame(&scene.rgb, &info, n)),
                Ok(gst::FlowSuccess::Ok)
            );
        }
        assert!(h.push_event(gst::event::Eos::new()));
        for n in 0..10 {
            let out = h
                .pull()
                .unwrap_or_else(|_| panic!("batch-size {batch}: frame {n} missing"));
            assert_same_timing(&out, n);
            assert_eq!(out.size(), 64 * 48, "GRAY8 64x48 frame");
        }
        // EOS comes after the partial batch (10 = 3 x 3 + 1, 2 x 4 + 2).
        wait_for_eos(&mut h);
        assert!(
            h.try_pull().is_none(),
            "batch-size {batch}: more buffers than frames"
        );
        assert_eq!(h.buffers_received(), 10);
    }
}

#[test]
fn with_a_batch_timeout_nothing_leaves_before_its_batch_is_complete() {
    let info = info(VideoFormat::Rgb, 64, 48);
    let scene = scene(64, 48, Shape::Box, 2);
    let mut h = harness(&[
        ("batch-size", 4u32.to_value()),
        ("batch-timeout", 60_000u32.to_value()),
        ("mode", "mask".to_value()),
    ]);
    h.set_src_caps(caps_of(&info));
    for n in 0..3 {
        h.push(timed_frame(&scene.rgb, &info, n)).unwrap();
    }
    // An absence can only be checked for a while: a wrongly started partial
    // batch of 3 takes well under 2 s on the CPU.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert!(
            h.try_pull().is_none(),
            "a frame left before its batch of 4 was complete"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    h.push(timed_frame(&scene.rgb, &info, 3)).unwrap();
    for n in 0..4 {
        assert_same_timing(&h.pull().unwrap(), n);
    }
}

#[test]
fn without_a_batch_timeout_a_partial_batch_runs_when_the_model_is_free() {
    // Upstream may be unable to send more before it gets something back (a
    // tee whose other branch is full, a bounded buffer pool, a preroll): a
    // file source's frames never wait for a batch to fill.
    let info = info(VideoFormat::Rgb, 64, 48);
    let scene = scene(64, 48, Shape::Box, 2);
    for mode in ["mask", "alpha", "composite"] {
        let mut h = harness(&[("batch-size", 16u32.to_value()), ("mode", mode.to_value())]);
        h.set_src_caps(caps_of(&info));
        h.push(timed_frame(&scene.rgb, &info, 0)).unwrap();
        let out = h
            .pull()
            .unwrap_or_else(|_| panic!("{mode}: the frame did not come out"));
        assert_same_timing(&out, 0);
    }
}

#[test]
fn output_caps_follow_the_mode() {
    init();
    let info = gst_video::VideoInfo::builder(VideoFormat::Bgrx, 40, 30)
        .fps(gst::Fraction::new(30000, 1001))
        .par(gst::Fraction::new(4, 3))
        .build()
        .unwrap();
    let scene = scene(40, 30, Shape::Disc, 3);
    for (mode, format) in [
        ("mask", VideoFormat::Gray8),
        ("alpha", VideoFormat::Rgba),
        ("composite", VideoFormat::Rgba),
    ] {
        let mut h = harness(&[("batch-size", 1u32.to_value()), ("mode", mode.to_value())]);
        h.set_src_caps(caps_of(&info));
        h.push(timed_frame(&scene.rgb, &info, 0)).unwrap();
        let out = h.pull().unwrap();
        let caps = h.sinkpad().unwrap().current_caps().expect("output caps");
        let out_info = gst_video::VideoInfo::from_caps(&caps).unwrap();
        assert_eq!(out_info.format(), format, "mode {mode}");
        assert_eq!((out_info.width(), out_info.height()), (40, 30));
        assert_eq!(out_info.fps(), gst::Fraction::new(30000, 1001));
        assert_eq!(out_info.par(), gst::Fraction::new(4, 3));
        assert_eq!(out.size(), out_info.size());
    }
}

#[test]
fn output_caps_keep_interlacing_and_rgb_colorimetry() {
    init();
    // RGB with BT.709's transfer: not the RGB default (sRGB).
    let bt709_rgb = gst_video::VideoColorimetry::new(
        gst_video::VideoColorRange::Range0_255,
        gst_video::VideoColorMatrix::Rgb,
        gst_video::VideoTransferFunction::Bt709,
        gst_video::VideoColorPrimaries::Bt709,
    );
    let info = gst_video::VideoInfo::builder(VideoFormat::Rgbx, 40, 30)
        .fps(gst::Fraction::new(25, 1))
        .interlace_mode(gst_video::VideoInterlaceMode::Interleaved)
        .field_order(gst_video::VideoFieldOrder::TopFieldFirst)
        .colorimetry(&bt709_rgb)
        .build()
        .unwrap();
    let gray_default = gst_video::VideoInfo::builder(VideoFormat::Gray8, 40, 30)
        .build()
        .unwrap()
        .colorimetry();
    let scene = scene(40, 30, Shape::Disc, 3);
    // Video flags (INTERLACED, TFF, RFF) are above the core's: flags()
    // truncates them, so the test reads the bits.
    let video_flags = gst_video::VideoBufferFlags::INTERLACED.bits()
        | gst_video::VideoBufferFlags::TFF.bits()
        | gst_video::VideoBufferFlags::RFF.bits();
    let flags = gst::BufferFlags::from_bits_retain(video_flags) | gst::BufferFlags::DISCONT;
    // SAFETY: reads a field of a buffer that is alive for the call.
    let bits_of = |b: &gst::Buffer| unsafe { (*b.as_ptr()).mini_object.flags };
    for (mode, colorimetry) in [
        ("alpha", bt709_rgb),
        ("composite", bt709_rgb),
        // A mask is coverage, not light: GStreamer's GRAY default.
        ("mask", gray_default),
    ] {
        let mut h = harness(&[("batch-size", 1u32.to_value()), ("mode", mode.to_value())]);
        h.set_src_caps(caps_of(&info));
        let mut frame = frame_buffer(&scene.rgb, &info);
        frame.get_mut().unwrap().set_flags(flags);
        h.push(frame).unwrap();
        let out = h.pull().unwrap();
        let caps = h.sinkpad().unwrap().current_caps().expect("output caps");
        let s = caps.structure(0).unwrap();
        assert_eq!(
            s.get::<&str>("interlace-mode"),
            Ok("interleaved"),
            "mode={mode}: {caps}"
        );
        assert_eq!(
            s.get::<&str>("field-order"),
            Ok("top-field-first"),
            "mode={mode}: {caps}"
        );
        let out_info = gst_video::VideoInfo::from_caps(&caps).unwrap();
        assert_eq!(out_info.colorimetry(), colorimetry, "mode={mode}: {caps}");
        assert_eq!(bits_of(&out), flags.bits(), "mode={mode}: buffer flags");
    }
}

/// Runs one frame through the element in `mode` and returns the output
/// plane, rows packed.
fn run_one(rgb: &[u8], info: &gst_video::VideoInfo, props: &[(&str, glib::Value)]) -> Vec<u8> {
    let mut all = vec![("batch-size", 1u32.to_value())];
    all.extend(props.iter().cloned());
    let mut h = harness(&all);
    h.set_src_caps(caps_of(info));
    h.push(frame_buffer(rgb, info)).unwrap();
    let out = h.pull().unwrap();
    let caps = h.sinkpad().unwrap().current_caps().unwrap();
    packed_plane(&out, &gst_video::VideoInfo::from_caps(&caps).unwrap())
}

#[test]
fn composite_is_the_source_where_the_mask_is_high_and_the_fill_elsewhere() {
    let (w, h) = (161, 97);
    let scene = scene(w, h, Shape::Disc, 4);
    // BGRx input with padded RGB-less layout: the element must reorder.
    let info = info(VideoFormat::Bgrx, w, h);
    let mask = run_one(&scene.rgb, &info, &[("mode", "mask".to_value())]);
    let fill = 0xC0102030u32;
    for threshold in [0.5f64, 0.2] {
        let out = run_one(
            &scene.rgb,
            &info,
            &[
                ("mode", "composite".to_value()),
                ("threshold", threshold.to_value()),
                ("fill-color", fill.to_value()),
            ],
        );
        let (mut kept, mut filled) = (0, 0);
        for (i, (&m, px)) in mask.iter().zip(out.chunks_exact(4)).enumerate() {
            if m as f64 / 255.0 > threshold {
                assert_eq!(
                    px,
                    [
                        scene.rgb[3 * i],
                        scene.rgb[3 * i + 1],
                        scene.rgb[3 * i + 2],
                        255
                    ],
                    "pixel {i}"
                );
                kept += 1;
            } else {
                assert_eq!(px, [0x10, 0x20, 0x30, 0xC0], "pixel {i}");
                filled += 1;
            }
        }
        assert!(kept > 1000 && filled > 1000, "kept {kept}, filled {filled}");
    }
    // Alpha mode: source colour, mask as alpha.
    let out = run_one(&scene.rgb, &info, &[("mode", "alpha".to_value())]);
    for (i, (&m, px)) in mask.iter().zip(out.chunks_exact(4)).enumerate() {
        assert_eq!(
            px,
            [
                scene.rgb[3 * i],
                scene.rgb[3 * i + 1],
                scene.rgb[3 * i + 2],
                m
            ],
            "pixel {i}"
        );
    }
}

#[test]
fn masks_match_the_drawn_shapes() {
    // Odd sizes and every kind of layout, in one batch of mixed sizes.
    let cases = [
        (320, 320, Shape::Disc, VideoFormat::Rgb),
        (641, 479, Shape::Box, VideoFormat::Bgr),
        (641, 479, Shape::Disc, VideoFormat::Rgba),
        (200, 500, Shape::Box, VideoFormat::Xbgr),
        (1280, 720, Shape::Disc, VideoFormat::Bgrx),
        (97, 61, Shape::Disc, VideoFormat::Argb),
    ];
    let mut h = harness(&[("batch-size", 4u32.to_value()), ("mode", "mask".to_value())]);
    let mut scenes = Vec::new();
    for (n, (w, hh, shape, format)) in cases.into_iter().enumerate() {
        let s = scene(w, hh, shape, 10 + n as u32);
        let info = info(format, w, hh);
        h.set_src_caps(caps_of(&info));
        h.push(timed_frame(&s.rgb, &info, n as u64)).unwrap();
        scenes.push((s, format));
    }
    h.push_event(gst::event::Eos::new());
    for (n, (s, format)) in scenes.iter().enumerate() {
        let out = h.pull().unwrap();
        assert_same_timing(&out, n as u64);
        let info = gst_video::VideoInfo::builder(VideoFormat::Gray8, s.width, s.height)
            .build()
            .unwrap();
        let mask = packed_plane(&out, &info);
        let iou = iou(&threshold(&mask), &s.truth);
        println!("{}x{} {format:?}: IoU {iou:.4}", s.width, s.height);
        assert!(
            iou >= 0.95,
            "{}x{} {format:?}: IoU {iou:.4} < 0.95",
            s.width,
            s.height
        );
    }
}

#[test]
fn stats_messages_report_each_batch() {
    let pipeline = parse_pipeline(
        "videotestsrc num-buffers=4 ! video/x-raw,width=96,height=64 ! \
         u2netmatte batch-size=2 batch-timeout=60000 mode=mask stats=true ! fakesink",
    );
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut batches = Vec::new();
    loop {
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(120),
                &[
                    gst::MessageType::Element,
                    gst::MessageType::Eos,
                    gst::MessageType::Error,
                ],
            )
            .expect("the stream ends");
        match msg.type_() {
            gst::MessageType::Eos => break,
            gst::MessageType::Error => panic!("{msg:?}"),
            _ => {}
        }
        let s = msg.structure().unwrap();
        if s.name() == "u2netmatte-stats" {
            batches.push((
                s.get::<u32>("frames").unwrap(),
                s.get::<u32>("batch-size").unwrap(),
                s.get::<f64>("inference-ms").unwrap(),
                s.get::<f64>("prepare-ms").unwrap(),
                s.get::<f64>("compose-ms").unwrap(),
                s.get::<String>("provider").unwrap(),
            ));
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(batches.len(), 2, "{batches:?}");
    for (frames, batch, inference, prepare, compose, provider) in batches {
        assert_eq!((frames, batch), (2, 2));
        assert!(
            inference > 1.0 && prepare > 0.0 && compose > 0.0,
            "{inference} {prepare} {compose}"
        );
        assert_eq!(provider, loaded_provider());
    }
}

#[test]
fn input_metas_reach_the_output() {
    // Metas that describe the frame's time or content travel with it, in
    // every mode, as they would through videoconvert.
    let info = info(VideoFormat::Rgb, 64, 48);
    let scene = scene(64, 48, Shape::Disc, 4);
    let reference = gst::Caps::builder("timestamp/x-ntp").build();
    for mode in ["mask", "alpha", "composite"] {
        let mut h = harness(&[("batch-size", 2u32.to_value()), ("mode", mode.to_value())]);
        h.set_src_caps(caps_of(&info));
        let mut frame = timed_frame(&scene.rgb, &info, 0);
        gst::ReferenceTimestampMeta::add(
            frame.get_mut().unwrap(),
            &reference,
            gst::ClockTime::from_seconds(1_700_000_000),
            gst::ClockTime::NONE,
        );
        h.push(frame).unwrap();
        h.push_event(gst::event::Eos::new());
        let out = h.pull().unwrap();
        let meta = out
            .meta::<gst::ReferenceTimestampMeta>()
            .unwrap_or_else(|| panic!("mode={mode}: the reference timestamp was dropped"));
        assert_eq!(meta.reference(), &reference, "mode={mode}");
        assert_eq!(
            meta.timestamp(),
            gst::ClockTime::from_seconds(1_700_000_000),
            "mode={mode}"
        );
        assert_same_timing(&out, 0);
    }
}
