// SPDX-License-Identifier: MPL-2.0
//! `make bench-motion`: how well a borrowed mask, moved along with the
//! picture, matches the frame's own mask, on real clips of people moving;
//! and what moving it costs. Prints markdown tables. Not a test: the
//! figures depend on the clip and the machine.
//!
//! Each clip is decoded at 640x480 and prepared as the element prepares it
//! (Lanczos3 to the model's 320x320, `Preparer::small_rgb`: the small copy
//! the element keeps). Those small frames go through the element
//! (`mode=mask`, plain CPU fp32, not live: every frame its own mask), so
//! the masks are the model's at its own size, exactly the masks the
//! element lends and moves. For each mask age, frame t borrows frame
//! t - age's mask: as it is, and moved by the motion from frame t - age to
//! frame t (the element's own `MotionEstimator`). IoU is at 0.5, at the
//! model's size, against frame t's own mask. Pairs with a cut between
//! them (Megamind.avi has four in its first 200 frames) are counted apart:
//! there no motion explains the new picture, and both masks are of
//! another shot; the main columns are the pairs within one shot.
//!
//! Last, `temporal-smoothing` on the same frames and masks (the
//! element's `TemporalSmoother`, which works at the model's size): flicker
//! where the picture is still (as `make bench-live` measures it on the
//! element's output) and along the motion where the picture moved, which
//! only an average that follows the motion can lower.
//!
//! Environment: MOTION_CLIPS (comma-separated names in `.deps/clips`,
//! default the three below), MOTION_FRAMES (frames of each clip, default
//! 200), MOTION_SMOOTHING (the temporal-smoothing weights, default
//! 0.8,0.9,0.94),
//! MOTION_RUNS (timing runs, default 5), MOTION_CACHE (a folder to keep
//! the model's masks in between runs), MOTION_BOUND (set: also what an
//! oracle's choice among the candidate vectors would leave, slow),
//! BENCH_TOP (the project folder).

mod common;

use std::time::Instant;

use gst::prelude::*;
use gst_video::prelude::*;
use gstu2netmatte::edge_snap::EdgeSnap;
use gstu2netmatte::motion::{self, BLOCK, Field, MotionEstimator};
use gstu2netmatte::prep::{Frame, Normalization, PixelLayout, Preparer};
use gstu2netmatte::temporal::{TemporalSmoother, box_blur_3x3, channel_change};

const MODEL_SIDE: u32 = 320;
const AGES_MS: [u64; 5] = [200, 300, 400, 500, 600];
/// People walking far off (vtest.avi), an animated film's characters
/// (Megamind.avi), and a man talking in a moving car, head and shoulders
/// as a webcam shows them (carphone_pristine.mp4: the "Carphone" test sequence).
const CLIPS: &str = "vtest.avi,Megamind.avi,carphone_pristine.mp4";

/// The first `frames` of `clip` as packed RGB at 640x480, and its frame rate.
fn decode(clip: &str, frames: usize) -> (Vec<Vec<u8>>, f64) {
    let pipeline = common::pipeline(&format!(
        "filesrc location={clip} ! decodebin ! videoconvert ! \
         videoscale ! video/x-raw,format=RGB,width=640,height=480,pixel-aspect-ratio=1/1 ! \
         appsink name=sink sync=false max-buffers=4"
    ));
    let sink = common::app_sink(&pipeline, "sink");
    pipeline.set_state(gst::State::Playing).unwrap();
    let (mut out, mut fps) = (Vec::new(), 0.0);
    while out.len() < frames
        && let Ok(sample) = sink.pull_sample()
    {
        let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
        fps = f64::from(info.fps().numer()) / f64::from(info.fps().denom().max(1));
        out.push(packed(sample.buffer().unwrap(), &info));
    }
    pipeline.set_state(gst::State::Null).unwrap();
    (out, fps)
}

fn packed(buffer: &gst::BufferRef, info: &gst_video::VideoInfo) -> Vec<u8> {
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, info).unwrap();
    let row = info.width() as usize * info.format_info().pixel_stride()[0] as usize;
    let stride = frame.plane_stride()[0] as usize;
    frame
        .plane_data(0)
        .unwrap()
        .chunks(stride)
        .take(info.height() as usize)
        .flat_map(|r| r[..row].to_vec())
        .collect()
}

const RGB: PixelLayout = PixelLayout::RGB;

/// `frame` (640x480 RGB) at the model's size, as the element keeps it.
fn small(preparer: &mut Preparer, tensor: &mut [f32], frame: &[u8], out: &mut Vec<u8>) {
    preparer
        .prepare(
            &Frame {
                data: frame,
                width: 640,
                height: 480,
                stride: 640 * 3,
                layout: RGB,
            },
            tensor,
        )
        .unwrap();
    preparer.small_rgb(RGB, out);
}

/// `frames` (640x480 RGB) at a model's size, `side` x `side`, as the
/// element keeps them.
fn small_copies(frames: &[Vec<u8>], side: u32) -> Vec<Vec<u8>> {
    let mut preparer = Preparer::new(side, side, Normalization::IMAGENET);
    let mut tensor = vec![0f32; preparer.tensor_len()];
    frames
        .iter()
        .map(|f| {
            let mut out = Vec::new();
            small(&mut preparer, &mut tensor, f, &mut out);
            out
        })
        .collect()
}

/// The element's own mask of each small frame (320x320 GRAY8).
fn own_masks(small: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let pipeline = common::pipeline(&format!(
        "appsrc name=src format=time caps=video/x-raw,format=RGB,width={MODEL_SIDE},height={MODEL_SIDE},framerate=10/1 ! \
         u2netmatte mode=mask provider=cpu batch-size=4 ! appsink name=sink sync=false"
    ));
    let src = common::app_src(&pipeline, "src");
    let sink = common::app_sink(&pipeline, "sink");
    pipeline.set_state(gst::State::Playing).unwrap();
    let frames = small.to_vec();
    let pusher = std::thread::spawn(move || {
        for (n, f) in frames.into_iter().enumerate() {
            let mut b = gst::Buffer::from_mut_slice(f);
            b.get_mut()
                .unwrap()
                .set_pts(gst::ClockTime::from_mseconds(100 * n as u64));
            src.push_buffer(b).unwrap();
        }
        src.end_of_stream().unwrap();
    });
    let mut out = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
        out.push(packed(sample.buffer().unwrap(), &info));
    }
    pusher.join().unwrap();
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(out.len(), small.len());
    out
}

/// [`own_masks`], kept in `MOTION_CACHE` (a folder) when it is set, under
/// a hash of the small frames: tuning the motion step reruns in seconds
/// instead of running the model again.
fn cached_own_masks(clip: &str, small: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let Some(dir) = std::env::var_os("MOTION_CACHE") else {
        return own_masks(small);
    };
    // FNV-1a over the frames: another decoder, scaler or frame count is
    // another file.
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in small.iter().flatten() {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let path = std::path::Path::new(&dir).join(format!("{clip}-{}-{hash:016x}.masks", small.len()));
    let plane = (MODEL_SIDE * MODEL_SIDE) as usize;
    if let Ok(bytes) = std::fs::read(&path)
        && bytes.len() == plane * small.len()
    {
        return bytes.chunks_exact(plane).map(<[u8]>::to_vec).collect();
    }
    let masks = own_masks(small);
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(&path, masks.concat());
    masks
}

/// ISNet's input size: the element estimates motion at the model's size,
/// on a reduced copy when it is this large.
const LARGE_SIDE: u32 = 1024;

/// `mask` (the model's, `MODEL_SIDE` square) at `side` x `side`, each pixel
/// the nearest: a mask of a larger model to time moving, not to measure.
fn upscaled(mask: &[u8], side: u32) -> Vec<u8> {
    let (from, to) = (MODEL_SIDE as usize, side as usize);
    (0..to * to)
        .map(|i| mask[(i / to) * from / to * from + (i % to) * from / to])
        .collect()
}

/// A cut between two consecutive frames: their colour histograms (4
/// levels a channel, 64 bins) differ by more than this (L1, of 2). Within
/// a shot of Megamind.avi and vtest.avi it stays under 0.02; its cuts are
/// 0.09-0.45. carphone_pristine.mp4 is one shot: none of its pairs reaches
/// it.
const CUT_DISTANCE: f64 = 0.05;

fn histogram(rgb: &[u8]) -> [f64; 64] {
    let mut h = [0f64; 64];
    for p in rgb.chunks_exact(3) {
        h[usize::from(p[0] >> 6) * 16 + usize::from(p[1] >> 6) * 4 + usize::from(p[2] >> 6)] += 1.0;
    }
    let n = (rgb.len() / 3).max(1) as f64;
    h.map(|v| v / n)
}

/// Per frame: whether a cut comes just before it.
fn cuts(small: &[Vec<u8>]) -> Vec<bool> {
    let histograms: Vec<[f64; 64]> = small.iter().map(|f| histogram(f)).collect();
    (0..small.len())
        .map(|i| {
            i > 0 && {
                let (a, b) = (&histograms[i - 1], &histograms[i]);
                a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>() > CUT_DISTANCE
            }
        })
        .collect()
}

fn iou(a: &[u8], b: &[u8]) -> Option<f64> {
    let (mut inter, mut union) = (0u64, 0u64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x > 127, *y > 127);
        inter += u64::from(x && y);
        union += u64::from(x || y);
    }
    (union > 0).then(|| inter as f64 / union as f64)
}

/// 1-IoU of borrowed masks, as they are and moved, added up; and, when
/// asked for (MOTION_BOUND), of the moved masks with an oracle's vectors
/// ([`oracle_vectors`]): any candidate's, and only those within [`TIE`]
/// of the least RGB SAD.
#[derive(Default)]
struct Errors {
    plain: f64,
    moved: f64,
    oracle: f64,
    oracle_among_ties: f64,
    count: usize,
}

impl Errors {
    fn add(&mut self, plain: f64, moved: f64) {
        self.plain += plain;
        self.moved += moved;
        self.count += 1;
    }

    /// The oracles' means.
    fn oracle_means(&self) -> (f64, f64) {
        let n = self.count.max(1) as f64;
        (self.oracle / n, self.oracle_among_ties / n)
    }

    fn means(&self) -> (f64, f64) {
        let n = self.count.max(1) as f64;
        (self.plain / n, self.moved / n)
    }

    /// How much lower moving made the error, in per cent.
    fn lower_by(&self) -> f64 {
        let (plain, moved) = self.means();
        100.0 * (1.0 - moved / plain)
    }
}

/// The candidates the oracle may take in its second run: those whose RGB
/// SAD over a block is within this share of the least one's (or 1 level
/// of it, where the least is 0).
const TIE: f64 = 1.1;

/// How far a mask is from frame t's own mask over some pixels: how many
/// pixels fall on the other side of 0.5 (what 1-IoU counts), then the sum
/// of |difference| (to break ties).
fn mask_distance(mask: impl Iterator<Item = (u8, u8)>) -> (u32, u32) {
    mask.fold((0, 0), |(wrong, sum), (a, b)| {
        (
            wrong + u32::from((a > 127) != (b > 127)),
            sum + u32::from(a.abs_diff(b)),
        )
    })
}

/// Frame t - lag's mask moved onto frame t (`moved`, as the element
/// moves it), with each [`BLOCK`] square block given instead, among its
/// candidate vectors, the one whose moved mask is nearest frame t's own
/// mask (`own`; [`mask_distance`]), where that is nearer than `moved`
/// there: an oracle, which a player cannot have, bounding what one vector
/// a block, chosen among these, could do (fewer pixels on the wrong side
/// never raise 1-IoU). A block it replaces is moved plainly (bilinear,
/// without the element's care for uncovered pixels and its snap to the
/// picture's edges). Twice: among all candidates, and among those whose
/// RGB SAD (`from` moved against `to`) over the block is within [`TIE`]
/// of the least. The blocks are in the picture's pixels: the field's own
/// only at the model's size, where it is not estimated on a reduced copy.
fn oracle_vectors(
    field: &Field,
    (from, to): (&[u8], &[u8]),
    (mask, own): (&[u8], &[u8]),
    moved: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    let side = MODEL_SIDE as usize;
    let size = (MODEL_SIDE, MODEL_SIDE);
    assert_eq!((field.width(), field.height()), size);
    let (mut any, mut among_ties) = (moved.to_vec(), moved.to_vec());
    let mut candidates = Vec::new();
    for (bx, by) in
        (0..side.div_ceil(BLOCK)).flat_map(|by| (0..side.div_ceil(BLOCK)).map(move |bx| (bx, by)))
    {
        let pixels: Vec<(u32, u32)> = (by * BLOCK..((by + 1) * BLOCK).min(side))
            .flat_map(|y| {
                (bx * BLOCK..((bx + 1) * BLOCK).min(side)).map(move |x| (x as u32, y as u32))
            })
            .collect();
        let at = |(x, y): (u32, u32)| y as usize * side + x as usize;
        field.candidates_at(pixels[0].0, pixels[0].1, &mut candidates);
        let mask_cost = |v: [f32; 2]| {
            mask_distance(
                pixels
                    .iter()
                    .map(|&p| (motion::sample(mask, (1, 0), p, v, size), own[at(p)])),
            )
        };
        let picture_cost = |v: [f32; 2]| -> u32 {
            pixels
                .iter()
                .flat_map(|&p| (0..3).map(move |c| (p, c)))
                .map(|(p, c)| {
                    u32::from(motion::sample(from, (3, c), p, v, size).abs_diff(to[3 * at(p) + c]))
                })
                .sum()
        };
        let as_moved = mask_distance(pixels.iter().map(|&p| (moved[at(p)], own[at(p)])));
        let costs: Vec<((u32, u32), u32)> = candidates
            .iter()
            .map(|&v| (mask_cost(v), picture_cost(v)))
            .collect();
        let least_picture = costs.iter().map(|c| c.1).min().unwrap_or(0);
        let best = |out: &mut Vec<u8>, allowed: &dyn Fn(u32) -> bool| {
            let chosen = candidates
                .iter()
                .zip(&costs)
                .filter(|(_, (_, picture))| allowed(*picture))
                .min_by_key(|(_, (m, _))| *m);
            if let Some((&v, &(m, _))) = chosen
                && m < as_moved
            {
                for &p in &pixels {
                    out[at(p)] = motion::sample(mask, (1, 0), p, v, size);
                }
            }
        };
        best(&mut any, &|_| true);
        best(&mut among_ties, &|picture| {
            f64::from(picture) <= TIE * f64::from(least_picture) + 1.0
        });
    }
    (any, among_ties)
}

/// 1-IoU of frame t - `lag`'s mask against frame t's, as it is and moved
/// (and with the oracles' vectors when `bound`): for the pairs within one
/// shot, and for those across a cut.
fn errors(
    small: &[Vec<u8>],
    masks: &[Vec<u8>],
    cut: &[bool],
    lag: usize,
    bound: bool,
) -> (Errors, Errors) {
    let mut estimator = MotionEstimator::new();
    let mut snap = EdgeSnap::new();
    let mut moved = Vec::new();
    let (mut within, mut across) = (Errors::default(), Errors::default());
    for t in lag..small.len() {
        let Some(field) = estimator.estimate(&small[t - lag], &small[t], MODEL_SIDE, MODEL_SIDE)
        else {
            continue;
        };
        field.warp_mask_onto(&masks[t - lag], &small[t], &mut snap, &mut moved);
        let (Some(a), Some(b)) = (iou(&masks[t - lag], &masks[t]), iou(&moved, &masks[t])) else {
            continue;
        };
        let across_a_cut = cut[t - lag + 1..=t].contains(&true);
        let errors = if across_a_cut {
            &mut across
        } else {
            &mut within
        };
        errors.add(1.0 - a, 1.0 - b);
        // Only the pairs within a shot are shown with the oracle.
        if bound && !across_a_cut {
            let pictures = (small[t - lag].as_slice(), small[t].as_slice());
            let (any, among_ties) =
                oracle_vectors(field, pictures, (&masks[t - lag], &masks[t]), &moved);
            errors.oracle += 1.0 - iou(&any, &masks[t]).unwrap_or(1.0);
            errors.oracle_among_ties += 1.0 - iou(&among_ties, &masks[t]).unwrap_or(1.0);
        }
    }
    (within, across)
}

/// Milliseconds a frame of the element's motion step (640x480 frames)
/// with a model of `side` x `side` (`masks` at that size): keeping the
/// small copy, estimating, moving the mask (and snapping it to the
/// picture's edges), its mean shift; the median over `runs` runs of the
/// mean over the frames, at a lag of 3.
fn timing(frames: &[Vec<u8>], masks: &[Vec<u8>], side: u32, runs: usize) -> f64 {
    let small = small_copies(frames, side);
    let mut preparer = Preparer::new(side, side, Normalization::IMAGENET);
    let mut tensor = vec![0f32; preparer.tensor_len()];
    let mut estimator = MotionEstimator::new();
    let mut snap = EdgeSnap::new();
    let (mut copy, mut moved) = (Vec::new(), Vec::new());
    let scale = (640.0 / side as f32, 480.0 / side as f32);
    let mut per_run: Vec<f64> = (0..runs)
        .map(|_| {
            let mut total = 0.0;
            for t in 3..frames.len() {
                // Preparing is done anyway; only the copy it hands over counts.
                preparer
                    .prepare(
                        &Frame {
                            data: &frames[t],
                            width: 640,
                            height: 480,
                            stride: 640 * 3,
                            layout: RGB,
                        },
                        &mut tensor,
                    )
                    .unwrap();
                let start = Instant::now();
                preparer.small_rgb(RGB, &mut copy);
                let field = estimator
                    .estimate(&small[t - 3], &copy, side, side)
                    .unwrap();
                field.warp_mask_onto(&masks[t - 3], &copy, &mut snap, &mut moved);
                std::hint::black_box(field.mean_shift(&moved, scale));
                total += start.elapsed().as_secs_f64() * 1000.0;
            }
            total / (frames.len() - 3) as f64
        })
        .collect();
    per_run.sort_by(|a, b| a.total_cmp(b));
    per_run[per_run.len() / 2]
}

fn main() {
    // `cargo test --all-targets` runs this binary too: only `cargo bench` measures.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    gst::init().unwrap();
    gstu2netmatte::plugin_register_static().unwrap();
    let frames = common::env_usize("MOTION_FRAMES", 200);
    let runs = common::env_usize("MOTION_RUNS", 5);
    println!(
        "## Borrowed masks moved with the picture: U2NetP, plain CPU fp32 (provider=cpu), \
         masks at 320x320, IoU at 0.5 against the frame's own mask\n"
    );
    println!(
        "| clip | fps | mask age ms | frames within a shot | 1-IoU as it is | 1-IoU moved | \
         error lower by | floor: 1-IoU moved, next frame | error above the floor lower by | \
         frames across a cut | lower by, all frames |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut timings = Vec::new();
    let mut smoothing = Vec::new();
    let clips = common::env_list("MOTION_CLIPS", CLIPS);
    let strengths = common::env_numbers("MOTION_SMOOTHING", "0.8,0.9,0.94");
    let bound = std::env::var_os("MOTION_BOUND").is_some();
    let mut bounds = Vec::new();
    for clip in &clips {
        let path = format!("{}/.deps/clips/{clip}", common::top());
        let (decoded, fps) = decode(&path, frames);
        let small = small_copies(&decoded, MODEL_SIDE);
        let masks = cached_own_masks(clip, &small);
        let cut = cuts(&small);
        // The next frame's mask, moved: the motion of one frame is small
        // and found nearly whole, so what still differs is mostly the
        // model changing its mind between two frames (a strand of hair in
        // or out, a faint person seen or not), which no moved mask can
        // follow. It still holds one frame's motion error, so it is a
        // little too high, and the share above it a little flattering.
        let (_, floor) = errors(&small, &masks, &cut, 1, false).0.means();
        for age in AGES_MS {
            let lag = ((age as f64 * fps / 1000.0).round() as usize).max(1);
            let (within, across) = errors(&small, &masks, &cut, lag, bound);
            let (plain, moved) = within.means();
            let all = Errors {
                plain: within.plain + across.plain,
                moved: within.moved + across.moved,
                count: within.count + across.count,
                ..Errors::default()
            };
            println!(
                "| {clip} | {fps:.0} | {age} ({lag} frames) | {} | {plain:.3} | {moved:.3} | {:.0} % | {floor:.3} | {:.0} % | {} | {:.0} % |",
                within.count,
                within.lower_by(),
                if plain > floor {
                    100.0 * (plain - moved) / (plain - floor)
                } else {
                    f64::NAN
                },
                across.count,
                all.lower_by()
            );
            if bound {
                let (any, among_ties) = within.oracle_means();
                let lower = |e: f64| 100.0 * (1.0 - e / plain);
                bounds.push(format!(
                    "| {clip} | {age} | {plain:.4} | {moved:.4} ({:.1} %) | {any:.4} ({:.1} %) | {among_ties:.4} ({:.1} %) |",
                    within.lower_by(),
                    lower(any),
                    lower(among_ties)
                ));
            }
        }
        let ms = timing(&decoded, &masks, MODEL_SIDE, runs);
        let large: Vec<Vec<u8>> = masks.iter().map(|m| upscaled(m, LARGE_SIDE)).collect();
        timings.push((clip, ms, timing(&decoded, &large, LARGE_SIDE, runs)));
        smoothing.push((clip, small, masks));
    }
    if bound {
        println!(
            "\n## What other vectors could do: each 8x8 block of the moved mask takes, among its \
             candidate vectors (its own, its neighbours', the dominant ones), the one whose moved \
             mask is nearest the frame's own mask, where that is nearer (an oracle, which a \
             player cannot have; its blocks moved plainly, without the care for uncovered pixels \
             or the snap); 1-IoU within a shot, and in brackets how much lower than the mask as \
             it is\n"
        );
        println!(
            "| clip | mask age ms | as it is | moved | oracle, any candidate | oracle, candidates \
             whose RGB SAD is within {:.0} % of the least |",
            100.0 * (TIE - 1.0)
        );
        println!("|---|---|---|---|---|---|");
        for row in &bounds {
            println!("{row}");
        }
    }
    println!(
        "\n## Cost of the motion step a frame, 640x480 frames (small copy, estimate, move, mean shift); median of {runs} runs\n"
    );
    println!(
        "| clip | ms a frame, model at 320x320 (the U2Net family) | ms a frame, model at {LARGE_SIDE}x{LARGE_SIDE} (ISNet; motion on a copy reduced by 3, the model's masks scaled up) |"
    );
    println!("|---|---|---|");
    for (clip, ms, large_ms) in timings {
        println!("| {clip} | {ms:.2} | {large_ms:.2} |");
    }
    println!(
        "\n## temporal-smoothing on the same frames and masks, at the model's size: flicker \
         (mean |alpha_t - alpha_t-1|) where the 3x3-blurred picture changed < 3 levels, and \
         along the motion where the picture moved (changed >= 8 levels, < 3 once moved), as \
         shares of the per-frame masks'; drift: mean |alpha - per-frame alpha|\n"
    );
    println!(
        "| clip | temporal-smoothing | motion-compensation | flicker, still | flicker along the motion | drift |"
    );
    println!("|---|---|---|---|---|---|");
    for (clip, small, masks) in smoothing {
        smoothing_rows(clip, &small, &masks, &strengths);
    }
}

/// The 3x3-blurred picture, per frame (as `temporal-smoothing` sees it).
fn blurred_frames(small: &[Vec<u8>]) -> Vec<Vec<u8>> {
    small
        .iter()
        .map(|f| {
            let mut out = Vec::new();
            box_blur_3x3(f, MODEL_SIDE, MODEL_SIDE, &mut out);
            out
        })
        .collect()
}

/// The largest change among R, G and B at pixel `p`.
fn change_at(a: &[u8], b: &[u8], p: usize) -> f32 {
    channel_change(&a[3 * p..3 * p + 3], &b[3 * p..3 * p + 3])
}

/// Flicker of each mask sequence in `runs` (alpha in 0..1), as (where
/// the picture is still, along the motion where it moved):
/// - still: mean |alpha_t - alpha_t-1| over the pixels whose 3x3-blurred
///   picture changed by less than 3 levels (as `make bench-live` counts);
/// - along the motion: mean |alpha_t - alpha_t-1 moved along the motion|
///   over the pixels whose picture changed by 8 levels or more where it is
///   and by less than 3 once frame t - 1 is moved along that motion.
///
/// Frames just after a cut (`cut`) are left out.
///
/// The motion is the element's own estimate: it picks the pixels and
/// moves the masks, so this measures how steady the masks are along the
/// motion the element sees, not against a known one (the unit tests in
/// `src/motion.rs` and `src/temporal.rs` do that).
fn flicker(
    small: &[Vec<u8>],
    blurred: &[Vec<u8>],
    cut: &[bool],
    runs: &[Vec<Vec<u8>>],
) -> Vec<(f64, f64)> {
    let pixels = (MODEL_SIDE * MODEL_SIDE) as usize;
    let mut sums = vec![[(0.0f64, 0u64); 2]; runs.len()];
    let mut estimator = MotionEstimator::new();
    let (mut moved_rgb, mut moved_mask) = (Vec::new(), Vec::new());
    // Across a cut the mask should change at once: counting that as
    // flicker would reward an average that bleeds the last shot's mask
    // into the new one.
    for t in (1..small.len()).filter(|&t| !cut[t]) {
        let (now, before) = (&blurred[t], &blurred[t - 1]);
        let field = estimator.estimate(&small[t - 1], &small[t], MODEL_SIDE, MODEL_SIDE);
        if let Some(field) = &field {
            field.warp_u8(before, 3, &mut moved_rgb);
        }
        for (masks, sums) in runs.iter().zip(&mut sums) {
            let (mask, last) = (&masks[t], &masks[t - 1]);
            for p in (0..pixels).filter(|&p| change_at(now, before, p) < 3.0) {
                sums[0].0 += f64::from(mask[p].abs_diff(last[p])) / 255.0;
                sums[0].1 += 1;
            }
            let Some(field) = &field else { continue };
            field.warp_mask(last, &mut moved_mask);
            for p in (0..pixels).filter(|&p| {
                change_at(now, before, p) >= 8.0 && change_at(now, &moved_rgb, p) < 3.0
            }) {
                sums[1].0 += f64::from(mask[p].abs_diff(moved_mask[p])) / 255.0;
                sums[1].1 += 1;
            }
        }
    }
    let mean = |(sum, count): (f64, u64)| sum / count.max(1) as f64;
    sums.into_iter()
        .map(|[still, along]| (mean(still), mean(along)))
        .collect()
}

/// `temporal-smoothing` (the element's `TemporalSmoother`, at the model's
/// size, on the model's own masks of every frame, as the element smooths
/// them when each frame gets its own mask) at the weights of MOTION_SMOOTHING, with and without
/// `motion-compensation`: flicker where the picture is still and along
/// the motion where it moves, as shares of the per-frame masks', and the
/// drift from them. Prints table rows.
fn smoothing_rows(clip: &str, small: &[Vec<u8>], masks: &[Vec<u8>], strengths: &[f64]) {
    let settings: Vec<(f64, bool)> = strengths
        .iter()
        .copied()
        .flat_map(|s| [(s, false), (s, true)])
        .collect();
    let mut runs = vec![masks.to_vec()];
    for &(strength, follow) in &settings {
        let mut smoother = TemporalSmoother::new();
        runs.push(
            small
                .iter()
                .zip(masks)
                .map(|(rgb, mask)| {
                    let mut mask = mask.clone();
                    smoother.smooth(strength, follow, rgb, &mut mask, MODEL_SIDE, MODEL_SIDE);
                    mask
                })
                .collect(),
        );
    }
    let flickers = flicker(small, &blurred_frames(small), &cuts(small), &runs);
    let (still, along) = flickers[0];
    for (((strength, follow), smoothed), (s, a)) in
        settings.into_iter().zip(&runs[1..]).zip(&flickers[1..])
    {
        let drift = smoothed
            .iter()
            .zip(masks)
            .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| f64::from(x.abs_diff(*y))))
            .sum::<f64>()
            / 255.0
            / (smoothed.len() * (MODEL_SIDE * MODEL_SIDE) as usize) as f64;
        println!(
            "| {clip} | {strength} | {follow} | {:.0} % | {:.0} % | {drift:.4} |",
            100.0 * s / still,
            100.0 * a / along
        );
    }
}
