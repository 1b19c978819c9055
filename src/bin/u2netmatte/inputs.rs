// SPDX-License-Identifier: MPL-2.0
//! Which files to process, and where each result goes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Extensions taken from folders (files named on the command line are
/// always tried, whatever their name).
const IMAGE_EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"];

/// One input and its output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub input: PathBuf,
    pub output: PathBuf,
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Expands folders (not recursively) and names outputs `<stem>.<ext>` in
/// `out_dir`; when two inputs would share a name (a.png and a.jpg), the
/// later ones keep their own extension too (`a.jpg.png`).
pub fn collect(inputs: &[PathBuf], out_dir: &Path, ext: &str) -> std::io::Result<Vec<Job>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(input)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_image(p))
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(input.clone());
        }
    }
    let mut taken = HashSet::new();
    Ok(files
        .into_iter()
        .map(|input| {
            let stem = input
                .file_stem()
                .map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
            let mut name = format!("{stem}.{ext}");
            if !taken.insert(name.clone()) {
                let full = input
                    .file_name()
                    .map_or_else(|| stem.clone(), |s| s.to_string_lossy().into_owned());
                name = format!("{full}.{ext}");
                let mut n = 1;
                while !taken.insert(name.clone()) {
                    name = format!("{full}-{n}.{ext}");
                    n += 1;
                }
            }
            Job {
                output: out_dir.join(name),
                input,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_expand_to_their_images_and_names_do_not_clash() {
        let dir = std::env::temp_dir().join(format!("u2m-inputs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["b.png", "a.JPG", "a.png", "d.tiff", "e.TIF", "notes.txt"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let jobs = collect(
            &[dir.clone(), PathBuf::from("/elsewhere/c.webp")],
            Path::new("/out"),
            "png",
        )
        .unwrap();
        let pairs: Vec<(String, String)> = jobs
            .iter()
            .map(|j| {
                (
                    j.input.file_name().unwrap().to_string_lossy().into_owned(),
                    j.output.to_string_lossy().into_owned(),
                )
            })
            .collect();
        assert_eq!(
            pairs,
            [
                ("a.JPG".to_string(), "/out/a.png".to_string()),
                ("a.png".to_string(), "/out/a.png.png".to_string()),
                ("b.png".to_string(), "/out/b.png".to_string()),
                ("d.tiff".to_string(), "/out/d.png".to_string()),
                ("e.TIF".to_string(), "/out/e.png".to_string()),
                ("c.webp".to_string(), "/out/c.png".to_string()),
            ]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
