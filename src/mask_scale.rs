// SPDX-License-Identifier: MPL-2.0
//! A model-size mask scaled to the frame and handed to the output mode a
//! piece of a row at a time, while the piece is still in cache.
//!
//! Scaling a 320x320 mask to a 4K frame makes 8 M values that the RGBA modes
//! then read again, pixel by pixel, beside the frame; on two cores the two
//! passes took about as long as preparing the frame, and all of it is time
//! the model does not run. Most of a mask is flat (0 around the subject, 255
//! inside it), so most of that work decides nothing: here the full-size rows
//! are made in chunks of [`CHUNK`] pixels, and each chunk first gets the
//! bounds its output must lie in, from its source values (narrow where the
//! mask is flat).
//! A mode that needs no more (a composite chunk wholly above or below the
//! threshold, an alpha chunk of one value) handles it without computing a
//! value, and without reading a pixel where nothing changes.
//!
//! Both passes are Pillow's LANCZOS arithmetic (what rembg's masks go
//! through), horizontal first: coefficients in f64, normalised, then 22-bit
//! fixed point, rounded sums clipped to 0..=255. The horizontal pass, over
//! the mask's few rows, fills the outputs whose whole window lies in a run
//! of one value with that value (the coefficients of a window add up to
//! 2^22 within a few units, so a flat window gives its value back) and
//! computes the others; fast_image_resize took 3 ms of one core for it at
//! 4K, recomputing its coefficients with every frame.

use std::ops::Range;

use crate::image_view::{LayoutError, check_bytes};

/// Pixels of an output row handled together.
pub const CHUNK: usize = 64;

/// Pillow's fixed point for 8-bit resampling: 32 - 8 - 2 bits.
const PRECISION_BITS: u32 = 22;

/// What an output mode does with the scaled mask, a chunk of a row at a time.
pub trait ChunkSink: Sync {
    /// Bytes a pixel takes in the output rows.
    fn bytes_per_pixel(&self) -> usize;

    /// Every mask value of the pixels `x` of `row` lies in `lo..=hi`. Apply
    /// them without their values and return true, or return false to be
    /// given the values ([`ChunkSink::exact`]).
    fn bounded(&self, row: &mut [u8], x: Range<usize>, lo: u8, hi: u8) -> bool;

    /// The mask values of the pixels `x` of `row`.
    fn exact(&self, row: &mut [u8], x: Range<usize>, values: &[u8]);
}

/// A writable frame of rows: `height` rows of `width` pixels, `stride` bytes
/// apart.
pub struct Rows<'a> {
    pub data: &'a mut [u8],
    pub width: u32,
    pub height: u32,
    pub stride: usize,
}

/// One output pixel's filter along one side of the mask.
#[derive(Debug, Clone, Copy)]
struct Filter {
    /// First source pixel (row, for the vertical pass).
    start: usize,
    /// Its coefficients: `coeffs[offset..offset + len]`.
    offset: usize,
    len: usize,
    /// Sum of the coefficients, and of the magnitudes of the negative ones.
    sum: i64,
    negative: i64,
}

/// Pillow's coefficients from `src` pixels to `dst` along one side.
#[derive(Debug, Default)]
struct Taps {
    src: u32,
    dst: u32,
    filters: Vec<Filter>,
    coeffs: Vec<i32>,
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos3(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

impl Taps {
    /// As Pillow's `precompute_coeffs` and `normalize_coeffs_8bpc`.
    fn new(src: u32, dst: u32) -> Self {
        let scale = f64::from(src) / f64::from(dst);
        let filter_scale = scale.max(1.0);
        let support = 3.0 * filter_scale;
        let mut taps = Taps {
            src,
            dst,
            filters: Vec::with_capacity(dst as usize),
            coeffs: Vec::new(),
        };
        if src == dst {
            // Pillow leaves a side of the same size alone: each output is
            // its source (the general window would give the same values
            // from six rows, and wider bounds).
            let one = 1 << PRECISION_BITS;
            taps.coeffs = vec![one; dst as usize];
            taps.filters = (0..dst as usize)
                .map(|i| Filter {
                    start: i,
                    offset: i,
                    len: 1,
                    sum: i64::from(one),
                    negative: 0,
                })
                .collect();
            return taps;
        }
        let mut weights = Vec::new();
        for y in 0..dst {
            let center = (f64::from(y) + 0.5) * scale;
            let min = ((center - support + 0.5) as i64).max(0) as usize;
            let max = ((center + support + 0.5) as i64).min(i64::from(src)) as usize;
            weights.clear();
            weights.extend(
                (min..max.max(min)).map(|s| lanczos3((s as f64 - center + 0.5) / filter_scale)),
            );
            let total: f64 = weights.iter().sum();
            let offset = taps.coeffs.len();
            let (mut sum, mut negative) = (0i64, 0i64);
            for &w in &weights {
                let w = if total != 0.0 { w / total } else { w };
                let scaled = w * f64::from(1u32 << PRECISION_BITS);
                let fixed = if w < 0.0 {
                    (scaled - 0.5) as i32
                } else {
                    (scaled + 0.5) as i32
                };
                sum += i64::from(fixed);
                if fixed < 0 {
                    negative -= i64::from(fixed);
                }
                taps.coeffs.push(fixed);
            }
            debug_assert!(
                weights.is_empty() || (sum - (1 << PRECISION_BITS)).abs() * 255 < 1 << 21,
                "a flat window must give its value back"
            );
            taps.filters.push(Filter {
                start: min,
                offset,
                len: weights.len(),
                sum,
                negative,
            });
        }
        taps
    }

    fn filter(&self, i: usize) -> (Filter, &[i32]) {
        let r = self.filters[i];
        (r, &self.coeffs[r.offset..r.offset + r.len])
    }
}

/// Pillow's `clip8` of a rounded fixed-point sum.
fn clip8(sum: i64) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Scales masks and hands the rows to a [`ChunkSink`]; keeps its scratch
/// buffers and coefficients between frames.
#[derive(Default)]
pub struct MaskScaler {
    /// The horizontal pass's coefficients, and for each end `e` of a
    /// source span (0..=source width) the first output whose window
    /// reaches beyond it.
    columns: Taps,
    first_beyond: Vec<usize>,
    /// The mask after the horizontal pass: output width, mask height.
    between: Vec<u8>,
    /// Per row of `between` and chunk of [`CHUNK`] pixels: the least and the
    /// largest value.
    chunk_min: Vec<u8>,
    chunk_max: Vec<u8>,
    rows: Taps,
}

impl MaskScaler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Scales `small` (`small_w` x `small_h`, packed) to `out`'s size and
    /// applies it to `out` through `sink`, bands of rows in parallel.
    pub fn scale_into(
        &mut self,
        small: &[u8],
        (small_w, small_h): (u32, u32),
        out: Rows,
        sink: &impl ChunkSink,
    ) -> Result<(), LayoutError> {
        let bpp = sink.bytes_per_pixel();
        check_bytes(out.width, out.height, out.stride, bpp, out.data.len())?;
        check_bytes(small_w, small_h, small_w as usize, 1, small.len())?;
        let (width, height) = (out.width as usize, out.height as usize);
        if width == 0 || height == 0 || small_w == 0 || small_h == 0 {
            return Ok(());
        }
        let small = &small[..small_w as usize * small_h as usize];
        self.horizontal(small, small_w as usize, width);
        self.measure_chunks(width, small_h as usize);
        if (self.rows.src, self.rows.dst) != (small_h, out.height) {
            self.rows = Taps::new(small_h, out.height);
        }

        use rayon::prelude::*;
        let band = height
            .div_ceil(rayon::current_num_threads().max(1) * 4)
            .max(1);
        let stride = out.stride;
        let this = &*self;
        out.data
            .par_chunks_mut(stride * band)
            .take(height.div_ceil(band))
            .enumerate()
            .for_each(|(b, rows)| {
                let first = b * band;
                let mut window = WindowRange::default();
                for (i, row) in rows.chunks_mut(stride).enumerate() {
                    let y = first + i;
                    if y >= height {
                        break;
                    }
                    this.scale_row(y, width, &mut row[..width * bpp], &mut window, sink);
                }
            });
        Ok(())
    }

    /// Each row of `small` (`small_w` wide) to `width` values in `between`.
    fn horizontal(&mut self, small: &[u8], small_w: usize, width: usize) {
        let rows = small.len() / small_w;
        self.between.resize(width * rows, 0);
        if small_w == width {
            // Pillow leaves a side of the same size alone.
            self.between.copy_from_slice(&small[..width * rows]);
            return;
        }
        if (self.columns.src as usize, self.columns.dst as usize) != (small_w, width) {
            self.columns = Taps::new(small_w as u32, width as u32);
            self.first_beyond = (0..=small_w)
                .map(|e| {
                    self.columns
                        .filters
                        .partition_point(|t| t.start + t.len <= e)
                })
                .collect();
        }
        use rayon::prelude::*;
        let (columns, first_beyond) = (&self.columns, &self.first_beyond);
        self.between
            .par_chunks_mut(width)
            .zip(small.par_chunks(small_w))
            .for_each_init(Vec::new, |run_end, (dst, src)| {
                horizontal_row(src, dst, columns, first_beyond, run_end)
            });
    }

    /// The least and largest value of each chunk of each row of `between`.
    fn measure_chunks(&mut self, width: usize, rows: usize) {
        let chunks = width.div_ceil(CHUNK);
        self.chunk_min.clear();
        self.chunk_max.clear();
        for row in self.between.chunks_exact(width).take(rows) {
            for chunk in row.chunks(CHUNK) {
                let (lo, hi) = chunk
                    .iter()
                    .fold((u8::MAX, u8::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
                self.chunk_min.push(lo);
                self.chunk_max.push(hi);
            }
        }
        debug_assert_eq!(self.chunk_min.len(), chunks * rows);
    }

    /// Output row `y`, chunk by chunk.
    fn scale_row(
        &self,
        y: usize,
        width: usize,
        row: &mut [u8],
        window: &mut WindowRange,
        sink: &impl ChunkSink,
    ) {
        let (taps, coeffs) = self.rows.filter(y);
        let chunks = width.div_ceil(CHUNK);
        window.cover(taps.start..taps.start + taps.len, chunks, |s| {
            let stats = s * chunks..(s + 1) * chunks;
            (&self.chunk_min[stats.clone()], &self.chunk_max[stats])
        });
        let half = 1i64 << (PRECISION_BITS - 1);
        let mut values = [0u8; CHUNK];
        for c in 0..chunks {
            let x = c * CHUNK..((c + 1) * CHUNK).min(width);
            let (lo, hi) = (window.min[c], window.max[c]);
            // With every value in lo..=hi, a sum is least with the positive
            // coefficients on lo and the negative ones on hi: lo * sum -
            // (hi - lo) * negative; at most the other way round.
            let spread = i64::from(hi - lo) * taps.negative;
            let least = clip8(i64::from(lo) * taps.sum - spread + half);
            let most = clip8(i64::from(hi) * taps.sum + spread + half);
            if sink.bounded(row, x.clone(), least, most) {
                continue;
            }
            let n = x.len();
            exact_chunk(
                &self.between[taps.start * width + x.start..],
                width,
                coeffs,
                &mut values[..n],
            );
            sink.exact(row, x, &values[..n]);
        }
    }
}

/// The least and largest value, per chunk, over a window of source rows:
/// neighbouring output rows mostly share their window (an upscale by 6.75
/// changes it every 6.75 rows), so it is kept for the next row.
#[derive(Default)]
struct WindowRange {
    rows: Range<usize>,
    min: Vec<u8>,
    max: Vec<u8>,
}

impl WindowRange {
    /// Makes this the range over `rows`, whose chunks' ranges `of_row`
    /// gives; an empty window is all zeros, as its output.
    fn cover<'a>(
        &mut self,
        rows: Range<usize>,
        chunks: usize,
        of_row: impl Fn(usize) -> (&'a [u8], &'a [u8]),
    ) {
        if rows == self.rows && self.min.len() == chunks {
            return;
        }
        let empty = rows.is_empty();
        self.min.clear();
        self.max.clear();
        self.min.resize(chunks, if empty { 0 } else { u8::MAX });
        self.max.resize(chunks, 0);
        for s in rows.clone() {
            let (lo, hi) = of_row(s);
            for (m, &v) in self.min.iter_mut().zip(lo) {
                *m = (*m).min(v);
            }
            for (m, &v) in self.max.iter_mut().zip(hi) {
                *m = (*m).max(v);
            }
        }
        self.rows = rows;
    }
}

/// One row of the horizontal pass. `run_end` is scratch: for each source
/// pixel, where the run of its value ends.
fn horizontal_row(
    src: &[u8],
    dst: &mut [u8],
    columns: &Taps,
    first_beyond: &[usize],
    run_end: &mut Vec<usize>,
) {
    run_end.clear();
    run_end.resize(src.len(), src.len());
    for i in (0..src.len().saturating_sub(1)).rev() {
        if src[i] == src[i + 1] {
            run_end[i] = run_end[i + 1];
        } else {
            run_end[i] = i + 1;
        }
    }
    let half = 1i64 << (PRECISION_BITS - 1);
    let mut x = 0;
    while x < dst.len() {
        let (t, coeffs) = columns.filter(x);
        if t.len > 0 && run_end[t.start] >= t.start + t.len {
            // This window and every later one that ends in the same run.
            let end = first_beyond[run_end[t.start]].max(x + 1).min(dst.len());
            dst[x..end].fill(src[t.start]);
            x = end;
            continue;
        }
        let sum: i64 = coeffs
            .iter()
            .zip(&src[t.start..t.start + t.len])
            .map(|(&k, &v)| i64::from(k) * i64::from(v))
            .sum();
        dst[x] = clip8(sum + half);
        x += 1;
    }
}

/// The values of one chunk: `values.len()` pixels from `src` (the chunk's
/// first pixel in the first source row, rows `width` apart), through the
/// row's `coeffs`.
fn exact_chunk(src: &[u8], width: usize, coeffs: &[i32], values: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { exact_chunk_avx2(src, width, coeffs, values) };
    }
    exact_chunk_body(src, width, coeffs, values);
}

/// The same with 8 lanes of 32-bit multiplies (the baseline x86_64 target
/// has no packed 32-bit multiply at all).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn exact_chunk_avx2(src: &[u8], width: usize, coeffs: &[i32], values: &mut [u8]) {
    exact_chunk_body(src, width, coeffs, values);
}

#[inline(always)]
fn exact_chunk_body(src: &[u8], width: usize, coeffs: &[i32], values: &mut [u8]) {
    let n = values.len().min(CHUNK);
    // The positive coefficients add up to little more than 2^22: times 255,
    // an i32 holds the sum, as Pillow's int does.
    let mut acc = [1i32 << (PRECISION_BITS - 1); CHUNK];
    for (j, &k) in coeffs.iter().enumerate() {
        let row = &src[j * width..j * width + n];
        for (a, &v) in acc[..n].iter_mut().zip(row) {
            *a += k * i32::from(v);
        }
    }
    for (v, &a) in values[..n].iter_mut().zip(&acc[..n]) {
        *v = (a >> PRECISION_BITS).clamp(0, 255) as u8;
    }
}

/// Writes the mask itself into GRAY8 rows.
pub struct WriteMask;

impl ChunkSink for WriteMask {
    fn bytes_per_pixel(&self) -> usize {
        1
    }

    fn bounded(&self, row: &mut [u8], x: Range<usize>, lo: u8, hi: u8) -> bool {
        if lo != hi {
            return false;
        }
        row[x].fill(lo);
        true
    }

    fn exact(&self, row: &mut [u8], x: Range<usize>, values: &[u8]) {
        row[x].copy_from_slice(values);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A soft disc on a flat background, `size` square.
    fn disc(size: u32) -> Vec<u8> {
        let c = f64::from(size) / 2.0;
        (0..size * size)
            .map(|i| {
                let (x, y) = (f64::from(i % size) + 0.5, f64::from(i / size) + 0.5);
                let r = ((x - c).powi(2) + (y - c).powi(2)).sqrt();
                (255.0 * (c * 0.6 - r).clamp(0.0, 1.0)) as u8
            })
            .collect()
    }

    /// Pillow's LANCZOS, both passes in the module's arithmetic, computed
    /// the plain way (every value, no bounds): the reference.
    fn plain_vertical(between: &[u8], width: usize, taps: &Taps) -> Vec<u8> {
        let mut out = Vec::new();
        for y in 0..taps.dst as usize {
            let (t, coeffs) = taps.filter(y);
            for x in 0..width {
                let sum: i64 = coeffs
                    .iter()
                    .enumerate()
                    .map(|(j, &k)| i64::from(k) * i64::from(between[(t.start + j) * width + x]))
                    .sum();
                out.push(clip8(sum + (1 << (PRECISION_BITS - 1))));
            }
        }
        out
    }

    fn scaled(small: &[u8], size: (u32, u32), out_size: (u32, u32)) -> (Vec<u8>, MaskScaler) {
        let mut scaler = MaskScaler::new();
        let stride = out_size.0 as usize + 3;
        let mut out = vec![7u8; stride * out_size.1 as usize];
        scaler
            .scale_into(
                small,
                size,
                Rows {
                    data: &mut out,
                    width: out_size.0,
                    height: out_size.1,
                    stride,
                },
                &WriteMask,
            )
            .unwrap();
        let packed = out
            .chunks(stride)
            .flat_map(|r| r[..out_size.0 as usize].to_vec())
            .collect();
        (packed, scaler)
    }

    /// Every value of the horizontal pass computed, no runs filled.
    fn plain_horizontal(small: &[u8], small_w: usize, taps: &Taps) -> Vec<u8> {
        let mut out = Vec::new();
        for row in small.chunks(small_w) {
            for x in 0..taps.dst as usize {
                let (t, coeffs) = taps.filter(x);
                let sum: i64 = coeffs
                    .iter()
                    .zip(&row[t.start..])
                    .map(|(&k, &v)| i64::from(k) * i64::from(v))
                    .sum();
                out.push(clip8(sum + (1 << (PRECISION_BITS - 1))));
            }
        }
        out
    }

    #[test]
    fn chunks_skipped_by_their_bounds_equal_the_values_computed() {
        for (small, out) in [(64, (300, 170)), (64, (1000, 700)), (50, (37, 29))] {
            let mask = disc(small);
            let (ours, scaler) = scaled(&mask, (small, small), out);
            assert_eq!(
                scaler.between,
                plain_horizontal(&mask, small as usize, &scaler.columns),
                "runs filled: {small} -> {out:?}"
            );
            let reference = plain_vertical(&scaler.between, out.0 as usize, &scaler.rows);
            assert_eq!(ours, reference, "{small} -> {out:?}");
        }
    }

    #[test]
    fn both_passes_are_pillows() {
        // Pillow 13: Image.frombytes("L", size, bytes).resize(new size,
        // Image.LANCZOS). Columns: a ramp, a step and a spike, to (3, 12)
        // and (3, 2): with the width kept, Pillow makes only the vertical
        // pass.
        let small = [0, 255, 10, 40, 255, 10, 90, 0, 250, 200, 0, 10, 255, 0, 10];
        let up = [
            0, 244, 20, 2, 255, 3, 17, 255, 0, 38, 255, 2, 55, 163, 119, 75, 42, 233, 109, 0, 233,
            156, 0, 119, 204, 2, 2, 238, 6, 0, 253, 0, 3, 255, 0, 20,
        ];
        assert_eq!(scaled(&small, (3, 5), (3, 12)).0, up);
        assert_eq!(
            scaled(&small, (3, 5), (3, 2)).0,
            [32, 195, 71, 197, 0, 71],
            "down"
        );
        // Rows: a ramp, a step and a spike, to (12, 3) and (2, 3): only the
        // horizontal pass.
        let rows = [0, 40, 90, 200, 255, 255, 255, 0, 0, 0, 10, 10, 250, 10, 10];
        let wide = [
            0, 2, 17, 38, 55, 75, 109, 156, 204, 238, 253, 255, 244, 255, 255, 255, 163, 42, 0, 0,
            2, 6, 0, 0, 20, 3, 0, 2, 119, 233, 233, 119, 2, 0, 3, 20,
        ];
        assert_eq!(scaled(&rows, (5, 3), (12, 3)).0, wide);
        assert_eq!(scaled(&rows, (5, 3), (2, 3)).0, [32, 197, 195, 0, 71, 71]);
        // Both passes: a blob with soft edges, 6x6 to 14x11.
        let blob = [
            0, 0, 0, 0, 0, 0, 0, 0, 128, 255, 255, 0, 0, 90, 255, 255, 255, 0, 0, 255, 255, 255,
            200, 0, 0, 0, 60, 255, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let blob_up = [
            0, 0, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2, 17, 38, 55, 65, 65, 65, 33, 6,
            0, 5, 0, 0, 0, 29, 83, 143, 193, 222, 222, 221, 115, 22, 0, 4, 0, 0, 15, 88, 170, 229,
            255, 255, 255, 255, 156, 30, 0, 0, 3, 25, 81, 166, 236, 253, 255, 255, 255, 255, 137,
            26, 0, 0, 18, 101, 211, 255, 255, 255, 247, 244, 255, 244, 127, 24, 0, 0, 26, 134, 251,
            248, 248, 246, 254, 255, 250, 193, 97, 17, 0, 2, 13, 65, 117, 108, 127, 198, 255, 255,
            197, 75, 37, 6, 8, 2, 0, 0, 0, 0, 15, 108, 207, 209, 102, 0, 0, 0, 10, 1, 0, 0, 0, 0,
            0, 26, 60, 61, 24, 0, 0, 0, 4, 0, 1, 5, 9, 9, 4, 0, 0, 0, 0, 7, 4, 1, 0,
        ];
        assert_eq!(scaled(&blob, (6, 6), (14, 11)).0, blob_up);
        // A flat mask stays flat at every level.
        for v in [0u8, 1, 127, 254, 255] {
            let (out, _) = scaled(&[v; 16], (4, 4), (13, 9));
            assert!(out.iter().all(|&o| o == v), "{v}: {out:?}");
        }
    }

    #[test]
    fn a_mask_that_is_not_scaled_is_copied() {
        let mask = disc(40);
        let (out, _) = scaled(&mask, (40, 40), (40, 40));
        assert_eq!(out, mask);
    }

    #[test]
    fn downscaling_works_too() {
        let mask = disc(200);
        let (out, scaler) = scaled(&mask, (200, 200), (60, 45));
        assert_eq!(
            out,
            plain_vertical(&scaler.between, 60, &scaler.rows),
            "downscale"
        );
        assert_eq!(out[0], 0);
        assert_eq!(out[22 * 60 + 30], 255, "the disc's centre");
    }
}
