// SPDX-License-Identifier: MPL-2.0
//! Checks that an ONNX file is U2Net-shaped, and rewrites it for batching.
//!
//! rembg's models are exported with a fixed batch of 1. Their resizes take
//! their sizes from Shape ops, so the graph itself works at any batch: only
//! the declared batch dimension of the input and output needs to become
//! symbolic. The same holds for height and width: a model may be run at
//! another square size (the `inference-size` property) by declaring it. The
//! side outputs (d1..d6) are dropped, so ONNX Runtime neither computes nor
//! copies what nobody reads.

use onnx_rs::ast::{DataType, Dimension, Graph, TensorShapeDimension, ValueInfo};

/// The name given to the batch dimension when making it symbolic.
const BATCH_DIM: &str = "batch";

/// What a U2Net-shaped model looks like from the outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub input_name: String,
    pub output_name: String,
    /// Input height and width, when the model fixes them.
    pub input_size: Option<(u32, u32)>,
    /// The batch size the file declared, if fixed.
    pub declared_batch: Option<i64>,
}

/// A model rewritten for batching, with its signature.
#[derive(Debug)]
pub struct Prepared {
    pub bytes: Vec<u8>,
    pub signature: Signature,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("not a valid ONNX model ({0})")]
    Parse(String),
    #[error("not U2Net-shaped: {0}")]
    Shape(String),
}

/// Parses `bytes`, checks the model takes one Nx3xHxW float tensor and gives
/// Nx1xHxW or NxHxW floats first, and returns it with a symbolic batch
/// dimension and only its first output; with `size`, its input and output
/// declared at that (height, width).
pub fn prepare(bytes: &[u8], size: Option<(u32, u32)>) -> Result<Prepared, GraphError> {
    let mut model = onnx_rs::parse(bytes).map_err(|e| GraphError::Parse(format!("{e:?}")))?;
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| GraphError::Parse("the file holds no graph".into()))?;
    let signature = check(graph)?;

    // Keep d0 only.
    graph.output.truncate(1);
    let resized = size.filter(|&s| Some(s) != signature.input_size);
    if signature.declared_batch.is_some() || resized.is_some() {
        let input = input_mut(graph)?;
        set_batch_dim(input);
        if let Some(size) = resized {
            set_spatial_dims(input, size);
            set_spatial_dims(&mut graph.output[0], size);
        }
        set_batch_dim(&mut graph.output[0]);
        // Intermediate shape hints would contradict the new dimensions.
        graph.value_info.clear();
    }
    Ok(Prepared {
        bytes: onnx_rs::encode(&model),
        signature,
    })
}

fn input_mut<'g, 'a>(graph: &'g mut Graph<'a>) -> Result<&'g mut ValueInfo<'a>, GraphError> {
    let initializers: Vec<&str> = graph.initializer.iter().map(|t| t.name()).collect();
    graph
        .input
        .iter_mut()
        .find(|vi| !initializers.contains(&vi.name))
        .ok_or_else(|| GraphError::Shape("the model has no input".into()))
}

fn fixed(d: &TensorShapeDimension) -> Option<i64> {
    match d.value {
        Dimension::Value(v) if v > 0 => Some(v),
        _ => None,
    }
}

fn describe(vi: &ValueInfo) -> String {
    let elem = vi
        .tensor_elem_type()
        .map_or_else(|| "non-tensor".to_string(), |t| format!("{t:?}"));
    let dims = vi.tensor_shape().map_or_else(
        || "unknown shape".to_string(),
        |s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Dimension::Value(v) if v > 0 => v.to_string(),
                    Dimension::Param(p) if !p.is_empty() => p.to_string(),
                    _ => "?".to_string(),
                })
                .collect::<Vec<_>>()
                .join("x")
        },
    );
    format!("'{}' {elem} {dims}", vi.name)
}

fn check(graph: &Graph) -> Result<Signature, GraphError> {
    let inputs = graph.non_init_inputs();
    let [input] = inputs.as_slice() else {
        return Err(GraphError::Shape(format!(
            "it has {} inputs, U2Net has one (Nx3xHxW float)",
            inputs.len()
        )));
    };
    let Some(output) = graph.output.first() else {
        return Err(GraphError::Shape("it has no output".into()));
    };

    let bad_input = || GraphError::Shape(format!("input {} is not Nx3xHxW float", describe(input)));
    if input.tensor_elem_type() != Some(DataType::Float) {
        return Err(bad_input());
    }
    let dims = &input.tensor_shape().ok_or_else(bad_input)?.dim;
    if dims.len() != 4 || fixed(&dims[1]).is_some_and(|c| c != 3) {
        return Err(bad_input());
    }
    let input_size = match (fixed(&dims[2]), fixed(&dims[3])) {
        (Some(h), Some(w)) => Some((
            u32::try_from(h).map_err(|_| bad_input())?,
            u32::try_from(w).map_err(|_| bad_input())?,
        )),
        _ => None,
    };

    let bad_output = || {
        GraphError::Shape(format!(
            "first output {} is not Nx1xHxW or NxHxW float",
            describe(output)
        ))
    };
    if output.tensor_elem_type() != Some(DataType::Float) {
        return Err(bad_output());
    }
    let out_dims = &output.tensor_shape().ok_or_else(bad_output)?.dim;
    let single_channel = match out_dims.len() {
        3 => true,
        4 => fixed(&out_dims[1]).is_none_or(|c| c == 1),
        _ => false,
    };
    if !single_channel {
        return Err(bad_output());
    }

    Ok(Signature {
        input_name: input.name.to_string(),
        output_name: output.name.to_string(),
        input_size,
        declared_batch: fixed(&dims[0]),
    })
}

fn set_batch_dim(vi: &mut ValueInfo) {
    if let Some(onnx_rs::ast::TypeProto {
        value: Some(onnx_rs::ast::TypeValue::Tensor(t)),
        ..
    }) = vi.r#type.as_mut()
        && let Some(first) = t.shape.as_mut().and_then(|s| s.dim.first_mut())
    {
        first.value = Dimension::Param(BATCH_DIM);
    }
}

/// Declares the last two dimensions (height, width) as `size`.
fn set_spatial_dims(vi: &mut ValueInfo, (height, width): (u32, u32)) {
    if let Some(onnx_rs::ast::TypeProto {
        value: Some(onnx_rs::ast::TypeValue::Tensor(t)),
        ..
    }) = vi.r#type.as_mut()
        && let Some(shape) = t.shape.as_mut()
        && shape.dim.len() >= 3
    {
        let n = shape.dim.len();
        shape.dim[n - 2].value = Dimension::Value(i64::from(height));
        shape.dim[n - 1].value = Dimension::Value(i64::from(width));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use onnx_rs::ast::*;

    pub(crate) fn tensor(name: &str, dims: &[i64]) -> ValueInfo<'static> {
        let name: &'static str = Box::leak(name.to_string().into_boxed_str());
        ValueInfo {
            name,
            r#type: Some(TypeProto {
                value: Some(TypeValue::Tensor(TensorTypeProto {
                    elem_type: DataType::Float,
                    shape: Some(TensorShape {
                        dim: dims
                            .iter()
                            .map(|&v| TensorShapeDimension {
                                value: Dimension::Value(v),
                                denotation: "",
                            })
                            .collect(),
                    }),
                })),
                denotation: "",
            }),
            ..Default::default()
        }
    }

    /// A model of one Identity-like node with the given input and outputs.
    pub(crate) fn model_bytes(
        input: ValueInfo<'static>,
        outputs: Vec<ValueInfo<'static>>,
    ) -> Vec<u8> {
        let model = Model {
            ir_version: 8,
            opset_import: vec![OperatorSetId {
                domain: "",
                version: 13,
            }],
            graph: Some(Graph {
                input: vec![input],
                output: outputs,
                ..Default::default()
            }),
            ..Default::default()
        };
        onnx_rs::encode(&model)
    }

    #[test]
    fn fixed_batch_becomes_symbolic_and_side_outputs_go() {
        let bytes = model_bytes(
            tensor("input.1", &[1, 3, 320, 320]),
            vec![
                tensor("d0", &[1, 1, 320, 320]),
                tensor("d1", &[1, 1, 320, 320]),
            ],
        );
        let prepared = prepare(&bytes, None).unwrap();
        assert_eq!(
            prepared.signature,
            Signature {
                input_name: "input.1".into(),
                output_name: "d0".into(),
                input_size: Some((320, 320)),
                declared_batch: Some(1),
            }
        );
        let model = onnx_rs::parse(&prepared.bytes).unwrap();
        let graph = model.graph.unwrap();
        assert_eq!(graph.output.len(), 1);
        fn first<'a>(vi: &ValueInfo<'a>) -> Dimension<'a> {
            vi.tensor_shape().unwrap().dim[0].value.clone()
        }
        assert_eq!(first(&graph.input[0]), Dimension::Param("batch"));
        assert_eq!(first(&graph.output[0]), Dimension::Param("batch"));
    }

    #[test]
    fn another_input_size_is_declared_on_input_and_output() {
        let bytes = model_bytes(
            tensor("input.1", &[1, 3, 320, 320]),
            vec![tensor("d0", &[1, 1, 320, 320])],
        );
        let prepared = prepare(&bytes, Some((192, 192))).unwrap();
        // The signature is the file's own.
        assert_eq!(prepared.signature.input_size, Some((320, 320)));
        let graph = onnx_rs::parse(&prepared.bytes).unwrap().graph.unwrap();
        let dims = |vi: &ValueInfo| -> Vec<String> {
            vi.tensor_shape()
                .unwrap()
                .dim
                .iter()
                .map(|d| match d.value {
                    Dimension::Value(v) => v.to_string(),
                    Dimension::Param(p) => p.to_string(),
                })
                .collect()
        };
        assert_eq!(dims(&graph.input[0]), ["batch", "3", "192", "192"]);
        assert_eq!(dims(&graph.output[0]), ["batch", "1", "192", "192"]);
    }

    #[test]
    fn three_dimensional_output_is_accepted() {
        let bytes = model_bytes(
            tensor("x", &[1, 3, 256, 192]),
            vec![tensor("y", &[1, 256, 192])],
        );
        assert_eq!(
            prepare(&bytes, None).unwrap().signature.input_size,
            Some((256, 192))
        );
    }

    #[test]
    fn wrong_shapes_are_refused_with_what_was_found() {
        let e = prepare(
            &model_bytes(
                tensor("x", &[1, 4, 320, 320]),
                vec![tensor("y", &[1, 1, 320, 320])],
            ),
            None,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "not U2Net-shaped: input 'x' Float 1x4x320x320 is not Nx3xHxW float"
        );
        let e = prepare(
            &model_bytes(tensor("x", &[1, 3, 320, 320]), vec![tensor("y", &[1, 10])]),
            None,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "not U2Net-shaped: first output 'y' Float 1x10 is not Nx1xHxW or NxHxW float"
        );
    }

    #[test]
    fn garbage_is_not_onnx() {
        let e = prepare(b"this is not a protobuf \xff\xff\xff\xff\xff", None).unwrap_err();
        assert!(matches!(e, GraphError::Parse(_)), "{e:?}");
    }
}
