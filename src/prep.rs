// SPDX-License-Identifier: MPL-2.0
//! Frame -> model input: what rembg does to a picture before U2Net sees it.
//!
//! 1. Lanczos3 down (or up) to the model's input size, as Pillow's LANCZOS,
//!    straight from the frame's own bytes and stride (4-byte formats are
//!    resized as 4 channels, alpha untouched and then ignored, as rembg's
//!    `convert("RGB")` ignores it).
//! 2. Divide by the largest R, G or B value of the resized picture (not 255).
//! 3. Subtract the mean and divide by the standard deviation per channel.
//! 4. Write planar (CHW) f32.
//!
//! Steps 2-4 go through one 256-entry table per channel and frame, computed in
//! f64 as numpy does, so each tensor value is one table lookup.

use fast_image_resize::pixels::{U8x3, U8x4};

use crate::bf16::round_to_bf16;
use crate::image_view::{LayoutError, StridedImage, StridedImageMut};
use crate::resample::Lanczos3;

/// Where R, G and B (and alpha, if any) sit in a packed pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelLayout {
    pub bytes_per_pixel: usize,
    pub rgb: [usize; 3],
    pub alpha: Option<usize>,
}

impl PixelLayout {
    pub const RGB: Self = Self::new(3, [0, 1, 2], None);
    pub const BGR: Self = Self::new(3, [2, 1, 0], None);
    pub const RGBA: Self = Self::new(4, [0, 1, 2], Some(3));
    pub const BGRA: Self = Self::new(4, [2, 1, 0], Some(3));
    pub const ARGB: Self = Self::new(4, [1, 2, 3], Some(0));
    pub const ABGR: Self = Self::new(4, [3, 2, 1], Some(0));
    pub const RGBX: Self = Self::new(4, [0, 1, 2], None);
    pub const BGRX: Self = Self::new(4, [2, 1, 0], None);
    pub const XRGB: Self = Self::new(4, [1, 2, 3], None);
    pub const XBGR: Self = Self::new(4, [3, 2, 1], None);

    const fn new(bytes_per_pixel: usize, rgb: [usize; 3], alpha: Option<usize>) -> Self {
        Self {
            bytes_per_pixel,
            rgb,
            alpha,
        }
    }
}

/// How a prepared frame is laid out in the model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputLayout {
    /// Planes R, G and B of f32.
    #[default]
    Planar,
    /// Planes R, G and B rounded to bf16, then planes R, G and B of what
    /// that rounding left out: for a model rewritten to read both, so that
    /// bf16 inference keeps the picture's precision
    /// (`model::split_input`).
    Bf16Split,
}

impl InputLayout {
    /// f32 planes a frame takes.
    pub fn planes(self) -> usize {
        match self {
            Self::Planar => 3,
            Self::Bf16Split => 6,
        }
    }
}

/// A borrowed packed-RGB(A) frame.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub data: &'a [u8],
    pub width: u32,
    pub height: u32,
    /// Bytes from the start of one row to the start of the next.
    pub stride: usize,
    pub layout: PixelLayout,
}

/// Per-channel input normalisation of a model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalization {
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

impl Normalization {
    /// ImageNet statistics, which U2Net, U2NetP, u2net_human_seg and silueta use.
    pub const IMAGENET: Self = Self {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
    /// What rembg's ISNet sessions use.
    pub const ISNET: Self = Self {
        mean: [0.5, 0.5, 0.5],
        std: [1.0, 1.0, 1.0],
    };
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepError {
    #[error("frame does not fit its buffer: {0}")]
    Layout(#[from] LayoutError),
    #[error("frame of {width}x{height} pixels is empty")]
    Empty { width: u32, height: u32 },
    #[error("tensor slot holds {got} values, the model needs {needed}")]
    TensorSize { got: usize, needed: usize },
    #[error("resizing failed: {0}")]
    Resize(String),
}

/// Prepares frames for one model input size; keeps its scratch buffers, so
/// preparing does not allocate once warm.
pub struct Preparer {
    resizer: Lanczos3,
    width: u32,
    height: u32,
    normalization: Normalization,
    layout: InputLayout,
    /// The resized frame, in the frame's own pixel layout.
    small: Vec<u8>,
}

impl Preparer {
    pub fn new(width: u32, height: u32, normalization: Normalization) -> Self {
        Self {
            resizer: Lanczos3::new(),
            width,
            height,
            normalization,
            layout: InputLayout::Planar,
            small: Vec::new(),
        }
    }

    /// The same, writing frames in `layout`.
    pub fn with_layout(mut self, layout: InputLayout) -> Self {
        self.layout = layout;
        self
    }

    /// Number of f32 values one prepared frame takes (planes x height x
    /// width).
    pub fn tensor_len(&self) -> usize {
        self.layout.planes() * self.width as usize * self.height as usize
    }

    /// Writes `frame` as a normalised CHW tensor into `out`.
    pub fn prepare(&mut self, frame: &Frame, out: &mut [f32]) -> Result<(), PrepError> {
        if frame.width == 0 || frame.height == 0 {
            return Err(PrepError::Empty {
                width: frame.width,
                height: frame.height,
            });
        }
        let needed = self.tensor_len();
        if out.len() != needed {
            return Err(PrepError::TensorSize {
                got: out.len(),
                needed,
            });
        }
        self.resize(frame)?;
        let layout = frame.layout;
        let max = self.largest_rgb_value(layout);
        let tables = self.tables(max);
        let plane = self.width as usize * self.height as usize;
        match self.layout {
            InputLayout::Planar => self.write_planes(layout, &tables, &mut out[..3 * plane]),
            InputLayout::Bf16Split => {
                let hi = tables.map(|t| t.map(round_to_bf16));
                let lo = std::array::from_fn(|c| std::array::from_fn(|v| tables[c][v] - hi[c][v]));
                let (hi_planes, lo_planes) = out.split_at_mut(3 * plane);
                self.write_planes(layout, &hi, hi_planes);
                self.write_planes(layout, &lo, lo_planes);
            }
        }
        Ok(())
    }

    /// The resized frame through `tables` into three planes.
    fn write_planes(&self, layout: PixelLayout, tables: &[[f32; 256]; 3], out: &mut [f32]) {
        let plane = out.len() / 3;
        let (r_plane, rest) = out.split_at_mut(plane);
        let (g_plane, b_plane) = rest.split_at_mut(plane);
        let [ri, gi, bi] = layout.rgb;
        for (((px, r), g), b) in self
            .small
            .chunks_exact(layout.bytes_per_pixel)
            .zip(r_plane.iter_mut())
            .zip(g_plane.iter_mut())
            .zip(b_plane.iter_mut())
        {
            *r = tables[0][px[ri] as usize];
            *g = tables[1][px[gi] as usize];
            *b = tables[2][px[bi] as usize];
        }
    }

    /// The last prepared frame at the model's size, as packed RGB (for
    /// temporal smoothing, which compares frames where the masks are made).
    pub fn small_rgb(&self, layout: PixelLayout, out: &mut Vec<u8>) {
        let [r, g, b] = layout.rgb;
        out.clear();
        if layout == PixelLayout::RGB {
            out.extend_from_slice(&self.small);
            return;
        }
        out.reserve(self.small.len() / layout.bytes_per_pixel * 3);
        for px in self.small.chunks_exact(layout.bytes_per_pixel) {
            out.extend_from_slice(&[px[r], px[g], px[b]]);
        }
    }

    fn resize(&mut self, frame: &Frame) -> Result<(), PrepError> {
        if frame.layout.bytes_per_pixel == 3 {
            self.resize_as::<U8x3>(frame)
        } else {
            self.resize_as::<U8x4>(frame)
        }
    }

    /// Resizes `frame`, read as pixels of `P`, into `small`.
    fn resize_as<P: fast_image_resize::PixelTrait>(
        &mut self,
        frame: &Frame,
    ) -> Result<(), PrepError> {
        let small_stride = self.width as usize * P::size();
        self.small.resize(small_stride * self.height as usize, 0);
        let src = StridedImage::<P>::new(frame.data, frame.width, frame.height, frame.stride)?;
        let mut dst =
            StridedImageMut::<P>::new(&mut self.small, self.width, self.height, small_stride)?;
        self.resizer
            .resize(&src, &mut dst)
            .map_err(|e| PrepError::Resize(e.to_string()))
    }

    fn largest_rgb_value(&self, layout: PixelLayout) -> u8 {
        let [ri, gi, bi] = layout.rgb;
        self.small
            .chunks_exact(layout.bytes_per_pixel)
            .fold(0u8, |m, px| m.max(px[ri]).max(px[gi]).max(px[bi]))
    }

    /// value -> ((value / max) - mean) / std, per channel, in f64 as rembg's
    /// numpy code computes it, then rounded to f32 once.
    fn tables(&self, max: u8) -> [[f32; 256]; 3] {
        // rembg: `im / max(np.max(im), 1e-6)`.
        let max = f64::from(max).max(1e-6);
        let n = self.normalization;
        std::array::from_fn(|c| {
            std::array::from_fn(|v| ((v as f64 / max - n.mean[c]) / n.std[c]) as f32)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(width: u32, height: u32, layout: PixelLayout, rgb: [u8; 3], stride: usize) -> Vec<u8> {
        let mut data = vec![0x55u8; stride * height as usize];
        for row in data.chunks_mut(stride) {
            for px in
                row[..width as usize * layout.bytes_per_pixel].chunks_mut(layout.bytes_per_pixel)
            {
                for c in 0..3 {
                    px[layout.rgb[c]] = rgb[c];
                }
                if let Some(a) = layout.alpha {
                    px[a] = 7;
                }
            }
        }
        data
    }

    fn expected(v: u8, max: u8, c: usize) -> f32 {
        let n = Normalization::IMAGENET;
        ((v as f64 / max as f64 - n.mean[c]) / n.std[c]) as f32
    }

    #[test]
    fn solid_frame_gives_the_normalised_constant_in_every_layout() {
        let layouts = [
            PixelLayout::RGB,
            PixelLayout::BGR,
            PixelLayout::RGBA,
            PixelLayout::BGRA,
            PixelLayout::ARGB,
            PixelLayout::ABGR,
            PixelLayout::RGBX,
            PixelLayout::BGRX,
            PixelLayout::XRGB,
            PixelLayout::XBGR,
        ];
        for layout in layouts {
            // Odd size, padded stride.
            let (w, h) = (37, 23);
            let stride = w as usize * layout.bytes_per_pixel + 5;
            let data = solid(w, h, layout, [200, 100, 50], stride);
            let frame = Frame {
                data: &data,
                width: w,
                height: h,
                stride,
                layout,
            };
            let mut p = Preparer::new(8, 6, Normalization::IMAGENET);
            let mut out = vec![0f32; p.tensor_len()];
            p.prepare(&frame, &mut out).unwrap();
            let plane = 8 * 6;
            for (c, v) in [200u8, 100, 50].into_iter().enumerate() {
                let want = expected(v, 200, c);
                for got in &out[c * plane..(c + 1) * plane] {
                    assert!(
                        (got - want).abs() < 1e-6,
                        "{layout:?} channel {c}: {got} != {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn same_size_frame_is_not_resampled() {
        // A ramp at the model size keeps every value: the max is 255 and each
        // tensor value maps back to its byte.
        let (w, h) = (16u32, 16u32);
        let mut data = vec![0u8; (w * h * 3) as usize];
        for (i, px) in data.chunks_mut(3).enumerate() {
            px.copy_from_slice(&[i as u8, (255 - i) as u8, 255]);
        }
        let frame = Frame {
            data: &data,
            width: w,
            height: h,
            stride: w as usize * 3,
            layout: PixelLayout::RGB,
        };
        let mut p = Preparer::new(w, h, Normalization::IMAGENET);
        let mut out = vec![0f32; p.tensor_len()];
        p.prepare(&frame, &mut out).unwrap();
        let mut rgb = Vec::new();
        p.small_rgb(PixelLayout::RGB, &mut rgb);
        assert_eq!(rgb, data, "the model-size picture is the frame itself");
        let plane = (w * h) as usize;
        for i in 0..plane {
            assert_eq!(out[i], expected(i as u8, 255, 0));
            assert_eq!(out[plane + i], expected((255 - i) as u8, 255, 1));
            assert_eq!(out[2 * plane + i], expected(255, 255, 2));
        }
    }

    #[test]
    fn the_split_layout_is_bf16_planes_then_what_they_left_out() {
        let (w, h) = (16u32, 16u32);
        let data: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 256) as u8).collect();
        let frame = Frame {
            data: &data,
            width: w,
            height: h,
            stride: w as usize * 3,
            layout: PixelLayout::RGB,
        };
        let mut planar = Preparer::new(w, h, Normalization::IMAGENET);
        let mut split =
            Preparer::new(w, h, Normalization::IMAGENET).with_layout(InputLayout::Bf16Split);
        assert_eq!(split.tensor_len(), 2 * planar.tensor_len());
        let mut plain = vec![0f32; planar.tensor_len()];
        let mut parts = vec![0f32; split.tensor_len()];
        planar.prepare(&frame, &mut plain).unwrap();
        split.prepare(&frame, &mut parts).unwrap();
        let (hi, lo) = parts.split_at(plain.len());
        let mut below_a_bf16_step = 0;
        for ((&x, &h), &l) in plain.iter().zip(hi).zip(lo) {
            assert_eq!(round_to_bf16(h), h);
            assert_eq!(h + l, x, "the parts add up to the value");
            below_a_bf16_step += usize::from(l.abs() <= h.abs() / 256.0);
        }
        assert_eq!(below_a_bf16_step, plain.len());
        assert!(lo.iter().any(|&l| l != 0.0), "bf16 left something out");
    }

    #[test]
    fn black_frame_does_not_divide_by_zero() {
        let data = vec![0u8; 4 * 4 * 4];
        let frame = Frame {
            data: &data,
            width: 4,
            height: 4,
            stride: 16,
            layout: PixelLayout::RGBA,
        };
        let mut p = Preparer::new(4, 4, Normalization::IMAGENET);
        let mut out = vec![f32::NAN; p.tensor_len()];
        p.prepare(&frame, &mut out).unwrap();
        assert!(out.iter().all(|v| v.is_finite()));
        assert_eq!(out[0], (-0.485f64 / 0.229) as f32);
    }

    #[test]
    fn short_buffer_is_an_error_not_a_panic() {
        let data = vec![0u8; 10];
        let frame = Frame {
            data: &data,
            width: 4,
            height: 4,
            stride: 12,
            layout: PixelLayout::RGB,
        };
        let mut p = Preparer::new(4, 4, Normalization::IMAGENET);
        let mut out = vec![0f32; p.tensor_len()];
        assert!(matches!(
            p.prepare(&frame, &mut out),
            Err(PrepError::Layout(_))
        ));
    }
}
