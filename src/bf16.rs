// SPDX-License-Identifier: MPL-2.0
//! bfloat16 rounding, for the parts of the model and its input that are
//! made ready for bf16 inference. No GStreamer types.

/// `value` rounded to the nearest bf16 (ties to even), as f32. Infinities
/// and NaN stay as they are.
pub fn round_to_bf16(value: f32) -> f32 {
    if !value.is_finite() {
        return value;
    }
    let bits = value.to_bits();
    let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) & 0xFFFF_0000;
    f32::from_bits(rounded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_keeps_8_significant_bits_ties_to_even() {
        assert_eq!(round_to_bf16(1.0), 1.0);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: to even (1).
        assert_eq!(round_to_bf16(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(round_to_bf16(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        assert_eq!(round_to_bf16(226.324), 226.0);
        assert_eq!(round_to_bf16(53.253), 53.25);
        assert_eq!(round_to_bf16(-40.1), -40.0);
        let x = 0.123_456_79_f32;
        let hi = round_to_bf16(x);
        assert!((x - hi).abs() <= hi.abs() / 256.0);
        assert_eq!(round_to_bf16(hi), hi);
        assert!(round_to_bf16(f32::NAN).is_nan());
        assert_eq!(round_to_bf16(f32::INFINITY), f32::INFINITY);
    }
}
