// SPDX-License-Identifier: MPL-2.0
//! bf16 for the convolutions that read the picture, without bf16's rounding
//! of the picture and of their weights.
//!
//! Computing in bf16, OpenVINO rounds the normalised picture and the first
//! convolution's weights to 8 significant bits before it multiplies them:
//! about half a level of the picture, and as much of every weight. After
//! re-centring (`recentre`), that was most of what still kept bf16's masks
//! from fp32's: on chelsea's whiskers, bf16 against fp32, mean difference
//! 0.335 % and IoU 0.9878; with the split below 0.152 % and 0.9970 (U2NetP,
//! AVX512-BF16; the other photos as they were), for about 1 % more time.
//! Against rembg's masks, chelsea's worst IoU went from 0.9836 to 0.9900.
//!
//! The split: the element hands the model its picture in two parts,
//! `x = hi + lo` with `hi` the picture rounded to bf16 and `lo` what that
//! left out, as six planes (see `prep::InputLayout::Bf16Split`); rounded to bf16 again,
//! each loses next to nothing. The graph puts `[hi, lo, hi]` (a Slice and a
//! Concat) into each convolution that read the picture, whose weights `W`
//! become `[Wh, Wh, Wl]`, `Wh` the weights rounded to bf16 and `Wl` the
//! rest: `Wh hi + Wh lo + Wl hi` is `W x` but for `Wl lo`, and the products
//! of bf16 values are exact in the f32 sums bf16 kernels make. In fp32 the
//! rewritten graph computes what the original does, to rounding.

use crate::bf16::round_to_bf16;
use onnx_rs::ast::{
    Attribute, AttributeType, DataType, Dimension, Graph, Node, OpType, TensorProto, TypeValue,
};

/// Channels of the picture, and of the input the split makes of it.
const CHANNELS: i64 = 3;
const SPLIT_CHANNELS: i64 = 2 * CHANNELS;

/// Rewrites a U2Net-shaped model (one Nx3xHxW input) to take the picture as
/// six planes, `hi` then `lo` (module docs). An error says why it cannot:
/// the picture is read by something other than a plain convolution whose
/// weights are stored floats, or the opset predates Slice's inputs.
pub fn split_input(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut model = onnx_rs::parse(bytes).map_err(|e| format!("not a valid ONNX model: {e:?}"))?;
    let opset = model
        .opset_import
        .iter()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .max()
        .unwrap_or(0);
    if opset < 10 {
        return Err(format!("its opset {opset} is older than 10"));
    }
    let graph = model.graph.as_ref().ok_or("the model holds no graph")?;
    let input = picture_input(graph)?;
    // A subgraph (If, Loop, Scan) may read the picture from this graph
    // under its name, unseen by the readers counted here.
    if let Some(node) = graph.node.iter().find(|n| {
        n.attribute
            .iter()
            .any(|a| a.g.is_some() || !a.graphs.is_empty())
    }) {
        return Err(format!(
            "it has a subgraph ({} {})",
            node.op_type.as_str(),
            node.name
        ));
    }
    let (readers, weights) = readers_of(graph, input)?;
    // Before ONNX IR 4 every initializer is also a graph input: a weight
    // replaced here would be left as an input that nothing fills.
    if let Some((name, ..)) = weights
        .iter()
        .find(|(name, ..)| graph.input.iter().any(|i| i.name == name))
    {
        return Err(format!(
            "its weight {name} is also a graph input (ONNX IR before 4)"
        ));
    }

    // Names that the graph does not use yet.
    let taken = |name: &str| {
        graph
            .node
            .iter()
            .any(|n| n.name == name || n.output.contains(&name))
            || graph.initializer.iter().any(|t| t.name() == name)
            || graph.input.iter().any(|i| i.name == name)
    };
    let fresh = |base: &str| {
        (0..)
            .map(|i| format!("{base}{i}"))
            .find(|n| !taken(n))
            .unwrap_or_default()
    };
    let names = Names {
        starts: fresh("split_input_starts_"),
        ends: fresh("split_input_ends_"),
        axes: fresh("split_input_axes_"),
        hi: fresh("split_input_hi_"),
        joined: fresh("split_input_joined_"),
        slice: fresh("split_input_slice_"),
        concat: fresh("split_input_concat_"),
        weights: weights
            .iter()
            .map(|(old, _, _)| fresh(&format!("{old}_split_")))
            .collect(),
    };
    let input = input.to_string();
    let graph = model.graph.as_mut().ok_or("the model holds no graph")?;
    rewrite(graph, &input, &readers, &weights, &names)?;
    Ok(onnx_rs::encode(&model))
}

/// New names in the graph.
struct Names {
    starts: String,
    ends: String,
    axes: String,
    hi: String,
    joined: String,
    slice: String,
    concat: String,
    /// Per weight of `readers_of`, its split weight's name.
    weights: Vec<String>,
}

/// The graph's picture input, checked to be Nx3xHxW floats.
fn picture_input<'g>(graph: &'g Graph) -> Result<&'g str, String> {
    let input = graph
        .input
        .iter()
        .find(|i| graph.initializer.iter().all(|t| t.name() != i.name))
        .ok_or("the model has no input")?;
    let channels = input
        .tensor_shape()
        .and_then(|s| s.dim.get(1))
        .map(|d| d.value.clone());
    if input.tensor_elem_type() != Some(DataType::Float)
        || channels != Some(Dimension::Value(CHANNELS))
    {
        return Err(format!("its input {} is not Nx3xHxW floats", input.name));
    }
    Ok(input.name)
}

/// The nodes that read `input` (all convolutions) and, once each, their
/// weights: (name, dims, values).
#[allow(clippy::type_complexity)]
fn readers_of(
    graph: &Graph,
    input: &str,
) -> Result<(Vec<usize>, Vec<(String, Vec<i64>, Vec<f32>)>), String> {
    let mut readers = Vec::new();
    let mut weights: Vec<(String, Vec<i64>, Vec<f32>)> = Vec::new();
    for (index, node) in graph.node.iter().enumerate() {
        if !node.input.contains(&input) {
            continue;
        }
        let label = if node.name.is_empty() {
            format!("node {index}")
        } else {
            node.name.to_string()
        };
        let group = node
            .attribute
            .iter()
            .find(|a| a.name == "group")
            .map_or(1, |a| a.i);
        if node.op_type != OpType::Conv || node.input.first() != Some(&input) || group != 1 {
            return Err(format!(
                "its input is read by {label} ({}), not by a plain convolution alone",
                node.op_type.as_str()
            ));
        }
        let name = node.input.get(1).copied().unwrap_or_default();
        let tensor = graph
            .initializer
            .iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| format!("{label} has no weight initializer"))?;
        let dims = tensor.dims().to_vec();
        let values = tensor
            .as_f32()
            .map(|v| v.into_owned())
            .filter(|v| {
                dims.len() == 4
                    && dims[1] == CHANNELS
                    && dims.iter().try_fold(1usize, |n, &d| {
                        usize::try_from(d).ok().and_then(|d| n.checked_mul(d))
                    }) == Some(v.len())
            })
            .ok_or_else(|| format!("{label}: its weights are not 3-channel 2-D floats"))?;
        // Another node reading the same weights would see them split.
        if graph
            .node
            .iter()
            .any(|n| n.input.contains(&name) && !n.input.contains(&input))
        {
            return Err(format!("{label}'s weights are shared with other nodes"));
        }
        if !weights.iter().any(|w| w.0 == name) {
            weights.push((name.to_string(), dims, values));
        }
        readers.push(index);
    }
    if readers.is_empty() {
        return Err("nothing reads its input".into());
    }
    Ok((readers, weights))
}

/// `[Wh, Wh, Wl]` along the input channels of weights `dims` (O x 3 x kh x
/// kw, row-major).
fn split_weights(dims: &[i64], values: &[f32]) -> (Vec<i64>, Vec<f32>) {
    let out_channels = dims[0] as usize;
    let per_out = values.len() / out_channels.max(1);
    let mut split = Vec::with_capacity(values.len() * 3);
    for w in values.chunks_exact(per_out) {
        let hi: Vec<f32> = w.iter().map(|&v| round_to_bf16(v)).collect();
        split.extend_from_slice(&hi);
        split.extend_from_slice(&hi);
        split.extend(w.iter().zip(&hi).map(|(&v, &h)| v - h));
    }
    let mut new_dims = dims.to_vec();
    new_dims[1] = 3 * CHANNELS;
    (new_dims, split)
}

fn rewrite<'n>(
    graph: &mut Graph<'n>,
    input: &str,
    readers: &[usize],
    weights: &[(String, Vec<i64>, Vec<f32>)],
    names: &'n Names,
) -> Result<(), String> {
    // The input: six planes.
    let declared = graph
        .input
        .iter_mut()
        .find(|i| i.name == input)
        .and_then(|i| i.r#type.as_mut())
        .and_then(|t| match t.value.as_mut() {
            Some(TypeValue::Tensor(t)) => t.shape.as_mut(),
            _ => None,
        })
        .and_then(|s| s.dim.get_mut(1))
        .ok_or("its input has no shape")?;
    declared.value = Dimension::Value(SPLIT_CHANNELS);
    // Shape hints of what follows would now contradict the graph.
    graph.value_info.clear();

    graph.initializer.extend([
        TensorProto::from_i64(&names.starts, vec![1], vec![0]),
        TensorProto::from_i64(&names.ends, vec![1], vec![CHANNELS]),
        TensorProto::from_i64(&names.axes, vec![1], vec![1]),
    ]);
    for ((old, dims, values), new) in weights.iter().zip(&names.weights) {
        let (dims, split) = split_weights(dims, values);
        graph
            .initializer
            .push(TensorProto::from_f32(new.as_str(), dims, split));
        // Only the readers used the old weights (checked): they go.
        graph.initializer.retain(|t| t.name() != old);
    }
    let input_name: &'n str = graph
        .input
        .iter()
        .find(|i| i.name == input)
        .map(|i| i.name)
        .ok_or("its input is gone")?;
    for &r in readers {
        let node = &mut graph.node[r];
        let old = node.input[1];
        let new = weights
            .iter()
            .zip(&names.weights)
            .find(|(w, _)| w.0 == old)
            .map(|(_, n)| n.as_str())
            .ok_or("a reader's weights were not split")?;
        node.input[0] = names.joined.as_str();
        node.input[1] = new;
    }
    let slice = Node {
        op_type: OpType::Slice,
        name: names.slice.as_str(),
        input: vec![
            input_name,
            names.starts.as_str(),
            names.ends.as_str(),
            names.axes.as_str(),
        ],
        output: vec![names.hi.as_str()],
        ..Default::default()
    };
    let concat = Node {
        op_type: OpType::Concat,
        name: names.concat.as_str(),
        input: vec![input_name, names.hi.as_str()],
        output: vec![names.joined.as_str()],
        attribute: vec![Attribute {
            name: "axis",
            r#type: AttributeType::Int,
            i: 1,
            ..Default::default()
        }],
        ..Default::default()
    };
    graph.node.splice(0..0, [slice, concat]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::recentre::tests::{max_abs_difference, photo_input_as, run, runtime, u2netp};
    use crate::prep::InputLayout;

    /// In fp32, the split graph fed the split picture computes what the
    /// original computes from the picture: at the model's size and
    /// another, one frame and two.
    #[cfg(feature = "cli")]
    #[test]
    fn split_u2netp_gives_the_same_masks_in_fp32_at_any_size_and_batch() {
        let runtime = runtime();
        for (size, photos) in [
            ((320, 320), &["astronaut.png"][..]),
            ((256, 256), &["chelsea.png", "coffee.png"][..]),
        ] {
            let original = u2netp(Some(size));
            let split = split_input(&original).unwrap();
            let (mut plain, mut parts) = (Vec::new(), Vec::new());
            for photo in photos {
                plain.extend(photo_input_as(photo, size, InputLayout::Planar));
                parts.extend(photo_input_as(photo, size, InputLayout::Bf16Split));
            }
            let before = run(&runtime, &original, &plain, photos.len(), size);
            let after = run(&runtime, &split, &parts, photos.len(), size);
            assert_eq!(after[0].1, before[0].1);
            let difference = max_abs_difference(&before[0].2, &after[0].2);
            assert!(difference < 1e-4, "{size:?}: max |d0 - ref| {difference}");
            // And a graph that takes a 3-plane picture is refused now.
            assert!(split_input(&split).unwrap_err().contains("not Nx3xHxW"));
        }
    }

    /// A picture read by three convolutions (one of them padded): each is
    /// split, and the graph computes what it did.
    #[test]
    fn every_convolution_that_reads_the_picture_is_split() {
        let runtime = runtime();
        let original = crate::model::recentre::tests::small_model();
        let split = split_input(&original).unwrap();
        let (h, w) = (6usize, 5usize);
        let plain: Vec<f32> = (0..2 * 3 * h * w)
            .map(|i| ((i * 37 % 101) as f32 / 17.0).sin() * 2.1)
            .collect();
        // Two frames, each as its bf16 part and what that left out.
        let mut parts = Vec::new();
        for frame in plain.chunks(3 * h * w) {
            parts.extend(frame.iter().map(|&v| round_to_bf16(v)));
            parts.extend(frame.iter().map(|&v| v - round_to_bf16(v)));
        }
        let before = run(&runtime, &original, &plain, 2, (h as u32, w as u32));
        let after = run(&runtime, &split, &parts, 2, (h as u32, w as u32));
        assert_eq!(before.len(), 2);
        for (b, a) in before.iter().zip(&after) {
            assert_eq!((&b.0, &b.1), (&a.0, &a.1));
            let difference = max_abs_difference(&b.2, &a.2);
            assert!(difference < 1e-4, "{}: {difference}", b.0);
        }
    }

    #[test]
    fn a_picture_read_by_something_else_than_a_convolution_is_refused() {
        let bytes = crate::model::recentre::tests::small_model();
        let mut model = onnx_rs::parse(&bytes).unwrap();
        let graph = model.graph.as_mut().unwrap();
        let add = graph.node.iter_mut().find(|n| n.name == "add_z").unwrap();
        add.input[1] = "x";
        let refused = split_input(&onnx_rs::encode(&model)).unwrap_err();
        assert_eq!(
            refused,
            "its input is read by add_z (Add), not by a plain convolution alone"
        );
        let garbage = split_input(b"not a model").unwrap_err();
        assert!(garbage.starts_with("not a valid ONNX model"), "{garbage}");
    }

    /// Before ONNX IR 4 the weights were graph inputs too: replacing one
    /// would leave an input that nothing fills.
    #[test]
    fn a_weight_listed_as_a_graph_input_is_refused() {
        let bytes = crate::model::recentre::tests::small_model();
        let mut model = onnx_rs::parse(&bytes).unwrap();
        let graph = model.graph.as_mut().unwrap();
        let weight = graph
            .node
            .iter()
            .find(|n| n.input.first() == Some(&"x"))
            .map(|n| n.input[1])
            .unwrap();
        let mut listed = graph.input[0].clone();
        listed.name = weight;
        graph.input.push(listed);
        let refused = split_input(&onnx_rs::encode(&model)).unwrap_err();
        assert_eq!(
            refused,
            format!("its weight {weight} is also a graph input (ONNX IR before 4)")
        );
    }

    #[test]
    fn split_weights_add_up_and_their_parts_are_bf16() {
        let dims = [2, 3, 1, 2];
        let values: Vec<f32> = (0..12).map(|i| 0.1 + i as f32 * 0.337).collect();
        let (new_dims, split) = split_weights(&dims, &values);
        assert_eq!(new_dims, [2, 9, 1, 2]);
        for (o, w) in values.chunks(6).enumerate() {
            let s = &split[o * 18..(o + 1) * 18];
            let (hi, again, lo) = (&s[..6], &s[6..12], &s[12..]);
            assert_eq!(hi, again);
            for ((&v, &h), &l) in w.iter().zip(hi).zip(lo) {
                assert_eq!(round_to_bf16(h), h);
                assert_eq!(h + l, v);
            }
        }
    }
}
