// SPDX-License-Identifier: MPL-2.0
//! The ALLOCATION query downstream: output buffers from downstream's pool
//! where it fits, in the layout downstream can read.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::*;
use gst::prelude::*;
use gst_video::VideoFormat;
use gst_video::prelude::*;

/// What a test downstream proposes: a pool and whether it reads VideoMeta.
#[derive(Clone)]
struct Proposal {
    pool: gst::BufferPool,
    max_buffers: u32,
    video_meta: bool,
}

/// The pool `buffer` came from, if any.
fn pool_of(buffer: &gst::Buffer) -> *mut gst::ffi::GstBufferPool {
    // SAFETY: reads a field of a buffer that is alive for the call.
    unsafe { (*buffer.as_ptr()).pool }
}

fn owns(pool: &gst::BufferPool, buffer: &gst::Buffer) -> bool {
    pool_of(buffer) == pool.as_ptr()
}

/// A video pool whose buffers have rows padded by `padding` pixels when it
/// adds GstVideoMeta (the options of the proposal); it is configured for
/// the caps of the query, as a downstream would.
fn padded_pool(caps: &gst::Caps, padding: u32, with_meta_option: bool) -> gst::BufferPool {
    let info = gst_video::VideoInfo::from_caps(caps).unwrap();
    let pool = gst_video::VideoBufferPool::new();
    let mut config = pool.config();
    config.set_params(Some(caps), info.size() as u32, 2, 3);
    if with_meta_option {
        config.add_option(gst_video::BUFFER_POOL_OPTION_VIDEO_META.as_str());
    }
    config.add_option(gst_video::BUFFER_POOL_OPTION_VIDEO_ALIGNMENT.as_str());
    let align = gst_video::VideoAlignment::new(0, 0, 0, padding, &[0; 4]);
    config.set_video_alignment(&align);
    pool.set_config(config).unwrap();
    pool.upcast()
}

/// Makes the harness' downstream answer ALLOCATION queries with the
/// proposal `make` gives for the query's caps; returns the proposals made.
fn propose(
    h: &gst_check::Harness,
    make: impl Fn(&gst::Caps) -> Proposal + Send + Sync + 'static,
) -> Arc<Mutex<Vec<Proposal>>> {
    let made = Arc::new(Mutex::new(Vec::new()));
    let record = made.clone();
    h.sinkpad()
        .unwrap()
        .add_probe(gst::PadProbeType::QUERY_DOWNSTREAM, move |_, info| {
            let Some(gst::PadProbeData::Query(q)) = info.data.as_mut() else {
                return gst::PadProbeReturn::Ok;
            };
            let gst::QueryViewMut::Allocation(a) = q.view_mut() else {
                return gst::PadProbeReturn::Ok;
            };
            let caps = a.caps().unwrap().to_owned();
            let proposal = make(&caps);
            let size = gst_video::VideoInfo::from_caps(&caps).unwrap().size() as u32;
            a.add_allocation_pool(Some(&proposal.pool), size, 2, proposal.max_buffers);
            if proposal.video_meta {
                a.add_allocation_meta::<gst_video::VideoMeta>(None);
            }
            record.lock().unwrap().push(proposal);
            gst::PadProbeReturn::Handled
        });
    made
}

fn tiny_model(test: &str) -> PathBuf {
    let dir = temp_dir(&format!("allocation-{test}"));
    let path = dir.join("tiny.onnx");
    write_tiny_model(&path, &[0, 3, 64, 64], false);
    path
}

fn element_for(model: &Path, mode: &str) -> gst::Element {
    element(&[
        ("batch-size", 1u32.to_value()),
        ("mode", mode.to_value()),
        ("model", model.to_str().unwrap().to_value()),
    ])
}

/// Frames 0 and 1 of the same picture through `h`; their output caps.
fn two_frames(
    h: &mut gst_check::Harness,
    rgb: &[u8],
    info: &gst_video::VideoInfo,
) -> (gst::Buffer, gst::Buffer, gst_video::VideoInfo) {
    h.set_src_caps(info.to_caps().unwrap());
    h.push(frame_buffer(rgb, info)).unwrap();
    // Once a frame has left, downstream has been asked.
    let first = h.pull().unwrap();
    h.push(frame_buffer(rgb, info)).unwrap();
    let second = h.pull().unwrap();
    let caps = h.sinkpad().unwrap().current_caps().unwrap();
    (
        first,
        second,
        gst_video::VideoInfo::from_caps(&caps).unwrap(),
    )
}

/// The output plane of the picture without any downstream pool.
fn reference(model: &Path, mode: &str, rgb: &[u8], info: &gst_video::VideoInfo) -> Vec<u8> {
    let mut h = harness_around(element_for(model, mode), false);
    let (_, out, out_info) = two_frames(&mut h, rgb, info);
    packed_plane(&out, &out_info)
}

#[test]
fn downstream_that_reads_video_meta_gets_frames_in_its_padded_pool() {
    let model = tiny_model("video-meta");
    // The pool's own GstVideoMeta is locked on its buffers: trying to
    // remove it (with the input's colour metas) is a GStreamer-CRITICAL.
    let criticals = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = criticals.clone();
    let handler = gst::glib::log_set_handler(
        Some("GStreamer"),
        gst::glib::LogLevels::LEVEL_CRITICAL,
        false,
        false,
        move |_, _, message| seen.lock().unwrap().push(message.to_string()),
    );
    let (w, h_) = (41, 30);
    let info = info(VideoFormat::Rgb, w, h_);
    let scene = scene(w, h_, Shape::Disc, 2);
    for (mode, bytes_per_pixel) in [("mask", 1), ("composite", 4), ("alpha", 4)] {
        let mut h = harness_around(element_for(&model, mode), false);
        let made = propose(&h, |caps| Proposal {
            pool: padded_pool(caps, 13, false),
            max_buffers: 3,
            video_meta: true,
        });
        let (first, second, out_info) = two_frames(&mut h, &scene.rgb, &info);
        let made = made.lock().unwrap();
        assert_eq!(
            made.len(),
            1,
            "mode={mode}: one ALLOCATION query for one caps"
        );
        let pool = &made[0].pool;
        assert!(
            owns(pool, &second),
            "mode={mode}: the frame is not in downstream's pool"
        );
        if mode == "mask" {
            // Its buffer is taken when it leaves: after the query.
            assert!(
                owns(pool, &first),
                "mode={mode}: the first frame is not in downstream's pool"
            );
        }
        let meta = second
            .meta::<gst_video::VideoMeta>()
            .unwrap_or_else(|| panic!("mode={mode}: a padded frame without GstVideoMeta"));
        // 41 + 13 pixels a row, rounded up to 4 bytes.
        let padded = ((w + 13) * bytes_per_pixel).div_ceil(4) * 4;
        assert_eq!(meta.stride()[0], padded as i32, "mode={mode}");
        assert_ne!(meta.stride()[0], out_info.stride()[0], "mode={mode}");
        // No maximum: the element holds a batch of buffers at once.
        let (_, _, min, max) = pool.config().params().unwrap();
        assert_eq!((min, max), (2, 0), "mode={mode}");
        assert_eq!(
            packed_plane(&second, &out_info),
            reference(&model, mode, &scene.rgb, &info),
            "mode={mode}: the padded frame holds other pixels"
        );
    }
    gst::glib::log_remove_handler(Some("GStreamer"), handler);
    assert_eq!(*criticals.lock().unwrap(), Vec::<String>::new());
}

#[test]
fn downstream_without_video_meta_gets_frames_in_the_default_layout() {
    let model = tiny_model("no-video-meta");
    let (w, h_) = (41, 30);
    let info = info(VideoFormat::Bgrx, w, h_);
    let scene = scene(w, h_, Shape::Box, 3);
    for mode in ["mask", "composite"] {
        let mut h = harness_around(element_for(&model, mode), false);
        // The pool could pad rows, but only with a GstVideoMeta to say so.
        let made = propose(&h, |caps| Proposal {
            pool: padded_pool(caps, 13, false),
            max_buffers: 0,
            video_meta: false,
        });
        let (_, second, out_info) = two_frames(&mut h, &scene.rgb, &info);
        let pool = made.lock().unwrap()[0].pool.clone();
        assert!(
            owns(&pool, &second),
            "mode={mode}: the frame is not in downstream's pool"
        );
        if let Some(meta) = second.meta::<gst_video::VideoMeta>() {
            assert_eq!(meta.stride(), out_info.stride(), "mode={mode}");
        }
        assert_eq!(second.size(), out_info.size(), "mode={mode}");
        assert_eq!(
            packed_plane(&second, &out_info),
            reference(&model, mode, &scene.rgb, &info),
            "mode={mode}"
        );
    }
}

#[test]
fn pools_that_do_not_fit_are_not_used() {
    let model = tiny_model("no-fit");
    let (w, h_) = (41, 30);
    let info = info(VideoFormat::Rgb, w, h_);
    let scene = scene(w, h_, Shape::Disc, 4);
    type Make = fn(&gst::Caps) -> gst::BufferPool;
    let cases: [(&str, Make); 2] = [
        // Padded rows that downstream, not reading GstVideoMeta, cannot see.
        ("padded without video meta", |caps| {
            padded_pool(caps, 13, true)
        }),
        // Active already, serving something else: it cannot be configured.
        ("active", |caps| {
            let pool = gst::BufferPool::new();
            let mut config = pool.config();
            config.set_params(Some(caps), 16, 1, 1);
            pool.set_config(config).unwrap();
            pool.set_active(true).unwrap();
            pool
        }),
    ];
    for (case, make) in cases {
        for mode in ["mask", "composite"] {
            let mut h = harness_around(element_for(&model, mode), false);
            let made = propose(&h, move |caps| Proposal {
                pool: make(caps),
                max_buffers: 0,
                video_meta: false,
            });
            let (_, second, out_info) = two_frames(&mut h, &scene.rgb, &info);
            let pool = made.lock().unwrap()[0].pool.clone();
            assert!(
                !owns(&pool, &second),
                "{case}, mode={mode}: the pool was used"
            );
            assert!(
                second.meta::<gst_video::VideoMeta>().is_none(),
                "{case}, mode={mode}"
            );
            assert_eq!(second.size(), out_info.size(), "{case}, mode={mode}");
            assert_eq!(
                packed_plane(&second, &out_info),
                reference(&model, mode, &scene.rgb, &info),
                "{case}, mode={mode}"
            );
            let _ = pool.set_active(false);
        }
    }
}
