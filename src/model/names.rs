// SPDX-License-Identifier: MPL-2.0
//! Model names -> files, as the `model` property documents.
//!
//! A value with a `/` or ending in `.onnx` is a path. Anything else is a name
//! looked up as `<name>.onnx` in, in order: `$U2NETMATTE_MODEL_DIR`, rembg's
//! `$U2NET_HOME` (default `~/.u2net`, so models rembg downloaded are found),
//! the user's data folder that `make install` fills
//! (`$XDG_DATA_HOME/u2netmatte/models`, default
//! `~/.local/share/u2netmatte/models`), then the `models/` folder of the
//! checkout the plugin was built in (`make setup` fills it; gone when the
//! checkout moves, which is why `make install` copies the models).

use std::path::{Path, PathBuf};

/// The folder `make setup` puts models in.
pub const SETUP_MODEL_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models");

/// Where `make install` puts models, inside u2netmatte's data folder.
pub const USER_MODEL_SUBDIR: &str = "models";

/// Folders searched for a model name, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPath(pub Vec<PathBuf>);

impl SearchPath {
    /// The folders the environment of this process names.
    pub fn from_env() -> Self {
        let var = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Self::new(
            var("U2NETMATTE_MODEL_DIR"),
            var("U2NET_HOME"),
            var("HOME"),
            crate::runtime::user_data_dir(),
        )
    }

    /// `user_data` is u2netmatte's data folder ([`crate::runtime::user_data_dir`]).
    pub fn new(
        model_dir: Option<PathBuf>,
        u2net_home: Option<PathBuf>,
        home: Option<PathBuf>,
        user_data: Option<PathBuf>,
    ) -> Self {
        let mut dirs = Vec::new();
        dirs.extend(model_dir);
        match u2net_home {
            Some(dir) => dirs.push(dir),
            None => dirs.extend(home.map(|h| h.join(".u2net"))),
        }
        dirs.extend(user_data.map(|d| d.join(USER_MODEL_SUBDIR)));
        dirs.push(PathBuf::from(SETUP_MODEL_DIR));
        Self(dirs)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("model file {0} does not exist")]
    MissingFile(PathBuf),
    #[error(
        "model '{name}' not found: no {name}.onnx in {} (models/README.md says where to get it)",
        .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    UnknownName {
        name: String,
        searched: Vec<PathBuf>,
    },
    #[error("the model property is empty")]
    Empty,
}

/// Whether `spec` names a file rather than a model.
pub fn is_path(spec: &str) -> bool {
    spec.contains('/') || spec.ends_with(".onnx")
}

/// Finds the file for `spec`.
pub fn resolve(spec: &str, search: &SearchPath) -> Result<PathBuf, ResolveError> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(ResolveError::Empty);
    }
    if is_path(spec) {
        let path = Path::new(spec);
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(ResolveError::MissingFile(path.to_path_buf()))
        };
    }
    let file = format!("{spec}.onnx");
    search
        .0
        .iter()
        .map(|dir| dir.join(&file))
        .find(|p| p.is_file())
        .ok_or_else(|| ResolveError::UnknownName {
            name: spec.to_string(),
            searched: search.0.clone(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, name: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, b"x").unwrap();
        p
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("u2m-names-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn search_order_is_model_dir_u2net_home_installed_then_setup() {
        let s = SearchPath::new(
            Some("/m".into()),
            Some("/u".into()),
            Some("/home/x".into()),
            Some("/home/x/.local/share/u2netmatte".into()),
        );
        assert_eq!(
            s.0,
            vec![
                PathBuf::from("/m"),
                "/u".into(),
                "/home/x/.local/share/u2netmatte/models".into(),
                SETUP_MODEL_DIR.into()
            ]
        );
        let s = SearchPath::new(None, None, Some("/home/x".into()), None);
        assert_eq!(
            s.0,
            vec![PathBuf::from("/home/x/.u2net"), SETUP_MODEL_DIR.into()]
        );
    }

    #[test]
    fn first_folder_holding_the_name_wins() {
        let root = temp_dir("order");
        let in_home = touch(&root.join("home/.u2net"), "silueta.onnx");
        let in_dir = touch(&root.join("dir"), "silueta.onnx");
        let s = SearchPath::new(Some(root.join("dir")), None, Some(root.join("home")), None);
        assert_eq!(resolve("silueta", &s).unwrap(), in_dir);
        let s = SearchPath::new(
            Some(root.join("nowhere")),
            None,
            Some(root.join("home")),
            None,
        );
        assert_eq!(resolve("silueta", &s).unwrap(), in_home);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn unknown_name_lists_where_it_looked() {
        let s = SearchPath(vec!["/a".into(), "/b".into()]);
        let e = resolve("u2net_nope", &s).unwrap_err();
        assert_eq!(
            e.to_string(),
            "model 'u2net_nope' not found: no u2net_nope.onnx in /a, /b (models/README.md says where to get it)"
        );
    }

    #[test]
    fn paths_are_taken_as_they_are() {
        let s = SearchPath(vec![]);
        assert_eq!(
            resolve("/no/such/model.onnx", &s).unwrap_err(),
            ResolveError::MissingFile("/no/such/model.onnx".into())
        );
        assert!(is_path("model.onnx"));
        assert!(is_path("./u2netp"));
        assert!(!is_path("u2netp"));
        assert_eq!(resolve(" ", &s).unwrap_err(), ResolveError::Empty);
    }
}
