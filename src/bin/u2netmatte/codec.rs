// SPDX-License-Identifier: MPL-2.0
//! Image files <-> frames, with the `image` crate (PNG, JPEG, WebP, BMP,
//! TIFF decoders and encoders in pure Rust).

use std::io::{BufWriter, Write};
use std::path::Path;

use image::{ExtendedColorType, ImageEncoder, ImageReader};

use crate::Format;

/// A decoded picture, RGBA with packed rows.
pub struct Picture {
    pub width: u32,
    pub height: u32,
    pub rgba: Vec<u8>,
}

/// Reads and decodes `path`, turned upright as its EXIF orientation says
/// (rembg does the same).
pub fn decode(path: &Path) -> Result<Picture, String> {
    let reader = ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let mut decoder = reader.into_decoder().map_err(|e| e.to_string())?;
    let orientation = image::ImageDecoder::orientation(&mut decoder).ok();
    let mut img = image::DynamicImage::from_decoder(decoder).map_err(|e| e.to_string())?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    let rgba = img.into_rgba8();
    Ok(Picture {
        width: rgba.width(),
        height: rgba.height(),
        rgba: rgba.into_raw(),
    })
}

/// Pixel rows of an output frame, without the stride's padding.
pub struct OutputPicture<'a> {
    pub width: u32,
    pub height: u32,
    /// 1 (mask) or 4 (RGBA).
    pub channels: usize,
    pub data: &'a [u8],
    pub stride: usize,
}

impl OutputPicture<'_> {
    fn packed(&self, keep_channels: usize) -> Vec<u8> {
        let row = self.width as usize * self.channels;
        let mut out =
            Vec::with_capacity(self.width as usize * self.height as usize * keep_channels);
        for y in 0..self.height as usize {
            let r = &self.data[y * self.stride..y * self.stride + row];
            if keep_channels == self.channels {
                out.extend_from_slice(r);
            } else {
                // RGBA -> RGB for formats without alpha.
                for px in r.chunks_exact(self.channels) {
                    out.extend_from_slice(&px[..keep_channels]);
                }
            }
        }
        out
    }
}

/// Encodes `pic` to `dest`, through a temporary file in the same folder that
/// is renamed when complete: no half-written output is ever left.
pub fn write(pic: &OutputPicture, format: Format, dest: &Path) -> Result<(), String> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{}.part", std::process::id()));
    let result = encode(pic, format, &tmp)
        .and_then(|()| std::fs::rename(&tmp, dest).map_err(|e| e.to_string()));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn encode(pic: &OutputPicture, format: Format, path: &Path) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
    let mut w = BufWriter::new(file);
    let gray = pic.channels == 1;
    let (w_, h_) = (pic.width, pic.height);
    match format {
        Format::Png => {
            let color = if gray {
                ExtendedColorType::L8
            } else {
                ExtendedColorType::Rgba8
            };
            image::codecs::png::PngEncoder::new_with_quality(
                &mut w,
                image::codecs::png::CompressionType::Fast,
                image::codecs::png::FilterType::Adaptive,
            )
            .write_image(&pic.packed(pic.channels), w_, h_, color)
        }
        Format::Webp => {
            let color = if gray {
                ExtendedColorType::L8
            } else {
                ExtendedColorType::Rgba8
            };
            image::codecs::webp::WebPEncoder::new_lossless(&mut w).write_image(
                &pic.packed(pic.channels),
                w_,
                h_,
                color,
            )
        }
        Format::Jpg => {
            let (data, color) = if gray {
                (pic.packed(1), ExtendedColorType::L8)
            } else {
                (pic.packed(3), ExtendedColorType::Rgb8)
            };
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut w, 92)
                .write_image(&data, w_, h_, color)
        }
    }
    .map_err(|e| e.to_string())?;
    w.flush().map_err(|e| e.to_string())
}
