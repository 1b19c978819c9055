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

/// Why the inputs cannot be processed as asked.
#[derive(Debug)]
pub enum CollectError {
    Read(PathBuf, std::io::Error),
    /// The output folder is also an input folder.
    OutputIsInputFolder(PathBuf),
    /// These outputs would be written over inputs.
    OutputIsInput(Vec<PathBuf>),
}

impl std::fmt::Display for CollectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Read(path, e) => write!(f, "cannot read {}: {e}", path.display()),
            Self::OutputIsInputFolder(dir) => write!(
                f,
                "the output folder {} is also an input folder: its results would be taken as \
                 inputs by the next run; choose another -o (or name the input files, e.g. {}/*.jpg)",
                dir.display(),
                dir.display()
            ),
            Self::OutputIsInput(paths) => {
                let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                write!(
                    f,
                    "{} would be written over the input{} of that name; nothing was written: \
                     choose another -o",
                    names.join(", "),
                    if paths.len() == 1 { "" } else { "s" }
                )
            }
        }
    }
}

/// Identifies a file whatever the path that leads to it (links, `..`,
/// hard links): an output with the identity of an input would destroy it.
#[cfg(unix)]
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok()
}

/// Expands folders (not recursively) and names outputs `<stem>.<ext>` in
/// `out_dir`; when two inputs would share a name (a.png and a.jpg), the
/// later ones keep their own extension too (`a.jpg.png`).
///
/// No input is ever an output: an output folder that is also an input
/// folder is refused (a second run would take the first one's results as
/// inputs), and so is an output path that is an input file.
pub fn collect(inputs: &[PathBuf], out_dir: &Path, ext: &str) -> Result<Vec<Job>, CollectError> {
    let out_id = identity(out_dir);
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            if out_id.is_some() && identity(input) == out_id {
                return Err(CollectError::OutputIsInputFolder(input.clone()));
            }
            let mut entries: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(|e| CollectError::Read(input.clone(), e))?
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
    let jobs: Vec<Job> = files
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
        .collect();
    let input_ids: HashSet<_> = jobs.iter().filter_map(|j| identity(&j.input)).collect();
    let clashes: Vec<PathBuf> = jobs
        .iter()
        .filter(|j| identity(&j.output).is_some_and(|id| input_ids.contains(&id)))
        .map(|j| j.output.clone())
        .collect();
    if !clashes.is_empty() {
        return Err(CollectError::OutputIsInput(clashes));
    }
    Ok(jobs)
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

    #[test]
    fn an_output_that_is_an_input_is_refused() {
        let dir = std::env::temp_dir().join(format!("u2m-clash-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("out")).unwrap();
        std::fs::write(dir.join("a.png"), b"x").unwrap();
        std::fs::write(dir.join("b.jpg"), b"x").unwrap();

        // The output folder is the input folder, under another spelling.
        let err = collect(std::slice::from_ref(&dir), &dir.join("out/.."), "png").unwrap_err();
        assert!(
            matches!(&err, CollectError::OutputIsInputFolder(d) if d == &dir),
            "{err}"
        );
        assert!(err.to_string().contains("choose another -o"), "{err}");

        // Files named one by one: a.png would be its own output, b.jpg not.
        let err = collect(
            &[dir.join("a.png"), dir.join("b.jpg")],
            &dir.join("out/.."),
            "png",
        )
        .unwrap_err();
        let CollectError::OutputIsInput(clashes) = &err else {
            panic!("{err}")
        };
        assert_eq!(clashes, &[dir.join("out/../a.png")]);
        assert!(
            err.to_string()
                .contains("a.png would be written over the input")
        );
        let jobs = collect(&[dir.join("b.jpg")], &dir, "png").unwrap();
        assert_eq!(jobs[0].output, dir.join("b.png"));

        // A hard link to an input in the output folder is that input.
        std::fs::hard_link(dir.join("b.jpg"), dir.join("out/b.png")).unwrap();
        let err = collect(&[dir.join("b.jpg")], &dir.join("out"), "png").unwrap_err();
        assert!(matches!(err, CollectError::OutputIsInput(_)), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
