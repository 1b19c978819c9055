// SPDX-License-Identifier: MPL-2.0
//! Row-strided images over borrowed bytes, readable and writable by
//! `fast_image_resize`.
//!
//! Video frames rarely have tightly packed rows (GStreamer pads RGB and GRAY8
//! rows to 4 bytes, and upstream may hand us any stride through GstVideoMeta);
//! fast_image_resize's own image types assume packed rows. These views let it
//! read from and write into the frames where they are, without a copy.

use fast_image_resize::pixels::InnerPixel;
use fast_image_resize::{ImageView, ImageViewMut};

/// Why a byte slice cannot be viewed as an image of the asked-for shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{len} bytes cannot hold {width}x{height} pixels of {pixel_size} bytes with rows {stride} bytes apart"
)]
pub struct LayoutError {
    pub width: u32,
    pub height: u32,
    pub stride: usize,
    pub pixel_size: usize,
    pub len: usize,
}

fn check_layout<P: InnerPixel>(
    width: u32,
    height: u32,
    stride: usize,
    len: usize,
) -> Result<(), LayoutError> {
    check_bytes(width, height, stride, P::size(), len)
}

/// Checks that `len` bytes hold `height` rows of `width` pixels of
/// `pixel_size` bytes, `stride` bytes apart (the last row unpadded).
pub fn check_bytes(
    width: u32,
    height: u32,
    stride: usize,
    pixel_size: usize,
    len: usize,
) -> Result<(), LayoutError> {
    let row = width as usize * pixel_size;
    let needed = if height == 0 {
        0
    } else {
        stride
            .checked_mul(height as usize - 1)
            .and_then(|n| n.checked_add(row))
            .unwrap_or(usize::MAX)
    };
    if stride < row || len < needed {
        return Err(LayoutError {
            width,
            height,
            stride,
            pixel_size,
            len,
        });
    }
    Ok(())
}

fn as_pixels<P: InnerPixel>(row: &[u8]) -> &[P] {
    // SAFETY: every pixel type of fast_image_resize is `repr(C)` over arrays of
    // its component, so a pixel of `u8` components has size `P::size()` and
    // alignment 1; the row length is a whole number of pixels by construction.
    debug_assert_eq!(std::mem::align_of::<P>(), 1);
    debug_assert_eq!(row.len() % P::size(), 0);
    unsafe { std::slice::from_raw_parts(row.as_ptr().cast::<P>(), row.len() / P::size()) }
}

fn as_pixels_mut<P: InnerPixel>(row: &mut [u8]) -> &mut [P] {
    // SAFETY: as in `as_pixels`.
    debug_assert_eq!(std::mem::align_of::<P>(), 1);
    debug_assert_eq!(row.len() % P::size(), 0);
    unsafe { std::slice::from_raw_parts_mut(row.as_mut_ptr().cast::<P>(), row.len() / P::size()) }
}

/// A read-only image whose rows are `stride` bytes apart.
pub struct StridedImage<'a, P> {
    data: &'a [u8],
    width: u32,
    height: u32,
    stride: usize,
    _pixel: std::marker::PhantomData<P>,
}

impl<'a, P: InnerPixel> StridedImage<'a, P> {
    pub fn new(
        data: &'a [u8],
        width: u32,
        height: u32,
        stride: usize,
    ) -> Result<Self, LayoutError> {
        check_layout::<P>(width, height, stride, data.len())?;
        Ok(Self {
            data,
            width,
            height,
            stride,
            _pixel: std::marker::PhantomData,
        })
    }

    /// The row `y`, `width` pixels long.
    pub fn row(&self, y: u32) -> &'a [P] {
        let start = y as usize * self.stride;
        as_pixels(&self.data[start..start + self.width as usize * P::size()])
    }
}

// SAFETY: `iter_rows` yields exactly `height - start_row` rows of `width`
// pixels each, as the trait requires.
unsafe impl<P: InnerPixel> ImageView for StridedImage<'_, P> {
    type Pixel = P;

    fn width(&self) -> u32 {
        self.width
    }

    fn height(&self) -> u32 {
        self.height
    }

    fn iter_rows(&self, start_row: u32) -> impl Iterator<Item = &[Self::Pixel]> {
        (start_row.min(self.height)..self.height).map(move |y| self.row(y))
    }
}

/// A writable image whose rows are `stride` bytes apart.
pub struct StridedImageMut<'a, P> {
    data: &'a mut [u8],
    width: u32,
    height: u32,
    stride: usize,
    _pixel: std::marker::PhantomData<P>,
}

impl<'a, P: InnerPixel> StridedImageMut<'a, P> {
    pub fn new(
        data: &'a mut [u8],
        width: u32,
        height: u32,
        stride: usize,
    ) -> Result<Self, LayoutError> {
        check_layout::<P>(width, height, stride, data.len())?;
        Ok(Self {
            data,
            width,
            height,
            stride,
            _pixel: std::marker::PhantomData,
        })
    }

    fn row_bytes(&self) -> usize {
        self.width as usize * P::size()
    }
}

// SAFETY: as for `StridedImage`.
unsafe impl<P: InnerPixel> ImageView for StridedImageMut<'_, P> {
    type Pixel = P;

    fn width(&self) -> u32 {
        self.width
    }

    fn height(&self) -> u32 {
        self.height
    }

    fn iter_rows(&self, start_row: u32) -> impl Iterator<Item = &[Self::Pixel]> {
        let row = self.row_bytes();
        self.data
            .chunks(self.stride)
            .take(self.height as usize)
            .skip(start_row as usize)
            .map(move |r| as_pixels(&r[..row]))
    }
}

// SAFETY: `iter_rows_mut` yields the same rows as `iter_rows`, mutably.
unsafe impl<P: InnerPixel> ImageViewMut for StridedImageMut<'_, P> {
    fn iter_rows_mut(&mut self, start_row: u32) -> impl Iterator<Item = &mut [Self::Pixel]> {
        let row = self.row_bytes();
        self.data
            .chunks_mut(self.stride)
            .take(self.height as usize)
            .skip(start_row as usize)
            .map(move |r| as_pixels_mut(&mut r[..row]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fast_image_resize::pixels::{U8, U8x3};

    #[test]
    fn rows_skip_the_padding() {
        // 2x2 RGB with rows padded to 8 bytes.
        let data = [1, 2, 3, 4, 5, 6, 0, 0, 7, 8, 9, 10, 11, 12, 0, 0];
        let img = StridedImage::<U8x3>::new(&data, 2, 2, 8).unwrap();
        let rows: Vec<Vec<[u8; 3]>> = img
            .iter_rows(0)
            .map(|r| r.iter().map(|p| p.0).collect())
            .collect();
        assert_eq!(
            rows,
            vec![vec![[1, 2, 3], [4, 5, 6]], vec![[7, 8, 9], [10, 11, 12]]]
        );
        assert_eq!(img.iter_rows(1).count(), 1);
    }

    #[test]
    fn last_row_needs_no_padding() {
        let data = [0u8; 8 + 6];
        assert!(StridedImage::<U8x3>::new(&data, 2, 2, 8).is_ok());
        let short = [0u8; 8 + 5];
        let e = StridedImage::<U8x3>::new(&short, 2, 2, 8).err().unwrap();
        assert_eq!(e.len, 13);
    }

    #[test]
    fn stride_smaller_than_row_is_refused() {
        let data = [0u8; 64];
        assert!(StridedImage::<U8x3>::new(&data, 4, 2, 11).is_err());
    }

    #[test]
    fn writes_land_inside_rows_only() {
        let mut data = [0xAAu8; 3 * 4];
        {
            let mut img = StridedImageMut::<U8>::new(&mut data, 3, 3, 4).unwrap();
            for row in img.iter_rows_mut(0) {
                for p in row {
                    p.0 = 1;
                }
            }
        }
        assert_eq!(data, [1, 1, 1, 0xAA, 1, 1, 1, 0xAA, 1, 1, 1, 0xAA]);
    }
}
