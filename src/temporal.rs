// SPDX-License-Identifier: MPL-2.0
//! Motion-aware temporal smoothing of masks (the `temporal-smoothing`
//! property). No GStreamer types.
//!
//! Per-frame masks flicker where the picture does not change: the model
//! sees a slightly different frame (sensor noise, compression) and answers
//! slightly differently. A plain running average of the whole mask damps
//! that, but drags the mask behind anything that moves. Here each pixel of
//! the mask is averaged with the previous one by a weight that falls with
//! how much the picture changed there: `strength` where it is still, nothing
//! where it moved by [`MOTION_LEVELS`] or more. A cut (most of the picture
//! changed; with the motion followed, much of it unexplained by the
//! motion) starts afresh.
//!
//! With `follow_motion`, the last mask (and the last picture it is compared
//! with) is also moved along with the picture's motion since
//! ([`crate::motion`]), and each pixel goes on from whichever past, moved
//! or as it was, matches its new picture better: where something moved and
//! the motion explains the new picture, the average goes on there too,
//! following the subject, instead of starting afresh at each frame; a still
//! pixel beside a moving edge keeps its own average (a block's motion must
//! not hand it a neighbour's); only what neither explains (something
//! uncovered, a new shape) follows the new mask at once. A camera pan is
//! then no cut either.
//!
//! It works at the model's size, on the frames the masks were computed from
//! (blurred 3x3, so that noise does not count as motion).

use crate::motion::MotionEstimator;

/// A change of this many levels (0..255, in any of R, G, B of the blurred
/// picture) or more counts as motion: the mask follows the new frame.
pub const MOTION_LEVELS: f32 = 8.0;

/// More than this share of the picture moving is a cut: no smoothing
/// (the past as it was; see [`CUT_FRACTION_MOVED`] for the moved past).
pub const CUT_FRACTION: f32 = 0.5;

/// The same, once the past is moved along with the motion: within a shot
/// the moved past explains nearly all of the new frame (on Megamind.avi
/// and vtest.avi at most 3 % of it is off by [`MOTION_LEVELS`]), where
/// without motion a moving subject or a pan leaves up to 18 % off. Across
/// a cut the motion still "finds" the flat, dark parts of the new shot:
/// 46-94 % off across Megamind.avi's cuts, so [`CUT_FRACTION`] missed one
/// (and the average of the last shot's mask bled into the new one). Well
/// above what a shot leaves (a subject turning shows a fifth of a close-up
/// anew: no cut, tested), below the cuts seen.
pub const CUT_FRACTION_MOVED: f32 = 0.35;

/// The running smoothed mask of one stream.
#[derive(Debug, Default)]
pub struct TemporalSmoother {
    width: u32,
    height: u32,
    /// The blurred RGB of the frame the last mask came from.
    previous_rgb: Vec<u8>,
    /// The same frame as it came (motion is estimated on it), when
    /// following motion.
    previous_raw: Vec<u8>,
    motion: MotionEstimator,
    /// The last mask and blurred picture, moved to the new frame.
    moved_mask: Vec<f32>,
    moved_rgb: Vec<u8>,
    /// The last smoothed mask, 0..255, kept in f32 so that repeated
    /// averaging does not round away small changes.
    previous_mask: Vec<f32>,
    blurred: Vec<u8>,
}

impl TemporalSmoother {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the past: the next mask is taken as it is (flush, new caps).
    pub fn reset(&mut self) {
        self.previous_rgb.clear();
        self.previous_raw.clear();
        self.previous_mask.clear();
    }

    /// Smooths `mask` (model size, `width` x `height`, u8) in place, given
    /// `rgb`, the frame it was computed from at the same size (packed RGB).
    /// `strength` in 0..1; 0 leaves the mask as it is and forgets the past.
    /// `follow_motion`: the past is also moved along with the picture, and
    /// each pixel goes on from the past (moved or not) that explains it.
    pub fn smooth(
        &mut self,
        strength: f64,
        follow_motion: bool,
        rgb: &[u8],
        mask: &mut [u8],
        width: u32,
        height: u32,
    ) {
        let pixels = width as usize * height as usize;
        if strength <= 0.0 || rgb.len() < 3 * pixels || mask.len() < pixels || pixels == 0 {
            self.reset();
            return;
        }
        let strength = strength.min(1.0) as f32;
        box_blur_3x3(&rgb[..3 * pixels], width, height, &mut self.blurred);
        let same_size = (self.width, self.height) == (width, height)
            && self.previous_rgb.len() == 3 * pixels
            && self.previous_mask.len() == pixels;
        if !same_size {
            self.restart(rgb, follow_motion, mask, width, height);
            return;
        }
        let moved = follow_motion && self.follow(rgb, width, height);
        let cut_fraction = if moved {
            CUT_FRACTION_MOVED
        } else {
            CUT_FRACTION
        };
        if self.moved_fraction(moved) > cut_fraction {
            self.restart(rgb, follow_motion, mask, width, height);
            return;
        }
        if moved {
            // Each pixel goes on from the past that explains its picture
            // best: moved where the motion does, as it was where the
            // picture stayed (a still pixel next to a moving edge keeps
            // its own average instead of taking a neighbour's).
            for ((((prev, prev_rgb), moved_mask), moved_rgb), now) in self
                .previous_mask
                .iter_mut()
                .zip(self.previous_rgb.chunks_exact_mut(3))
                .zip(&self.moved_mask)
                .zip(self.moved_rgb.chunks_exact(3))
                .zip(self.blurred.chunks_exact(3))
            {
                if channel_change(now, moved_rgb) < channel_change(now, prev_rgb) {
                    *prev = *moved_mask;
                    prev_rgb.copy_from_slice(moved_rgb);
                }
            }
        }
        for (((m, prev), now), before) in mask[..pixels]
            .iter_mut()
            .zip(self.previous_mask.iter_mut())
            .zip(self.blurred.chunks_exact(3))
            .zip(self.previous_rgb.chunks_exact(3))
        {
            let change = channel_change(now, before);
            let weight = strength * (1.0 - change / MOTION_LEVELS).max(0.0);
            let smoothed = weight * *prev + (1.0 - weight) * f32::from(*m);
            *prev = smoothed;
            *m = smoothed.round().clamp(0.0, 255.0) as u8;
        }
        std::mem::swap(&mut self.previous_rgb, &mut self.blurred);
        self.keep_raw(rgb, follow_motion, pixels);
    }

    /// Moves the last mask and picture along with the motion from the
    /// last frame to `rgb` into `moved_mask` and `moved_rgb`, where that
    /// frame is known and something moved; false where nothing did.
    fn follow(&mut self, rgb: &[u8], width: u32, height: u32) -> bool {
        let Some(field) = self
            .motion
            .estimate(&self.previous_raw, rgb, width, height)
            .filter(|f| !f.is_still())
        else {
            return false;
        };
        field.warp_mask_f32(&self.previous_mask, &mut self.moved_mask);
        field.warp_u8(&self.previous_rgb, 3, &mut self.moved_rgb);
        true
    }

    fn keep_raw(&mut self, rgb: &[u8], follow_motion: bool, pixels: usize) {
        self.previous_raw.clear();
        if follow_motion {
            self.previous_raw.extend_from_slice(&rgb[..3 * pixels]);
        }
    }

    /// Share of pixels that moved between the last frame (moved along with
    /// the motion where `moved`: a pan is no cut) and the blurred one in
    /// `self.blurred`. Not the lesser of the two changes: in a flat
    /// picture (an animated film) the still past matches much of a new
    /// shot too, and cuts went unseen (Megamind.avi flickered 37 % of the
    /// per-frame masks' at 0.9 instead of 32 %).
    fn moved_fraction(&self, moved: bool) -> f32 {
        let pixels = self.blurred.len() / 3;
        if pixels == 0 {
            return 0.0;
        }
        let past = if moved {
            &self.moved_rgb
        } else {
            &self.previous_rgb
        };
        let count = self
            .blurred
            .chunks_exact(3)
            .zip(past.chunks_exact(3))
            .filter(|(now, before)| channel_change(now, before) >= MOTION_LEVELS)
            .count();
        count as f32 / pixels as f32
    }

    fn restart(&mut self, rgb: &[u8], follow_motion: bool, mask: &[u8], width: u32, height: u32) {
        let pixels = width as usize * height as usize;
        self.width = width;
        self.height = height;
        self.previous_mask.clear();
        self.previous_mask
            .extend(mask[..pixels].iter().map(|&m| f32::from(m)));
        std::mem::swap(&mut self.previous_rgb, &mut self.blurred);
        self.keep_raw(rgb, follow_motion, pixels);
    }
}

/// The largest change among R, G and B.
pub fn channel_change(now: &[u8], before: &[u8]) -> f32 {
    now.iter()
        .zip(before)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .map_or(0.0, f32::from)
}

/// The mean of each pixel's 3x3 neighbourhood (clamped at the borders), per
/// channel, of packed RGB.
pub fn box_blur_3x3(rgb: &[u8], width: u32, height: u32, out: &mut Vec<u8>) {
    let (w, h) = (width as usize, height as usize);
    out.clear();
    out.resize(3 * w * h, 0);
    if w == 0 || h == 0 {
        return;
    }
    // Horizontal sums, then vertical, in u16 (9 x 255 fits).
    let mut rows = vec![0u16; 3 * w * h];
    for y in 0..h {
        let src = &rgb[3 * w * y..3 * w * (y + 1)];
        let dst = &mut rows[3 * w * y..3 * w * (y + 1)];
        for x in 0..w {
            let (l, r) = (x.saturating_sub(1), (x + 1).min(w - 1));
            for c in 0..3 {
                dst[3 * x + c] = u16::from(src[3 * l + c])
                    + u16::from(src[3 * x + c])
                    + u16::from(src[3 * r + c]);
            }
        }
    }
    for y in 0..h {
        let (up, down) = (y.saturating_sub(1), (y + 1).min(h - 1));
        for i in 0..3 * w {
            let sum = rows[3 * w * up + i] + rows[3 * w * y + i] + rows[3 * w * down + i];
            out[3 * w * y + i] = ((sum + 4) / 9) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u32 = 16;
    const H: u32 = 8;

    fn flat(value: u8) -> Vec<u8> {
        vec![value; 3 * (W * H) as usize]
    }

    #[test]
    fn strength_zero_changes_nothing() {
        let mut s = TemporalSmoother::new();
        for v in [10u8, 200, 30] {
            let mut mask = vec![v; (W * H) as usize];
            s.smooth(0.0, false, &flat(100), &mut mask, W, H);
            assert!(mask.iter().all(|&m| m == v));
        }
    }

    #[test]
    fn a_still_picture_damps_the_masks_changes() {
        let mut s = TemporalSmoother::new();
        let rgb = flat(100);
        let mut first = vec![100u8; (W * H) as usize];
        s.smooth(0.8, false, &rgb, &mut first, W, H);
        assert!(
            first.iter().all(|&m| m == 100),
            "the first mask is taken as it is"
        );
        let mut second = vec![200u8; (W * H) as usize];
        s.smooth(0.8, false, &rgb, &mut second, W, H);
        // 0.8 * 100 + 0.2 * 200
        assert!(second.iter().all(|&m| m == 120), "{:?}", &second[..4]);
    }

    #[test]
    fn where_the_picture_moved_the_mask_follows_at_once() {
        let mut s = TemporalSmoother::new();
        let before = flat(100);
        let mut mask = vec![0u8; (W * H) as usize];
        s.smooth(0.8, false, &before, &mut mask, W, H);
        // The left quarter changes by 60 levels, the rest stays.
        let mut after = before.clone();
        for y in 0..H as usize {
            for x in 0..(W / 4) as usize {
                for c in 0..3 {
                    after[3 * (y * W as usize + x) + c] = 160;
                }
            }
        }
        let mut mask = vec![255u8; (W * H) as usize];
        s.smooth(0.8, false, &after, &mut mask, W, H);
        let at = |x: usize, y: usize| mask[y * W as usize + x];
        assert_eq!(at(0, 3), 255, "moved: the new mask");
        assert_eq!(at(W as usize - 1, 3), 51, "still: 0.8 * 0 + 0.2 * 255");
    }

    /// A textured disc of radius 20 centred at (`cx`, 80) over a still
    /// textured background, 160x160.
    fn disc_scene(cx: f32) -> Vec<u8> {
        let texture = |x: i32, y: i32| {
            let h = (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663)) as u32;
            (h.wrapping_mul(2_654_435_761) >> 27) as f32 * 4.0
        };
        let mut rgb = Vec::new();
        for y in 0..160 {
            for x in 0..160 {
                let (dx, dy) = (x as f32 - cx, y as f32 - 80.0);
                let [r, g, b] = if dx.hypot(dy) <= 20.0 {
                    // The disc's texture moves with it.
                    let t = texture(dx.round() as i32 / 2, dy.round() as i32 / 2);
                    [170.0 + t, 150.0 + t, 120.0 + t]
                } else {
                    let t = texture(x / 2, y / 2);
                    [t, 30.0 + t, 20.0 + t]
                };
                rgb.extend([r as u8, g as u8, b as u8]);
            }
        }
        rgb
    }

    #[test]
    fn following_motion_a_cut_that_keeps_a_flat_part_is_still_a_cut() {
        const SIDE: u32 = 160;
        // A flat dark left part that stays, and a textured right part
        // (45 % of the picture) that a cut replaces: less than
        // CUT_FRACTION changes, but the motion explains none of it.
        let flat_left = |scene: Vec<u8>| -> Vec<u8> {
            scene
                .chunks_exact(3)
                .enumerate()
                .flat_map(|(i, p)| {
                    if i as u32 % SIDE < 88 {
                        [12, 10, 14]
                    } else {
                        [p[0], p[1], p[2]]
                    }
                })
                .collect()
        };
        let before = flat_left(disc_scene(120.0));
        let after = flat_left(
            disc_scene(120.0)
                .iter()
                .map(|v| v.wrapping_add(128))
                .collect(),
        );
        let pixels = (SIDE * SIDE) as usize;
        let mut smoother = TemporalSmoother::new();
        let mut mask = vec![0u8; pixels];
        smoother.smooth(0.8, true, &before, &mut mask, SIDE, SIDE);
        // The motion is followed here (it would be judged by CUT_FRACTION
        // otherwise, and missed).
        assert!(smoother.follow(&after, SIDE, SIDE), "the past was moved");
        let mut mask = vec![250u8; pixels];
        smoother.smooth(0.8, true, &after, &mut mask, SIDE, SIDE);
        // Averaged on, the flat part would keep 0.8 of the last shot's
        // mask: 0.8 * 0 + 0.2 * 250 = 50.
        assert_eq!(
            mask[(80 * SIDE + 20) as usize],
            250,
            "the flat part starts afresh"
        );
        assert!(mask.iter().all(|&m| m == 250), "a cut starts afresh");
    }

    #[test]
    fn following_motion_a_subject_showing_a_fifth_of_the_picture_anew_is_no_cut() {
        const SIDE: u32 = 160;
        // The disc moves 6 px, and the top fifth of the picture shows
        // something new (a subject turning round in a close-up): the
        // motion explains the rest.
        let before = disc_scene(60.0);
        let mut after = disc_scene(66.0);
        for v in &mut after[..(3 * SIDE * 32) as usize] {
            *v = v.wrapping_add(128);
        }
        let pixels = (SIDE * SIDE) as usize;
        let mut smoother = TemporalSmoother::new();
        let mut mask = vec![0u8; pixels];
        smoother.smooth(0.8, true, &before, &mut mask, SIDE, SIDE);
        assert!(smoother.follow(&after, SIDE, SIDE), "the past was moved");
        box_blur_3x3(&after, SIDE, SIDE, &mut smoother.blurred);
        let unexplained = smoother.moved_fraction(true);
        assert!(unexplained > 0.19, "{unexplained} of the picture is new");
        let mut mask = vec![250u8; pixels];
        smoother.smooth(0.8, true, &after, &mut mask, SIDE, SIDE);
        // Still background far from both: 0.8 * 0 + 0.2 * 250.
        assert_eq!(mask[(130 * SIDE + 130) as usize], 50, "the average goes on");
        // What is new follows the new mask at once.
        assert_eq!(mask[(10 * SIDE + 130) as usize], 250);
    }

    #[test]
    fn following_motion_the_average_moves_with_the_subject_and_still_pixels_keep_their_own() {
        const SIDE: u32 = 160;
        let (before, after) = (disc_scene(60.0), disc_scene(70.0));
        let distance = |x: u32, y: u32, cx: f32| (x as f32 - cx).hypot(y as f32 - 80.0);
        // The background's mask has a pattern, so that a pixel that took a
        // neighbour's average would show.
        let first: Vec<u8> = (0..SIDE * SIDE)
            .map(|i| {
                let (x, y) = (i % SIDE, i / SIDE);
                if distance(x, y, 60.0) <= 20.0 {
                    255
                } else {
                    (x % 7 * 10) as u8
                }
            })
            .collect();
        let second: Vec<u8> = (0..SIDE * SIDE)
            .map(|i| {
                if distance(i % SIDE, i / SIDE, 70.0) <= 20.0 {
                    155
                } else {
                    0
                }
            })
            .collect();
        let smoothed = |follow: bool| {
            let mut s = TemporalSmoother::new();
            let mut mask = first.clone();
            s.smooth(0.8, follow, &before, &mut mask, SIDE, SIDE);
            assert_eq!(mask, first, "the first mask is taken as it is");
            let mut mask = second.clone();
            s.smooth(0.8, follow, &after, &mut mask, SIDE, SIDE);
            mask
        };
        let (followed, unmoved) = (smoothed(true), smoothed(false));
        let mut inside = Vec::new();
        for y in 0..SIDE {
            for x in 0..SIDE {
                let i = (y * SIDE + x) as usize;
                let (old, new) = (distance(x, y, 60.0), distance(x, y, 70.0));
                if new <= 17.0 {
                    // Inside the disc: its average came along with it
                    // (0.8 * 255 + 0.2 * 155 = 235; less where the moved
                    // picture is a level or two off and weighs less),
                    // not started afresh (155).
                    assert!(followed[i] > 175, "({x}, {y}) followed: {}", followed[i]);
                    inside.push(f32::from(followed[i]));
                    if old > 21.0 {
                        // Where the disc came to, the picture changed: not
                        // following, the mask starts afresh.
                        assert_eq!(unmoved[i], 155, "({x}, {y}) unmoved");
                    }
                } else if old > 23.0 && new > 23.0 {
                    // Still background, also beside the moving edge: its
                    // own average, not a neighbour's moved one.
                    let own = (0.8 * f32::from(first[i])).round() as u8;
                    assert_eq!(followed[i], own, "({x}, {y}) followed");
                    assert_eq!(unmoved[i], own, "({x}, {y}) unmoved");
                }
            }
        }
        let mean = inside.iter().sum::<f32>() / inside.len() as f32;
        assert!(mean >= 230.0, "mean inside the disc {mean}");
    }

    #[test]
    fn following_motion_a_pan_is_no_cut_and_a_cut_still_is() {
        const SIDE: u32 = 160;
        // The whole textured picture moves 6 px to the right: most pixels
        // changed where they are, none once moved.
        let before = disc_scene(60.0);
        let panned: Vec<u8> = (0..SIDE * SIDE)
            .flat_map(|i| {
                let (x, y) = (i % SIDE, i / SIDE);
                let from = 3 * (y * SIDE + x.saturating_sub(6)) as usize;
                [before[from], before[from + 1], before[from + 2]]
            })
            .collect();
        let pixels = (SIDE * SIDE) as usize;
        let smoothed = |follow: bool, next: &[u8]| {
            let mut s = TemporalSmoother::new();
            let mut mask = vec![0u8; pixels];
            s.smooth(0.8, follow, &before, &mut mask, SIDE, SIDE);
            let mut mask = vec![250u8; pixels];
            s.smooth(0.8, follow, next, &mut mask, SIDE, SIDE);
            mask
        };
        let centre = (80 * SIDE + 80) as usize;
        assert_eq!(
            smoothed(false, &panned)[centre],
            250,
            "not following, a pan is a cut"
        );
        let followed = smoothed(true, &panned);
        assert_eq!(
            followed[centre], 50,
            "following, the average goes on: 0.8 * 0 + 0.2 * 250"
        );
        let averaged = followed.iter().filter(|&&m| m == 50).count();
        assert!(
            averaged * 10 >= pixels * 9,
            "{averaged} of {pixels} averaged"
        );
        // Another picture altogether: no motion explains it.
        let other: Vec<u8> = before.iter().map(|v| v.wrapping_add(128)).collect();
        assert!(
            smoothed(true, &other).iter().all(|&m| m == 250),
            "a cut starts afresh"
        );
    }

    #[test]
    fn a_cut_and_a_new_size_start_afresh() {
        let mut s = TemporalSmoother::new();
        let mut mask = vec![0u8; (W * H) as usize];
        s.smooth(0.8, false, &flat(20), &mut mask, W, H);
        let mut mask = vec![250u8; (W * H) as usize];
        s.smooth(0.8, false, &flat(220), &mut mask, W, H);
        assert!(mask.iter().all(|&m| m == 250), "a cut: no smoothing");

        let mut small = vec![90u8; 4 * 4];
        s.smooth(0.8, false, &[220u8; 3 * 16], &mut small, 4, 4);
        assert!(small.iter().all(|&m| m == 90), "another size: no smoothing");
    }

    #[test]
    fn reset_forgets_the_last_mask() {
        let mut s = TemporalSmoother::new();
        let rgb = flat(100);
        let mut mask = vec![0u8; (W * H) as usize];
        s.smooth(0.8, false, &rgb, &mut mask, W, H);
        s.reset();
        let mut mask = vec![200u8; (W * H) as usize];
        s.smooth(0.8, false, &rgb, &mut mask, W, H);
        assert!(mask.iter().all(|&m| m == 200));
    }

    #[test]
    fn the_blur_averages_each_neighbourhood() {
        // One bright pixel in the middle of a 3x3 black picture.
        let mut rgb = vec![0u8; 27];
        rgb[12..15].copy_from_slice(&[90, 90, 90]);
        let mut out = Vec::new();
        box_blur_3x3(&rgb, 3, 3, &mut out);
        assert_eq!(&out[12..15], &[10, 10, 10]);
        // A corner repeats its border: it sees the bright pixel once of 9.
        assert_eq!(&out[0..3], &[10, 10, 10]);
    }
}
