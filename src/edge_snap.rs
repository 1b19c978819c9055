// SPDX-License-Identifier: MPL-2.0
//! Smoothing a moved mask where the picture it now lies on does not back
//! its edges, and keeping them where it does.
//!
//! Moving a mask leaves errors of its own: block edges where the vectors
//! change, pixels that chose another block's vector, uncovered places that
//! took the background's value. A guided filter (He, Sun and Tang, 2010)
//! with the new picture's luma as the guide fits the mask, in each 3x3
//! window, as a linear function of the luma: where the luma is flat the
//! mask is smoothed (a speck or a notch the picture does not show fades),
//! and where the luma has an edge that the mask's edge follows, the fit is
//! nearly exact (the regularisation takes a few levels) and the edge
//! stays hard. Only windows centred on a pixel that moved and whose mask
//! values span [`SPAN`] levels or more are fitted: where nothing moved the
//! mask is the model's own, whose soft edges must not change between
//! frames with their own masks and frames that borrow one; and the
//! model's masks are nowhere quite flat (fitting every window cost 1-2 ms
//! a frame for nothing that shows). A pixel no such window holds keeps its
//! value exactly.
//!
//! `make bench-motion`: a plain blur of the moved mask helps
//! Megamind.avi as much as this does but harms vtest.avi's thin people
//! (1-IoU 0.442 -> 0.462 at 200 ms); this lowers both (0.442 -> 0.434,
//! Megamind.avi 0.098 -> 0.096). Larger windows or a larger
//! regularisation gained less. It costs about 0.35 ms a frame at 320x320
//! on those clips (timed alone, 2 cores of an AMD EPYC).

use crate::motion::luma;

/// The regularisation (luma and mask in 0..1): how large a luma step is
/// an edge worth following (a luma variance of 0.001 in a window is a
/// standard deviation of 8 levels).
const EPSILON: f32 = 0.001;

/// Scratch planes, kept between frames.
#[derive(Debug, Default)]
pub struct EdgeSnap {
    /// The pixels that moved and whose window spans at least [`SPAN`]
    /// levels of the mask, listed and marked: only those windows are
    /// fitted.
    mixed: Vec<usize>,
    mixed_marks: Vec<bool>,
    /// The pixels such a window holds, listed and marked: only they change.
    held: Vec<usize>,
    held_marks: Vec<bool>,
    /// Luma, where held.
    luma: Vec<f32>,
    /// Each mixed window's fit: mask = a x luma + b.
    a: Vec<f32>,
    b: Vec<f32>,
    rows_least: Vec<u8>,
    rows_most: Vec<u8>,
    span: Vec<u8>,
    /// The held pixels' new values, in `held`'s order.
    snapped: Vec<u8>,
}

impl EdgeSnap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies the filter to `mask` (one u8 a pixel, `width` x `height`)
    /// with `rgb`'s luma (packed RGB of the same size) as the guide, in
    /// the windows centred on a pixel `moved` says moved. Sizes that do
    /// not match leave the mask as it is.
    ///
    /// Only the windows that span [`SPAN`] levels or more are fitted; the
    /// others leave each pixel they hold as it is (a = 0, b = that pixel's
    /// value). Only the pixels a fitted window holds change: a moved mask's
    /// edges are a small part of it.
    pub fn apply(
        &mut self,
        mask: &mut [u8],
        rgb: &[u8],
        width: usize,
        height: usize,
        moved: impl Fn(usize) -> bool,
    ) {
        let n = width * height;
        if n == 0 || mask.len() != n || rgb.len() != 3 * n {
            return;
        }
        let (w, h) = (width, height);
        self.find_mixed(mask, w, h, moved);
        if self.mixed.is_empty() {
            return;
        }
        self.held_marks.clear();
        self.held_marks.resize(n, false);
        self.held.clear();
        self.luma.resize(n, 0.0);
        for &k in &self.mixed {
            for j in window(k, w, h) {
                if !self.held_marks[j] {
                    self.held_marks[j] = true;
                    self.held.push(j);
                    self.luma[j] = f32::from(luma(&rgb[3 * j..3 * j + 3])) / 255.0;
                }
            }
        }
        let scale = 1.0 / 9.0;
        self.a.resize(n, 0.0);
        self.b.resize(n, 0.0);
        for &k in &self.mixed {
            let (mut si, mut sp, mut sii, mut sip) = (0f32, 0f32, 0f32, 0f32);
            for j in window(k, w, h) {
                let (i, p) = (self.luma[j], f32::from(mask[j]) / 255.0);
                si += i;
                sp += p;
                sii += i * i;
                sip += i * p;
            }
            let (mean_i, mean_p) = (si * scale, sp * scale);
            let variance = sii * scale - mean_i * mean_i;
            let covariance = sip * scale - mean_i * mean_p;
            let slope = covariance / (variance + EPSILON);
            self.a[k] = slope;
            self.b[k] = mean_p - slope * mean_i;
        }
        // Each held pixel takes the mean of the fits of the windows holding
        // it (its own window's centres, the edges repeated), an unfitted
        // window giving it its own value; every other pixel keeps its value.
        self.snapped.clear();
        for &k in &self.held {
            let own = f32::from(mask[k]) / 255.0;
            let (mut sa, mut sb) = (0f32, 0f32);
            for j in window(k, w, h) {
                if self.mixed_marks[j] {
                    sa += self.a[j];
                    sb += self.b[j];
                } else {
                    sb += own;
                }
            }
            let q = (sa * self.luma[k] + sb) * scale;
            self.snapped
                .push((q * 255.0).round().clamp(0.0, 255.0) as u8);
        }
        for (&k, &v) in self.held.iter().zip(&self.snapped) {
            mask[k] = v;
        }
    }

    /// Lists and marks the pixels that moved and whose window spans
    /// [`SPAN`] levels or more: the least and the most along the rows, then
    /// down the columns.
    fn find_mixed(&mut self, mask: &[u8], w: usize, h: usize, moved: impl Fn(usize) -> bool) {
        let n = w * h;
        let (least, most) = (&mut self.rows_least, &mut self.rows_most);
        least.resize(n, 0);
        most.resize(n, 0);
        for ((row, l), m) in mask
            .chunks_exact(w)
            .zip(least.chunks_exact_mut(w))
            .zip(most.chunks_exact_mut(w))
        {
            extremes_of_three(row, l, m);
        }
        self.mixed.clear();
        self.mixed_marks.clear();
        self.mixed_marks.resize(n, false);
        let span = &mut self.span;
        span.resize(w, 0);
        for y in 0..h {
            let (up, here, down) = (y.saturating_sub(1) * w, y * w, (y + 1).min(h - 1) * w);
            let lows = (
                &least[up..up + w],
                &least[here..here + w],
                &least[down..down + w],
            );
            let highs = (
                &most[up..up + w],
                &most[here..here + w],
                &most[down..down + w],
            );
            for (x, s) in span.iter_mut().enumerate() {
                let l = lows.0[x].min(lows.1[x]).min(lows.2[x]);
                let m = highs.0[x].max(highs.1[x]).max(highs.2[x]);
                *s = m - l;
            }
            for (x, s) in span.iter().enumerate() {
                if *s >= SPAN && moved(here + x) {
                    self.mixed.push(here + x);
                    self.mixed_marks[here + x] = true;
                }
            }
        }
    }
}

/// The least and the most of each pixel of `row` and its two neighbours
/// (the ends repeated).
fn extremes_of_three(row: &[u8], least: &mut [u8], most: &mut [u8]) {
    let w = row.len();
    if w < 3 {
        for x in 0..w {
            let (l, r) = (row[x.saturating_sub(1)], row[(x + 1).min(w - 1)]);
            least[x] = row[x].min(l).min(r);
            most[x] = row[x].max(l).max(r);
        }
        return;
    }
    for (((l, m), mid), (left, right)) in least[1..w - 1]
        .iter_mut()
        .zip(&mut most[1..w - 1])
        .zip(&row[1..w - 1])
        .zip(row[..w - 2].iter().zip(&row[2..]))
    {
        *l = (*mid).min(*left).min(*right);
        *m = (*mid).max(*left).max(*right);
    }
    least[0] = row[0].min(row[1]);
    most[0] = row[0].max(row[1]);
    least[w - 1] = row[w - 1].min(row[w - 2]);
    most[w - 1] = row[w - 1].max(row[w - 2]);
}

/// A window spanning fewer levels of the mask than this counts as flat.
const SPAN: u8 = 16;

/// The 3x3 window around pixel `k` of a `w` x `h` picture, the edges
/// repeated beyond it.
fn window(k: usize, w: usize, h: usize) -> [usize; 9] {
    let (x, y) = (k % w, k / w);
    let columns = [x.saturating_sub(1), x, (x + 1).min(w - 1)];
    let rows = [y.saturating_sub(1) * w, y * w, (y + 1).min(h - 1) * w];
    std::array::from_fn(|i| rows[i / 3] + columns[i % 3])
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: usize = 48;
    const H: usize = 40;

    /// A bright square (columns and rows 16..32) on a dark background.
    fn square_picture() -> Vec<u8> {
        let mut rgb = vec![30u8; 3 * W * H];
        for y in 16..32 {
            for x in 16..32 {
                rgb[3 * (y * W + x)..3 * (y * W + x) + 3].copy_from_slice(&[220, 200, 180]);
            }
        }
        rgb
    }

    /// A hard mask of columns `x0..x1`, rows `y0..y1`.
    fn mask_of(x0: usize, x1: usize, y0: usize, y1: usize) -> Vec<u8> {
        (0..W * H)
            .map(|i| {
                let (x, y) = (i % W, i / W);
                if (x0..x1).contains(&x) && (y0..y1).contains(&y) {
                    255
                } else {
                    0
                }
            })
            .collect()
    }

    /// Whether the mask has another value within two pixels of (x, y).
    fn near_an_edge(mask: &[u8], x: usize, y: usize) -> bool {
        let value = mask[y * W + x];
        (y.saturating_sub(2)..(y + 3).min(H))
            .any(|ny| (x.saturating_sub(2)..(x + 3).min(W)).any(|nx| mask[ny * W + nx] != value))
    }

    #[test]
    fn a_mask_whole_around_a_pixel_keeps_its_value_there() {
        let rgb = square_picture();
        let before = mask_of(18, 30, 17, 33);
        let mut mask = before.clone();
        EdgeSnap::new().apply(&mut mask, &rgb, W, H, |_| true);
        let mut changed = 0;
        for y in 0..H {
            for x in 0..W {
                if !near_an_edge(&before, x, y) {
                    assert_eq!(mask[y * W + x], before[y * W + x], "({x}, {y})");
                } else if mask[y * W + x] != before[y * W + x] {
                    changed += 1;
                }
            }
        }
        assert!(changed > 0, "the edges were left as they were");
    }

    #[test]
    fn a_mask_on_the_pictures_edges_keeps_them() {
        // Where mask and luma change together, each window's fit is exact:
        // the edges stay hard (a blur would soften them to 1/3 and 2/3).
        let rgb = square_picture();
        let before = mask_of(16, 32, 16, 32);
        let mut mask = before.clone();
        EdgeSnap::new().apply(&mut mask, &rgb, W, H, |_| true);
        for (i, (a, b)) in mask.iter().zip(&before).enumerate() {
            assert!(a.abs_diff(*b) <= 4, "({}, {}): {a} where {b}", i % W, i / W);
        }
    }

    #[test]
    fn specks_and_notches_the_picture_does_not_show_are_smoothed_away() {
        // Moving leaves such errors (a block's wrong vector, an uncovered
        // place): the picture is flat there, so nothing backs them.
        let rgb = square_picture();
        let mut mask = mask_of(16, 32, 16, 32);
        mask[8 * W + 8] = 255; // a speck in the flat background
        mask[24 * W + 24] = 0; // a notch inside the flat square
        EdgeSnap::new().apply(&mut mask, &rgb, W, H, |_| true);
        assert!(mask[8 * W + 8] < 64, "the speck is {}", mask[8 * W + 8]);
        assert!(
            mask[24 * W + 24] > 192,
            "the notch is {}",
            mask[24 * W + 24]
        );
    }

    #[test]
    fn where_nothing_moved_the_mask_is_left_exactly() {
        let rgb = square_picture();
        let mut before = mask_of(16, 32, 16, 32);
        before[8 * W + 8] = 255;
        before[24 * W + 24] = 0;
        let mut mask = before.clone();
        EdgeSnap::new().apply(&mut mask, &rgb, W, H, |_| false);
        assert_eq!(mask, before);
        // Only the left part moved: the speck there fades, and two pixels
        // past it (the windows it centres reach one, their pixels two) the
        // mask keeps every value, the notch too.
        EdgeSnap::new().apply(&mut mask, &rgb, W, H, |k| k % W < 20);
        assert!(mask[8 * W + 8] < 64, "the speck is {}", mask[8 * W + 8]);
        for (k, (a, b)) in mask.iter().zip(&before).enumerate() {
            if k % W >= 22 {
                assert_eq!(a, b, "({}, {})", k % W, k / W);
            }
        }
    }

    #[test]
    fn a_mask_spanning_few_levels_is_left_exactly() {
        // The model's faint background: a few levels' ripple is no edge
        // (fitted, this sawtooth would be smoothed).
        let rgb = square_picture();
        let before: Vec<u8> = (0..W * H).map(|i| (i % W % 5 * 3) as u8).collect();
        let mut mask = before.clone();
        EdgeSnap::new().apply(&mut mask, &rgb, W, H, |_| true);
        assert_eq!(mask, before);
    }

    #[test]
    fn a_mask_of_another_size_is_left_as_it_is() {
        let rgb = square_picture();
        let before = mask_of(17, 33, 16, 32);
        let mut mask = before.clone();
        EdgeSnap::new().apply(&mut mask, &rgb[..3 * W * (H - 1)], W, H, |_| true);
        assert_eq!(mask, before);
    }
}
