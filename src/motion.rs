// SPDX-License-Identifier: MPL-2.0
//! Motion between two small pictures, and masks moved along with it. No
//! GStreamer types.
//!
//! Keeping up, a frame that leaves before its own mask is ready borrows an
//! older frame's, hundreds of milliseconds old: as it is, that mask stays
//! where the subject was. Here the motion from the frame the mask came from
//! to the frame that borrows it is estimated on the small RGB copies the
//! element keeps (the model's input size), and the mask is moved with it.
//!
//! How: block matching on a luma pyramid (each level half the size of the
//! one below, down to about 40 pixels). The coarsest level is searched
//! exhaustively; each finer level starts from the vectors of the level
//! above (and of its neighbours, and zero), refines them by a small
//! descent, and the finest level adds a sub-pixel step (a parabola through
//! the matching costs). Zero motion is preferred unless another vector
//! matches clearly better, so that noise on a still picture moves nothing.
//! Near a motion boundary (the blocks around differ, or a block matches
//! poorly) each pixel then takes, among the vectors of the blocks around
//! it, the one whose 3x3 neighbourhood matches best: a subject moving over
//! a still background keeps its edge instead of dragging the background
//! along (or being dragged by it). Vectors are backward: for each pixel of
//! the later picture, where its content was in the earlier one, so moving
//! a mask is one bilinear sample a pixel, with no holes.
//!
//! The moved mask is last smoothed where the new picture does not back its
//! edges ([`crate::edge_snap`]).
//!
//! No crate does this without OpenCV (dense optical flow there means a
//! C++ library and its build); this is one small job, unit-tested here.

use crate::edge_snap::EdgeSnap;

/// Block side, in pixels, at every level of the pyramid.
pub const BLOCK: usize = 8;

/// Pictures larger than this on their longer side are reduced by a whole
/// factor (a box mean) before their motion is estimated, and the vectors
/// scaled back up: the model's size is the size the motion is estimated
/// at, and ISNet's 1024x1024 (reduced by 3 to 342x342) cost 28 ms to
/// estimate and 38 ms with the mask moved, against 2.6 and 3.6 ms at
/// U2Net's 320x320 (Megamind.avi, 2 cores of an AMD EPYC); its coarsest
/// level's search would also reach a third as far across the picture.
/// Masks and pictures are still moved at their own size.
const WORK_SIDE: usize = 400;

/// The coarsest level is at least this wide and high (and the pyramid has at
/// most [`MAX_LEVELS`] levels): at 320x320 the coarsest is 40x40.
const COARSEST: usize = 40;
const MAX_LEVELS: usize = 4;

/// Exhaustive search range at the coarsest level, in its pixels: at
/// 320x320, 6 px there is 48 px at the model's size (96 px at 640x480),
/// and each finer level's descent reaches further. 4 (32 px) lost 1-2
/// points of IoU on Megamind.avi at mask ages of 400-600 ms.
const COARSE_RANGE: i32 = 6;

/// A vector other than zero must match better than zero by this many
/// levels a pixel (of luma, 0..255) on average: noise (a camera's,
/// compression's) does not count as motion.
const ZERO_BIAS_PER_PIXEL: u32 = 1;

/// Descent steps at each level.
const MAX_DESCENT: usize = 6;

/// A block whose best match still differs by this many levels a pixel (of
/// luma) on average matches poorly: it holds a motion boundary, or what it
/// shows was hidden.
const POOR_BLOCK_LEVELS: u32 = 6;

/// How many of the most common block vectors the pixels of a poorly
/// matched block also try (a thin subject may have no block of its own), and the share of the blocks one must have.
const DOMINANT: usize = 4;
const DOMINANT_SHARE: f32 = 0.01;

/// Block vectors closer than this (pixels, on each axis) are one motion
/// for a pixel choosing among them (the blocks of one subject differ by
/// fractions).
const SAME_MOTION: f32 = 1.0;

/// Motion of each pixel of one picture (`to`) from another (`from`).
#[derive(Debug, Clone, Default)]
pub struct Field {
    width: usize,
    height: usize,
    cols: usize,
    rows: usize,
    /// Per block of `to` (row-major), where its content was in `from`,
    /// in pixels (x, y).
    blocks: Vec<[f32; 2]>,
    /// Per block: even its best vector matches poorly.
    poor: Vec<bool>,
    /// Per block: the SAD of its vector.
    sads: Vec<u32>,
    /// The most common block vectors.
    dominant: Vec<[f32; 2]>,
    /// Per pixel of `to`, the vector it takes.
    pixels: Vec<[f32; 2]>,
    /// Per pixel, how well its vector matches: the SAD over its 3x3
    /// neighbourhood (where its block's vector is taken as it is, the
    /// block's SAD scaled to 9 pixels).
    costs: Vec<u32>,
    /// Pixels (indices) that show what `from` did not: their vector
    /// matches poorly and leads where another pixel's matches better.
    disoccluded: Vec<u32>,
    /// Scratch: per pixel of `to`, the pixel of `from` its vector leads to;
    /// per pixel of `from`, the best (cost, pixel of `to`) whose vector
    /// leads there.
    targets: Vec<u32>,
    claims: Vec<u64>,
    /// Scratch of [`open_region`].
    marks: Vec<u8>,
    /// No vector is non-zero: moving by it is a copy.
    still: bool,
    /// How many pixels of the picture a pixel of the reduced copy the
    /// motion was estimated on spans, on each axis (1: not reduced).
    /// `blocks`, `dominant` and `costs` are in the reduced copy's pixels,
    /// `pixels` and `disoccluded` in the picture's.
    scale: usize,
    /// Scratch: the reduced copy's per-pixel vectors.
    reduced_pixels: Vec<[f32; 2]>,
}

impl Field {
    pub fn width(&self) -> u32 {
        self.width as u32
    }

    pub fn height(&self) -> u32 {
        self.height as u32
    }

    /// Whether nothing moved (moving a mask by it leaves it as it is).
    pub fn is_still(&self) -> bool {
        self.still
    }

    /// Where the content of pixel (`x`, `y`) of `to` was in `from`, as an
    /// offset in pixels.
    pub fn at(&self, x: u32, y: u32) -> [f32; 2] {
        self.pixels
            .get(y as usize * self.width + x as usize)
            .copied()
            .unwrap_or([0.0, 0.0])
    }

    /// The mean length of the vectors, weighted by `weights` (one per
    /// pixel: a mask, so that it tells how far the subject moved), each
    /// vector scaled by `scale` (x, y: to another picture size first); the
    /// plain mean where the weights add up to nothing.
    pub fn mean_shift(&self, weights: &[u8], scale: (f32, f32)) -> f32 {
        if self.still || self.pixels.is_empty() {
            return 0.0;
        }
        let length = |v: &[f32; 2]| {
            let (x, y) = (v[0] * scale.0, v[1] * scale.1);
            (x * x + y * y).sqrt()
        };
        let (mut weighted, mut total) = (0.0f64, 0u64);
        // Neighbours mostly share a vector: one square root a run.
        let mut last = ([f32::NAN; 2], 0.0f32);
        for (v, &w) in self.pixels.iter().zip(weights) {
            if w != 0 {
                if *v != last.0 {
                    last = (*v, length(v));
                }
                weighted += f64::from(last.1) * f64::from(w);
                total += u64::from(w);
            }
        }
        if total > 0 {
            (weighted / total as f64) as f32
        } else {
            let plain: f64 = self.pixels.iter().map(|v| f64::from(length(v))).sum();
            (plain / self.pixels.len() as f64) as f32
        }
    }

    /// Moves `src` (a picture of the field's size, `channels` interleaved
    /// u8 values a pixel: a mask, or RGB) along the field into `out`: each
    /// pixel takes the bilinear sample of `src` where its content was
    /// (clamped to the picture). A still field copies `src` exactly, and so
    /// does a zero vector for its pixel.
    pub fn warp_u8(&self, src: &[u8], channels: usize, out: &mut Vec<u8>) {
        let n = self.width * self.height * channels;
        out.clear();
        if src.len() < n || channels == 0 {
            out.extend_from_slice(src);
            return;
        }
        if self.still {
            out.extend_from_slice(&src[..n]);
            return;
        }
        out.resize(n, 0);
        let (w, h) = (self.width, self.height);
        let mut fixed = FixedCache::default();
        for (y, (vectors, row)) in self
            .pixels
            .chunks_exact(w)
            .zip(out.chunks_exact_mut(w * channels))
            .enumerate()
        {
            if channels == 1 {
                // A mask, once a frame: a run of pixels at a time.
                let mut x = 0;
                while x < w {
                    let v = vectors[x];
                    let run = vectors[x..].iter().take_while(|u| **u == v).count();
                    warp_run(
                        src,
                        (x, y),
                        run,
                        v,
                        &mut fixed,
                        (w, h),
                        &mut row[x..x + run],
                    );
                    x += run;
                }
                continue;
            }
            for (x, (v, px)) in vectors
                .iter()
                .zip(row.chunks_exact_mut(channels))
                .enumerate()
            {
                if *v == [0.0, 0.0] {
                    let i = (y * w + x) * channels;
                    px.copy_from_slice(&src[i..i + channels]);
                    continue;
                }
                let s = Sample::at_fixed(x, y, fixed.get(*v), w, h);
                for (c, p) in px.iter_mut().enumerate() {
                    *p = s.of(|j| src[j * channels + c]);
                }
            }
        }
    }

    /// Moves a mask (one u8 a pixel) as [`Field::warp_u8`] does, except
    /// where a pixel shows what `from` hid (what a moving subject
    /// uncovered): there its own vector would bring along the mask of
    /// what hid it, so it takes the least of the masks its candidate
    /// vectors lead to (behind a subject that moved on, the background's).
    pub fn warp_mask(&self, mask: &[u8], out: &mut Vec<u8>) {
        self.warp_u8(mask, 1, out);
        self.uncover(out, |s| s.of(|j| mask[j]));
    }

    /// Moves a mask as [`Field::warp_mask`] does, onto `to` (the picture
    /// the field leads to, packed RGB), then smooths it where it moved
    /// and `to` does not back its edges ([`EdgeSnap`]). A still field
    /// copies the mask exactly, and so does a zero vector for its pixel and
    /// the pixels around it.
    pub fn warp_mask_onto(&self, mask: &[u8], to: &[u8], snap: &mut EdgeSnap, out: &mut Vec<u8>) {
        self.warp_mask(mask, out);
        if !self.still {
            let moved = |k: usize| self.pixels[k] != [0.0, 0.0];
            snap.apply(out, to, self.width, self.height, moved);
        }
    }

    /// As [`Field::warp_mask`], for a mask of one f32 value a pixel.
    pub fn warp_mask_f32(&self, src: &[f32], out: &mut Vec<f32>) {
        self.warp_f32(src, out);
        self.uncover(out, |s| s.of_f32(|j| src[j]));
    }

    /// Gives each uncovered pixel of `moved` (a mask, already moved) the
    /// least of what `sample` takes at its candidate vectors.
    fn uncover<T: Copy + PartialOrd>(&self, moved: &mut [T], sample: impl Fn(&Sample) -> T) {
        let (w, h) = (self.width, self.height);
        if self.still || moved.len() != w * h {
            return;
        }
        let mut candidates = Vec::with_capacity(9 + DOMINANT);
        for &i in &self.disoccluded {
            let i = i as usize;
            let (x, y) = (i % w, i / w);
            self.candidates_at(x as u32, y as u32, &mut candidates);
            for &v in &candidates {
                let value = sample(&Sample::at(x, y, v, w, h));
                if value < moved[i] {
                    moved[i] = value;
                }
            }
        }
    }

    /// The vectors a pixel of block (`bx`, `by`) chooses among: its
    /// block's, then those of the blocks around and the dominant ones, one
    /// of each motion.
    fn candidates(&self, bx: usize, by: usize, out: &mut Vec<[f32; 2]>) {
        let cols = self.cols;
        out.clear();
        out.push(self.blocks[by * cols + bx]);
        let around = (by.saturating_sub(1)..(by + 2).min(self.rows))
            .flat_map(|ny| (bx.saturating_sub(1)..(bx + 2).min(cols)).map(move |nx| ny * cols + nx))
            .map(|i| self.blocks[i]);
        for v in around.chain(self.dominant.iter().copied()) {
            if !out.iter().any(|d| same_motion(*d, v)) {
                out.push(v);
            }
        }
    }

    /// The vectors that pixel (`x`, `y`) of `to` chooses among, in the
    /// picture's pixels: where its block matches poorly or borders another
    /// motion, and where it shows what was hidden. Its block's first, then
    /// those of the blocks around and the dominant ones, one of each
    /// motion (vectors closer than a pixel count once); none outside the
    /// picture. Also for `make bench-motion`'s bound on what other vectors
    /// could do.
    pub fn candidates_at(&self, x: u32, y: u32, out: &mut Vec<[f32; 2]>) {
        out.clear();
        if x as usize >= self.width || y as usize >= self.height {
            return;
        }
        let scale = self.scale.max(1);
        let (bx, by) = (x as usize / scale / BLOCK, y as usize / scale / BLOCK);
        self.candidates(bx, by, out);
        for v in out.iter_mut() {
            *v = v.map(|c| c * scale as f32);
        }
    }

    /// Brings a field estimated on a copy reduced by `factor` to the
    /// picture's own size (`width` x `height`): each pixel takes the
    /// vector of the reduced pixel it lies in, scaled up, and a reduced
    /// pixel that shows what was hidden makes all of its pixels so.
    fn scale_up(&mut self, factor: usize, width: usize, height: usize) {
        self.scale = factor;
        if factor <= 1 {
            return;
        }
        let reduced_width = self.width;
        (self.width, self.height) = (width, height);
        std::mem::swap(&mut self.pixels, &mut self.reduced_pixels);
        self.pixels.clear();
        if self.still {
            self.pixels.resize(width * height, [0.0, 0.0]);
            self.disoccluded.clear();
            return;
        }
        let scale = factor as f32;
        for (y, reduced) in (0..height)
            .step_by(factor)
            .zip(self.reduced_pixels.chunks_exact(reduced_width))
        {
            // One row of the picture, then its copies for the square's others.
            let row = self.pixels.len();
            for (x, v) in reduced.iter().enumerate() {
                let run = factor.min(width - x * factor);
                self.pixels
                    .extend(std::iter::repeat_n(v.map(|c| c * scale), run));
            }
            for _ in 1..factor.min(height - y) {
                self.pixels.extend_from_within(row..row + width);
            }
        }
        let cells = std::mem::take(&mut self.disoccluded);
        for &i in &cells {
            let (x, y) = (
                i as usize % reduced_width * factor,
                i as usize / reduced_width * factor,
            );
            for py in y..(y + factor).min(height) {
                self.disoccluded
                    .extend((x..(x + factor).min(width)).map(|px| (py * width + px) as u32));
            }
        }
    }

    /// Whether a block borders another motion.
    fn borders_other_motion(&self, bx: usize, by: usize) -> bool {
        let own = self.blocks[by * self.cols + bx];
        (by.saturating_sub(1)..(by + 2).min(self.rows)).any(|ny| {
            (bx.saturating_sub(1)..(bx + 2).min(self.cols))
                .any(|nx| !same_motion(self.blocks[ny * self.cols + nx], own))
        })
    }

    /// As [`Field::warp_u8`], for one f32 value a pixel.
    fn warp_f32(&self, src: &[f32], out: &mut Vec<f32>) {
        let n = self.width * self.height;
        out.clear();
        if src.len() < n {
            out.extend_from_slice(src);
            return;
        }
        if self.still {
            out.extend_from_slice(&src[..n]);
            return;
        }
        let (w, h) = (self.width, self.height);
        let mut fixed = FixedCache::default();
        out.extend(self.pixels.iter().enumerate().map(|(i, v)| {
            let (x, y) = (i % w, i / w);
            if *v == [0.0, 0.0] {
                return src[i];
            }
            Sample::at_fixed(x, y, fixed.get(*v), w, h).of_f32(|j| src[j])
        }));
    }
}

/// Moves the `run` pixels of a mask (`src`, one u8 a pixel, `w` x `h`)
/// from (`x`, `y`) on, which all take the vector `v`, into `out`; as
/// [`Sample::of`] would, pixel by pixel. Where none of them is clamped
/// to the picture, the source rows and the weights are the same for the
/// whole run, and only the column moves on.
fn warp_run(
    src: &[u8],
    (x, y): (usize, usize),
    run: usize,
    v: [f32; 2],
    fixed: &mut FixedCache,
    (w, h): (usize, usize),
    out: &mut [u8],
) {
    if v == [0.0, 0.0] {
        out.copy_from_slice(&src[y * w + x..y * w + x + run]);
        return;
    }
    let f = fixed.get(v);
    let first = x as i64 * 256 + i64::from(f.0[0]);
    let last = first + (run as i64 - 1) * 256;
    if first < 0 || last >= (w as i64 - 1) * 256 {
        for (i, px) in out.iter_mut().enumerate() {
            *px = Sample::at_fixed(x + i, y, f, w, h).of(|j| src[j]);
        }
        return;
    }
    let s = Sample::at_fixed(x, y, f, w, h);
    let (fx, fy) = (s.fx, s.fy);
    let (top, bottom) = (&src[s.index[0]..][..run + 1], &src[s.index[2]..][..run + 1]);
    for (i, px) in out.iter_mut().enumerate() {
        *px = bilinear([top[i], top[i + 1], bottom[i], bottom[i + 1]], fx, fy);
    }
}

/// The bilinear mix of four u8 values (top left, top right, bottom left,
/// bottom right) at `fx`, `fy` (1/256ths of a pixel), rounded: at a whole
/// pixel, the top left.
#[inline]
fn bilinear(corners: [u8; 4], fx: u32, fy: u32) -> u8 {
    let corners = corners.map(u32::from);
    let top = corners[0] * (256 - fx) + corners[1] * fx;
    let bottom = corners[2] * (256 - fx) + corners[3] * fx;
    ((top * (256 - fy) + bottom * fy + (1 << 15)) >> 16).min(255) as u8
}

/// Channel `channel` of `src` (`channels` interleaved u8 values a pixel,
/// `width` x `height`) where the content of pixel (`x`, `y`) was: `v`
/// away, a vector as [`Field::at`] gives it (rounded to 1/256 of a pixel).
/// The bilinear sample that moving by a [`Field`] takes, clamped to the
/// picture; for `make bench-motion`, which moves masks by vectors of its
/// own choice.
///
/// # Panics
/// If the picture is empty, `channel` is not below `channels`, or `src`
/// is shorter than the picture.
pub fn sample(
    src: &[u8],
    (channels, channel): (usize, usize),
    (x, y): (u32, u32),
    v: [f32; 2],
    (width, height): (u32, u32),
) -> u8 {
    let (w, h) = (width as usize, height as usize);
    assert!(w > 0 && h > 0 && channel < channels && src.len() >= w * h * channels);
    Sample::at(x as usize, y as usize, v, w, h).of(|j| src[j * channels + channel])
}

/// A bilinear sample: four source pixels and their weights, in 1/256ths
/// on each axis.
struct Sample {
    index: [usize; 4],
    fx: u32,
    fy: u32,
}

/// A vector in 1/256ths of a pixel, the precision of [`Sample`]'s
/// weights: positions are then whole numbers, the same fraction at every
/// pixel a vector moves.
#[derive(Clone, Copy)]
struct Fixed([i32; 2]);

impl Fixed {
    fn of(v: [f32; 2]) -> Self {
        Self(v.map(|c| (c * 256.0).round() as i32))
    }
}

/// [`Fixed`] of the vectors of consecutive pixels, which mostly repeat
/// (a block's pixels share one): rounding once per change, not per pixel
/// (x86_64's baseline has no rounding instruction; `round` is a call).
#[derive(Default)]
struct FixedCache(Option<([f32; 2], Fixed)>);

impl FixedCache {
    #[inline]
    fn get(&mut self, v: [f32; 2]) -> Fixed {
        match self.0 {
            Some((last, fixed)) if last == v => fixed,
            _ => {
                let fixed = Fixed::of(v);
                self.0 = Some((v, fixed));
                fixed
            }
        }
    }
}

impl Sample {
    /// Pixel (`x`, `y`) moved by `v`, clamped to the picture.
    #[inline]
    fn at(x: usize, y: usize, v: [f32; 2], width: usize, height: usize) -> Self {
        Self::at_fixed(x, y, Fixed::of(v), width, height)
    }

    /// As [`Sample::at`], `v` already in 1/256ths.
    #[inline]
    fn at_fixed(x: usize, y: usize, v: Fixed, width: usize, height: usize) -> Self {
        let place = |p: usize, d: i32, size: usize| {
            ((p as i64) * 256 + i64::from(d)).clamp(0, (size as i64 - 1) * 256) as usize
        };
        let (px, py) = (place(x, v.0[0], width), place(y, v.0[1], height));
        let (x0, y0) = (px >> 8, py >> 8);
        let (x1, y1) = ((x0 + 1).min(width - 1), (y0 + 1).min(height - 1));
        Self {
            index: [
                y0 * width + x0,
                y0 * width + x1,
                y1 * width + x0,
                y1 * width + x1,
            ],
            fx: (px & 255) as u32,
            fy: (py & 255) as u32,
        }
    }

    /// The sample of u8 values, rounded: at a whole pixel, that pixel's.
    #[inline]
    fn of(&self, value: impl Fn(usize) -> u8) -> u8 {
        bilinear(self.index.map(value), self.fx, self.fy)
    }

    #[inline]
    fn of_f32(&self, value: impl Fn(usize) -> f32) -> f32 {
        let (fx, fy) = (self.fx as f32 / 256.0, self.fy as f32 / 256.0);
        let top = value(self.index[0]) * (1.0 - fx) + value(self.index[1]) * fx;
        let bottom = value(self.index[2]) * (1.0 - fx) + value(self.index[3]) * fx;
        if fy == 0.0 {
            top
        } else {
            top * (1.0 - fy) + bottom * fy
        }
    }
}

/// One level of a luma pyramid.
#[derive(Debug, Default, Clone)]
struct Level {
    width: usize,
    height: usize,
    luma: Vec<u8>,
}

impl Level {
    #[inline]
    fn get(&self, x: isize, y: isize) -> u8 {
        let x = x.clamp(0, self.width as isize - 1) as usize;
        let y = y.clamp(0, self.height as isize - 1) as usize;
        self.luma[y * self.width + x]
    }

    /// Half the size, each pixel the mean of a 2x2 square.
    fn halve(&self, out: &mut Self) {
        out.width = self.width / 2;
        out.height = self.height / 2;
        out.luma.clear();
        for y in 0..out.height {
            let (a, b) = (
                &self.luma[2 * y * self.width..],
                &self.luma[(2 * y + 1) * self.width..],
            );
            out.luma.extend((0..out.width).map(|x| {
                let sum = u16::from(a[2 * x])
                    + u16::from(a[2 * x + 1])
                    + u16::from(b[2 * x])
                    + u16::from(b[2 * x + 1]);
                ((sum + 2) / 4) as u8
            }));
        }
    }
}

fn luma_of(rgb: &[u8], width: usize, height: usize, out: &mut Level) {
    out.width = width;
    out.height = height;
    out.luma.clear();
    out.luma
        .extend(rgb.chunks_exact(3).take(width * height).map(luma));
}

/// The luma of `rgb` (`width` x `height`) reduced by `factor` on each
/// axis: the luma of the mean colour of each `factor` x `factor` square
/// (of what of it lies in the picture, on the right and bottom edges).
/// The luma is linear in the colour: the mean's is the mean of the
/// squares' lumas, within rounding, at one luma a square.
fn reduced_luma_of(rgb: &[u8], width: usize, height: usize, factor: usize, out: &mut Level) {
    let (w, h) = (width.div_ceil(factor), height.div_ceil(factor));
    out.width = w;
    out.height = h;
    out.luma.clear();
    // The band's rows added up first, byte by byte (a loop the compiler
    // makes wide), then each square's columns.
    let mut columns = vec![0u32; 3 * width];
    for band in rgb.chunks(3 * width * factor).take(h) {
        columns.fill(0);
        for row in band.chunks_exact(3 * width) {
            for (sum, &v) in columns.iter_mut().zip(row) {
                *sum += u32::from(v);
            }
        }
        let rows = band.len() / (3 * width);
        out.luma.extend(columns.chunks(3 * factor).map(|square| {
            let count = (rows * square.len() / 3) as u32;
            let mut mean = [0u8; 3];
            for (c, m) in mean.iter_mut().enumerate() {
                let sum: u32 = square.iter().skip(c).step_by(3).sum();
                *m = ((sum + count / 2) / count.max(1)).min(255) as u8;
            }
            luma(&mean)
        }));
    }
}

/// The whole factor a `width` x `height` picture is reduced by before its
/// motion is estimated: the least that brings its longer side to at most
/// [`WORK_SIDE`], but none that takes its shorter side below
/// [`COARSEST`] (a wide, low picture keeps its rows).
fn reduction(width: usize, height: usize) -> usize {
    let fit = width.max(height).div_ceil(WORK_SIDE);
    fit.min(width.min(height) / COARSEST).max(1)
}

/// The luma of an RGB pixel: BT.601 weights in 8-bit fixed point.
pub fn luma(p: &[u8]) -> u8 {
    ((77 * u32::from(p[0]) + 150 * u32::from(p[1]) + 29 * u32::from(p[2]) + 128) >> 8) as u8
}

/// A pyramid of luma pictures, finest first.
#[derive(Debug, Default, Clone)]
struct Pyramid {
    levels: Vec<Level>,
}

impl Pyramid {
    /// The pyramid of `rgb` (`width` x `height`) reduced by `factor`.
    fn build(&mut self, rgb: &[u8], width: usize, height: usize, factor: usize) {
        self.levels.resize_with(MAX_LEVELS, Level::default);
        if factor > 1 {
            reduced_luma_of(rgb, width, height, factor, &mut self.levels[0]);
        } else {
            luma_of(rgb, width, height, &mut self.levels[0]);
        }
        let (width, height) = (self.levels[0].width, self.levels[0].height);
        let mut count = 1;
        while count < MAX_LEVELS {
            let below = &self.levels[count - 1];
            if below.width / 2 < COARSEST.min(width) || below.height / 2 < COARSEST.min(height) {
                break;
            }
            let (done, rest) = self.levels.split_at_mut(count);
            done[count - 1].halve(&mut rest[0]);
            count += 1;
        }
        self.levels.truncate(count);
    }
}

/// Estimates motion fields; keeps its scratch buffers between calls.
#[derive(Debug, Default)]
pub struct MotionEstimator {
    from: Pyramid,
    to: Pyramid,
    field: Field,
    /// Integer vectors of the level being searched, and of the one above.
    vectors: Vec<[i32; 2]>,
    above: Vec<[i32; 2]>,
}

impl MotionEstimator {
    pub fn new() -> Self {
        Self::default()
    }

    /// The motion of each pixel of `to` from `from`, both packed RGB of
    /// `width` x `height`; None if they are not that size (a mask of
    /// another size than the pictures: what they show would be misread) or
    /// empty.
    pub fn estimate(&mut self, from: &[u8], to: &[u8], width: u32, height: u32) -> Option<&Field> {
        let (w, h) = (width as usize, height as usize);
        let bytes = w.checked_mul(h)?.checked_mul(3)?;
        if bytes == 0 || from.len() != bytes || to.len() != bytes {
            return None;
        }
        let factor = reduction(w, h);
        self.from.build(from, w, h, factor);
        self.to.build(to, w, h, factor);
        let mut field = std::mem::take(&mut self.field);
        self.match_pictures(&mut field);
        field.scale_up(factor, w, h);
        self.field = field;
        Some(&self.field)
    }

    /// Block matching from `to` into `from`, into `field`; both pyramids
    /// are built.
    fn match_pictures(&mut self, field: &mut Field) {
        let Self {
            from,
            to,
            vectors,
            above,
            ..
        } = self;
        let (from, to) = (&*from, &*to);
        let (w, h) = (to.levels[0].width, to.levels[0].height);
        let levels = from.levels.len();
        above.clear();
        let mut above_cols = 0;
        for k in (0..levels).rev() {
            let (f, t) = (&from.levels[k], &to.levels[k]);
            let (cols, rows) = (t.width.div_ceil(BLOCK), t.height.div_ceil(BLOCK));
            vectors.clear();
            vectors.resize(cols * rows, [0, 0]);
            for by in 0..rows {
                for bx in 0..cols {
                    let block = BlockRef::new(t, bx, by);
                    let best = if k + 1 == levels {
                        search(f, &block, COARSE_RANGE)
                    } else {
                        let mut candidates = [[0i32; 2]; 7];
                        let mut count = 1;
                        // The vectors of the block above and its neighbours, doubled.
                        let (ax, ay) = (bx / 2, by / 2);
                        let above_rows = above.len() / above_cols.max(1);
                        for (dx, dy) in [(0isize, 0isize), (-1, 0), (1, 0), (0, -1), (0, 1)] {
                            let (x, y) = (ax as isize + dx, ay as isize + dy);
                            if x >= 0
                                && y >= 0
                                && (x as usize) < above_cols
                                && (y as usize) < above_rows
                            {
                                let v = above[y as usize * above_cols + x as usize];
                                candidates[count] = [2 * v[0], 2 * v[1]];
                                count += 1;
                            }
                        }
                        // This level's left and upper neighbours, already done.
                        if bx > 0 {
                            candidates[count] = vectors[by * cols + bx - 1];
                            count += 1;
                        }
                        if by > 0 && count < candidates.len() {
                            candidates[count] = vectors[(by - 1) * cols + bx];
                            count += 1;
                        }
                        descend(f, &block, &candidates[..count])
                    };
                    vectors[by * cols + bx] = best;
                }
            }
            std::mem::swap(vectors, above);
            above_cols = cols;
        }
        // `above` now holds the finest level's integer vectors.
        let (from0, to0) = (&from.levels[0], &to.levels[0]);
        let (cols, rows) = (w.div_ceil(BLOCK), h.div_ceil(BLOCK));
        field.width = w;
        field.height = h;
        field.cols = cols;
        field.rows = rows;
        field.blocks.clear();
        field.poor.clear();
        field.sads.clear();
        field.still = above.iter().all(|v| *v == [0, 0]);
        for by in 0..rows {
            for bx in 0..cols {
                let block = BlockRef::new(to0, bx, by);
                let (vector, sad) = sub_pixel(from0, &block, above[by * cols + bx]);
                field.blocks.push(vector);
                field.poor.push(sad > POOR_BLOCK_LEVELS * block.pixels());
                field.sads.push(9 * sad / block.pixels().max(1));
            }
        }
        dominant_vectors(above, &mut field.dominant);
        choose_per_pixel(field, from0, to0);
        find_disoccluded(field);
    }
}

/// One block of a level, clipped to the picture.
struct BlockRef<'a> {
    level: &'a Level,
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
}

impl<'a> BlockRef<'a> {
    fn new(level: &'a Level, bx: usize, by: usize) -> Self {
        let (x0, y0) = (bx * BLOCK, by * BLOCK);
        Self {
            level,
            x0,
            y0,
            x1: (x0 + BLOCK).min(level.width),
            y1: (y0 + BLOCK).min(level.height),
        }
    }

    fn pixels(&self) -> u32 {
        ((self.x1 - self.x0) * (self.y1 - self.y0)) as u32
    }
}

/// The sum of absolute differences between `block` and `from` at offset `v`
/// (samples outside `from` repeat its border).
fn sad(from: &Level, block: &BlockRef, v: [i32; 2]) -> u32 {
    sad_below(from, block, v, u32::MAX)
}

/// As [`sad`], but stops once the sum reaches `limit` (row by row: a
/// vector that cannot win costs a row or two, not the whole block); the
/// value is then at least `limit`.
fn sad_below(from: &Level, block: &BlockRef, v: [i32; 2], limit: u32) -> u32 {
    let (vx, vy) = (v[0] as isize, v[1] as isize);
    let inside = block.x0 as isize + vx >= 0
        && block.y0 as isize + vy >= 0
        && block.x1 as isize + vx <= from.width as isize
        && block.y1 as isize + vy <= from.height as isize;
    let t = block.level;
    if inside && block.x1 - block.x0 == BLOCK {
        return full_rows_sad_below(from, block, v, limit);
    }
    let mut sum = 0u32;
    for y in block.y0..block.y1 {
        let row = &t.luma[y * t.width + block.x0..y * t.width + block.x1];
        if inside {
            let fy = (y as isize + vy) as usize;
            let start = (fy * from.width) as isize + block.x0 as isize + vx;
            let other = &from.luma[start as usize..start as usize + row.len()];
            sum += row
                .iter()
                .zip(other)
                .map(|(a, b)| u32::from(a.abs_diff(*b)))
                .sum::<u32>();
        } else {
            for (i, a) in row.iter().enumerate() {
                let b = from.get((block.x0 + i) as isize + vx, y as isize + vy);
                sum += u32::from(a.abs_diff(b));
            }
        }
        if sum >= limit {
            break;
        }
    }
    sum
}

/// [`sad_below`] of a block whose rows are [`BLOCK`] wide, moved by `v`
/// inside `from`: rows of a fixed size, which the compiler turns into a
/// few SIMD instructions each (SSE2's sum of absolute differences) where a
/// row of any length is a loop. Nearly every block is one.
#[inline]
fn full_rows_sad_below(from: &Level, block: &BlockRef, v: [i32; 2], limit: u32) -> u32 {
    let t = block.level;
    let fx = (block.x0 as isize + v[0] as isize) as usize;
    let mut sum = 0u32;
    for y in block.y0..block.y1 {
        let fy = (y as isize + v[1] as isize) as usize;
        let row: &[u8; BLOCK] = t.luma[y * t.width + block.x0..][..BLOCK]
            .try_into()
            .unwrap();
        let other: &[u8; BLOCK] = from.luma[fy * from.width + fx..][..BLOCK]
            .try_into()
            .unwrap();
        sum += row
            .iter()
            .zip(other)
            .map(|(a, b)| u32::from(a.abs_diff(*b)))
            .sum::<u32>();
        if sum >= limit {
            break;
        }
    }
    sum
}

/// The cost of a vector: its SAD, plus a bias against moving at all; or
/// at least `limit` if it is that much or more.
fn cost_below(from: &Level, block: &BlockRef, v: [i32; 2], limit: u32) -> u32 {
    let bias = if v == [0, 0] {
        0
    } else {
        ZERO_BIAS_PER_PIXEL * block.pixels()
    };
    if bias >= limit {
        return limit;
    }
    sad_below(from, block, v, limit - bias) + bias
}

/// The best vector within `range` (zero wins ties).
fn search(from: &Level, block: &BlockRef, range: i32) -> [i32; 2] {
    let mut best = ([0, 0], sad(from, block, [0, 0]));
    for dy in -range..=range {
        for dx in -range..=range {
            let c = cost_below(from, block, [dx, dy], best.1);
            if c < best.1 {
                best = ([dx, dy], c);
            }
        }
    }
    best.0
}

/// The best of `candidates` (the first, zero, wins ties), then a descent
/// over its 8 neighbours while one is better.
fn descend(from: &Level, block: &BlockRef, candidates: &[[i32; 2]]) -> [i32; 2] {
    let mut best = ([0, 0], u32::MAX);
    for &v in candidates {
        let c = cost_below(from, block, v, best.1);
        if c < best.1 {
            best = (v, c);
        }
    }
    for _ in 0..MAX_DESCENT {
        let centre = best.0;
        for dy in -1..=1 {
            for dx in -1..=1 {
                let v = [centre[0] + dx, centre[1] + dy];
                if v != centre {
                    let c = cost_below(from, block, v, best.1);
                    if c < best.1 {
                        best = (v, c);
                    }
                }
            }
        }
        if best.0 == centre {
            break;
        }
    }
    best.0
}

/// `v` refined to a fraction of a pixel: the minimum of the parabola
/// through the SADs at v - 1, v and v + 1, per axis (zero, and an exact
/// match, stay where they are); and its SAD.
fn sub_pixel(from: &Level, block: &BlockRef, v: [i32; 2]) -> ([f32; 2], u32) {
    let centre = sad(from, block, v);
    let mut out = [v[0] as f32, v[1] as f32];
    // Zero stays zero: it won against the others with a bias (noise is
    // no motion), and a fraction of a pixel would only blur what stays.
    if centre == 0 || v == [0, 0] {
        return (out, centre);
    }
    for (axis, o) in out.iter_mut().enumerate() {
        let step = |d: i32| {
            let mut w = v;
            w[axis] += d;
            sad(from, block, w) as f32
        };
        let (minus, plus, c) = (step(-1), step(1), centre as f32);
        let curvature = minus - 2.0 * c + plus;
        if curvature > 0.0 && minus >= c && plus >= c {
            *o += ((minus - plus) / (2.0 * curvature)).clamp(-0.5, 0.5);
        }
    }
    (out, centre)
}

/// Up to [`DOMINANT`] vectors that at least [`DOMINANT_SHARE`] of the
/// blocks have, most common first (zero among them if it is one).
fn dominant_vectors(vectors: &[[i32; 2]], out: &mut Vec<[f32; 2]>) {
    out.clear();
    // Sorted, equal vectors are runs: counting is linear after the sort
    // (a large model size has tens of thousands of blocks).
    let mut sorted = vectors.to_vec();
    sorted.sort_unstable();
    let mut counts: Vec<([i32; 2], usize)> = sorted
        .chunk_by(|a, b| a == b)
        .map(|run| (run[0], run.len()))
        .collect();
    // Most common first; as common ones in the order of their values.
    counts.sort_by_key(|c| (std::cmp::Reverse(c.1), c.0));
    let least = ((vectors.len() as f32 * DOMINANT_SHARE) as usize).max(2);
    out.extend(
        counts
            .iter()
            .filter(|(_, n)| *n >= least)
            .take(DOMINANT)
            .map(|(v, _)| [v[0] as f32, v[1] as f32]),
    );
}

/// Per pixel: the vector of its block, except in a block that matches
/// poorly (a motion boundary runs through it, or it shows what was
/// hidden) or borders another motion (it may hold a sliver of it, too few
/// pixels to outweigh the rest), where each pixel takes the one, among the
/// vectors of the blocks around and the dominant ones, whose 3x3
/// neighbourhood matches best, so that the boundary falls on the
/// picture's edges rather than on the block grid.
fn choose_per_pixel(field: &mut Field, from: &Level, to: &Level) {
    let (w, h) = (field.width, field.height);
    field.pixels.clear();
    field.pixels.resize(w * h, [0.0, 0.0]);
    field.costs.clear();
    field.costs.resize(w * h, 0);
    if field.still {
        return;
    }
    let (cols, rows) = (field.cols, field.rows);
    let mut distinct = Vec::with_capacity(9 + DOMINANT);
    let (mut best_cost, mut best_choice) = (Vec::new(), Vec::new());
    let (mut scratch, mut costs) = (CostScratch::default(), Vec::new());
    for by in 0..rows {
        for bx in 0..cols {
            let i = by * cols + bx;
            let own = field.blocks[i];
            let (x0, y0) = (bx * BLOCK, by * BLOCK);
            let (x1, y1) = ((x0 + BLOCK).min(w), (y0 + BLOCK).min(h));
            if !field.poor[i] && !field.borders_other_motion(bx, by) {
                for y in y0..y1 {
                    field.pixels[y * w + x0..y * w + x1].fill(own);
                    field.costs[y * w + x0..y * w + x1].fill(field.sads[i]);
                }
                continue;
            }
            field.candidates(bx, by, &mut distinct);

            // Per pixel, the least cost so far and which candidate has it
            // (apart, so that the comparison is a select the compiler can
            // make on many pixels at once); the first wins ties.
            best_cost.clear();
            best_cost.resize((x1 - x0) * (y1 - y0), u16::MAX);
            best_choice.clear();
            best_choice.resize(best_cost.len(), 0u8);
            for (k, &v) in distinct.iter().enumerate() {
                block_costs(from, to, (x0, y0, x1, y1), v, &mut scratch, &mut costs);
                for ((b, choice), &c) in best_cost.iter_mut().zip(&mut best_choice).zip(&costs) {
                    let better = c < *b;
                    *b = if better { c } else { *b };
                    *choice = if better { k as u8 } else { *choice };
                }
            }
            let rows = best_cost
                .chunks_exact(x1 - x0)
                .zip(best_choice.chunks_exact(x1 - x0));
            for (y, (cost_row, choice_row)) in (y0..y1).zip(rows) {
                let pixels = field.pixels[y * w + x0..y * w + x1].iter_mut();
                let costs = field.costs[y * w + x0..y * w + x1].iter_mut();
                for (((p, c), &cost), &choice) in pixels.zip(costs).zip(cost_row).zip(choice_row) {
                    (*p, *c) = (distinct[usize::from(choice)], u32::from(cost));
                }
            }
        }
    }
}

/// A pixel that loses the place its vector leads to shows what was hidden
/// if its 3x3 neighbourhood differs by this much (the sum, 3 levels a
/// pixel: more than noise) and by more than twice the winner's.
const DISOCCLUDED_COST: u32 = 9 * 3;

/// Finds the pixels of `to` that show what `from` did not: each pixel's
/// vector leads to a pixel of `from`; where several lead to the same, the
/// best matched one shows it, and the others, if they match clearly worse,
/// show what it hid (what a moving subject uncovered: the still
/// background's vector leads to where the subject was).
fn find_disoccluded(field: &mut Field) {
    field.disoccluded.clear();
    if field.still {
        return;
    }
    if field.costs.iter().all(|&c| c < DISOCCLUDED_COST) {
        return;
    }
    let (w, h) = (field.width, field.height);
    // The nearest pixel, clamped to the picture (clamped first, a half added
    // and truncated: no call to roundf for each of 100 000 pixels). It
    // differs from roundf only a hair below a half, which a pixel's place
    // plus a vector (whole pixels and a parabola's fraction) does not reach.
    let (right, bottom) = ((w - 1) as f32, (h - 1) as f32);
    field.targets.clear();
    field
        .targets
        .extend(field.pixels.iter().enumerate().map(|(i, v)| {
            let x = (((i % w) as f32 + v[0]).clamp(0.0, right) + 0.5) as usize;
            let y = (((i / w) as f32 + v[1]).clamp(0.0, bottom) + 0.5) as usize;
            (y * w + x) as u32
        }));
    // Each claim is (cost, pixel) in one u64: the least wins, and of equal
    // costs the first pixel.
    field.claims.clear();
    field.claims.resize(w * h, u64::MAX);
    for (i, (&t, &c)) in field.targets.iter().zip(&field.costs).enumerate() {
        let claim = &mut field.claims[t as usize];
        *claim = (*claim).min(u64::from(c) << 32 | i as u64);
    }
    for (i, (&t, &c)) in field.targets.iter().zip(&field.costs).enumerate() {
        // Most pixels match well: they never look up their target.
        if c < DISOCCLUDED_COST {
            continue;
        }
        let claim = field.claims[t as usize];
        let (best, by) = ((claim >> 32) as u32, claim as u32);
        if by != i as u32 && c > 2 * best {
            field.disoccluded.push(i as u32);
        }
    }
    open_region(&mut field.disoccluded, &mut field.marks, w, h);
}

/// Of the pixels `disoccluded` (indices), a region wider than a speck is
/// what a subject uncovered; a lone pixel or a thin line is more often a
/// part of the subject that changed (a mouth, hair, light) and matched
/// poorly: it keeps its vector. A morphological opening: the pixels with
/// at least [`REGION_NEIGHBOURS`] of their 8 neighbours also marked, and
/// the marked pixels beside them (so that a region keeps its border).
/// On Megamind.avi this made the moved masks' error 3-4 points lower than
/// taking every marked pixel.
fn open_region(disoccluded: &mut Vec<u32>, marks: &mut Vec<u8>, w: usize, h: usize) {
    const MARKED: u8 = 1;
    const CORE: u8 = 2;
    marks.clear();
    marks.resize(w * h, 0);
    for &i in disoccluded.iter() {
        marks[i as usize] = MARKED;
    }
    // The marked pixels among the 3x3 neighbourhood of `i` (itself left
    // out), with `mark` set; plain loops: this runs for thousands of pixels.
    let count_around = |marks: &[u8], i: usize, mark: u8| {
        let (x, y) = (i % w, i / w);
        let (x0, x1) = (x.saturating_sub(1), (x + 2).min(w));
        let mut count = 0;
        for ny in y.saturating_sub(1)..(y + 2).min(h) {
            count += marks[ny * w + x0..ny * w + x1]
                .iter()
                .filter(|&&m| m & mark != 0)
                .count();
        }
        count - usize::from(marks[i] & mark != 0)
    };
    for &i in disoccluded.iter() {
        let i = i as usize;
        if count_around(marks, i, MARKED) >= REGION_NEIGHBOURS {
            marks[i] |= CORE;
        }
    }
    disoccluded.retain(|&i| {
        let i = i as usize;
        marks[i] & CORE != 0 || count_around(marks, i, CORE) > 0
    });
}

/// See [`open_region`].
const REGION_NEIGHBOURS: usize = 7;

fn same_motion(a: [f32; 2], b: [f32; 2]) -> bool {
    (a[0] - b[0]).abs() < SAME_MOTION && (a[1] - b[1]).abs() < SAME_MOTION
}

/// For each pixel of the block `x0..x1` x `y0..y1` (row-major into
/// `costs`), the sum of |to - from moved by v| (luma) over its 3x3
/// neighbourhood, `v` to the nearest pixel: this only chooses among
/// vectors.
fn block_costs(
    from: &Level,
    to: &Level,
    (x0, y0, x1, y1): (usize, usize, usize, usize),
    v: [f32; 2],
    scratch: &mut CostScratch,
    costs: &mut Vec<u16>,
) {
    let (vx, vy) = (v[0].round() as isize, v[1].round() as isize);
    // The differences over the block and a one-pixel margin...
    let (dw, dh) = (x1 - x0 + 2, y1 - y0 + 2);
    let (left, top) = (x0 as isize - 1, y0 as isize - 1);
    let inside = |x: isize, y: isize, level: &Level| {
        x >= 0
            && y >= 0
            && x + dw as isize <= level.width as isize
            && y + dh as isize <= level.height as isize
    };
    let whole = inside(left, top, to) && inside(left + vx, top + vy, from);
    if whole && (dw, dh) == (BLOCK + 2, BLOCK + 2) {
        // A whole block inside both pictures (nearly all of them): the same
        // sums in arrays of fixed size, which the compiler unrolls.
        const SIDE: usize = BLOCK + 2;
        let mut rows = [[0u16; BLOCK]; SIDE];
        for (y, sums) in rows.iter_mut().enumerate() {
            let ty = (top + y as isize) as usize;
            let fy = (top + vy + y as isize) as usize;
            let t: &[u8; SIDE] = to.luma[ty * to.width + left as usize..][..SIDE]
                .try_into()
                .unwrap();
            let f: &[u8; SIDE] = from.luma[fy * from.width + (left + vx) as usize..][..SIDE]
                .try_into()
                .unwrap();
            let d: [u16; SIDE] = std::array::from_fn(|x| u16::from(t[x].abs_diff(f[x])));
            *sums = std::array::from_fn(|x| d[x] + d[x + 1] + d[x + 2]);
        }
        costs.clear();
        costs.resize(BLOCK * BLOCK, 0);
        for (y, out) in costs.chunks_exact_mut(BLOCK).enumerate() {
            let (a, b, c) = (&rows[y], &rows[y + 1], &rows[y + 2]);
            for x in 0..BLOCK {
                out[x] = a[x] + b[x] + c[x];
            }
        }
        return;
    }
    let diffs = &mut scratch.diffs;
    diffs.clear();
    if whole {
        for y in 0..dh {
            let (ty, fy) = (
                (top + y as isize) as usize,
                (top + vy + y as isize) as usize,
            );
            let t = &to.luma[ty * to.width + left as usize..][..dw];
            let f = &from.luma[fy * from.width + (left + vx) as usize..][..dw];
            diffs.extend(t.iter().zip(f).map(|(a, b)| u16::from(a.abs_diff(*b))));
        }
    } else {
        for y in 0..dh as isize {
            for x in 0..dw as isize {
                let (px, py) = (left + x, top + y);
                diffs.push(u16::from(
                    to.get(px, py).abs_diff(from.get(px + vx, py + vy)),
                ));
            }
        }
    }
    // ...summed over each row's three, then over three rows.
    let bw = dw - 2;
    let rows = &mut scratch.rows;
    rows.clear();
    for row in diffs.chunks_exact(dw) {
        rows.extend(row.windows(3).map(|w| w[0] + w[1] + w[2]));
    }
    costs.clear();
    for y in 0..dh - 2 {
        let (a, b, c) = (
            &rows[y * bw..][..bw],
            &rows[(y + 1) * bw..][..bw],
            &rows[(y + 2) * bw..][..bw],
        );
        costs.extend(a.iter().zip(b).zip(c).map(|((a, b), c)| a + b + c));
    }
}

/// Scratch buffers of [`block_costs`].
#[derive(Debug, Default)]
struct CostScratch {
    diffs: Vec<u16>,
    rows: Vec<u16>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: usize = 320;
    const H: usize = 320;
    const RADIUS: f32 = 45.0;

    /// A repeatable pseudo-random texture value at (x, y): smooth enough
    /// (summed over a few octaves) for blocks to be told apart.
    fn texture(x: i32, y: i32, seed: u32) -> f32 {
        let hash = |x: i32, y: i32| {
            let mut h = (x as u32).wrapping_mul(0x9E37_79B1)
                ^ (y as u32).wrapping_mul(0x85EB_CA77)
                ^ seed.wrapping_mul(0xC2B2_AE3D);
            h ^= h >> 15;
            h = h.wrapping_mul(0x2C1B_3C6D);
            h ^= h >> 12;
            (h & 0xff) as f32
        };
        let mut v = 0.0;
        for (cell, weight) in [(16, 0.5), (6, 0.3), (2, 0.2)] {
            v += weight * hash(x.div_euclid(cell), y.div_euclid(cell));
        }
        v
    }

    /// A `w` x `h` level whose pixel (x, y) is `value(x, y)`.
    fn level_of(w: usize, h: usize, value: impl Fn(i32, i32) -> u8) -> Level {
        Level {
            width: w,
            height: h,
            luma: (0..w * h)
                .map(|i| value((i % w) as i32, (i / w) as i32))
                .collect(),
        }
    }

    #[test]
    fn the_sad_of_a_block_is_the_plain_sum_everywhere() {
        // Not a multiple of BLOCK either way: partial blocks on the right
        // and at the bottom, vectors reaching past every border.
        let (w, h) = (44usize, 37usize);
        let level = |seed| level_of(w, h, |x, y| texture(x, y, seed) as u8);
        let (from, to) = (level(1), level(2));
        let plain = |block: &BlockRef, v: [i32; 2]| -> u32 {
            (block.y0..block.y1)
                .flat_map(|y| (block.x0..block.x1).map(move |x| (x, y)))
                .map(|(x, y)| {
                    let a = to.luma[y * w + x];
                    let b = from.get(x as isize + v[0] as isize, y as isize + v[1] as isize);
                    u32::from(a.abs_diff(b))
                })
                .sum()
        };
        let mut checked = 0;
        for by in 0..h.div_ceil(BLOCK) {
            for bx in 0..w.div_ceil(BLOCK) {
                let block = BlockRef::new(&to, bx, by);
                for vy in -12..=12 {
                    for vx in -12..=12 {
                        let v = [vx, vy];
                        let exact = plain(&block, v);
                        assert_eq!(sad(&from, &block, v), exact, "block ({bx}, {by}) at {v:?}");
                        // Stopped early, it is still at least the limit.
                        let limit = exact / 2 + 1;
                        let stopped = sad_below(&from, &block, v, limit);
                        if exact < limit {
                            assert_eq!(stopped, exact);
                        } else {
                            assert!(stopped >= limit, "{stopped} under {limit}");
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 6 * 5 * 25 * 25);
    }

    #[test]
    fn the_per_pixel_costs_are_the_plain_3x3_sums_everywhere() {
        // Whole blocks (the fixed-size path) and blocks on every border
        // (the general one), with vectors reaching past the borders; a
        // picture of strong contrast, so that sums run high.
        let (w, h) = (44usize, 37usize);
        let level = |seed| {
            level_of(w, h, |x, y| {
                let t = texture(x, y, seed) as u32;
                if t.is_multiple_of(2) {
                    255
                } else {
                    (t % 7) as u8
                }
            })
        };
        let (from, to) = (level(3), level(4));
        let (mut scratch, mut costs) = (CostScratch::default(), Vec::new());
        let (mut whole, mut clipped, mut highest) = (0, 0, 0);
        for by in 0..h.div_ceil(BLOCK) {
            for bx in 0..w.div_ceil(BLOCK) {
                let (x0, y0) = (bx * BLOCK, by * BLOCK);
                let (x1, y1) = ((x0 + BLOCK).min(w), (y0 + BLOCK).min(h));
                for v in [
                    [0.0, 0.0],
                    [1.4, -0.6],
                    [-2.0, 3.0],
                    [9.0, -11.0],
                    [-30.0, 25.0],
                ] {
                    block_costs(&from, &to, (x0, y0, x1, y1), v, &mut scratch, &mut costs);
                    assert_eq!(costs.len(), (x1 - x0) * (y1 - y0));
                    let (vx, vy) = (v[0].round() as isize, v[1].round() as isize);
                    for (k, &cost) in costs.iter().enumerate() {
                        let (x, y) = ((x0 + k % (x1 - x0)) as isize, (y0 + k / (x1 - x0)) as isize);
                        let mut plain = 0u32;
                        for dy in -1..=1 {
                            for dx in -1..=1 {
                                let (a, b) =
                                    (to.get(x + dx, y + dy), from.get(x + dx + vx, y + dy + vy));
                                plain += u32::from(a.abs_diff(b));
                            }
                        }
                        assert_eq!(u32::from(cost), plain, "pixel ({x}, {y}) moved by {v:?}");
                        highest = highest.max(plain);
                    }
                    let inside = x0 >= 1 && y0 >= 1 && x1 < w && y1 < h;
                    if inside && (x1 - x0, y1 - y0) == (BLOCK, BLOCK) {
                        whole += 1;
                    } else {
                        clipped += 1;
                    }
                }
            }
        }
        assert!(whole > 0 && clipped > 0, "{whole} whole, {clipped} clipped");
        assert!(highest > 1500, "the sums reach {highest} at most");
    }

    #[test]
    fn the_opening_keeps_what_has_a_core_and_its_border_only() {
        // The definition, spelled out: a marked pixel with at least
        // REGION_NEIGHBOURS marked of its 8 neighbours is a core; a marked
        // pixel is kept if it is a core or touches one.
        let (w, h) = (23usize, 19usize);
        for seed in 0..6u32 {
            let marked: Vec<bool> = (0..w * h)
                .map(|i| texture((i % w) as i32, (i / w) as i32, seed) > 110.0)
                .collect();
            let around = |i: usize| {
                let (x, y) = ((i % w) as isize, (i / w) as isize);
                (-1..=1isize)
                    .flat_map(move |dy| (-1..=1isize).map(move |dx| (x + dx, y + dy)))
                    .filter(move |&(nx, ny)| {
                        (nx, ny) != (x, y)
                            && nx >= 0
                            && ny >= 0
                            && nx < w as isize
                            && ny < h as isize
                    })
                    .map(move |(nx, ny)| ny as usize * w + nx as usize)
            };
            let core: Vec<bool> = (0..w * h)
                .map(|i| marked[i] && around(i).filter(|&j| marked[j]).count() >= REGION_NEIGHBOURS)
                .collect();
            let expected: Vec<u32> = (0..w * h)
                .filter(|&i| marked[i] && (core[i] || around(i).any(|j| core[j])))
                .map(|i| i as u32)
                .collect();
            let mut kept: Vec<u32> = (0..w * h)
                .filter(|&i| marked[i])
                .map(|i| i as u32)
                .collect();
            let before = kept.len();
            let mut marks = Vec::new();
            open_region(&mut kept, &mut marks, w, h);
            assert_eq!(kept, expected, "seed {seed}");
            // Both kinds are there: some kept, some dropped.
            assert!(
                !kept.is_empty() && kept.len() < before,
                "seed {seed}: {} of {before}",
                kept.len()
            );
        }
    }

    /// How the disc and the background look.
    #[derive(Clone, Copy)]
    enum Look {
        /// A brighter disc (a lit subject) on a darker background.
        Lit,
        /// A red disc on a grey-green background of the same mean
        /// brightness (luma): told apart by hue and texture only, as in
        /// the element's tests (`tests/motion.rs`).
        SameLuma,
    }

    impl Look {
        /// How many pixels of the sliver the disc uncovered (moved by
        /// `shift`) may keep the old mask: where hue alone tells the disc
        /// from the background, luma matching cannot always tell what was
        /// uncovered, and a sliver a few pixels wide is too thin for
        /// [`open_region`] to take it for one (measured: 51 of ~270 at
        /// 3 px, 186 of ~1300 at 14 px).
        fn uncovered_allowed(self, shift: f32) -> usize {
            match self {
                Look::Lit => 8,
                Look::SameLuma => (17.0 * shift) as usize,
            }
        }

        /// The largest shift it is right to a pixel for: at 26 px, 2
        /// pixels of a same-luma disc's edge land wrong.
        fn largest_shift(self) -> f32 {
            match self {
                Look::Lit => f32::MAX,
                Look::SameLuma => 15.0,
            }
        }
    }

    /// A still textured background with a textured disc whose centre is at
    /// `centre`; and the disc's mask.
    fn scene_of(look: Look, centre: (f32, f32)) -> (Vec<u8>, Vec<u8>) {
        scene_sized(look, centre, W, RADIUS)
    }

    /// [`scene_of`], `side` x `side` with a disc of `radius`.
    fn scene_sized(look: Look, centre: (f32, f32), side: usize, radius: f32) -> (Vec<u8>, Vec<u8>) {
        let mut rgb = Vec::with_capacity(3 * side * side);
        let mut mask = Vec::with_capacity(side * side);
        for y in 0..side {
            for x in 0..side {
                let (dx, dy) = (x as f32 - centre.0, y as f32 - centre.1);
                let inside = dx.hypot(dy) <= radius;
                // The disc's texture moves with it.
                let (tx, ty) = (dx.round() as i32, dy.round() as i32);
                let (r, g, b) = match (look, inside) {
                    (Look::Lit, true) => {
                        let t = texture(tx, ty, 7);
                        (170.0 + 0.3 * t, 150.0 + 0.3 * t, 120.0 + 0.3 * t)
                    }
                    (Look::Lit, false) => {
                        let t = texture(x as i32, y as i32, 1);
                        (
                            0.3 * t + x as f32 * 0.1,
                            0.3 * t + 30.0,
                            0.3 * t + y as f32 * 0.1 + 20.0,
                        )
                    }
                    (Look::SameLuma, true) => {
                        let t = texture(tx, ty, 7);
                        (200.0 + 0.2 * t, 30.0 + 0.2 * t, 30.0 + 0.1 * t)
                    }
                    (Look::SameLuma, false) => {
                        let t = texture(x as i32, y as i32, 1);
                        (40.0 + 0.3 * t, 80.0 + 0.3 * t, 70.0 + 0.3 * t)
                    }
                };
                rgb.extend([r, g, b].map(|v| v.clamp(0.0, 255.0) as u8));
                mask.push(if inside { 255 } else { 0 });
            }
        }
        (rgb, mask)
    }

    #[test]
    fn a_still_picture_keeps_the_mask_exactly() {
        let (rgb, mask) = scene_of(Look::Lit, (150.0, 140.0));
        let mut estimator = MotionEstimator::new();
        let field = estimator.estimate(&rgb, &rgb, W as u32, H as u32).unwrap();
        assert!(field.is_still());
        assert_eq!(field.mean_shift(&mask, (1.0, 1.0)), 0.0);
        let mut out = Vec::new();
        field.warp_mask(&mask, &mut out);
        assert_eq!(out, mask);

        // Noise of a level or two (a camera's) is no motion either.
        let noisy: Vec<u8> = rgb
            .iter()
            .enumerate()
            .map(|(i, &v)| v.saturating_add((texture(i as i32, 3, 9) as u32 % 3) as u8))
            .collect();
        let field = estimator
            .estimate(&rgb, &noisy, W as u32, H as u32)
            .unwrap();
        assert!(field.is_still());
        field.warp_mask(&mask, &mut out);
        assert_eq!(out, mask);
    }

    /// Pixels of `mask` (0/255 at 128) on the wrong side of the disc at
    /// `centre`, among those more than one pixel from its edge.
    fn misplaced(mask: &[u8], centre: (f32, f32)) -> Vec<(usize, usize)> {
        misplaced_sized(mask, centre, W, RADIUS, 1.0)
    }

    /// [`misplaced`] in a `side` x `side` mask of a disc of `radius`, among
    /// the pixels more than `margin` pixels from its edge.
    fn misplaced_sized(
        mask: &[u8],
        centre: (f32, f32),
        side: usize,
        radius: f32,
        margin: f32,
    ) -> Vec<(usize, usize)> {
        let mut wrong = Vec::new();
        for y in 0..side {
            for x in 0..side {
                let d = (x as f32 - centre.0).hypot(y as f32 - centre.1) - radius;
                let on = mask[y * side + x] >= 128;
                if (d < -margin && !on) || (d > margin && on) {
                    wrong.push((x, y));
                }
            }
        }
        wrong
    }

    #[test]
    fn a_mask_moves_with_the_subject_to_within_a_pixel() {
        moves_with_the_subject(Look::Lit);
    }

    /// Where the subject differs from the background by hue alone, the
    /// blocks on its edge that hold only a sliver of it still match best
    /// standing still: their pixels must choose for themselves.
    #[test]
    fn a_mask_moves_with_a_subject_as_bright_as_the_background() {
        moves_with_the_subject(Look::SameLuma);
    }

    #[test]
    fn a_field_scaled_up_gives_each_pixel_its_reduced_pixels_vector_and_uncovered_cells() {
        // 10 x 7 reduced by 3: 4 x 3, the last column and row partial.
        let (w, h, factor) = (10usize, 7usize, 3usize);
        let (rw, rh) = (w.div_ceil(factor), h.div_ceil(factor));
        let vector = |i: usize| [i as f32 * 0.5, -(i as f32)];
        let mut field = Field {
            width: rw,
            height: rh,
            pixels: (0..rw * rh).map(vector).collect(),
            // Reduced pixels (1, 0) and (3, 2): the latter partial both ways.
            disoccluded: vec![1, 11],
            ..Field::default()
        };
        field.scale_up(factor, w, h);
        assert_eq!((field.width(), field.height(), field.scale), (10, 7, 3));
        for y in 0..h {
            for x in 0..w {
                let v = vector((y / 3) * rw + x / 3);
                assert_eq!(
                    field.at(x as u32, y as u32),
                    [3.0 * v[0], 3.0 * v[1]],
                    "({x}, {y})"
                );
            }
        }
        assert_eq!(field.pixels.len(), w * h);
        let mut uncovered: Vec<(u32, u32)> = field
            .disoccluded
            .iter()
            .map(|&i| (i % w as u32, i / w as u32))
            .collect();
        uncovered.sort_by_key(|&(x, y)| (y, x));
        let expected: Vec<(u32, u32)> = [
            (3, 0),
            (4, 0),
            (5, 0),
            (3, 1),
            (4, 1),
            (5, 1),
            (3, 2),
            (4, 2),
            (5, 2),
            (9, 6),
        ]
        .into_iter()
        .collect();
        assert_eq!(uncovered, expected);

        // The reduced luma: the mean of each square, of what of it lies in
        // the picture on the right and bottom edges.
        let grey = |v: u8| [v, v, v];
        let rgb: Vec<u8> = (0..5 * 3).flat_map(|i| grey(10 * i as u8)).collect();
        let mut level = Level::default();
        reduced_luma_of(&rgb, 5, 3, 2, &mut level);
        assert_eq!((level.width, level.height), (3, 2));
        // (0+10+50+60)/4, (20+30+70+80)/4, (40+90)/2; (100+110)/2, (120+130)/2, 140.
        assert_eq!(level.luma, vec![30, 50, 65, 105, 125, 140]);

        // A still field becomes all zero vectors at the picture's size.
        let mut still = Field {
            width: rw,
            height: rh,
            pixels: vec![[0.0, 0.0]; rw * rh],
            still: true,
            ..Field::default()
        };
        still.scale_up(factor, w, h);
        assert!(still.is_still());
        assert_eq!(still.pixels, vec![[0.0, 0.0]; w * h]);
    }

    #[test]
    fn the_bilinear_mix_weighs_the_corners_by_their_distance() {
        // A whole pixel is the top left's exactly.
        assert_eq!(bilinear([9, 1, 2, 3], 0, 0), 9);
        // Halfway along a row, halfway down a column.
        assert_eq!(bilinear([0, 255, 0, 255], 128, 0), 128);
        assert_eq!(bilinear([0, 0, 200, 200], 0, 128), 100);
        // A quarter across and three quarters down: (10 * 3 + 50) / 4 = 20
        // on top, (90 * 3 + 130) / 4 = 100 below, 20 / 4 + 100 * 3 / 4 = 80.
        assert_eq!(bilinear([10, 50, 90, 130], 64, 192), 80);
        // Rounded to the nearest: 1/256th of the way from 0 to 255 is 0.996.
        assert_eq!(bilinear([0, 255, 0, 255], 1, 0), 1);
        // The largest weights stay within 255.
        assert_eq!(bilinear([255; 4], 255, 255), 255);
    }

    #[test]
    fn a_sample_is_the_bilinear_mix_of_one_channel_where_the_content_was() {
        // 3 x 2 RGB: each channel's value tells the pixel and the channel.
        let src: Vec<u8> = (0..6u8)
            .flat_map(|p| [10 * p, 10 * p + 1, 10 * p + 2])
            .collect();
        let at = |channel, xy, v| sample(&src, (3, channel), xy, v, (3, 2));
        // A whole pixel away: that pixel's value, in the channel asked for.
        assert_eq!(at(1, (0, 0), [1.0, 1.0]), 41);
        assert_eq!(at(2, (2, 1), [-2.0, -1.0]), 2);
        // Halfway between pixels 0 and 1 of the top row: (0 + 10) / 2.
        assert_eq!(at(0, (0, 0), [0.5, 0.0]), 5);
        // Past the picture: clamped to its border.
        assert_eq!(at(0, (0, 0), [-5.0, -5.0]), 0);
        assert_eq!(at(0, (1, 0), [9.0, 9.0]), 50);
    }

    #[test]
    fn candidates_at_a_pixel_are_its_blocks_first_in_the_pictures_pixels() {
        // A 20 x 12 picture whose motion was found on a copy reduced by 2
        // (10 x 6): two blocks, side by side, that move apart.
        let field = Field {
            width: 20,
            height: 12,
            cols: 2,
            rows: 1,
            scale: 2,
            blocks: vec![[1.0, 0.0], [3.0, 0.5]],
            ..Field::default()
        };
        let mut out = Vec::new();
        // (5, 3) lies in reduced pixel (2, 1), of the left block.
        field.candidates_at(5, 3, &mut out);
        assert_eq!(out, [[2.0, 0.0], [6.0, 1.0]]);
        // (17, 11), reduced (8, 5): the right block, partial, first.
        field.candidates_at(17, 11, &mut out);
        assert_eq!(out, [[6.0, 1.0], [2.0, 0.0]]);
        // Outside the picture, though inside the right block's reach: none.
        field.candidates_at(20, 0, &mut out);
        assert!(out.is_empty());
        field.candidates_at(0, 12, &mut out);
        assert!(out.is_empty());
    }

    /// Moving a mask a run of pixels at a time gives what moving it pixel
    /// by pixel gives, bit for bit: fractional and negative vectors,
    /// vectors clamped at every border, runs that end at the last column,
    /// pictures one pixel wide or high.
    #[test]
    fn a_mask_moved_by_runs_is_the_mask_moved_pixel_by_pixel() {
        for (w, h) in [(37usize, 23usize), (1, 9), (9, 1), (64, 64)] {
            let src: Vec<u8> = (0..w * h)
                .map(|i| texture(i as i32 % w as i32, i as i32 / w as i32, 5) as u8)
                .collect();
            for (k, v) in [
                [0.0, 0.0],
                [0.5, 0.25],
                [-1.75, 3.5],
                [2.0, -0.125],
                [-40.0, 0.6],
                [50.0, -30.0],
                [-0.3, 40.0],
                [7.9, 7.9],
            ]
            .into_iter()
            .enumerate()
            {
                // Runs of this vector between runs of others, some of them
                // reaching the last column.
                let vectors: Vec<[f32; 2]> = (0..w * h)
                    .map(|i| if (i % w + k) % 5 < 3 { v } else { [1.25, -0.5] })
                    .collect();
                let field = Field {
                    width: w,
                    height: h,
                    pixels: vectors.clone(),
                    ..Field::default()
                };
                let mut out = Vec::new();
                field.warp_u8(&src, 1, &mut out);
                let expected: Vec<u8> = vectors
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Sample::at(i % w, i / w, *v, w, h).of(|j| src[j]))
                    .collect();
                assert_eq!(out, expected, "{w}x{h}, vector {v:?}");
            }
        }
    }

    /// Sizes that are not a multiple of the reduction, wide and low
    /// pictures, one pixel wide: a field of the picture's size, a mask
    /// moved to that size, and a picture that did not move keeps its mask.
    #[test]
    fn pictures_of_any_size_get_a_field_of_their_size() {
        assert_eq!(reduction(1024, 64), 1);
        assert_eq!(reduction(1024, 576), 3);
        assert_eq!(reduction(1025, 1024), 3);
        for (w, h) in [
            (401usize, 3usize),
            (1025, 1024),
            (1, 1000),
            (1024, 576),
            (801, 120),
        ] {
            let before: Vec<u8> = (0..w * h)
                .flat_map(|i| {
                    let t = texture((i % w) as i32, (i / w) as i32, 2) as u8;
                    [t, t / 2, 255 - t]
                })
                .collect();
            let after: Vec<u8> = (0..w * h)
                .flat_map(|i| {
                    let t = texture((i % w) as i32 - 6, (i / w) as i32 - 2, 2) as u8;
                    [t, t / 2, 255 - t]
                })
                .collect();
            let mask: Vec<u8> = (0..w * h)
                .map(|i| if i % w < w / 2 { 255 } else { 0 })
                .collect();
            let mut estimator = MotionEstimator::new();
            let mut snap = EdgeSnap::new();
            let mut out = Vec::new();
            let still = estimator
                .estimate(&before, &before, w as u32, h as u32)
                .unwrap();
            assert!(still.is_still(), "{w}x{h}");
            still.warp_mask_onto(&mask, &before, &mut snap, &mut out);
            assert_eq!(out, mask, "{w}x{h}");
            let field = estimator
                .estimate(&before, &after, w as u32, h as u32)
                .unwrap();
            assert_eq!((field.width(), field.height()), (w as u32, h as u32));
            assert_eq!(field.pixels.len(), w * h);
            field.warp_mask_onto(&mask, &after, &mut snap, &mut out);
            assert_eq!(out.len(), w * h, "{w}x{h}");
            assert!(field.mean_shift(&out, (1.0, 1.0)).is_finite());
        }
    }

    /// ISNet's 1024x1024: the motion is estimated on a copy reduced by 3,
    /// and the mask, moved at its own size, still lands within a pixel
    /// where the subject went (and as far as at 320x320, in the picture's
    /// share). The pixels beside the edge may land on its other side by
    /// up to a reduced pixel (3 px), where the reduced copy mixes the disc
    /// and the background.
    #[test]
    fn a_mask_at_isnets_size_moves_with_the_subject_from_a_reduced_copy() {
        const SIDE: usize = 1024;
        const R: f32 = 140.0;
        assert_eq!(reduction(SIDE, SIDE), 3);
        assert_eq!(reduction(W, H), 1);
        let start = (420.0, 480.0);
        let (before, mask) = scene_sized(Look::Lit, start, SIDE, R);
        let mut estimator = MotionEstimator::new();
        let still = estimator
            .estimate(&before, &before, SIDE as u32, SIDE as u32)
            .unwrap();
        assert!(still.is_still());
        let mut out = Vec::new();
        still.warp_mask(&mask, &mut out);
        assert_eq!(out, mask);
        for (kx, ky) in [(10.0, 0.0), (-26.0, 17.0), (75.0, -32.0)] {
            let centre = (start.0 + kx, start.1 + ky);
            let (after, _) = scene_sized(Look::Lit, centre, SIDE, R);
            let field = estimator
                .estimate(&before, &after, SIDE as u32, SIDE as u32)
                .unwrap();
            assert_eq!((field.width(), field.height()), (SIDE as u32, SIDE as u32));
            assert_eq!(field.scale, 3);
            let [vx, vy] = field.at(centre.0 as u32, centre.1 as u32);
            assert!(
                (vx + kx).abs() <= 1.0 && (vy + ky).abs() <= 1.0,
                "moved by ({kx}, {ky}): vector ({vx}, {vy})"
            );
            field.warp_mask(&mask, &mut out);
            assert_eq!(out.len(), SIDE * SIDE);
            // Measured: none beyond 3 px, 3-24 beyond 1 px, of a disc
            // whose edge is about 880 px around.
            let wrong = misplaced_sized(&out, centre, SIDE, R, 3.0);
            assert!(
                wrong.is_empty(),
                "moved by ({kx}, {ky}): {} pixels misplaced, e.g. {:?}",
                wrong.len(),
                &wrong[..wrong.len().min(8)]
            );
            let beside = misplaced_sized(&out, centre, SIDE, R, 1.0).len();
            assert!(
                beside <= 40,
                "moved by ({kx}, {ky}): {beside} pixels beside the edge"
            );
            assert!(
                misplaced_sized(&mask, centre, SIDE, R, 3.0).len() as f32 > 100.0 * kx.hypot(ky)
            );
            let shift = field.mean_shift(&out, (1.0, 1.0));
            assert!(
                (shift - kx.hypot(ky)).abs() < 1.0,
                "moved by ({kx}, {ky}): mean shift {shift}"
            );
        }
    }

    #[track_caller]
    fn moves_with_the_subject(look: Look) {
        let start = (130.0, 150.0);
        let (before, mask) = scene_of(look, start);
        let mut estimator = MotionEstimator::new();
        let mut out = Vec::new();
        for (kx, ky) in [
            (3.0, 0.0),
            (0.0, -5.0),
            (8.0, 4.0),
            (-13.0, 6.0),
            (24.0, -10.0),
        ] {
            if f32::hypot(kx, ky) > look.largest_shift() {
                continue;
            }
            let centre = (start.0 + kx, start.1 + ky);
            let (after, _) = scene_of(look, centre);
            let field = estimator
                .estimate(&before, &after, W as u32, H as u32)
                .unwrap();
            assert!(!field.is_still());
            // The disc's centre, moved back, lands where it was.
            let [vx, vy] = field.at(centre.0 as u32, centre.1 as u32);
            assert!(
                (vx + kx).abs() <= 0.5 && (vy + ky).abs() <= 0.5,
                "moved by ({kx}, {ky}): vector ({vx}, {vy})"
            );
            field.warp_mask(&mask, &mut out);
            // Pixels the disc uncovered (inside its old place, outside its
            // new one) were never seen: a few of them keep the old mask.
            let (uncovered, wrong): (Vec<_>, Vec<_>) =
                misplaced(&out, centre).into_iter().partition(|&(x, y)| {
                    (x as f32 - start.0).hypot(y as f32 - start.1) <= RADIUS + 1.0
                });
            assert!(
                uncovered.len() <= look.uncovered_allowed(kx.hypot(ky)),
                "moved by ({kx}, {ky}): {} uncovered pixels keep the old mask",
                uncovered.len()
            );
            assert!(
                wrong.is_empty(),
                "moved by ({kx}, {ky}): {} pixels misplaced, e.g. {:?}",
                wrong.len(),
                &wrong[..wrong.len().min(8)]
            );
            // Unmoved, it would be far off.
            let unmoved = misplaced(&mask, centre).len();
            assert!(unmoved as f32 > 50.0 * kx.hypot(ky));
            let shift = field.mean_shift(&out, (1.0, 1.0));
            assert!(
                (shift - kx.hypot(ky)).abs() < 1.0,
                "moved by ({kx}, {ky}): mean shift {shift}"
            );
        }
    }
}
