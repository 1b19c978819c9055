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
    let child = Command::new(TOOL)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the tool runs");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let Ok(out) = rx.recv_timeout(Duration::from_secs(120)) else {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        panic!("u2netmatte {} did not end within 120 s", args.join(" "));
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
