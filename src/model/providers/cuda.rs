// SPDX-License-Identifier: MPL-2.0
//! ONNX Runtime's CUDA provider, after [`crate::cuda`] has readied the
//! driver, the device and CUDA's libraries.

use super::{Backend, Failure, Opened};
use crate::model::ModelOptions;
#[cfg(feature = "cuda")]
use crate::model::{ConvSearch, ProviderUsed};
use crate::runtime::Runtime;

pub struct Cuda;

impl Backend for Cuda {
    fn name(&self) -> &'static str {
        "cuda"
    }

    #[cfg(feature = "cuda")]
    fn open(
        &self,
        runtime: &Runtime,
        model: &[u8],
        options: &ModelOptions,
    ) -> Result<Opened, Failure> {
        use ort::ep::{ArenaExtendStrategy, cuda::ConvAlgorithmSearch};
        let ready = crate::cuda::prepare(runtime.library(), options.device_id).map_err(|e| {
            if e.is_setting_error() {
                Failure::Setting(e.to_string())
            } else {
                Failure::Unavailable(e.to_string())
            }
        })?;
        let search = match options.cuda.conv_search {
            ConvSearch::Heuristic => ConvAlgorithmSearch::Heuristic,
            ConvSearch::Exhaustive => ConvAlgorithmSearch::Exhaustive,
            ConvSearch::Default => ConvAlgorithmSearch::Default,
        };
        let mut cuda = ort::ep::CUDA::default()
            .with_device_id(options.device_id)
            .with_arena_extend_strategy(ArenaExtendStrategy::SameAsRequested)
            .with_conv_algorithm_search(search);
        if options.cuda.memory_limit > 0 {
            cuda = cuda.with_memory_limit(options.cuda.memory_limit);
        }
        let session = super::commit_on(
            super::base_builder(runtime, options.threads),
            cuda.build(),
            model,
        )
        .map_err(Failure::Unavailable)?;
        Ok(Opened {
            session,
            used: ProviderUsed::Cuda {
                device_id: options.device_id,
            },
            description: Some(ready.to_string()),
        })
    }

    #[cfg(not(feature = "cuda"))]
    fn open(
        &self,
        _runtime: &Runtime,
        _model: &[u8],
        _options: &ModelOptions,
    ) -> Result<Opened, Failure> {
        Err(Failure::Unavailable(
            "this build of u2netmatte has no CUDA support (feature `cuda`)".into(),
        ))
    }
}
