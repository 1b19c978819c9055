// SPDX-License-Identifier: MPL-2.0
//! Which caps the element takes and gives, and how one side maps to the other.

use gst::prelude::*;
use gst_video::VideoFormat;

use crate::matte::Mode;
use crate::prep::PixelLayout;

/// Input formats: every packed 8-bit RGB layout. Frames are resized straight
/// from these, so no conversion runs at full resolution.
pub const INPUT_FORMATS: [VideoFormat; 10] = [
    VideoFormat::Rgba,
    VideoFormat::Bgra,
    VideoFormat::Argb,
    VideoFormat::Abgr,
    VideoFormat::Rgbx,
    VideoFormat::Bgrx,
    VideoFormat::Xrgb,
    VideoFormat::Xbgr,
    VideoFormat::Rgb,
    VideoFormat::Bgr,
];

pub const OUTPUT_FORMATS: [VideoFormat; 2] = [VideoFormat::Rgba, VideoFormat::Gray8];

/// Fields that pass from input caps to output caps unchanged: the output
/// has the input's geometry, timing and fields (its buffer flags are the
/// input's too).
const KEPT_FIELDS: [&str; 6] = [
    "width",
    "height",
    "framerate",
    "pixel-aspect-ratio",
    "interlace-mode",
    "field-order",
];

pub fn layout_of(format: VideoFormat) -> Option<PixelLayout> {
    Some(match format {
        VideoFormat::Rgb => PixelLayout::RGB,
        VideoFormat::Bgr => PixelLayout::BGR,
        VideoFormat::Rgba => PixelLayout::RGBA,
        VideoFormat::Bgra => PixelLayout::BGRA,
        VideoFormat::Argb => PixelLayout::ARGB,
        VideoFormat::Abgr => PixelLayout::ABGR,
        VideoFormat::Rgbx => PixelLayout::RGBX,
        VideoFormat::Bgrx => PixelLayout::BGRX,
        VideoFormat::Xrgb => PixelLayout::XRGB,
        VideoFormat::Xbgr => PixelLayout::XBGR,
        _ => return None,
    })
}

pub fn output_format(mode: Mode) -> VideoFormat {
    match mode {
        Mode::Mask => VideoFormat::Gray8,
        Mode::Composite | Mode::Alpha | Mode::Blur => VideoFormat::Rgba,
    }
}

fn raw_caps(formats: &[VideoFormat]) -> gst::Caps {
    gst_video::VideoCapsBuilder::new()
        .format_list(formats.iter().copied())
        .build()
}

pub fn sink_template_caps() -> gst::Caps {
    raw_caps(&INPUT_FORMATS)
}

pub fn src_template_caps() -> gst::Caps {
    raw_caps(&OUTPUT_FORMATS)
}

/// Whether the output keeps the input's colorimetry. The RGBA modes carry
/// the input's RGB samples (and blends of them), so their transfer and
/// primaries are the input's. A mask is coverage, not a picture: it takes
/// GStreamer's GRAY default (full range, no transfer or primaries), so that
/// no one converts it as if it were light.
fn keeps_colorimetry(mode: Mode) -> bool {
    output_format(mode) != VideoFormat::Gray8
}

/// Maps caps across the element: `to_src` turns input caps into the output
/// caps they would give (for `mode`), otherwise output caps into the inputs
/// that could give them. Sizes, framerate, pixel-aspect-ratio, interlacing
/// and (in the RGBA modes) colorimetry pass; the format is replaced;
/// everything else (chroma-site, ...) does not apply to the other side and
/// is dropped.
pub fn transform(caps: &gst::CapsRef, to_src: bool, mode: Mode) -> gst::Caps {
    let formats: Vec<VideoFormat> = if to_src {
        vec![output_format(mode)]
    } else {
        INPUT_FORMATS.to_vec()
    };
    let format_field = if formats.len() == 1 {
        formats[0].to_str().to_send_value()
    } else {
        gst::List::new(formats.iter().map(|f| f.to_str())).to_send_value()
    };
    if caps.is_any() {
        return raw_caps(&formats);
    }
    let mut out = gst::Caps::new_empty();
    for (s, features) in caps.iter_with_features() {
        if s.name() != "video/x-raw" || !features.is_equal(gst::CapsFeatures::new_empty().as_ref())
        {
            continue;
        }
        let mut mapped = gst::Structure::new_empty("video/x-raw");
        mapped.set_value("format", format_field.clone());
        let colorimetry = keeps_colorimetry(mode).then_some("colorimetry");
        for field in KEPT_FIELDS.into_iter().chain(colorimetry) {
            if let Ok(v) = s.value(field) {
                mapped.set_value(field, v.clone());
            }
        }
        out.merge_structure(mapped);
    }
    out
}

/// The output frame layout for an input frame layout: as [`transform`]
/// maps caps.
pub fn output_info(
    input: &gst_video::VideoInfo,
    mode: Mode,
) -> Result<gst_video::VideoInfo, gst::glib::BoolError> {
    gst_video::VideoInfo::builder(output_format(mode), input.width(), input.height())
        .fps(input.fps())
        .par(input.par())
        .interlace_mode(input.interlace_mode())
        .field_order(input.field_order())
        .colorimetry_if(&input.colorimetry(), keeps_colorimetry(mode))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init() {
        gst::init().unwrap();
    }

    #[test]
    fn input_caps_map_to_one_output_format_keeping_size_and_rate() {
        init();
        let input = gst::Caps::builder("video/x-raw")
            .field("format", "BGRx")
            .field("width", 641)
            .field("height", 479)
            .field("framerate", gst::Fraction::new(30000, 1001))
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .field("colorimetry", "bt709")
            .build();
        let out = transform(&input, true, Mode::Mask);
        let expected = gst::Caps::builder("video/x-raw")
            .field("format", "GRAY8")
            .field("width", 641)
            .field("height", 479)
            .field("framerate", gst::Fraction::new(30000, 1001))
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .build();
        assert_eq!(out, expected);
        let rgba = transform(&input, true, Mode::Alpha);
        assert_eq!(
            rgba.structure(0).unwrap().get::<&str>("format").unwrap(),
            "RGBA"
        );
    }

    #[test]
    fn interlacing_passes_and_colorimetry_only_to_rgba() {
        init();
        let input = gst::Caps::builder("video/x-raw")
            .field("format", "RGB")
            .field("width", 64)
            .field("height", 48)
            .field("interlace-mode", "interleaved")
            .field("field-order", "top-field-first")
            .field("colorimetry", "1:1:5:1")
            .build();
        for (mode, colorimetry) in [
            (Mode::Composite, Some("1:1:5:1")),
            (Mode::Alpha, Some("1:1:5:1")),
            (Mode::Mask, None),
        ] {
            for (caps, to_src) in [(&input, true), (&transform(&input, true, mode), false)] {
                let out = transform(caps, to_src, mode);
                let s = out.structure(0).unwrap();
                assert_eq!(
                    s.get::<&str>("interlace-mode"),
                    Ok("interleaved"),
                    "{mode:?}"
                );
                assert_eq!(
                    s.get::<&str>("field-order"),
                    Ok("top-field-first"),
                    "{mode:?}"
                );
                assert_eq!(s.get::<&str>("colorimetry").ok(), colorimetry, "{mode:?}");
            }
        }
    }

    #[test]
    fn output_caps_map_back_to_every_input_format() {
        init();
        let output = gst::Caps::builder("video/x-raw")
            .field("format", "RGBA")
            .field("width", gst::IntRange::new(1, 100))
            .build();
        let back = transform(&output, false, Mode::Composite);
        let s = back.structure(0).unwrap();
        let formats = s.get::<gst::List>("format").unwrap();
        assert_eq!(formats.len(), INPUT_FORMATS.len());
        assert_eq!(
            s.get::<gst::IntRange<i32>>("width").unwrap(),
            gst::IntRange::new(1, 100)
        );
        assert!(!s.has_field("height"));
    }

    #[test]
    fn any_maps_to_every_size_of_the_other_side() {
        init();
        assert_eq!(
            transform(&gst::Caps::new_any(), true, Mode::Mask),
            raw_caps(&[VideoFormat::Gray8])
        );
        assert_eq!(
            transform(&gst::Caps::new_any(), false, Mode::Mask),
            sink_template_caps()
        );
    }

    #[test]
    fn non_system_memory_is_not_mapped() {
        init();
        let caps = gst::Caps::builder("video/x-raw")
            .features(["memory:GLMemory"])
            .field("format", "RGBA")
            .build();
        assert!(transform(&caps, true, Mode::Composite).is_empty());
    }

    #[test]
    fn output_info_keeps_geometry() {
        init();
        let input = gst_video::VideoInfo::builder(VideoFormat::Rgb, 641, 479)
            .fps(gst::Fraction::new(25, 1))
            .par(gst::Fraction::new(4, 3))
            .build()
            .unwrap();
        let out = output_info(&input, Mode::Mask).unwrap();
        assert_eq!(
            (out.format(), out.width(), out.height()),
            (VideoFormat::Gray8, 641, 479)
        );
        assert_eq!(out.fps(), gst::Fraction::new(25, 1));
        assert_eq!(out.par(), gst::Fraction::new(4, 3));
        // GStreamer pads GRAY8 rows to 4 bytes: consumers must honour strides.
        assert_eq!(out.stride()[0], 644);
    }

    #[test]
    fn output_info_keeps_interlacing_and_rgb_colorimetry() {
        init();
        let bt709_rgb = gst_video::VideoColorimetry::new(
            gst_video::VideoColorRange::Range0_255,
            gst_video::VideoColorMatrix::Rgb,
            gst_video::VideoTransferFunction::Bt709,
            gst_video::VideoColorPrimaries::Bt709,
        );
        let input = gst_video::VideoInfo::builder(VideoFormat::Bgrx, 64, 48)
            .interlace_mode(gst_video::VideoInterlaceMode::Interleaved)
            .field_order(gst_video::VideoFieldOrder::BottomFieldFirst)
            .colorimetry(&bt709_rgb)
            .build()
            .unwrap();
        let rgba = output_info(&input, Mode::Alpha).unwrap();
        assert_eq!(
            rgba.interlace_mode(),
            gst_video::VideoInterlaceMode::Interleaved
        );
        assert_eq!(
            rgba.field_order(),
            gst_video::VideoFieldOrder::BottomFieldFirst
        );
        assert_eq!(rgba.colorimetry(), bt709_rgb);
        let mask = output_info(&input, Mode::Mask).unwrap();
        assert_eq!(
            mask.interlace_mode(),
            gst_video::VideoInterlaceMode::Interleaved
        );
        let gray_default = gst_video::VideoInfo::builder(VideoFormat::Gray8, 64, 48)
            .build()
            .unwrap()
            .colorimetry();
        assert_eq!(mask.colorimetry(), gray_default);
        assert_eq!(
            mask.colorimetry().range(),
            gst_video::VideoColorRange::Range0_255
        );
    }
}
