// SPDX-License-Identifier: MPL-2.0
//! The page of `u2netmatte serve` in a real browser: Debian's chromium,
//! headless, driven by playwright-core (tests/page/drive.mjs) against the
//! real service and model. Two photos are dropped on the page; what the
//! page got back must be what the folder tool makes of the same photos.
//!
//! Needs `make setup-browser` (chromium, and playwright-core from
//! tests/page/package-lock.json); without them this test fails saying so:
//! a page that is never tested would pass here unseen otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::server::*;
use common::*;

const CHROMIUM: &str = "/usr/bin/chromium";
/// The photos dropped: a PNG of each shape (landscape, square), both with
/// a subject the model finds, so that the screenshot shows cut-outs.
const PHOTOS: [&str; 2] = ["coffee.png", "astronaut.png"];
/// drive.mjs bounds itself at 300 s; this is the bound above it.
const DRIVER_LIMIT: Duration = Duration::from_secs(360);

fn page_dir() -> PathBuf {
    Path::new(TOP).join("tests/page")
}

/// Fails the test, naming the fix, unless the browser test can run.
fn require_browser() {
    let fix = "run `make setup-browser` (scripts/setup.sh browser)";
    assert!(
        Command::new(CHROMIUM)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "{CHROMIUM} does not run: {fix}"
    );
    assert!(
        Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "node is missing: install Node.js >= 20, then {fix}"
    );
    let version = |path: &Path, pointer: &str| -> Option<String> {
        let text = std::fs::read_to_string(path).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        json.pointer(pointer)?.as_str().map(str::to_string)
    };
    let pinned = version(
        &page_dir().join("package-lock.json"),
        "/packages/node_modules~1playwright-core/version",
    )
    .expect("tests/page/package-lock.json pins playwright-core");
    let installed = version(
        &page_dir().join("node_modules/playwright-core/package.json"),
        "/version",
    );
    assert_eq!(
        installed.as_deref(),
        Some(pinned.as_str()),
        "playwright-core {pinned} is not in tests/page/node_modules: {fix}"
    );
}

/// Runs drive.mjs; returns its exit code, its JSON report and its stderr.
fn drive(url: &str, photos: &[PathBuf], out: &Path) -> (i32, serde_json::Value, String) {
    let child = Command::new("node")
        .arg(page_dir().join("drive.mjs"))
        .arg(url)
        .args(photos)
        .arg(out)
        .env("CHROMIUM", CHROMIUM)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let Ok(output) = rx.recv_timeout(DRIVER_LIMIT) else {
        // SIGTERM first: playwright-core closes the browser it started on
        // it; SIGKILL would leave chromium running.
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
        panic!("drive.mjs did not end within {DRIVER_LIMIT:?}");
    };
    let output = output.expect("drive.mjs's output is read");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("drive.mjs printed no JSON report ({e}):\n{stdout}\nstderr:\n{stderr}")
    });
    (output.status.code().unwrap_or(-1), report, stderr)
}

/// The largest difference between two images' alpha (or gray) levels,
/// over every pixel.
fn max_level_difference(a: &[u8], b: &[u8]) -> u8 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

fn alpha(image: &image::DynamicImage) -> Vec<u8> {
    image.to_rgba8().pixels().map(|p| p.0[3]).collect()
}

#[test]
fn the_page_cuts_out_dropped_photos_as_the_folder_tool_does() {
    require_browser();
    let photos: Vec<PathBuf> = PHOTOS.iter().map(|p| photo(p)).collect();
    // Kept after the run (and replaced by the next): the screenshot and
    // what the page downloaded, to look at; README's picture comes from it.
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-page");
    let _ = std::fs::remove_dir_all(&out);
    let folder = out.join("folder-tool");
    std::fs::create_dir_all(&folder).unwrap();

    let status = Command::new(TOOL)
        .args(&photos)
        .args(["-o", folder.to_str().unwrap(), "--quiet"])
        .status()
        .expect("the folder tool runs");
    assert!(status.success(), "the folder tool on {photos:?}");

    let server = Server::start(&[]);
    let started = Instant::now();
    let (code, report, stderr) = drive(&server.url("/"), &photos, &out.join("page"));
    println!(
        "drive.mjs took {:.1} s; report:\n{}",
        started.elapsed().as_secs_f64(),
        serde_json::to_string_pretty(&report).unwrap()
    );
    assert!(
        code == 0 && report["failures"].as_array().is_some_and(Vec::is_empty),
        "drive.mjs exited {code}: {:#}\nstderr:\n{stderr}",
        report["failures"]
    );

    // Both results, as the page got them: the photos' sizes, and alpha
    // within a level of the folder tool's at every pixel (the service may
    // batch them otherwise: a rounding apart).
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 2, "two results: {results:?}");
    let masks = report["rerun"]["results"]
        .as_array()
        .expect("re-run results");
    assert_eq!(masks.len(), 2, "two masks: {masks:?}");
    for ((photo, result), mask) in photos.iter().zip(results).zip(masks) {
        let name = photo.file_name().unwrap().to_str().unwrap();
        assert_eq!(result["photo"], name, "results in the order dropped");
        let size = image::image_dimensions(photo).unwrap();
        let got = image::open(result["file"].as_str().unwrap()).expect("the page's result decodes");
        assert_eq!((got.width(), got.height()), size, "{name}: size");
        assert_eq!(got.color(), image::ColorType::Rgba8, "{name}: a cut-out");
        let stem = photo.file_stem().unwrap().to_str().unwrap();
        let expected = image::open(folder.join(format!("{stem}.png"))).unwrap();
        let d = max_level_difference(&alpha(&got), &alpha(&expected));
        assert!(
            d <= 1,
            "{name}: alpha differs from the folder tool's by {d}"
        );

        // The re-run as masks: grayscale, and the same mask as that alpha.
        let gray = image::open(mask["file"].as_str().unwrap()).expect("the page's mask decodes");
        assert_eq!(
            gray.color(),
            image::ColorType::L8,
            "{name}: a grayscale mask"
        );
        assert_eq!((gray.width(), gray.height()), size, "{name}: mask size");
        let d = max_level_difference(gray.as_bytes(), &alpha(&expected));
        assert!(
            d <= 1,
            "{name}: the mask differs from the folder tool's alpha by {d}"
        );
    }
    assert_eq!(report["rerun"]["mask"], true, "the re-run gave masks");
    assert_eq!(report["slider"]["moved"], true, "the slider moved the clip");
    assert_eq!(report["keyboard"]["spaceOpensPicker"], true);
    assert!(
        report["refusal"]
            .as_str()
            .is_some_and(|e| e.contains("format=jpg has no alpha channel")),
        "the service's refusal on its item: {}",
        report["refusal"]
    );

    // The screenshot: a PNG of the page at its width, with the photos in it.
    let shot = Path::new(report["screenshot"].as_str().expect("a screenshot"));
    let bytes = std::fs::read(shot).expect("the screenshot was written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        (20_000..20_000_000).contains(&bytes.len()),
        "screenshot of {} bytes",
        bytes.len()
    );
    let shot = image::load_from_memory(&bytes).unwrap().to_rgb8();
    assert_eq!(shot.width(), 1100, "the viewport's width");
    assert!(shot.height() >= 600, "a page of {} px", shot.height());
    let colours: std::collections::HashSet<[u8; 3]> = shot.pixels().map(|p| p.0).collect();
    assert!(
        colours.len() > 5_000,
        "{} colours: no photos in it?",
        colours.len()
    );

    // Download all: a ZIP that another reader (Python's zipfile) finds
    // sound, holding the two results byte for byte.
    let zip = report["zip"]["file"].as_str().expect("a zip");
    let names: Vec<String> = results
        .iter()
        .map(|r| {
            let file = Path::new(r["file"].as_str().unwrap());
            file.file_name().unwrap().to_str().unwrap().to_string()
        })
        .collect();
    let check = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile, os\n\
             z = zipfile.ZipFile(sys.argv[1])\n\
             assert z.testzip() is None, 'a bad CRC'\n\
             names = [i.filename for i in z.infolist()]\n\
             assert names == sys.argv[3:], names\n\
             for n in names:\n    \
                 assert z.read(n) == open(os.path.join(sys.argv[2], n), 'rb').read(), n\n",
            zip,
            out.join("page").to_str().unwrap(),
        ])
        .args(&names)
        .output()
        .expect("python3 runs");
    assert!(
        check.status.success(),
        "{zip}: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    println!("the page's files: {}", out.display());
}
