// SPDX-License-Identifier: MPL-2.0
//! Playback: a video player with the element as its filter, a sink that
//! syncs to the clock and sends QoS. The model (U2NetP on 2 CPU cores, a
//! few frames a second) is slower than the clip (24 fps): with `keep-up`
//! the element keeps up as with a live source, so every frame reaches the
//! sink in time and the clip plays in about its own duration; with
//! `keep-up=false` every frame waits for its own mask, as before. A seek
//! (new running times, a new base time) keeps it so.
//!
//! The tests here run one at a time: they measure time on a 2-core machine.

mod common;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use gst::prelude::*;

static SERIAL: Mutex<()> = Mutex::new(());

/// Megamind.avi: 720x528 MPEG-4 at 23.976 fps.
const CLIP_FRAMES: usize = 270;
const CLIP_SECONDS: f64 = 11.26;

fn clip_uri() -> String {
    let path = std::path::Path::new(TOP).join(".deps/clips/Megamind.avi");
    assert!(
        path.exists(),
        "{} is missing: run `make setup`",
        path.display()
    );
    format!("file://{}", path.display())
}

/// What reached the sink, and when, against the clock.
#[derive(Debug, Default)]
struct Played {
    frames: usize,
    /// From PLAYING to EOS.
    seconds: f64,
    /// The latest a frame arrived after its running time, ms.
    most_late_ms: f64,
    /// Frames the element sent with an older frame's mask (stats).
    borrowed: usize,
    /// Frames the element reported sending (stats).
    frames_out: usize,
    /// What the sink says it rendered (its `stats`).
    rendered: usize,
    /// The slowest model run per frame (stats), ms.
    slowest_frame_ms: f64,
}

/// Counts the frames reaching `pad` (a sink's) and how late against the
/// clock each came.
fn count_at(pad: &gst::Pad, element: gst::Element) -> (Arc<AtomicUsize>, Arc<AtomicU64>) {
    let frames = Arc::new(AtomicUsize::new(0));
    let late_us = Arc::new(AtomicU64::new(0));
    let segment = Arc::new(Mutex::new(gst::FormattedSegment::<gst::ClockTime>::new()));
    let (f, l) = (frames.clone(), late_us.clone());
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            match info.data.as_ref() {
                Some(gst::PadProbeData::Event(e)) => {
                    if let gst::EventView::Segment(s) = e.view()
                        && let Some(s) = s.segment().downcast_ref::<gst::ClockTime>()
                    {
                        *segment.lock().unwrap() = s.clone();
                    }
                }
                Some(gst::PadProbeData::Buffer(b)) => {
                    f.fetch_add(1, Ordering::SeqCst);
                    let running = b
                        .pts()
                        .and_then(|p| segment.lock().unwrap().to_running_time(p));
                    if let (Some(clock), Some(base), Some(running)) =
                        (element.clock(), element.base_time(), running)
                        && element.current_state() == gst::State::Playing
                    {
                        let now = clock.time().saturating_sub(base);
                        let late = now.saturating_sub(running).useconds();
                        l.fetch_max(late, Ordering::SeqCst);
                    }
                }
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
    (frames, late_us)
}

/// Plays `pipeline` to EOS (within `limit`), counting what reaches
/// `sink` and reading the element's stats.
fn play(pipeline: &gst::Element, sink: &gst::Element, limit: Duration) -> Played {
    play_seeking(pipeline, sink, limit, None)
}

/// As [`play`]; with `seek` (after, to), a flushing seek `after` into the
/// play to position `to`.
fn play_seeking(
    pipeline: &gst::Element,
    sink: &gst::Element,
    limit: Duration,
    seek: Option<(Duration, gst::ClockTime)>,
) -> Played {
    let (frames, late_us) = count_at(&sink.static_pad("sink").unwrap(), sink.clone());
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Paused).unwrap();
    // Preroll (the first frame's mask, the model's warm-up) is not play time.
    let prerolled = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(60),
        &[gst::MessageType::AsyncDone, gst::MessageType::Error],
    );
    if let Some(gst::MessageView::Error(e)) = prerolled.as_ref().map(|m| m.view()) {
        panic!("preroll failed: {} ({:?})", e.error(), e.debug());
    }
    let started = Instant::now();
    pipeline.set_state(gst::State::Playing).unwrap();
    let (mut borrowed, mut frames_out, mut slowest_frame_ms) = (0, 0, 0f64);
    let deadline = started + limit;
    let mut seek = seek;
    loop {
        let mut left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the clip did not end within {limit:?}");
        if let Some((after, to)) = seek {
            let until = (started + after).saturating_duration_since(Instant::now());
            if until.is_zero() {
                pipeline
                    .seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE, to)
                    .expect("the seek");
                seek = None;
                continue;
            }
            left = left.min(until);
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(left.as_millis() as u64))
        else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{} ({:?})", e.error(), e.debug()),
            gst::MessageView::Element(m) => {
                if let Some(s) = m.structure()
                    && s.name() == "u2netmatte-stats"
                {
                    let out = s.get::<u32>("frames-out").unwrap() as usize;
                    frames_out += out;
                    let frames = f64::from(s.get::<u32>("frames").unwrap().max(1));
                    slowest_frame_ms =
                        slowest_frame_ms.max(s.get::<f64>("inference-ms").unwrap() / frames);
                    if s.get::<f64>("mask-age-max-ms").unwrap() > 0.0 {
                        borrowed += 1;
                    }
                }
            }
            _ => {}
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    // Before NULL, which resets them.
    let stats = sink.property::<gst::Structure>("stats");
    let rendered = stats.get::<u64>("rendered").unwrap() as usize;
    pipeline.set_state(gst::State::Null).unwrap();
    Played {
        frames: frames.load(Ordering::SeqCst),
        seconds,
        most_late_ms: late_us.load(Ordering::SeqCst) as f64 / 1000.0,
        borrowed,
        frames_out,
        rendered,
        slowest_frame_ms,
    }
}

#[track_caller]
fn assert_kept_up(what: &str, played: &Played) {
    println!("{what}: {played:?}");
    assert!(
        played.rendered * 100 >= CLIP_FRAMES * 95,
        "{what}: {} of {CLIP_FRAMES} frames rendered",
        played.rendered
    );
    assert!(
        played.seconds <= CLIP_SECONDS * 1.1,
        "{what}: the {CLIP_SECONDS} s clip played in {:.1} s",
        played.seconds
    );
    // A model slower than the frames (U2NetP on a CPU) must have lent masks.
    if played.slowest_frame_ms > 1000.0 / 23.976 {
        assert!(
            played.borrowed > 0,
            "{what}: no frame left with another's mask"
        );
    }
}

#[test]
fn playbin_with_the_element_as_its_filter_plays_in_time() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    init();
    let playbin = gst::ElementFactory::make("playbin")
        .property("uri", clip_uri())
        .build()
        .unwrap();
    let filter = element(&[("mode", "blur".to_value()), ("stats", true.to_value())]);
    // What playbin's video sink (a real display's, or this) asks for: sync
    // to the clock, QoS, and frames later than 20 ms are not shown.
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", true)
        .property("qos", true)
        .property("max-lateness", 20_000_000i64)
        .build()
        .unwrap();
    let audio = gst::ElementFactory::make("fakesink").build().unwrap();
    playbin.set_property("video-filter", &filter);
    playbin.set_property("video-sink", &sink);
    playbin.set_property("audio-sink", &audio);
    let played = play(&playbin, &sink, Duration::from_secs(90));
    assert_kept_up("playbin", &played);
}

#[test]
fn a_decoded_file_into_a_synchronised_sink_plays_in_time() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pipeline = parse_pipeline(&format!(
        "uridecodebin uri={} ! videoconvert ! u2netmatte name=m mode=blur stats=true ! \
         videoconvert ! fakesink name=sink sync=true qos=true",
        clip_uri()
    ));
    let sink = pipeline.by_name("sink").unwrap();
    let matte = pipeline.by_name("m").unwrap();
    let (sent, _) = count_at(&matte.static_pad("src").unwrap(), matte.clone());
    let played = play(pipeline.upcast_ref(), &sink, Duration::from_secs(90));
    assert_kept_up("decodebin", &played);
    // The QoS stops at the element: upstream drops nothing.
    assert_eq!(
        sent.load(Ordering::SeqCst),
        CLIP_FRAMES,
        "frames the element sent"
    );
    // A frame leaves by its running time less the time to compose it.
    assert!(
        played.most_late_ms < 100.0,
        "a frame reached the sink {:.0} ms after its running time",
        played.most_late_ms
    );
}

#[test]
fn without_keep_up_every_frame_waits_for_its_own_mask() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The first frames: each one's own mask, however late.
    let pipeline = parse_pipeline(&format!(
        "uridecodebin uri={} ! videoconvert ! identity eos-after=24 ! \
         u2netmatte name=m keep-up=false stats=true ! fakesink name=sink sync=true qos=true",
        clip_uri()
    ));
    let sink = pipeline.by_name("sink").unwrap();
    let matte = pipeline.by_name("m").unwrap();
    let (came, _) = count_at(&matte.static_pad("sink").unwrap(), matte.clone());
    let played = play(pipeline.upcast_ref(), &sink, Duration::from_secs(120));
    println!("keep-up=false: {played:?}");
    assert_eq!(played.borrowed, 0, "keep-up=false lent a mask");
    assert!(played.frames_out > 0, "no stats");
    let came = came.load(Ordering::SeqCst);
    assert!(came >= 20, "{came} frames came in");
    assert_eq!(played.frames, came, "every frame reached the sink");
}

#[test]
fn after_a_seek_frames_still_come_in_time() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Three seconds in, a flushing seek to 8 s: the frames after it have
    // new running times (from 0 again) and a new base time, and still leave
    // in time for the sink.
    let pipeline = parse_pipeline(&format!(
        "uridecodebin uri={} ! videoconvert ! u2netmatte mode=blur stats=true ! \
         videoconvert ! fakesink name=sink sync=true qos=true",
        clip_uri()
    ));
    let sink = pipeline.by_name("sink").unwrap();
    let played = play_seeking(
        pipeline.upcast_ref(),
        &sink,
        Duration::from_secs(90),
        Some((Duration::from_secs(3), gst::ClockTime::from_seconds(8))),
    );
    println!("seek: {played:?}");
    // About 3 s before the seek and 3.26 s after it, at 24 fps; the sink's
    // counts start again at the flush.
    let (before, after) = (3.0 * 23.976, 3.26 * 23.976);
    assert!(
        played.frames as f64 >= (before + after) * 0.9,
        "{} frames reached the sink, about {:.0} expected",
        played.frames,
        before + after
    );
    assert!(
        played.rendered as f64 >= after * 0.95,
        "{} frames rendered after the seek, about {after:.0} expected",
        played.rendered
    );
    assert!(
        played.seconds <= 3.0 + 3.26 * 1.1 + 0.5,
        "played {:.1} s for about 6.3 s of clip",
        played.seconds
    );
    assert!(
        played.most_late_ms < 100.0,
        "a frame reached the sink {:.0} ms after its running time",
        played.most_late_ms
    );
}
