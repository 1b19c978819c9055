// SPDX-License-Identifier: MPL-2.0
//! Model output -> output frame.
//!
//! The prediction is min-max normalised per frame (never per batch: that
//! would make one frame's mask depend on its neighbours) and truncated to u8,
//! as rembg does; the u8 mask is scaled to the frame's size with Lanczos3, as
//! Pillow's LANCZOS; then the output is built as the mode says.

use std::ops::Range;

use crate::image_view::{LayoutError, check_bytes};
use crate::mask_scale::{ChunkSink, MaskScaler, Rows, WriteMask};
use crate::prep::{Frame, PixelLayout};

/// What the output frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// RGBA: the source pixel where the mask is above the threshold, else the
    /// fill colour (u2net-fast's apply_mask).
    #[default]
    Composite,
    /// GRAY8: the soft mask (rembg's only_mask, u2net-fast's apply_mask=False).
    Mask,
    /// RGBA: the source colour with the soft mask as alpha (rembg's cut-out,
    /// without darkening the colour at the edges).
    Alpha,
    /// RGBA, opaque: the subject as it is over its own background blurred,
    /// blended by the soft mask (video calls' background blur).
    Blur,
}

/// Settings of the composite and blur modes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Composite {
    /// Mask values strictly above `threshold` x 255 keep the source pixel.
    pub threshold: f64,
    /// Fill colour as 0xAARRGGBB.
    pub fill_argb: u32,
    /// Width (0..1 of the mask's range) of the soft edge centred on the
    /// threshold: 0 is a hard cut (u2net-fast), more blends source and fill
    /// over that band, so edges are anti-aliased.
    pub feather: f64,
    /// Box radius, in pixels, of `Mode::Blur`'s background blur.
    pub blur_radius: u32,
}

impl Default for Composite {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            fill_argb: 0,
            feather: 0.0,
            blur_radius: 12,
        }
    }
}

/// Min-max normalises one frame's prediction into u8, truncating as numpy's
/// `astype(uint8)` does. A flat prediction gives an all-zero mask.
pub fn prediction_to_mask(prediction: &[f32], mask: &mut [u8]) {
    let (min, max) = prediction
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let range = max - min;
    if !(range > 0.0 && range.is_finite()) {
        mask.fill(0);
        return;
    }
    for (m, &p) in mask.iter_mut().zip(prediction) {
        // `as u8` saturates and maps NaN to 0.
        *m = ((p - min) / range * 255.0) as u8;
    }
}

/// A writable output frame.
pub struct OutFrame<'a> {
    pub data: &'a mut [u8],
    pub width: u32,
    pub height: u32,
    pub stride: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatteError {
    #[error("output frame does not fit its buffer: {0}")]
    Layout(#[from] LayoutError),
    #[error("input frame is {input_w}x{input_h}, output frame {output_w}x{output_h}")]
    SizeMismatch {
        input_w: u32,
        input_h: u32,
        output_w: u32,
        output_h: u32,
    },
    #[error("mode {0:?} needs the input frame")]
    NoInput(Mode),
    #[error("blurring the background failed: {0}")]
    Blur(String),
}

/// Builds output frames; keeps its scratch buffers between frames.
///
/// The RGBA modes work in two steps, so that a stream need not hold its
/// input frames while their masks are computed: [`to_rgba`] copies the
/// frame into the output buffer when it arrives, and [`Matter::apply`]
/// applies the mask to that buffer in place when the mask is ready.
#[derive(Default)]
pub struct Matter {
    scaler: MaskScaler,
    /// The full-size mask, for `Mode::Blur`.
    mask: Vec<u8>,
    /// The blurred frame and the blur's tools, for `Mode::Blur`.
    blurred: Vec<u8>,
    blurrer: crate::blur::Blurrer,
}

impl Matter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes the output of `mode` for one frame in one call.
    ///
    /// `small_mask` is the model-size u8 mask (`small_width` x `small_height`),
    /// `input` the source frame (not needed for `Mode::Mask`).
    pub fn render(
        &mut self,
        mode: Mode,
        small_mask: &[u8],
        small_size: (u32, u32),
        input: Option<&Frame>,
        mut out: OutFrame,
        composite: Composite,
    ) -> Result<(), MatteError> {
        if mode != Mode::Mask {
            let input = input.ok_or(MatteError::NoInput(mode))?;
            to_rgba(input, out.reborrow())?;
        }
        self.apply(mode, small_mask, small_size, out, composite)
    }

    /// Applies a mask to an output frame: `Mode::Mask` writes the scaled
    /// mask (GRAY8); the RGBA modes expect the frame's colours already in
    /// `out` (see [`to_rgba`]) and set alpha (`Alpha`), replace the
    /// background with the fill colour (`Composite`) or blur it (`Blur`).
    pub fn apply(
        &mut self,
        mode: Mode,
        small_mask: &[u8],
        small_size: (u32, u32),
        out: OutFrame,
        composite: Composite,
    ) -> Result<(), MatteError> {
        let rows = Rows::from;
        match mode {
            Mode::Mask => self.scale_mask(small_mask, small_size, rows(out)),
            Mode::Alpha => self.scale_into(small_mask, small_size, rows(out), &SetAlpha),
            Mode::Composite if composite.feather > 0.0 => {
                self.scale_into(small_mask, small_size, rows(out), &Feather::new(composite))
            }
            Mode::Composite => {
                self.scale_into(small_mask, small_size, rows(out), &Fill::new(composite))
            }
            Mode::Blur => {
                let (w, h) = (out.width, out.height);
                check_bytes(w, h, out.stride, 4, out.data.len())?;
                let mut mask = std::mem::take(&mut self.mask);
                mask.resize(w as usize * h as usize, 0);
                let blurred = self
                    .scale_mask(
                        small_mask,
                        small_size,
                        Rows {
                            data: &mut mask,
                            width: w,
                            height: h,
                            stride: w as usize,
                        },
                    )
                    .and_then(|()| self.blur_background(&mask, out, composite.blur_radius));
                self.mask = mask;
                blurred
            }
        }
    }

    fn scale_into(
        &mut self,
        small_mask: &[u8],
        small_size: (u32, u32),
        out: Rows,
        sink: &impl ChunkSink,
    ) -> Result<(), MatteError> {
        Ok(self.scaler.scale_into(small_mask, small_size, out, sink)?)
    }

    /// Blends `out` over a blurred copy of itself by `mask`; opaque.
    fn blur_background(
        &mut self,
        mask: &[u8],
        out: OutFrame,
        radius: u32,
    ) -> Result<(), MatteError> {
        use rayon::prelude::*;
        let (w, h) = (out.width as usize, out.height as usize);
        if w == 0 || out.stride == 0 {
            return Ok(());
        }
        if let Err(e) = self.blurrer.blur(
            out.data,
            (w, h, out.stride),
            radius as usize,
            &mut self.blurred,
        ) {
            return Err(MatteError::Blur(e.to_string()));
        }
        out.data
            .par_chunks_mut(out.stride)
            .zip(mask.par_chunks(w))
            .zip(self.blurred.par_chunks(4 * w))
            .take(h)
            .for_each(|((dst, m), back)| {
                for ((d, b), &a) in dst[..4 * w]
                    .chunks_exact_mut(4)
                    .zip(back.chunks_exact(4))
                    .zip(m)
                {
                    let (a, na) = (u32::from(a), 255 - u32::from(a));
                    for c in 0..3 {
                        d[c] = ((u32::from(d[c]) * a + u32::from(b[c]) * na + 127) / 255) as u8;
                    }
                    d[3] = 255;
                }
            });
        Ok(())
    }

    /// Scales a model-size mask to GRAY8 rows of `dst`'s size with Lanczos3.
    pub fn scale_mask(
        &mut self,
        small_mask: &[u8],
        small_size: (u32, u32),
        dst: Rows,
    ) -> Result<(), MatteError> {
        self.scale_into(small_mask, small_size, dst, &WriteMask)
    }
}

impl<'a> From<OutFrame<'a>> for Rows<'a> {
    fn from(out: OutFrame<'a>) -> Self {
        Rows {
            data: out.data,
            width: out.width,
            height: out.height,
            stride: out.stride,
        }
    }
}

impl OutFrame<'_> {
    /// The same frame, borrowed again.
    pub fn reborrow(&mut self) -> OutFrame<'_> {
        OutFrame {
            data: self.data,
            width: self.width,
            height: self.height,
            stride: self.stride,
        }
    }
}

/// `A` for layouts without alpha.
const NO_ALPHA: usize = usize::MAX;

/// Calls `kernel` with the frame's layout as constants, so that the
/// per-pixel loops compile to straight-line code for each format (about 3x
/// faster than reading the layout per pixel).
macro_rules! with_layout {
    ($layout:expr, $kernel:ident($($arg:expr),*)) => {{
        let l: PixelLayout = $layout;
        match (l.bytes_per_pixel, l.rgb, l.alpha) {
            (3, [0, 1, 2], None) => $kernel::<3, 0, 1, 2, NO_ALPHA>($($arg),*),
            (3, [2, 1, 0], None) => $kernel::<3, 2, 1, 0, NO_ALPHA>($($arg),*),
            (4, [0, 1, 2], Some(3)) => $kernel::<4, 0, 1, 2, 3>($($arg),*),
            (4, [2, 1, 0], Some(3)) => $kernel::<4, 2, 1, 0, 3>($($arg),*),
            (4, [1, 2, 3], Some(0)) => $kernel::<4, 1, 2, 3, 0>($($arg),*),
            (4, [3, 2, 1], Some(0)) => $kernel::<4, 3, 2, 1, 0>($($arg),*),
            (4, [0, 1, 2], None) => $kernel::<4, 0, 1, 2, NO_ALPHA>($($arg),*),
            (4, [2, 1, 0], None) => $kernel::<4, 2, 1, 0, NO_ALPHA>($($arg),*),
            (4, [1, 2, 3], None) => $kernel::<4, 1, 2, 3, NO_ALPHA>($($arg),*),
            (4, [3, 2, 1], None) => $kernel::<4, 3, 2, 1, NO_ALPHA>($($arg),*),
            _ => Err(MatteError::Layout(LayoutError {
                width: 0,
                height: 0,
                stride: 0,
                pixel_size: l.bytes_per_pixel,
                len: 0,
            })),
        }
    }};
}

/// Copies a frame of any packed layout into an RGBA frame of the same size:
/// its colours, and its alpha where it has one (255 elsewhere).
pub fn to_rgba(input: &Frame, out: OutFrame) -> Result<(), MatteError> {
    if (input.width, input.height) != (out.width, out.height) {
        return Err(MatteError::SizeMismatch {
            input_w: input.width,
            input_h: input.height,
            output_w: out.width,
            output_h: out.height,
        });
    }
    check_bytes(
        input.width,
        input.height,
        input.stride,
        input.layout.bytes_per_pixel,
        input.data.len(),
    )?;
    check_bytes(out.width, out.height, out.stride, 4, out.data.len())?;
    with_layout!(input.layout, to_rgba_rows(input, out))
}

fn to_rgba_rows<
    const BPP: usize,
    const R: usize,
    const G: usize,
    const B: usize,
    const A: usize,
>(
    input: &Frame,
    out: OutFrame,
) -> Result<(), MatteError> {
    let in_row = input.width as usize * BPP;
    let out_row = out.width as usize * 4;
    for_each_band(
        out.height as usize,
        (input.data, input.stride),
        out,
        |src, dst| {
            for (s, d) in src[..in_row]
                .chunks_exact(BPP)
                .zip(dst[..out_row].chunks_exact_mut(4))
            {
                let alpha = if A < BPP { s[A.min(BPP - 1)] } else { 255 };
                d.copy_from_slice(&[s[R], s[G], s[B], alpha]);
            }
        },
    );
    Ok(())
}

/// Runs `row` on every (source row, output row), bands of rows in parallel:
/// a 4K frame is 8 M pixels. The source is `(bytes, stride)`.
fn for_each_band(
    height: usize,
    (src, src_stride): (&[u8], usize),
    out: OutFrame,
    row: impl Fn(&[u8], &mut [u8]) + Sync,
) {
    use rayon::prelude::*;
    if height == 0 || src_stride == 0 || out.stride == 0 {
        return;
    }
    let band = height
        .div_ceil(rayon::current_num_threads().max(1) * 4)
        .max(1);
    let out_stride = out.stride;
    let bands: Vec<_> = src
        .chunks(src_stride * band)
        .zip(out.data.chunks_mut(out_stride * band))
        .take(height.div_ceil(band))
        .collect();
    bands.into_par_iter().for_each(|(s, d)| {
        for (s, d) in s.chunks(src_stride).zip(d.chunks_mut(out_stride)) {
            row(s, d);
        }
    });
}

/// Sets alpha to the mask.
struct SetAlpha;

impl ChunkSink for SetAlpha {
    fn bytes_per_pixel(&self) -> usize {
        4
    }

    fn bounded(&self, row: &mut [u8], x: Range<usize>, lo: u8, hi: u8) -> bool {
        if lo != hi {
            return false;
        }
        for d in row[4 * x.start..4 * x.end].chunks_exact_mut(4) {
            d[3] = lo;
        }
        true
    }

    fn exact(&self, row: &mut [u8], x: Range<usize>, values: &[u8]) {
        for (d, &a) in row[4 * x.start..4 * x.end].chunks_exact_mut(4).zip(values) {
            d[3] = a;
        }
    }
}

/// How much of the source a mask value keeps, 0..=256, with a soft band of
/// `feather` around the threshold; never less for a larger value.
fn feather_table(composite: Composite) -> [u32; 256] {
    let half = (composite.feather / 2.0).max(1e-6);
    std::array::from_fn(|m| {
        let t = ((m as f64 / 255.0 - composite.threshold) / half * 0.5 + 0.5).clamp(0.0, 1.0);
        // Smoothstep: no kink where the band starts and ends.
        (t * t * (3.0 - 2.0 * t) * 256.0).round() as u32
    })
}

/// The source over the fill colour, the source's share given by the mask
/// through [`feather_table`]; colours weighted by alpha, as "over" does, so
/// a transparent fill does not darken the edge.
struct Feather {
    keep: [u32; 256],
    fill: [u32; 3],
    fill_alpha: u32,
    /// What a pixel the source has no share of becomes.
    filled: [u8; 4],
}

impl Feather {
    fn new(composite: Composite) -> Self {
        let [fa, fr, fg, fb] = composite.fill_argb.to_be_bytes();
        Self {
            keep: feather_table(composite),
            fill: [u32::from(fr), u32::from(fg), u32::from(fb)],
            fill_alpha: u32::from(fa),
            filled: if fa == 0 { [0; 4] } else { [fr, fg, fb, fa] },
        }
    }
}

impl ChunkSink for Feather {
    fn bytes_per_pixel(&self) -> usize {
        4
    }

    fn bounded(&self, row: &mut [u8], x: Range<usize>, lo: u8, hi: u8) -> bool {
        if self.keep[usize::from(lo)] == 256 {
            return true;
        }
        if self.keep[usize::from(hi)] == 0 {
            for d in row[4 * x.start..4 * x.end].chunks_exact_mut(4) {
                d.copy_from_slice(&self.filled);
            }
            return true;
        }
        false
    }

    fn exact(&self, row: &mut [u8], x: Range<usize>, values: &[u8]) {
        for (d, &mv) in row[4 * x.start..4 * x.end].chunks_exact_mut(4).zip(values) {
            let k = self.keep[usize::from(mv)];
            if k == 256 {
                continue;
            }
            let src_a = u32::from(d[3]) * k;
            let fill_a = self.fill_alpha * (256 - k);
            let out_a = src_a + fill_a;
            if out_a == 0 {
                d.copy_from_slice(&[0, 0, 0, 0]);
                continue;
            }
            for (d, &fill) in d[..3].iter_mut().zip(&self.fill) {
                *d = ((u32::from(*d) * src_a + fill * fill_a + out_a / 2) / out_a) as u8;
            }
            d[3] = ((out_a + 128) / 256) as u8;
        }
    }
}

/// Keeps the pixels whose mask is above the threshold, paints the rest with
/// the fill colour. A chunk wholly above is not touched at all.
struct Fill {
    /// All ones where the pixel is kept: a select without a branch.
    keep: [u32; 256],
    fill: u32,
}

impl Fill {
    fn new(composite: Composite) -> Self {
        let [fa, fr, fg, fb] = composite.fill_argb.to_be_bytes();
        Self {
            keep: std::array::from_fn(|m| {
                if m as f64 / 255.0 > composite.threshold {
                    u32::MAX
                } else {
                    0
                }
            }),
            fill: u32::from_ne_bytes([fr, fg, fb, fa]),
        }
    }
}

impl ChunkSink for Fill {
    fn bytes_per_pixel(&self) -> usize {
        4
    }

    fn bounded(&self, row: &mut [u8], x: Range<usize>, lo: u8, hi: u8) -> bool {
        if self.keep[usize::from(lo)] != 0 {
            return true;
        }
        if self.keep[usize::from(hi)] == 0 {
            for d in row[4 * x.start..4 * x.end].chunks_exact_mut(4) {
                d.copy_from_slice(&self.fill.to_ne_bytes());
            }
            return true;
        }
        false
    }

    fn exact(&self, row: &mut [u8], x: Range<usize>, values: &[u8]) {
        for (d, &mv) in row[4 * x.start..4 * x.end].chunks_exact_mut(4).zip(values) {
            let px = u32::from_ne_bytes([d[0], d[1], d[2], d[3]]);
            let k = self.keep[usize::from(mv)];
            d.copy_from_slice(&((px & k) | (self.fill & !k)).to_ne_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prep::PixelLayout;

    #[test]
    fn prediction_is_min_max_normalised_and_truncated() {
        let pred = [0.25f32, 0.5, 1.25, 0.25 + 0.003];
        let mut mask = [0u8; 4];
        prediction_to_mask(&pred, &mut mask);
        // (0.25 / 1.0) * 255 = 63.75 -> 63; 0.003 * 255 = 0.765 -> 0.
        assert_eq!(mask, [0, 63, 255, 0]);
    }

    #[test]
    fn flat_prediction_gives_zero_mask() {
        let mut mask = [9u8; 3];
        prediction_to_mask(&[0.7; 3], &mut mask);
        assert_eq!(mask, [0, 0, 0]);
        prediction_to_mask(&[f32::NAN, 1.0, 2.0], &mut mask);
        assert_eq!(mask[1..], [0, 255]);
    }

    fn frame_2x2(layout: PixelLayout, stride: usize) -> Vec<u8> {
        let mut data = vec![0u8; stride * 2];
        let colours = [[10u8, 20, 30], [40, 50, 60], [70, 80, 90], [100, 110, 120]];
        for y in 0..2 {
            for x in 0..2 {
                let px = &mut data[y * stride + x * layout.bytes_per_pixel..];
                for c in 0..3 {
                    px[layout.rgb[c]] = colours[y * 2 + x][c];
                }
                if let Some(a) = layout.alpha {
                    px[a] = 200;
                }
            }
        }
        data
    }

    #[test]
    fn composite_keeps_pixels_above_threshold_and_fills_the_rest() {
        // A 2x2 mask at the output size is copied as is by the scaler.
        let small = [255u8, 0, 128, 127];
        for (layout, alpha) in [(PixelLayout::BGRX, 255u8), (PixelLayout::ARGB, 200)] {
            let input_data = frame_2x2(layout, 12);
            let input = Frame {
                data: &input_data,
                width: 2,
                height: 2,
                stride: 12,
                layout,
            };
            let mut out = vec![0u8; 2 * 12];
            let mut m = Matter::new();
            m.render(
                Mode::Composite,
                &small,
                (2, 2),
                Some(&input),
                OutFrame {
                    data: &mut out,
                    width: 2,
                    height: 2,
                    stride: 12,
                },
                Composite {
                    threshold: 0.5,
                    fill_argb: 0x80FF0102,
                    ..Default::default()
                },
            )
            .unwrap();
            assert_eq!(out[0..4], [10, 20, 30, alpha]);
            assert_eq!(out[4..8], [0xFF, 0x01, 0x02, 0x80]);
            // 128/255 > 0.5, 127/255 is not.
            assert_eq!(out[12..16], [70, 80, 90, alpha]);
            assert_eq!(out[16..20], [0xFF, 0x01, 0x02, 0x80]);
        }
    }

    #[test]
    fn alpha_mode_puts_the_soft_mask_in_alpha() {
        let small = [255u8, 0, 128, 7];
        let input_data = frame_2x2(PixelLayout::RGB, 8);
        let input = Frame {
            data: &input_data,
            width: 2,
            height: 2,
            stride: 8,
            layout: PixelLayout::RGB,
        };
        let mut out = vec![0u8; 16];
        Matter::new()
            .render(
                Mode::Alpha,
                &small,
                (2, 2),
                Some(&input),
                OutFrame {
                    data: &mut out,
                    width: 2,
                    height: 2,
                    stride: 8,
                },
                Composite::default(),
            )
            .unwrap();
        assert_eq!(
            out,
            [
                10, 20, 30, 255, 40, 50, 60, 0, 70, 80, 90, 128, 100, 110, 120, 7
            ]
        );
    }

    #[test]
    fn mask_mode_scales_into_a_padded_gray_frame() {
        // Upscaling a flat mask keeps it flat and leaves the padding alone.
        let small = [77u8; 4 * 4];
        let mut out = vec![1u8; 8 * 3];
        Matter::new()
            .render(
                Mode::Mask,
                &small,
                (4, 4),
                None,
                OutFrame {
                    data: &mut out,
                    width: 7,
                    height: 3,
                    stride: 8,
                },
                Composite::default(),
            )
            .unwrap();
        for row in out.chunks(8) {
            assert_eq!(row[..7], [77; 7]);
            assert_eq!(row[7], 1);
        }
    }

    #[test]
    fn size_mismatch_is_reported() {
        let input_data = frame_2x2(PixelLayout::RGB, 8);
        let input = Frame {
            data: &input_data,
            width: 2,
            height: 2,
            stride: 8,
            layout: PixelLayout::RGB,
        };
        let mut out = vec![0u8; 64];
        let e = Matter::new()
            .render(
                Mode::Alpha,
                &[0; 4],
                (2, 2),
                Some(&input),
                OutFrame {
                    data: &mut out,
                    width: 3,
                    height: 2,
                    stride: 12,
                },
                Composite::default(),
            )
            .unwrap_err();
        assert!(matches!(e, MatteError::SizeMismatch { .. }));
    }

    /// A 4x1 RGBA frame whose mask is `mask`, through `apply`.
    fn applied(mode: Mode, mask: [u8; 4], colours: [[u8; 4]; 4], composite: Composite) -> Vec<u8> {
        let mut out: Vec<u8> = colours.concat();
        Matter::new()
            .apply(
                mode,
                &mask,
                (4, 1),
                OutFrame {
                    data: &mut out,
                    width: 4,
                    height: 1,
                    stride: 16,
                },
                composite,
            )
            .unwrap();
        out
    }

    #[test]
    fn feathered_composite_blends_over_the_band_around_the_threshold() {
        let grey = [100u8, 100, 100, 255];
        let composite = Composite {
            threshold: 0.5,
            fill_argb: 0xFF000000,
            feather: 0.2,
            ..Default::default()
        };
        // Far above, far below, at the threshold, inside the band.
        let out = applied(Mode::Composite, [255, 0, 128, 140], [grey; 4], composite);
        assert_eq!(out[0..4], grey, "kept");
        assert_eq!(out[4..8], [0, 0, 0, 255], "filled");
        let mid = out[8];
        assert!((45..=55).contains(&mid), "half way at the threshold: {mid}");
        assert!(
            out[12] > mid && out[12] < 100,
            "more of the source above it: {}",
            out[12]
        );
        assert!(
            out.chunks(4).all(|px| px[3] == 255),
            "opaque over an opaque fill"
        );

        // Over a transparent fill the colour stays and only alpha fades.
        let composite = Composite {
            fill_argb: 0,
            ..composite
        };
        let out = applied(Mode::Composite, [255, 0, 128, 140], [grey; 4], composite);
        assert_eq!(out[4..8], [0, 0, 0, 0]);
        assert_eq!(out[8..11], [100, 100, 100]);
        assert!((120..=135).contains(&out[11]), "alpha {}", out[11]);
    }

    /// A soft disc of a mask, 80x80, and a colourful 4-byte frame.
    fn disc_and_frame(w: u32, h: u32) -> (Vec<u8>, Vec<u8>) {
        let small = (0..80 * 80)
            .map(|i| {
                let (x, y) = (f64::from(i % 80) - 40.0, f64::from(i / 80) - 40.0);
                (255.0 * (30.0 - (x * x + y * y).sqrt()).clamp(0.0, 1.0)) as u8
            })
            .collect();
        let frame = (0..w * h * 4).map(|i| (i * 7 % 251) as u8).collect();
        (small, frame)
    }

    /// Chunks decided by their bounds alone come out as they would from
    /// their values: each mode against the full-size mask applied through
    /// its exact path.
    #[test]
    fn chunks_decided_by_bounds_equal_the_exact_path() {
        let (w, h) = (700u32, 333u32);
        let (small, frame) = disc_and_frame(w, h);
        let mut full = vec![0u8; (w * h) as usize];
        Matter::new()
            .scale_mask(
                &small,
                (80, 80),
                Rows {
                    data: &mut full,
                    width: w,
                    height: h,
                    stride: w as usize,
                },
            )
            .unwrap();
        assert!(full.contains(&0) && full.contains(&255) && full.iter().any(|&v| v % 255 != 0));
        let composite = Composite {
            threshold: 0.4,
            fill_argb: 0x80102030,
            ..Default::default()
        };
        let feathered = Composite {
            feather: 0.3,
            ..composite
        };
        let every_pixel = |sink: &dyn Fn(&mut [u8], &[u8])| {
            let mut out = frame.clone();
            for (row, m) in out.chunks_mut(4 * w as usize).zip(full.chunks(w as usize)) {
                sink(row, m);
            }
            out
        };
        let cases: [(Mode, Composite, Vec<u8>); 3] = [
            (
                Mode::Composite,
                composite,
                every_pixel(&|r, m| Fill::new(composite).exact(r, 0..m.len(), m)),
            ),
            (
                Mode::Composite,
                feathered,
                every_pixel(&|r, m| Feather::new(feathered).exact(r, 0..m.len(), m)),
            ),
            (
                Mode::Alpha,
                composite,
                every_pixel(&|r, m| SetAlpha.exact(r, 0..m.len(), m)),
            ),
        ];
        for (mode, settings, expected) in cases {
            let mut out = frame.clone();
            Matter::new()
                .apply(
                    mode,
                    &small,
                    (80, 80),
                    OutFrame {
                        data: &mut out,
                        width: w,
                        height: h,
                        stride: 4 * w as usize,
                    },
                    settings,
                )
                .unwrap();
            assert!(out == expected, "{mode:?} {settings:?}");
        }
    }

    #[test]
    fn blur_keeps_the_subject_and_blurs_the_background() {
        let (w, h) = (40u32, 8u32);
        // Stripes of black and white, one pixel wide; the left half is the
        // subject.
        let mut frame = vec![0u8; (4 * w * h) as usize];
        for (i, px) in frame.chunks_exact_mut(4).enumerate() {
            let v = if i % 2 == 0 { 255 } else { 0 };
            px.copy_from_slice(&[v, v, v, 200]);
        }
        let source = frame.clone();
        let small: Vec<u8> = (0..w * h)
            .map(|i| if i % w < w / 2 { 255 } else { 0 })
            .collect();
        Matter::new()
            .apply(
                Mode::Blur,
                &small,
                (w, h),
                OutFrame {
                    data: &mut frame,
                    width: w,
                    height: h,
                    stride: 4 * w as usize,
                },
                Composite {
                    blur_radius: 3,
                    ..Default::default()
                },
            )
            .unwrap();
        let px = |buf: &[u8], x: u32, y: u32| {
            let i = (4 * (y * w + x)) as usize;
            [buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]
        };
        for x in 0..4 {
            let s = px(&source, x, 4);
            assert_eq!(
                px(&frame, x, 4),
                [s[0], s[1], s[2], 255],
                "subject pixel {x}"
            );
        }
        for x in 26..34 {
            let v = px(&frame, x, 4)[0];
            assert!(
                (100..=155).contains(&v),
                "background pixel {x} not blurred: {v}"
            );
            assert_eq!(px(&frame, x, 4)[3], 255);
        }
    }
}
