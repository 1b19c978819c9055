// SPDX-License-Identifier: MPL-2.0
//! What the element does to the picture beyond the mask: temporal
//! smoothing (and its resets), background blur, feathered composites, and a
//! smaller inference size.

mod common;

use common::*;
use gst::prelude::*;
use gst_video::VideoFormat;

/// A 64x64 frame of the tiny model's size: a grey ramp with a bright
/// square at `patch_x`, the background with a checkerboard of +-`noise`
/// levels (sensor noise: the 3x3-blurred picture hardly changes).
fn ramp_frame(patch_x: usize, noise: u8) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(64 * 64 * 3);
    for y in 0..64 {
        for x in 0..64 {
            let inside = (patch_x..patch_x + 16).contains(&x) && (8..24).contains(&y);
            let base = 60 + x as u8;
            let v = if inside {
                230
            } else if (x + y) % 2 == 0 {
                base + noise
            } else {
                base - noise
            };
            rgb.extend_from_slice(&[v, v, v]);
        }
    }
    rgb
}

/// Masks of `frames` (64x64 RGB, or 80x80 where said) pushed in order
/// through one element with `props`; `flush_before` pushes a flush before
/// that frame.
fn masks(
    model: &std::path::Path,
    props: &[(&str, glib::Value)],
    frames: &[(&[u8], u32)],
    flush_before: Option<usize>,
) -> Vec<Vec<u8>> {
    let mut all = vec![
        ("mode", "mask".to_value()),
        ("batch-size", 1u32.to_value()),
        ("model", model.to_str().unwrap().to_value()),
    ];
    all.extend(props.iter().cloned());
    let mut h = harness(&all);
    let mut out = Vec::new();
    let mut size = 0;
    for (n, (rgb, side)) in frames.iter().enumerate() {
        if flush_before == Some(n) {
            assert!(h.push_event(gst::event::FlushStart::new()));
            assert!(h.push_event(gst::event::FlushStop::new(true)));
            h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
                gst::ClockTime,
            >::new()));
        }
        let i = info(VideoFormat::Rgb, *side, *side);
        if *side != size {
            h.set_src_caps(i.to_caps().unwrap());
            size = *side;
        }
        let mut buffer = frame_buffer(rgb, &i);
        buffer
            .get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(40 * n as u64));
        h.push(buffer).unwrap();
        let mask = h.pull().unwrap();
        out.push(packed_plane(&mask, &info(VideoFormat::Gray8, *side, *side)));
    }
    out
}

fn tiny_model(tag: &str) -> std::path::PathBuf {
    let dir = temp_dir(tag);
    let path = dir.join("tiny.onnx");
    write_tiny_model(&path, &[0, 3, 64, 64], false);
    path
}

fn mean_abs(a: &[u8], b: &[u8]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(x.abs_diff(*y)))
        .sum::<f64>()
        / a.len() as f64
}

#[test]
fn no_smoothing_gives_each_frame_its_own_mask() {
    let model = tiny_model("smooth-zero");
    let (a, b) = (ramp_frame(8, 0), ramp_frame(40, 4));
    let alone_a = masks(&model, &[], &[(&a, 64)], None).remove(0);
    let run = masks(&model, &[], &[(&a, 64), (&b, 64), (&a, 64)], None);
    assert_eq!(run[0], alone_a);
    assert_ne!(run[1], alone_a);
    assert_eq!(run[2], alone_a, "frame 3 owes nothing to frame 2");
}

#[test]
fn smoothing_damps_still_parts_and_follows_moving_ones() {
    let model = tiny_model("smooth-on");
    // The patch moves from x=8 to x=40; the background gets noise the blur
    // takes out (no motion), which the per-frame mask follows (flicker).
    let (a, b) = (ramp_frame(8, 0), ramp_frame(40, 4));
    let own_a = masks(&model, &[], &[(&a, 64)], None).remove(0);
    let own_b = masks(&model, &[], &[(&b, 64)], None).remove(0);
    // Without motion compensation: the average does not follow the patch,
    // it starts afresh where the picture changed.
    let smoothed = masks(
        &model,
        &[
            ("temporal-smoothing", 0.8.to_value()),
            ("motion-compensation", false.to_value()),
        ],
        &[(&a, 64), (&b, 64)],
        None,
    );
    assert_eq!(smoothed[0], own_a, "the first mask is its own");
    let s = &smoothed[1];
    // Inside the new patch and the old one, the picture moved: B's own mask.
    for y in 10..22 {
        for x in (10..22).chain(42..54) {
            assert_eq!(s[y * 64 + x], own_b[y * 64 + x], "moved pixel ({x}, {y})");
        }
    }
    // In the still background (rows below the patches), the mask's change
    // from A to B is damped.
    let rows = 32 * 64..64 * 64;
    let flicker_own = mean_abs(&own_b[rows.clone()], &own_a[rows.clone()]);
    let flicker_smoothed = mean_abs(&s[rows.clone()], &own_a[rows]);
    println!("still rows: own change {flicker_own:.2} levels, smoothed {flicker_smoothed:.2}");
    assert!(
        flicker_own >= 2.0,
        "the test frames must flicker: {flicker_own}"
    );
    assert!(
        flicker_smoothed < 0.8 * flicker_own,
        "smoothed {flicker_smoothed} vs own {flicker_own}"
    );
}

#[test]
fn smoothing_starts_afresh_after_a_flush_and_new_caps() {
    let model = tiny_model("smooth-reset");
    let (a, b) = (ramp_frame(8, 0), ramp_frame(40, 4));
    let own_b = masks(&model, &[], &[(&b, 64)], None).remove(0);
    let smoothing = [("temporal-smoothing", 0.8.to_value())];
    let flushed = masks(&model, &smoothing, &[(&a, 64), (&b, 64)], Some(1));
    assert_eq!(flushed[1], own_b, "after a flush, B's own mask");

    // The same picture at 80x80: other caps.
    let big_b: Vec<u8> = (0..80 * 80)
        .flat_map(|p| {
            let (x, y) = (p % 80 * 64 / 80, p / 80 * 64 / 80);
            let i = 3 * (y * 64 + x);
            [b[i], b[i + 1], b[i + 2]]
        })
        .collect();
    let own_big = masks(&model, &[], &[(&big_b, 80)], None).remove(0);
    let recapped = masks(&model, &smoothing, &[(&a, 64), (&big_b, 80)], None);
    assert_eq!(
        recapped[1], own_big,
        "after a caps change, the frame's own mask"
    );
}

/// One frame of the disc scene through the element with `props`; the RGBA
/// output, packed.
fn rgba_out(props: &[(&str, glib::Value)], w: u32, h: u32) -> (Scene, Vec<u8>) {
    let s = scene(w, h, Shape::Disc, 9);
    let i = info(VideoFormat::Rgb, w, h);
    let mut hn = harness(props);
    hn.set_src_caps(i.to_caps().unwrap());
    hn.push(frame_buffer(&s.rgb, &i)).unwrap();
    let out = hn.pull().unwrap();
    let packed = packed_plane(&out, &info(VideoFormat::Rgba, w, h));
    (s, packed)
}

#[test]
fn blur_keeps_the_subject_and_smooths_the_background() {
    let (w, h) = (160u32, 120u32);
    let (s, out) = rgba_out(
        &[
            ("mode", "blur".to_value()),
            ("blur-radius", 6u32.to_value()),
        ],
        w,
        h,
    );
    let (cx, cy, r) = (80.0f64, 62.4f64, 36.0f64);
    let dist =
        |x: u32, y: u32| ((x as f64 + 0.5 - cx).powi(2) + (y as f64 + 0.5 - cy).powi(2)).sqrt();
    let (mut inside, mut worst_inside) = (0, 0u8);
    let (mut bg_in, mut bg_out, mut bg_n) = (0.0, 0.0, 0);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let p = (y * w + x) as usize;
            assert_eq!(out[4 * p + 3], 255, "opaque");
            if dist(x, y) < r - 6.0 {
                for c in 0..3 {
                    worst_inside = worst_inside.max(out[4 * p + c].abs_diff(s.rgb[3 * p + c]));
                }
                inside += 1;
            } else if dist(x, y) > r + 12.0 {
                // Roughness: how far a pixel is from its right neighbour.
                let q = p + 1;
                bg_in += f64::from(s.rgb[3 * p].abs_diff(s.rgb[3 * q]));
                bg_out += f64::from(out[4 * p].abs_diff(out[4 * q]));
                bg_n += 1;
            }
        }
    }
    assert!(inside > 1000);
    assert!(
        worst_inside <= 3,
        "subject pixels changed by up to {worst_inside}"
    );
    let (bg_in, bg_out) = (bg_in / bg_n as f64, bg_out / bg_n as f64);
    println!("background roughness: {bg_in:.2} levels in, {bg_out:.2} out");
    assert!(bg_out < bg_in / 3.0, "{bg_out} vs {bg_in}");
}

#[test]
fn feather_softens_the_composite_edge() {
    let (w, h) = (160u32, 120u32);
    let base = [
        ("mode", "composite".to_value()),
        ("fill-color", 0xff00ff00u32.to_value()),
    ];
    let blended = |out: &[u8], s: &Scene| {
        (0..(w * h) as usize)
            .filter(|&p| {
                let px = &out[4 * p..4 * p + 3];
                px != &s.rgb[3 * p..3 * p + 3] && px != [0, 255, 0]
            })
            .count()
    };
    let (s, hard) = rgba_out(&base, w, h);
    assert_eq!(blended(&hard, &s), 0, "a hard cut: source or fill only");
    let mut soft_props = base.to_vec();
    soft_props.push(("feather", 0.5.to_value()));
    let (s, soft) = rgba_out(&soft_props, w, h);
    let n = blended(&soft, &s);
    println!("feather=0.5: {n} blended edge pixels");
    assert!(n > 50, "{n} blended pixels");
}

#[test]
fn a_smaller_inference_size_runs_the_model_there_and_masks_the_whole_frame() {
    use gstu2netmatte::model::{Model, ModelOptions, Provider};
    let runtime = gstu2netmatte::runtime::load(None, None, ort::logging::LogLevel::Warning)
        .unwrap()
        .runtime;
    let path = std::path::Path::new(TOP).join("models/u2netp.onnx");
    let mut model = Model::load(
        &runtime,
        &path,
        &ModelOptions {
            provider: Provider::Cpu,
            input_size: Some(192),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(model.input_size(), (192, 192));
    let mut masks = Vec::new();
    let input = vec![0.1f32; 2 * model.frame_len()];
    assert_eq!(model.run(&input, 2, &mut masks).unwrap(), (192, 192));
    assert_eq!(masks.len(), 2 * 192 * 192);

    let (w, h) = (200u32, 150u32);
    let s = scene(w, h, Shape::Disc, 2);
    let i = info(VideoFormat::Rgb, w, h);
    let mut hn = harness(&[
        ("mode", "mask".to_value()),
        ("inference-size", 192u32.to_value()),
    ]);
    hn.set_src_caps(i.to_caps().unwrap());
    hn.push(frame_buffer(&s.rgb, &i)).unwrap();
    let out = hn.pull().unwrap();
    let mask = packed_plane(&out, &info(VideoFormat::Gray8, w, h));
    assert_eq!(mask.len(), (w * h) as usize);
    let iou = iou(&threshold(&mask), &s.truth);
    println!("inference-size=192: IoU {iou:.4} against the drawn disc");
    assert!(iou > 0.9, "{iou}");

    let pipeline = parse_pipeline(
        "videotestsrc num-buffers=1 ! video/x-raw,width=64,height=48 ! u2netmatte inference-size=7 ! fakesink",
    );
    let err = run_pipeline(&pipeline, std::time::Duration::from_secs(30)).unwrap_err();
    assert!(err.contains("inference-size=7 is too small"), "{err}");
}

use gst::glib;
