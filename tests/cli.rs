// SPDX-License-Identifier: MPL-2.0
//! The `u2netmatte` command-line tool on a folder of mixed sizes and formats
//! with one corrupt file.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const TOOL: &str = env!("CARGO_BIN_EXE_u2netmatte");

/// Writes a test picture with GStreamer's encoders.
fn picture(path: &Path, w: u32, h: u32, encoder: &str) {
    let p = parse_pipeline(&format!(
        "videotestsrc num-buffers=1 pattern=ball ! video/x-raw,width={w},height={h} ! videoconvert ! \
         {encoder} ! filesink location={}",
        path.display()
    ));
    run_pipeline(&p, Duration::from_secs(30)).unwrap();
}

fn inputs(dir: &Path, with_corrupt: bool) {
    std::fs::create_dir_all(dir).unwrap();
    picture(&dir.join("ball.png"), 200, 150, "pngenc");
    picture(&dir.join("wide.jpg"), 321, 97, "jpegenc");
    picture(&dir.join("tall.jpeg"), 90, 260, "jpegenc");
    // GStreamer has no TIFF encoder here: a PNG re-encoded by the image crate.
    let png = dir.join("scan.png.tmp");
    picture(&png, 120, 80, "pngenc");
    image::load_from_memory_with_format(&std::fs::read(&png).unwrap(), image::ImageFormat::Png)
        .unwrap()
        .save_with_format(dir.join("scan.tiff"), image::ImageFormat::Tiff)
        .unwrap();
    std::fs::remove_file(png).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a picture, and not one to pick").unwrap();
    if with_corrupt {
        std::fs::write(
            dir.join("broken.png"),
            b"\x89PNG\r\n\x1a\n this is not the rest of a png",
        )
        .unwrap();
    }
}

/// Runs the tool; a run that has not ended after two minutes is killed and
/// fails the test, so a hang is a failure, never a stuck CI.
fn run(args: &[&str]) -> (i32, String) {
    run_within(args, Duration::from_secs(120))
}

fn run_within(args: &[&str], limit: Duration) -> (i32, String) {
    let child = Command::new(TOOL)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the tool runs");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let Ok(out) = rx.recv_timeout(limit) else {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        panic!("u2netmatte {} did not end within {limit:?}", args.join(" "));
    };
    let out = out.expect("the tool's output is read");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("u2netmatte {}\n{stderr}", args.join(" "));
    (out.status.code().unwrap_or(-1), stderr)
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn a_folder_with_a_corrupt_file() {
    init();
    let dir = temp_dir("cli");
    let (src, out) = (dir.join("in"), dir.join("out"));
    inputs(&src, true);
    let (code, stderr) = run(&[
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-b",
        "2",
        "--quiet",
    ]);
    assert_eq!(code, 1, "one file failed: the exit code says so");
    assert!(stderr.contains("broken.png: cannot read it"), "{stderr}");
    assert!(stderr.contains("4 of 5 files written"), "{stderr}");
    // Every good input has its cut-out, at its size, with alpha; no
    // temporary file is left behind.
    assert_eq!(
        listing(&out),
        ["ball.png", "scan.png", "tall.png", "wide.png"]
    );
    for (name, w, h) in [
        ("ball.png", 200, 150),
        ("scan.png", 120, 80),
        ("wide.png", 321, 97),
        ("tall.png", 90, 260),
    ] {
        let img = image::open(out.join(name)).unwrap();
        assert_eq!((img.width(), img.height()), (w, h), "{name}");
        assert_eq!(img.color(), image::ColorType::Rgba8, "{name}");
        let alpha: Vec<u8> = img.to_rgba8().pixels().map(|p| p.0[3]).collect();
        assert!(
            alpha.contains(&0) && alpha.contains(&255),
            "{name}: a cut-out, not a copy"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn all_good_files_exit_zero_in_every_format() {
    init();
    let dir = temp_dir("cli-formats");
    let src = dir.join("in");
    inputs(&src, false);
    for (format, mode, color) in [
        ("webp", "alpha", image::ColorType::Rgba8),
        ("jpg", "composite", image::ColorType::Rgb8),
        ("png", "mask", image::ColorType::L8),
    ] {
        let out = dir.join(format);
        let (code, stderr) = run(&[
            src.join("ball.png").to_str().unwrap(),
            src.join("wide.jpg").to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--format",
            format,
            "--mode",
            mode,
            "--fill-color",
            "0xff00b140",
            "--provider",
            "cpu",
        ]);
        assert_eq!(code, 0, "{format}: {stderr}");
        assert_eq!(
            listing(&out),
            [format!("ball.{format}"), format!("wide.{format}")]
        );
        let img = image::open(out.join(format!("wide.{format}"))).unwrap();
        assert_eq!(
            (img.width(), img.height(), img.color()),
            (321, 97, color),
            "{format}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Decoders run in parallel and finish out of order: each frame must still
/// reach the element under its own caps. Many small pictures of different
/// sizes keep several decoders waiting on a full queue at once.
#[test]
fn many_sizes_decoded_in_parallel() {
    init();
    let dir = temp_dir("cli-parallel");
    let (src, out) = (dir.join("in"), dir.join("out"));
    std::fs::create_dir_all(&src).unwrap();
    let sizes: Vec<(u32, u32)> = (0..24u32)
        .map(|i| (40 + 13 * i, 30 + 7 * (i % 5)))
        .collect();
    for (i, &(w, h)) in sizes.iter().enumerate() {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let inside = (x as i64 - w as i64 / 2).pow(2) + (y as i64 - h as i64 / 2).pow(2)
                < (h as i64 / 3).pow(2);
            if inside {
                image::Rgb([220, 40, 30])
            } else {
                image::Rgb([(x * 255 / w) as u8, 120, (y * 255 / h) as u8])
            }
        });
        img.save(src.join(format!("p{i:02}.png"))).unwrap();
    }
    for batch in ["1", "3"] {
        let _ = std::fs::remove_dir_all(&out);
        let (code, stderr) = run(&[
            src.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-b",
            batch,
            "--jobs",
            "4",
            "--mode",
            "mask",
            "--quiet",
        ]);
        assert_eq!(code, 0, "batch {batch}: {stderr}");
        assert!(stderr.contains("24 of 24 files written"), "{stderr}");
        for (i, &(w, h)) in sizes.iter().enumerate() {
            let img = image::open(out.join(format!("p{i:02}.png"))).unwrap();
            assert_eq!(
                (img.width(), img.height()),
                (w, h),
                "p{i:02}, batch {batch}"
            );
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn impossible_requests_are_refused_before_any_work() {
    let dir = temp_dir("cli-refuse");
    let (code, stderr) = run(&[
        "x.png",
        "-o",
        dir.to_str().unwrap(),
        "--format",
        "jpg",
        "--mode",
        "alpha",
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("jpg has no alpha channel"), "{stderr}");
    let (code, stderr) = run(&[
        "x.png",
        "-o",
        dir.to_str().unwrap(),
        "--model",
        "/no/such.onnx",
    ]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("model file /no/such.onnx does not exist"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// How many times `needle` occurs in `text`.
fn occurrences(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

/// A red disc on a noisy gradient: u2netp finds the disc (the subject).
fn disc_picture(path: &Path, w: u32, h: u32) {
    let mut seed = 12345u32;
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let noise = (seed >> 16) % 90;
        let (dx, dy) = (x as i64 - w as i64 / 2, y as i64 - h as i64 / 2);
        if dx * dx + dy * dy < (h as i64 / 3).pow(2) {
            image::Rgb([220, 40, 30])
        } else {
            image::Rgb([
                (x * 120 / w) as u8 + noise as u8,
                90 + (noise / 2) as u8,
                (y * 120 / h) as u8 + noise as u8,
            ])
        }
    });
    img.save(path).unwrap();
}

#[test]
fn a_model_that_fails_at_run_time_ends_the_run_at_once_with_its_error() {
    init();
    let dir = temp_dir("cli-run-fails");
    let (src, out) = (dir.join("in"), dir.join("out"));
    inputs(&src, true);
    // Loads (1x3x64x64 in, 1x1x64x64 out), and every run fails.
    let model = dir.join("channel7.onnx");
    write_channel_model(&model, 7);
    let started = std::time::Instant::now();
    let (code, stderr) = run_within(
        &[
            src.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--provider",
            "cpu",
            "--jobs",
            "2",
        ],
        Duration::from_secs(30),
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("error: inference failed:"), "{stderr}");
    assert!(
        stderr.contains("indices element out of data bounds"),
        "{stderr}"
    );
    // The skip list survives the fatal error, each file named once.
    assert_eq!(
        occurrences(&stderr, "broken.png: cannot read it"),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("0 of 5 files written to") && stderr.contains("1 failed; not done:"),
        "{stderr}"
    );
    for name in ["ball.png", "scan.tiff", "tall.jpeg", "wide.jpg"] {
        assert_eq!(
            occurrences(&stderr, &format!("  {}\n", src.join(name).display())),
            1,
            "{name} is not done: {stderr}"
        );
    }
    assert!(listing(&out).is_empty(), "{:?}", listing(&out));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_fatal_error_after_some_files_says_what_was_written_and_what_was_not() {
    init();
    let dir = temp_dir("cli-partial");
    let (src, out) = (dir.join("in"), dir.join("out"));
    std::fs::create_dir_all(&src).unwrap();
    // Dark frames (with one white spot, as frames are divided by their own
    // maximum) run; the white one, sorted last, makes the run fail.
    for name in ["a", "b", "c", "d"] {
        image::RgbImage::from_fn(64, 48, |x, y| {
            if (10..16).contains(&x) && (10..16).contains(&y) {
                image::Rgb([255, 255, 255])
            } else {
                image::Rgb([40, 40, 40])
            }
        })
        .save(src.join(format!("{name}.png")))
        .unwrap();
    }
    image::RgbImage::from_pixel(64, 48, image::Rgb([255, 255, 255]))
        .save(src.join("z-white.png"))
        .unwrap();
    let model = dir.join("bright-fails.onnx");
    write_bright_fails_model(&model);
    let (code, stderr) = run_within(
        &[
            src.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--provider",
            "cpu",
            "--jobs",
            "1",
            "-b",
            "1",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("indices element out of data bounds"),
        "{stderr}"
    );
    let written = listing(&out);
    assert!(!written.is_empty(), "dark frames come first: {stderr}");
    assert!(
        stderr.contains(&format!(
            "{} of 5 files written to {} before the error; not done:",
            written.len(),
            out.display()
        )),
        "{stderr}"
    );
    // Each input is either written or named as not done, never both.
    for name in ["a", "b", "c", "d", "z-white"] {
        let listed = occurrences(
            &stderr,
            &format!("  {}\n", src.join(format!("{name}.png")).display()),
        );
        let done = written.contains(&format!("{name}.png"));
        assert_eq!(listed, usize::from(!done), "{name}: {stderr}");
    }
    assert!(!written.contains(&"z-white.png".to_string()));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_output_that_would_replace_an_input_is_refused() {
    init();
    let dir = temp_dir("cli-in-place");
    let photos = dir.join("photos");
    inputs(&photos, false);
    let snapshot = |d: &Path| -> Vec<(String, Vec<u8>)> {
        listing(d)
            .into_iter()
            .map(|n| {
                let bytes = std::fs::read(d.join(&n)).unwrap();
                (n, bytes)
            })
            .collect()
    };
    let before = snapshot(&photos);
    let p = photos.to_str().unwrap();

    // `photos -o photos --mode mask` would replace ball.png by its mask.
    let (code, stderr) = run(&[p, "-o", p, "--mode", "mask"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("the output folder {p} is also an input folder"))
            && stderr.contains("choose another -o"),
        "{stderr}"
    );
    assert_eq!(snapshot(&photos), before, "nothing touched");

    // Files named one by one may be written beside themselves, under
    // another name...
    let wide = photos.join("wide.jpg");
    let (code, stderr) = run(&[wide.to_str().unwrap(), "-o", p, "--mode", "mask"]);
    assert_eq!(code, 0, "{stderr}");
    let first = std::fs::read(photos.join("wide.png")).unwrap();
    // ...but a second run that takes the first one's output as an input
    // would write wide.jpg's result over it.
    let (code, stderr) = run(&[
        wide.to_str().unwrap(),
        photos.join("wide.png").to_str().unwrap(),
        "-o",
        p,
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}/wide.png would be written over the input of that name",
            p
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read(photos.join("wide.png")).unwrap(), first);
    // And the folder, now with that output in it, is still refused whole.
    let (code, stderr) = run(&[p, "-o", p]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is also an input folder"), "{stderr}");
    let mut expected = before.clone();
    expected.push(("wide.png".to_string(), first));
    expected.sort();
    assert_eq!(snapshot(&photos), expected);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn skipped_files_are_named_once_without_a_terminal_and_with_one() {
    init();
    let dir = temp_dir("cli-skips");
    let (src, out) = (dir.join("in"), dir.join("out"));
    std::fs::create_dir_all(&src).unwrap();
    picture(&src.join("ball.png"), 64, 48, "pngenc");
    for name in ["bad1.png", "bad2.jpg"] {
        std::fs::write(src.join(name), b"not a picture at all").unwrap();
    }
    let args = [
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--provider",
        "cpu",
    ];
    // stderr is a pipe: no progress bar.
    let (code, stderr) = run(&args);
    assert_eq!(code, 1, "{stderr}");
    for name in ["bad1.png", "bad2.jpg"] {
        assert_eq!(
            occurrences(
                &stderr,
                &format!("skipped {}: cannot read it", src.join(name).display())
            ),
            1,
            "{stderr}"
        );
    }
    assert!(stderr.contains("1 of 3 files written"), "{stderr}");

    // On a terminal (script(1) gives it one), with the progress bar.
    let _ = std::fs::remove_dir_all(&out);
    let line = std::iter::once(TOOL)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ");
    let tty = Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .output()
        .expect("script(1) runs");
    let shown = String::from_utf8_lossy(&tty.stdout);
    println!("on a terminal:\n{shown}");
    assert_eq!(tty.status.code(), Some(1), "{shown}");
    for name in ["bad1.png", "bad2.jpg"] {
        assert_eq!(
            occurrences(
                &shown,
                &format!("{}: cannot read it", src.join(name).display())
            ),
            1,
            "{shown}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_elements_options_reach_it() {
    init();
    let dir = temp_dir("cli-options");
    let src = dir.join("in");
    std::fs::create_dir_all(&src).unwrap();
    let photo = src.join("disc.png");
    disc_picture(&photo, 160, 120);
    let input = image::open(&photo).unwrap().to_rgb8();
    let tool = |out: &str, extra: &[&str]| -> image::DynamicImage {
        let out = dir.join(out);
        let mut args = vec![photo.to_str().unwrap(), "-o", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--provider", "cpu"]);
        let (code, stderr) = run(&args);
        assert_eq!(code, 0, "{extra:?}: {stderr}");
        image::open(out.join("disc.png")).unwrap()
    };
    // Mean absolute difference from the input, per channel level, over a
    // region.
    let diff = |img: &image::RgbaImage, xs: std::ops::Range<u32>, ys: std::ops::Range<u32>| {
        let (mut sum, mut n) = (0u64, 0u64);
        for y in ys {
            for x in xs.clone() {
                let (a, b) = (img.get_pixel(x, y).0, input.get_pixel(x, y).0);
                for c in 0..3 {
                    sum += u64::from(a[c].abs_diff(b[c]));
                    n += 1;
                }
            }
        }
        sum as f64 / n as f64
    };

    // Blur: opaque, the disc as it is, the noisy background smoothed.
    let sharp = tool("blur2", &["--mode", "blur", "--blur-radius", "2"]).to_rgba8();
    let blurred = tool("blur30", &["--mode", "blur", "--blur-radius", "30"]).to_rgba8();
    for img in [&sharp, &blurred] {
        assert!(img.pixels().all(|p| p.0[3] == 255), "opaque");
        assert!(
            diff(img, 65..95, 45..75) < 2.0,
            "{}",
            diff(img, 65..95, 45..75)
        );
    }
    // How much neighbouring pixels differ in the top-left corner (noise).
    let rough = |img: &image::RgbaImage| {
        let mut sum = 0u64;
        for y in 0..30 {
            for x in 0..30 {
                let (a, b) = (img.get_pixel(x, y).0, img.get_pixel(x + 1, y).0);
                sum += (0..3).map(|c| u64::from(a[c].abs_diff(b[c]))).sum::<u64>();
            }
        }
        sum as f64 / (30.0 * 30.0 * 3.0)
    };
    let original = rough(&image::DynamicImage::ImageRgb8(input.clone()).to_rgba8());
    let (near, far) = (rough(&sharp), rough(&blurred));
    assert!(
        original > 10.0 * near && near > 1.5 * far,
        "background roughness: input {original}, radius 2 {near}, radius 30 {far}"
    );

    // Feather: a soft edge has alpha between the cut's 0 and 255.
    let soft_alpha = |img: &image::DynamicImage| {
        img.to_rgba8()
            .pixels()
            .filter(|p| p.0[3] != 0 && p.0[3] != 255)
            .count()
    };
    let hard = tool("hard", &["--mode", "composite"]);
    let soft = tool("soft", &["--mode", "composite", "--feather", "0.6"]);
    assert_eq!(soft_alpha(&hard), 0);
    assert!(soft_alpha(&soft) > 50, "{}", soft_alpha(&soft));

    // Inference size: the model sees a coarser picture, the mask keeps
    // the photo's size.
    let own = tool("m320", &["--mode", "mask"]).to_luma8();
    let small = tool("m192", &["--mode", "mask", "--inference-size", "192"]).to_luma8();
    assert_eq!(small.dimensions(), (160, 120));
    let changed = own
        .pixels()
        .zip(small.pixels())
        .filter(|(a, b)| a.0[0].abs_diff(b.0[0]) > 2)
        .count();
    assert!(changed > 100, "{changed} pixels differ");

    // A batch timeout is taken (a lone photo does not wait for it: EOS
    // runs the partial batch).
    let started = std::time::Instant::now();
    tool(
        "timeout",
        &["--mode", "mask", "--batch-timeout", "20000", "-b", "4"],
    );
    assert!(started.elapsed() < Duration::from_secs(15));

    // The library path reaches the element, which names it.
    let (code, stderr) = run(&[
        photo.to_str().unwrap(),
        "-o",
        dir.join("nolib").to_str().unwrap(),
        "--ort-library",
        "/no/such/libonnxruntime.so",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("/no/such/libonnxruntime.so"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_option_values_exit_2_with_a_message() {
    for (args, message) in [
        (&["--feather", "1.5"][..], "1.5 is not within 0..1"),
        (&["--threshold=-0.1"][..], "-0.1 is not within 0..1"),
        (&["--blur-radius", "0"][..], "0 is not in 1..=256"),
        (
            &["--inference-size", "16"][..],
            "16 is not 0 (the model's own size) nor within 32..2048",
        ),
        (
            &["--batch-timeout", "60001"][..],
            "60001 is not in 0..=60000",
        ),
        (
            &["--mode", "sepia"][..],
            "invalid value 'sepia' for '--mode <MODE>'",
        ),
    ] {
        let mut all = vec!["x.png", "-o", "/nonexistent/out"];
        all.extend_from_slice(args);
        let (code, stderr) = run(&all);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!Path::new("/nonexistent/out").exists());
    }
    let out = Command::new(TOOL).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Exit codes:"), "{help}");
    assert!(
        help.contains("1  some inputs could not be read or written"),
        "{help}"
    );
    assert!(help.contains("--blur-radius <BLUR_RADIUS>"), "{help}");
}

/// `--provider openvino` reaches the element: it loads ONNX Runtime's
/// OpenVINO build and gives the masks the plain CPU gives (fp32, within a
/// level); pointed at the plain build it fails, naming why.
#[test]
fn provider_openvino_gives_the_plain_masks_or_says_why_not() {
    let openvino = Path::new(TOP).join(".deps/onnxruntime-openvino/libonnxruntime.so.1.24.1");
    if !openvino.is_file() {
        println!(
            "skipped: no {} (make setup installs it on x86_64)",
            openvino.display()
        );
        return;
    }
    init();
    let dir = temp_dir("cli-openvino");
    let src = dir.join("in");
    std::fs::create_dir_all(&src).unwrap();
    for name in ["chelsea.png", "coffee.png"] {
        std::fs::copy(photo(name), src.join(name)).unwrap();
    }
    let mut masks = Vec::new();
    for (out, provider) in [("plain", "cpu"), ("openvino", "openvino")] {
        let out = dir.join(out);
        let (code, stderr) = run(&[
            src.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--mode",
            "mask",
            "--provider",
            provider,
            "--threads",
            "2",
            "--quiet",
        ]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(listing(&out), ["chelsea.png", "coffee.png"]);
        masks.push(
            ["chelsea.png", "coffee.png"]
                .map(|n| image::open(out.join(n)).unwrap().to_luma8().into_raw()),
        );
    }
    for (plain, openvino) in masks[0].iter().zip(&masks[1]) {
        let worst = plain
            .iter()
            .zip(openvino)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(
            mae_percent(plain, openvino) < 0.1 && worst <= 8,
            "worst {worst}"
        );
    }
    let plain = Path::new(TOP).join(".deps/onnxruntime/libonnxruntime.so.1.31.1");
    let (code, stderr) = run(&[
        src.to_str().unwrap(),
        "-o",
        dir.join("refused").to_str().unwrap(),
        "--provider",
        "openvino",
        "--ort-library",
        plain.to_str().unwrap(),
        "--quiet",
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("has no OpenVINO provider"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Runs the tool with extra environment variables.
fn run_with_env(args: &[&str], vars: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(TOOL)
        .args(args)
        .env_remove("JOB_COMPLETION_INDEX")
        .env_remove("SLURM_ARRAY_TASK_ID")
        .envs(vars.iter().copied())
        .output()
        .expect("the tool runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("u2netmatte {}\n{stderr}", args.join(" "));
    (out.status.code().unwrap_or(-1), stderr)
}

/// `count` copies of one small picture, named p0.png, p1.png, ...
fn numbered_pictures(dir: &Path, count: usize) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    picture(&dir.join("p0.png"), 64, 48, "pngenc");
    (0..count)
        .map(|i| {
            let name = format!("p{i}.png");
            if i > 0 {
                std::fs::copy(dir.join("p0.png"), dir.join(&name)).unwrap();
            }
            name
        })
        .collect()
}

#[test]
fn the_shards_of_a_folder_are_disjoint_and_cover_it() {
    init();
    let dir = temp_dir("cli-shard");
    let src = dir.join("in");
    let mut all = numbered_pictures(&src, 10);
    all.sort();
    let mut union = Vec::new();
    for k in 0..3 {
        let out = dir.join(format!("out{k}"));
        let shard = format!("{k}/3");
        let (code, stderr) = run_with_env(
            &[
                src.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--shard",
                &shard,
                "--quiet",
            ],
            &[],
        );
        assert_eq!(code, 0, "{stderr}");
        let mine = if out.exists() {
            listing(&out)
        } else {
            Vec::new()
        };
        assert!(
            stderr.contains(&format!("shard {k}/3: {} of 10 inputs", mine.len())),
            "{stderr}"
        );
        // The same shard from a Kubernetes Indexed Job's index.
        let auto_out = dir.join(format!("auto{k}"));
        let (code, stderr) = run_with_env(
            &[
                src.to_str().unwrap(),
                "-o",
                auto_out.to_str().unwrap(),
                "--shard",
                "auto/3",
                "--quiet",
            ],
            &[("JOB_COMPLETION_INDEX", &k.to_string())],
        );
        assert_eq!(code, 0, "{stderr}");
        let auto = if auto_out.exists() {
            listing(&auto_out)
        } else {
            Vec::new()
        };
        assert_eq!(auto, mine, "auto/3 with JOB_COMPLETION_INDEX={k}");
        union.extend(mine);
    }
    union.sort();
    // Every input once: no overlap, nothing left out.
    assert_eq!(union, all);

    let (code, stderr) = run_with_env(
        &[
            src.to_str().unwrap(),
            "-o",
            "/nonexistent",
            "--shard",
            "auto/3",
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("takes its index from JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID"),
        "{stderr}"
    );
    let (code, stderr) = run_with_env(
        &[
            src.to_str().unwrap(),
            "-o",
            "/nonexistent",
            "--shard",
            "3/3",
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("shard 3 of 3 (3/3) does not exist"),
        "{stderr}"
    );
    assert!(!Path::new("/nonexistent").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn skip_existing_does_only_what_is_missing() {
    init();
    let dir = temp_dir("cli-skip");
    let (src, out) = (dir.join("in"), dir.join("out"));
    let all = numbered_pictures(&src, 4);
    let args = [
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--skip-existing",
        "--quiet",
    ];
    let (code, stderr) = run_with_env(&args, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("4 of 4 files written"), "{stderr}");
    assert_eq!(listing(&out), all);

    // One result lost, another replaced by a marker: the re-run writes
    // only the lost one and leaves the others as they are.
    std::fs::remove_file(out.join("p2.png")).unwrap();
    std::fs::write(out.join("p1.png"), b"kept").unwrap();
    let (code, stderr) = run_with_env(&args, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("3 already written, left out (--skip-existing)"),
        "{stderr}"
    );
    assert!(stderr.contains("1 of 1 files written"), "{stderr}");
    assert_eq!(listing(&out), all);
    assert_eq!(std::fs::read(out.join("p1.png")).unwrap(), b"kept");
    let redone = image::open(out.join("p2.png")).unwrap();
    assert_eq!((redone.width(), redone.height()), (64, 48));

    // Nothing left: success, and nothing touched.
    let (code, stderr) = run_with_env(&args, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("nothing to do"), "{stderr}");
    assert_eq!(std::fs::read(out.join("p1.png")).unwrap(), b"kept");

    // Without the flag every result is made again.
    let (code, stderr) = run_with_env(&[args[0], args[1], args[2], "--quiet"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("4 of 4 files written"), "{stderr}");
    assert!(image::open(out.join("p1.png")).is_ok(), "p1.png made again");
    std::fs::remove_dir_all(dir).unwrap();
}
