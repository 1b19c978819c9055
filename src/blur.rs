// SPDX-License-Identifier: MPL-2.0
//! A fast blur for `mode=blur`: two box blurs in a row (a tent, close to a
//! Gaussian to the eye), each separable, with running sums: the cost does
//! not depend on the radius. Rows, and blocks of rows, run in parallel.
//! No GStreamer types.

use fast_image_resize::pixels::U8x4;
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use rayon::prelude::*;

use crate::image_view::{StridedImage, StridedImageMut};
use crate::resample::ResampleError;

/// The blur's radius, in pixels of the copy it works on (see [`Blurrer`]).
const SMALL_RADIUS: usize = 4;
/// The most the copy is scaled down.
const MAX_FACTOR: usize = 8;

/// Blurs a frame through a copy scaled down by about radius / 4: a blur of
/// radius r keeps no detail finer than r pixels, so the copy loses nothing
/// the blur would have kept, and the blur costs the square of the factor
/// less (12 px at 720x528: 25 ms down to a few on one core, which a frame
/// that has to leave in time needs).
#[derive(Default)]
pub struct Blurrer {
    resizer: Resizer,
    small: Vec<u8>,
    small_blurred: Vec<u8>,
    scratch: Vec<u8>,
}

impl Blurrer {
    /// Blurs a packed 4-byte-per-pixel picture (`width` x `height`, rows
    /// `stride` bytes apart) into `out` (rows `4 * width` bytes), about as a
    /// two-pass box blur of `radius` would.
    pub fn blur(
        &mut self,
        data: &[u8],
        (width, height, stride): (usize, usize, usize),
        radius: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), ResampleError> {
        let factor = (radius / SMALL_RADIUS).clamp(1, MAX_FACTOR);
        if factor == 1 || width < 2 * factor || height < 2 * factor {
            blur_rgba(data, width, height, stride, radius, out, &mut self.scratch);
            return Ok(());
        }
        let size = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let (sw, sh) = (width.div_ceil(factor), height.div_ceil(factor));
        self.small.resize(4 * sw * sh, 0);
        let src = StridedImage::<U8x4>::new(data, size(width), size(height), stride)?;
        let mut small = StridedImageMut::<U8x4>::new(&mut self.small, size(sw), size(sh), 4 * sw)?;
        // Box: each small pixel is the mean of the ones it covers.
        let down = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(FilterType::Box))
            .use_alpha(false);
        let up = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
            .use_alpha(false);
        self.resizer.resize_typed(&src, &mut small, &down)?;
        let small_radius = radius.div_ceil(factor);
        blur_rgba(
            &self.small,
            sw,
            sh,
            4 * sw,
            small_radius,
            &mut self.small_blurred,
            &mut self.scratch,
        );
        out.resize(4 * width * height, 0);
        let blurred = StridedImage::<U8x4>::new(&self.small_blurred, size(sw), size(sh), 4 * sw)?;
        let mut dst = StridedImageMut::<U8x4>::new(out, size(width), size(height), 4 * width)?;
        Ok(self.resizer.resize_typed(&blurred, &mut dst, &up)?)
    }
}

/// The fewest rows a block of the vertical pass takes: each block first
/// sums a whole window of rows.
const ROWS_PER_BLOCK: usize = 16;

/// Blurs a packed 4-byte-per-pixel picture (`width` x `height`, rows
/// `stride` bytes apart) into `out` (rows `4 * width` bytes, resized as
/// needed), with box radius `radius` (each box spans 2 x radius + 1 pixels).
pub fn blur_rgba(
    data: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    radius: usize,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) {
    let row = 4 * width;
    out.resize(row * height, 0);
    scratch.resize(row * height, 0);
    if width == 0 || height == 0 {
        return;
    }
    for (dst, src) in out.chunks_exact_mut(row).zip(data.chunks(stride)) {
        dst.copy_from_slice(&src[..row]);
    }
    if radius == 0 {
        return;
    }
    for _ in 0..2 {
        horizontal(out, scratch, width, radius);
        vertical(scratch, out, width, height, radius);
    }
}

/// Box blur of every row of `src` into `dst` (both packed).
fn horizontal(src: &[u8], dst: &mut [u8], width: usize, radius: usize) {
    let row = 4 * width;
    let span = (2 * radius + 1) as u32;
    let last = width - 1;
    dst.par_chunks_exact_mut(row)
        .zip(src.par_chunks_exact(row))
        .for_each(|(d, s)| {
            let px = |x: usize, c: usize| u32::from(s[4 * x.min(last) + c]);
            let mut sum = [0u32; 4];
            for (c, total) in sum.iter_mut().enumerate() {
                // The window around x = 0, the left edge repeated.
                *total = px(0, c) * radius as u32 + (0..=radius).map(|x| px(x, c)).sum::<u32>();
            }
            for x in 0..width {
                for c in 0..4 {
                    d[4 * x + c] = ((sum[c] + span / 2) / span) as u8;
                    let enter = px(x + radius + 1, c);
                    let leave = px(x.saturating_sub(radius), c);
                    sum[c] = sum[c] + enter - leave;
                }
            }
        });
}

/// Box blur of every column of `src` into `dst` (both packed). Blocks of
/// rows run in parallel, each sliding its window of rows down from the
/// block's top: memory is read row by row.
fn vertical(src: &[u8], dst: &mut [u8], width: usize, height: usize, radius: usize) {
    let row = 4 * width;
    let span = (2 * radius + 1) as u32;
    let last = height - 1;
    let block = height
        .div_ceil(4 * rayon::current_num_threads().max(1))
        .max(ROWS_PER_BLOCK);
    let at = |y: isize| &src[row * (y.max(0) as usize).min(last)..][..row];
    dst.par_chunks_mut(row * block)
        .enumerate()
        .for_each(|(b, rows)| {
            let y0 = (b * block) as isize;
            let r = radius as isize;
            let mut sum = vec![0u32; row];
            for y in y0 - r..=y0 + r {
                for (s, &v) in sum.iter_mut().zip(at(y)) {
                    *s += u32::from(v);
                }
            }
            for (i, d) in rows.chunks_exact_mut(row).enumerate() {
                let y = y0 + i as isize;
                for (d, s) in d.iter_mut().zip(&sum) {
                    *d = ((s + span / 2) / span) as u8;
                }
                for ((s, &e), &l) in sum.iter_mut().zip(at(y + r + 1)).zip(at(y - r)) {
                    *s = *s + u32::from(e) - u32::from(l);
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(width: usize, height: usize, stride: usize) -> Vec<u8> {
        let mut data = vec![0u8; stride * height];
        for y in 0..height {
            for x in 0..width {
                let v = if (x / 4 + y / 4) % 2 == 0 { 250 } else { 10 };
                data[y * stride + 4 * x..][..4].copy_from_slice(&[v, 255 - v, v / 2, 255]);
            }
        }
        data
    }

    #[test]
    fn a_flat_picture_stays_flat() {
        let data = vec![77u8; 4 * 9 * 5];
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        blur_rgba(&data, 9, 5, 36, 3, &mut out, &mut scratch);
        assert!(out.iter().all(|&v| v == 77));
    }

    #[test]
    fn radius_zero_copies_and_drops_the_padding() {
        let data = picture(5, 3, 24);
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        blur_rgba(&data, 5, 3, 24, 0, &mut out, &mut scratch);
        for y in 0..3 {
            assert_eq!(out[20 * y..20 * (y + 1)], data[24 * y..24 * y + 20]);
        }
    }

    #[test]
    fn it_matches_a_plain_two_pass_box_blur() {
        // Several row blocks, odd sizes, padded rows.
        let (w, h, stride, r) = (150usize, 37usize, 150 * 4 + 8, 5usize);
        let data = picture(w, h, stride);
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        blur_rgba(&data, w, h, stride, r, &mut out, &mut scratch);

        let mut img: Vec<u32> = (0..h)
            .flat_map(|y| {
                data[y * stride..y * stride + 4 * w]
                    .iter()
                    .map(|&v| u32::from(v))
            })
            .collect();
        let span = (2 * r + 1) as u32;
        let round = |s: u32| (s + span / 2) / span;
        for _ in 0..2 {
            let mut tmp = vec![0u32; img.len()];
            for y in 0..h {
                for x in 0..w {
                    for c in 0..4 {
                        let s: u32 = (0..span as usize)
                            .map(|k| img[4 * (y * w + (x + k).saturating_sub(r).min(w - 1)) + c])
                            .sum();
                        tmp[4 * (y * w + x) + c] = round(s);
                    }
                }
            }
            for y in 0..h {
                for x in 0..w {
                    for c in 0..4 {
                        let s: u32 = (0..span as usize)
                            .map(|k| tmp[4 * ((y + k).saturating_sub(r).min(h - 1) * w + x) + c])
                            .sum();
                        img[4 * (y * w + x) + c] = round(s);
                    }
                }
            }
        }
        let expected: Vec<u8> = img.into_iter().map(|v| v as u8).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn the_scaled_down_blur_is_close_to_the_full_one() {
        // Coarse blocks, as a background is after a 12 px blur.
        let (w, h, stride) = (203usize, 131usize, 203 * 4 + 12);
        let mut data = vec![0u8; stride * h];
        for y in 0..h {
            for x in 0..w {
                let v = if (x / 24 + y / 24) % 2 == 0 { 230 } else { 20 };
                data[y * stride + 4 * x..][..4].copy_from_slice(&[v, 255 - v, v / 2, 255]);
            }
        }
        let (mut full, mut scratch, mut fast) = (Vec::new(), Vec::new(), Vec::new());
        blur_rgba(&data, w, h, stride, 12, &mut full, &mut scratch);
        Blurrer::default()
            .blur(&data, (w, h, stride), 12, &mut fast)
            .unwrap();
        assert_eq!(fast.len(), full.len());
        let mean: f64 = full
            .iter()
            .zip(&fast)
            .map(|(&a, &b)| f64::from(a.abs_diff(b)))
            .sum::<f64>()
            / full.len() as f64;
        assert!(mean < 3.0, "mean difference {mean:.2} levels");
        // A small radius blurs the frame itself.
        let (mut direct, mut small) = (Vec::new(), Vec::new());
        blur_rgba(&data, w, h, stride, 3, &mut direct, &mut scratch);
        Blurrer::default()
            .blur(&data, (w, h, stride), 3, &mut small)
            .unwrap();
        assert_eq!(direct, small);
    }

    #[test]
    fn edges_are_smoothed() {
        let (w, h) = (32usize, 32usize);
        let data = picture(w, h, 4 * w);
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        blur_rgba(&data, w, h, 4 * w, 4, &mut out, &mut scratch);
        let contrast = |p: &[u8]| {
            let reds: Vec<u8> = p.chunks_exact(4).map(|px| px[0]).collect();
            reds.iter().max().unwrap() - reds.iter().min().unwrap()
        };
        assert_eq!(contrast(&data), 240);
        assert!(contrast(&out) < 120, "{}", contrast(&out));
    }
}
