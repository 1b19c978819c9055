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
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    decode_image(&bytes, None).map_err(|e| e.to_string())
}

/// Why bytes are not a picture the service takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not PNG, JPEG, WebP, BMP or TIFF (by its first bytes).
    Format,
    /// More pixels than the service takes: refused from the header,
    /// before anything is decoded (a decompression bomb costs nothing).
    TooManyPixels { width: u32, height: u32, max: u64 },
    /// A width or height of 0.
    NoPixels { width: u32, height: u32 },
    /// The decoder's own reason: truncated, corrupt, unsupported variant.
    Corrupt(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Format => f.write_str(
                "not an image in a known format (PNG, JPEG, WebP, BMP or TIFF, by its first bytes)",
            ),
            Self::TooManyPixels { width, height, max } => write!(
                f,
                "the image is {width}x{height}: {} pixels, more than the {max} this service takes",
                u64::from(*width) * u64::from(*height)
            ),
            Self::NoPixels { width, height } => {
                write!(f, "the image is {width}x{height}: it has no pixels")
            }
            Self::Corrupt(e) => write!(f, "the image cannot be decoded: {e}"),
        }
    }
}

/// Decodes an image held in memory, refusing from its header alone one of
/// more than `max_pixels` pixels.
pub fn decode_bytes(bytes: &[u8], max_pixels: u64) -> Result<Picture, DecodeError> {
    decode_image(bytes, Some(max_pixels))
}

/// How far from its end a JPEG's end-of-image marker may be (some cameras
/// and editors pad after it).
const JPEG_TAIL: usize = 4096;

/// The JPEG decoder fills in what a truncated file lacks without a word:
/// a file cut short (no end-of-image marker near its end) is refused.
fn check_complete(format: image::ImageFormat, bytes: &[u8]) -> Result<(), DecodeError> {
    let tail = &bytes[bytes.len().saturating_sub(JPEG_TAIL)..];
    if format == image::ImageFormat::Jpeg && !tail.windows(2).any(|w| w == [0xff, 0xd9]) {
        return Err(DecodeError::Corrupt(
            "the JPEG is cut short (no end-of-image marker)".into(),
        ));
    }
    Ok(())
}

/// Decodes by content (not by name), upright as its EXIF orientation
/// says (rembg does the same), refusing more than `max_pixels` from the
/// header.
fn decode_image(bytes: &[u8], max_pixels: Option<u64>) -> Result<Picture, DecodeError> {
    let reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    let format = reader.format().ok_or(DecodeError::Format)?;
    check_complete(format, bytes)?;
    let mut decoder = reader.into_decoder().map_err(|e| match e {
        image::ImageError::Unsupported(_) => DecodeError::Format,
        e => DecodeError::Corrupt(e.to_string()),
    })?;
    let (width, height) = image::ImageDecoder::dimensions(&decoder);
    if width == 0 || height == 0 {
        return Err(DecodeError::NoPixels { width, height });
    }
    if let Some(max) = max_pixels
        && u64::from(width) * u64::from(height) > max
    {
        return Err(DecodeError::TooManyPixels { width, height, max });
    }
    let orientation = image::ImageDecoder::orientation(&mut decoder).ok();
    let mut img = image::DynamicImage::from_decoder(decoder)
        .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
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

/// How many temporary names `write` tries before giving up.
const TEMPORARY_NAMES: usize = 100;

/// Encodes `pic` to `dest`, through a temporary file in the same folder that
/// is renamed when complete: no half-written output is ever left. The
/// temporary file must be new: a file already there under that name (another
/// run's, or anyone's) is never truncated nor removed, and the next name is
/// tried (a killed container's leftover has the same process id, 1, as its
/// retry).
pub fn write(pic: &OutputPicture, format: Format, dest: &Path) -> Result<(), String> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    let pid = std::process::id();
    let (tmp, file) = (0..TEMPORARY_NAMES)
        .map(|n| match n {
            0 => dir.join(format!(".{name}.{pid}.part")),
            n => dir.join(format!(".{name}.{pid}-{n}.part")),
        })
        .find_map(|tmp| {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
            {
                Ok(file) => Some(Ok((tmp, file))),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
                Err(e) => Some(Err(format!("cannot create {}: {e}", tmp.display()))),
            }
        })
        .unwrap_or_else(|| {
            Err(format!(
                "cannot create a temporary file for {}: {TEMPORARY_NAMES} names are taken \
                 (.{name}.{pid}*.part; left over from killed runs?)",
                dest.display()
            ))
        })?;
    let result = encode(pic, format, BufWriter::new(file))
        .and_then(|()| std::fs::rename(&tmp, dest).map_err(|e| e.to_string()));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Encodes `pic` as `format` into `w`.
pub fn encode(pic: &OutputPicture, format: Format, mut w: impl Write) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_name_already_taken_is_left_alone() {
        let dir = std::env::temp_dir().join(format!("u2m-codec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("a.png");
        let tmp_name = format!(".a.png.{}.part", std::process::id());
        let tmp = dir.join(&tmp_name);
        std::fs::write(&tmp, b"someone else's").unwrap();
        let data = [7u8; 4 * 3 * 2];
        let pic = OutputPicture {
            width: 3,
            height: 2,
            channels: 4,
            data: &data,
            stride: 12,
        };
        // Another name is taken; the file there is left as it was.
        write(&pic, Format::Png, &dest).unwrap();
        assert_eq!(std::fs::read(&tmp).unwrap(), b"someone else's");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [tmp_name.clone(), "a.png".to_string()]);
        std::fs::remove_file(&dest).unwrap();

        std::fs::remove_file(&tmp).unwrap();
        write(&pic, Format::Png, &dest).unwrap();
        let img = image::open(&dest).unwrap().to_rgba8();
        assert_eq!(
            (img.width(), img.height(), img.get_pixel(2, 1).0),
            (3, 2, [7; 4])
        );
        assert!(!tmp.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
