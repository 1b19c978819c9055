// SPDX-License-Identifier: MPL-2.0
//! A request's query string -> how its output looks and its format.
//!
//! rembg's names are taken where they mean the same (`om`: only the mask,
//! `bgc`: over a background colour, `model`); rembg's alpha matting (`a`,
//! `af`, `ab`, `ae`) and mask post-processing (`ppm`) are not done here and
//! are refused when asked for, rather than ignored. Unknown names and bad
//! values are refused, each naming the option.

use clap::ValueEnum;

use crate::{Format, LookArgs, Mode, parse_argb, parse_unit};

/// Every option a request may give (the OpenAPI description lists the same;
/// a test holds them together).
pub const NAMES: [&str; 16] = [
    "mode",
    "threshold",
    "feather",
    "fill-color",
    "blur-radius",
    "format",
    "om",
    "bgc",
    "model",
    "a",
    "af",
    "ab",
    "ae",
    "ppm",
    "extras",
    "url",
];

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Asked {
    pub look: LookArgs,
    pub format: Format,
}

fn parse_bool(name: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("{name}={value}: not true or false")),
    }
}

/// rembg's `bgc`: "R,G,B,A" (0..255 each; A may be left out), as its
/// server takes it; or our 0xAARRGGBB.
fn parse_bgc(value: &str) -> Result<u32, String> {
    let parts: Vec<&str> = value
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .collect();
    if parts.len() == 1 {
        return parse_argb(value).map_err(|e| format!("bgc={value}: {e}"));
    }
    if !(3..=4).contains(&parts.len()) {
        return Err(format!("bgc={value}: not R,G,B,A"));
    }
    let mut rgba = [255u8; 4];
    for (slot, part) in rgba.iter_mut().zip(&parts) {
        *slot = part
            .parse::<u8>()
            .map_err(|_| format!("bgc={value}: '{part}' is not 0..255"))?;
    }
    let [r, g, b, a] = rgba;
    Ok(u32::from_be_bytes([a, r, g, b]))
}

fn parse_enum<T: ValueEnum>(name: &str, value: &str) -> Result<T, String> {
    T::from_str(value, true).map_err(|_| {
        let known: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        format!("{name}={value}: not one of {}", known.join(", "))
    })
}

/// Reads `pairs` (a query string's, in order) over `defaults` (the
/// service's own options); `model` is the model the service runs.
pub fn parse(pairs: &[(String, String)], defaults: Asked, model: &str) -> Result<Asked, String> {
    let mut asked = defaults;
    let mut explicit_mode = false;
    let mut explicit_feather = false;
    let mut bgc = None;
    let mut only_mask = false;
    let mut seen = Vec::new();
    for (name, value) in pairs {
        if !NAMES.contains(&name.as_str()) {
            return Err(format!(
                "unknown option '{name}' (known: {})",
                NAMES.join(", ")
            ));
        }
        if seen.contains(name) {
            return Err(format!("option '{name}' is given twice"));
        }
        seen.push(name.clone());
        let look = &mut asked.look;
        match name.as_str() {
            "mode" => {
                look.mode = parse_enum::<Mode>(name, value)?;
                explicit_mode = true;
            }
            "threshold" => {
                look.threshold = parse_unit(value).map_err(|e| format!("{name}: {e}"))?
            }
            "feather" => {
                look.feather = parse_unit(value).map_err(|e| format!("{name}: {e}"))?;
                explicit_feather = true;
            }
            "fill-color" => {
                look.fill_color = parse_argb(value).map_err(|e| format!("{name}: {e}"))?
            }
            "blur-radius" => {
                look.blur_radius = match value.parse::<u32>() {
                    Ok(r) if (1..=256).contains(&r) => r,
                    _ => return Err(format!("{name}={value}: not a radius within 1..256")),
                }
            }
            "format" => asked.format = parse_enum::<Format>(name, value)?,
            "om" => only_mask = parse_bool(name, value)?,
            "bgc" => bgc = Some(parse_bgc(value)?),
            "model" if value != model => {
                return Err(format!(
                    "model={value}: this service runs {model} (start it with --model {value})"
                ));
            }
            "model" => {}
            "a" if parse_bool(name, value)? => {
                return Err(
                    "a=true: alpha matting is not done here; feather=0..1 gives a soft \
                            edge in mode=composite"
                        .into(),
                );
            }
            "ppm" if parse_bool(name, value)? => {
                return Err("ppm=true: mask post-processing is not done here".into());
            }
            "a" | "ppm" => {}
            "af" | "ab" | "ae" => {
                value
                    .parse::<f64>()
                    .map_err(|_| format!("{name}={value}: not a number"))?;
            }
            "extras" => return Err("extras: no model here takes extras".into()),
            "url" => {
                return Err(
                    "url: this service does not fetch URLs (a server that fetches \
                            what it is told can be turned against its own network); send the \
                            image in a POST"
                        .into(),
                );
            }
            _ => unreachable!("every name in NAMES is matched"),
        }
    }
    if only_mask {
        if explicit_mode && asked.look.mode != Mode::Mask {
            return Err("om=true asks for the mask: it cannot go with another mode".into());
        }
        asked.look.mode = Mode::Mask;
    } else if let Some(colour) = bgc {
        if explicit_mode && asked.look.mode != Mode::Composite {
            return Err("bgc is a background colour for mode=composite".into());
        }
        // rembg lays its cut-out over the colour: a soft edge, not a cut.
        asked.look.mode = Mode::Composite;
        asked.look.fill_color = colour;
        if !explicit_feather {
            asked.look.feather = 1.0;
        }
    }
    if asked.format == Format::Jpg && asked.look.mode == Mode::Alpha {
        return Err(
            "format=jpg has no alpha channel for a cut-out: use format=png or webp, \
                    or mode=composite with an opaque fill-color"
                .into(),
        );
    }
    Ok(asked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Asked {
        Asked {
            look: LookArgs {
                mode: Mode::Alpha,
                threshold: 0.5,
                feather: 0.0,
                fill_color: 0,
                blur_radius: 12,
            },
            format: Format::Png,
        }
    }

    fn ask(query: &[(&str, &str)]) -> Result<Asked, String> {
        let pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(&pairs, defaults(), "u2netp")
    }

    #[test]
    fn no_options_keep_the_services_own() {
        assert_eq!(ask(&[]), Ok(defaults()));
    }

    #[test]
    fn rembg_names_mean_what_they_mean_there() {
        assert_eq!(ask(&[("om", "true")]).unwrap().look.mode, Mode::Mask);
        let over_white = ask(&[("bgc", "255,255,255,255")]).unwrap().look;
        assert_eq!(
            (over_white.mode, over_white.fill_color, over_white.feather),
            (Mode::Composite, 0xffff_ffff, 1.0)
        );
        assert_eq!(
            ask(&[("bgc", "(0,128,255)")]).unwrap().look.fill_color,
            0xff00_80ff
        );
        assert_eq!(ask(&[("model", "u2netp"), ("a", "false")]), Ok(defaults()));
    }

    #[test]
    fn ours_set_the_look_and_the_format() {
        let asked = ask(&[
            ("mode", "composite"),
            ("threshold", "0.25"),
            ("feather", "0.1"),
            ("fill-color", "0xff00ff00"),
            ("format", "webp"),
        ])
        .unwrap();
        assert_eq!(
            asked.look,
            LookArgs {
                mode: Mode::Composite,
                threshold: 0.25,
                feather: 0.1,
                fill_color: 0xff00_ff00,
                blur_radius: 12,
            }
        );
        assert_eq!(asked.format, Format::Webp);
    }

    #[test]
    fn bad_options_are_refused_by_name() {
        let refused = |q: &[(&str, &str)], says: &str| {
            let e = ask(q).unwrap_err();
            assert!(e.contains(says), "{q:?}: {e}");
        };
        refused(
            &[("mode", "sepia")],
            "mode=sepia: not one of alpha, composite, mask, blur",
        );
        refused(&[("threshold", "2")], "threshold: 2 is not within 0..1");
        refused(&[("colour", "red")], "unknown option 'colour'");
        refused(&[("bgc", "300,0,0")], "'300' is not 0..255");
        refused(&[("om", "maybe")], "om=maybe: not true or false");
        refused(&[("a", "true")], "alpha matting is not done here");
        refused(&[("model", "u2net")], "this service runs u2netp");
        refused(&[("url", "http://10.0.0.1/")], "does not fetch URLs");
        refused(&[("format", "jpg")], "format=jpg has no alpha channel");
        refused(
            &[("om", "true"), ("mode", "blur")],
            "cannot go with another mode",
        );
        refused(&[("mode", "mask"), ("mode", "alpha")], "given twice");
        refused(&[("blur-radius", "0")], "not a radius within 1..256");
    }
}
