// SPDX-License-Identifier: MPL-2.0
//! `shared-session`: elements of one process that name the same session
//! share one loaded model and its engine (one ONNX Runtime session, one
//! inference thread), as NNStreamer's `shared-tensor-filter-key` does.
//!
//! The registry holds sessions weakly: a session lives as long as an
//! element holds it, and goes when the last one stops (READY->NULL).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use super::imp::{Loaded, ModelKey, lock};
use gst::glib;

/// The sessions of this process.
pub(super) static SESSIONS: LazyLock<Registry<Loaded>> = LazyLock::new(Registry::default);

#[cfg(test)]
impl AsRef<ModelKey> for ModelKey {
    fn as_ref(&self) -> &ModelKey {
        self
    }
}

impl AsRef<ModelKey> for Loaded {
    fn as_ref(&self) -> &ModelKey {
        &self.key
    }
}

/// Sessions by name, each held weakly.
pub(super) struct Registry<T> {
    sessions: Mutex<HashMap<String, Weak<T>>>,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: AsRef<ModelKey>> Registry<T> {
    /// The session named `name` if one is running with `key`'s settings,
    /// else a new one from `load`. Err from `mismatch`, given the settings
    /// that differ, when the running session was loaded otherwise.
    ///
    /// The registry stays locked while `load` runs, so two elements
    /// starting at once under one name load the model once.
    pub(super) fn join<E>(
        &self,
        name: &str,
        key: &ModelKey,
        load: impl FnOnce() -> Result<T, E>,
        mismatch: impl FnOnce(String) -> E,
    ) -> Result<Arc<T>, E> {
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, session| session.strong_count() > 0);
        if let Some(running) = sessions.get(name).and_then(Weak::upgrade) {
            // `running` may turn out to be the session's last holder: it
            // goes (and its engine's thread is joined) after the registry
            // is unlocked.
            drop(sessions);
            return match differences((*running).as_ref(), key) {
                None => Ok(running),
                Some(diff) => Err(mismatch(diff)),
            };
        }
        let loaded = Arc::new(load()?);
        sessions.insert(name.to_string(), Arc::downgrade(&loaded));
        Ok(loaded)
    }

    /// Whether a session named `name` is held by some element.
    #[cfg(test)]
    fn is_running(&self, name: &str) -> bool {
        lock(&self.sessions)
            .get(name)
            .is_some_and(|s| s.strong_count() > 0)
    }
}

/// An enum property's value as gst-launch spells it.
fn nick<E: glib::value::ToValue>(value: E) -> String {
    glib::EnumValue::from_value(&value.to_value())
        .map_or_else(|| "?".to_string(), |(_, v)| v.nick().to_string())
}

/// How one property of a [`ModelKey`] is written on a launch line.
type Spelling = fn(&ModelKey) -> String;

/// The settings of `wanted` that differ from the `running` session's, as
/// `property=wanted (the session has: running)`; None if they agree.
pub(super) fn differences(running: &ModelKey, wanted: &ModelKey) -> Option<String> {
    // Each property of the key, spelt as on a launch line.
    let spellings: [(&str, Spelling); 9] = [
        ("model", |k| k.path.display().to_string()),
        ("provider", |k| nick(k.provider)),
        ("device-id", |k| k.device_id.to_string()),
        ("gpu-memory-limit", |k| k.gpu_memory_limit_mib.to_string()),
        ("cudnn-conv-search", |k| nick(k.conv_search)),
        ("ort-library", |k| {
            k.ort_library.clone().unwrap_or_else(|| "(unset)".into())
        }),
        ("inference-size", |k| {
            k.inference_size.map_or("0".to_string(), |s| s.to_string())
        }),
        ("precision", |k| nick(k.precision)),
        ("threads", |k| k.threads.to_string()),
    ];
    let diffs: Vec<String> = spellings
        .iter()
        .filter_map(|(property, spell)| {
            let (has, wants) = (spell(running), spell(wanted));
            (has != wants).then(|| format!("{property}={wants} (the session has {has})"))
        })
        .collect();
    (!diffs.is_empty()).then(|| diffs.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::u2netmatte::{U2NetMatteConvSearch, U2NetMattePrecision, U2NetMatteProvider};

    fn key(size: Option<u32>) -> ModelKey {
        ModelKey {
            path: "/models/u2netp.onnx".into(),
            provider: U2NetMatteProvider::Cpu,
            device_id: 0,
            gpu_memory_limit_mib: 0,
            conv_search: U2NetMatteConvSearch::Heuristic,
            ort_library: None,
            inference_size: size,
            precision: U2NetMattePrecision::Fp32,
            threads: 0,
        }
    }

    #[test]
    fn equal_settings_have_no_difference() {
        assert_eq!(differences(&key(None), &key(None)), None);
    }

    #[test]
    fn each_difference_names_its_property_and_both_values() {
        let mut other = key(Some(256));
        other.provider = U2NetMatteProvider::Cuda;
        other.path = "/models/u2net.onnx".into();
        other.gpu_memory_limit_mib = 2048;
        other.conv_search = U2NetMatteConvSearch::Exhaustive;
        other.precision = U2NetMattePrecision::Bf16;
        other.threads = 1;
        assert_eq!(
            differences(&key(None), &other).unwrap(),
            "model=/models/u2net.onnx (the session has /models/u2netp.onnx), \
             provider=cuda (the session has cpu), gpu-memory-limit=2048 (the session has 0), \
             cudnn-conv-search=exhaustive (the session has heuristic), \
             inference-size=256 (the session has 0), precision=bf16 (the session has fp32), \
             threads=1 (the session has 0)"
        );
    }

    #[test]
    fn a_session_is_loaded_once_and_goes_with_its_last_holder() {
        let registry = Registry::<ModelKey>::default();
        let loads = std::cell::Cell::new(0);
        let load = |k: ModelKey| {
            let loads = &loads;
            move || {
                loads.set(loads.get() + 1);
                Ok::<_, String>(k)
            }
        };
        let first = registry
            .join("cams", &key(None), load(key(None)), |d| d)
            .unwrap();
        let second = registry
            .join("cams", &key(None), load(key(None)), |d| d)
            .unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        let refused = registry.join("cams", &key(Some(192)), load(key(Some(192))), |d| d);
        assert_eq!(
            refused.err().unwrap(),
            "inference-size=192 (the session has 0)"
        );
        drop(first);
        assert!(registry.is_running("cams"));
        drop(second);
        assert!(!registry.is_running("cams"));
        // Once released, the name may be loaded again, with other settings.
        let third = registry
            .join("cams", &key(Some(192)), load(key(Some(192))), |d| d)
            .unwrap();
        assert_eq!(third.inference_size, Some(192));
        assert_eq!(loads.get(), 2, "joining a running session loads nothing");
    }
}
