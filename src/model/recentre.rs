// SPDX-License-Identifier: MPL-2.0
//! Makes a U2Net-family graph safe for bf16 inference by re-centring the few
//! channels that sit at a large, nearly constant value.
//!
//! bf16 keeps 8 significant bits: U2NetP's Conv_765 output channel 14 sits at
//! ~226 with a spread of 0.2, where bf16's step is 1.0, so its variation is
//! lost and the mask with it. Subtracting the channel's mean `s` where it is
//! made, and adding it back where it is read, is exact in fp32:
//! - the producer Conv: `bias[c] -= s`; its Relu becomes `Max(y, K)` with
//!   `K[c] = -s` (`relu(x) - s = max(x - s, -s)`);
//! - Resize, MaxPool and Concat on the channel axis carry a per-channel
//!   constant unchanged (resize weights sum to 1, max pooling pads with -inf);
//! - each consumer Conv: `bias += s * sum(W[:, c])`, and because it pads
//!   with zeros (the shift is missing in its padding), a border correction
//!   `-s * conv(P, W[:, c])` is added to its output, where `P` is 1 on the
//!   padding and 0 on the picture. That is built in the graph from the
//!   consumer's input shape, so it holds at any batch and size; its interior
//!   is exactly 0 whatever precision the correction is computed in.
//!
//! Which channels: from per-channel statistics of every Relu that follows a
//! Conv, over a few synthetic calibration frames ([`choose`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use onnx_rs::ast::{
    Attribute, AttributeType, DataType, Graph, Model, Node, OpType, TensorProto, TensorTypeProto,
    TypeProto, TypeValue, ValueInfo,
};
use ort::value::TensorRef;

use crate::bf16::round_to_bf16;
use crate::prep::{Frame, Normalization, PixelLayout, Preparer};
use crate::runtime::Runtime;

/// Channels whose mean is smaller than this are left alone, however
/// constant: below 16, bf16 rounds by at most 2^-5 (half its step there),
/// about what it does to any activation of ordinary size. Tuned on U2NetP
/// (see the tests): above it, the channels constant at bf16's resolution are
/// the two that ruin its masks; the next one (Conv_0 output 17) sits at 3.1.
pub const MIN_MEAN: f64 = 16.0;

/// A channel is near-constant at bf16's resolution when bf16 resolves its
/// spread (four standard deviations) into at most this many steps at its
/// mean: most of what the next layer reads from it is then rounding. U2NetP's
/// two are at 0.9 (Conv_765 output 14: std 0.22, step 1) and 5.0 (Conv_898
/// output 12: std 0.31, step 0.25).
pub const MAX_LEVELS: f64 = 8.0;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecentreError {
    #[error("not a valid ONNX model ({0})")]
    Parse(String),
    #[error("the model {0}")]
    Graph(String),
    #[error("calibration frame could not be prepared: {0}")]
    Prepare(String),
    #[error("calibration run failed: {0}")]
    Run(String),
    #[error("calibration output {name}: {reason}")]
    Output { name: String, reason: String },
}

/// One Relu output whose statistics the calibration model reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The Conv that makes the channels (the Relu's input).
    pub conv: String,
    /// The Relu's output.
    pub tensor: String,
    /// Graph output with the per-channel mean, shaped [1, C, 1, 1].
    pub mean_output: String,
    /// Graph output with the per-channel mean squared deviation from it.
    pub spread_output: String,
}

/// A model that also reports, for each Relu that directly follows a Conv,
/// the per-channel mean and spread of its output (reduced in the graph, so a
/// run hands back a few kB rather than every activation).
#[derive(Debug, Clone)]
pub struct Calibration {
    /// The model: its first output first, then two outputs per probe.
    pub bytes: Vec<u8>,
    pub input_name: String,
    pub probes: Vec<Probe>,
}

/// Per-channel mean and standard deviation of one probe over all the
/// calibration frames seen (each frame weighs the same: all are one size).
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelStats {
    pub conv: String,
    pub tensor: String,
    frames: u64,
    mean: Vec<f64>,
    /// Sum of squared deviations from the mean, counting one frame's values
    /// as one (Chan et al.'s pairwise update; a frame adds its own mean
    /// squared deviation and its mean's distance from the others').
    m2: Vec<f64>,
}

impl ChannelStats {
    pub fn new(conv: &str, tensor: &str) -> Self {
        Self {
            conv: conv.to_string(),
            tensor: tensor.to_string(),
            frames: 0,
            mean: Vec::new(),
            m2: Vec::new(),
        }
    }

    /// Adds one frame: its per-channel mean and mean squared deviation.
    pub fn add(&mut self, mean: &[f32], spread: &[f32]) -> Result<(), String> {
        if mean.len() != spread.len() {
            return Err(format!("{} means but {} spreads", mean.len(), spread.len()));
        }
        if self.frames == 0 {
            self.mean = vec![0.0; mean.len()];
            self.m2 = vec![0.0; mean.len()];
        } else if mean.len() != self.mean.len() {
            return Err(format!(
                "{} channels, earlier frames had {}",
                mean.len(),
                self.mean.len()
            ));
        }
        let seen = self.frames as f64;
        let total = seen + 1.0;
        let running = self.mean.iter_mut().zip(self.m2.iter_mut());
        for ((running_mean, m2), (&m, &v)) in running.zip(mean.iter().zip(spread)) {
            let (m, v) = (f64::from(m), f64::from(v).max(0.0));
            let delta = m - *running_mean;
            *running_mean += delta / total;
            *m2 += v + delta * delta * seen / total;
        }
        self.frames += 1;
        Ok(())
    }

    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    pub fn mean(&self, channel: usize) -> f64 {
        self.mean[channel]
    }

    /// Standard deviation over every value of the channel in every frame.
    pub fn std(&self, channel: usize) -> f64 {
        if self.frames == 0 {
            return 0.0;
        }
        (self.m2[channel] / self.frames as f64).sqrt()
    }
}

/// One channel to re-centre: the producer Conv's name, its output channel,
/// and the value to subtract.
#[derive(Debug, Clone, PartialEq)]
pub struct Shift {
    pub conv: String,
    pub channel: usize,
    pub by: f32,
}

/// What became of one shift.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub shift: Shift,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Re-centred; the Convs that read it were corrected.
    Recentred { consumers: Vec<String> },
    /// Left as it was, and why.
    Skipped(String),
}

/// A re-centred model and what was done.
#[derive(Debug, Clone)]
pub struct Recentred {
    pub bytes: Vec<u8>,
    pub applied: Vec<Applied>,
    /// E.g. "re-centred 2 channels: Conv_765 output 14 by 226, ...".
    pub description: String,
}

/// The distance between neighbouring bf16 values at `magnitude` (> 0):
/// bf16 has 7 stored fraction bits.
pub fn bf16_step(magnitude: f64) -> f64 {
    2f64.powi(magnitude.log2().floor() as i32 - 7)
}

/// The channels to re-centre. A channel is chosen when it is large (its
/// mean's magnitude at least [`MIN_MEAN`]) and constant at bf16's resolution
/// (four standard deviations span at most [`MAX_LEVELS`] bf16 steps at its
/// mean): bf16 then stores little more than the mean, and the variation that
/// the next layers read is lost. The shift is the mean rounded to bf16, so
/// that `-s` is exact in bf16 too.
pub fn choose(stats: &[ChannelStats]) -> Vec<Shift> {
    let mut shifts = Vec::new();
    for probe in stats {
        for channel in 0..probe.channels() {
            let mean = probe.mean(channel);
            if mean.is_finite()
                && mean.abs() >= MIN_MEAN
                && 4.0 * probe.std(channel) <= MAX_LEVELS * bf16_step(mean.abs())
            {
                shifts.push(Shift {
                    conv: probe.conv.clone(),
                    channel,
                    by: round_to_bf16(mean as f32),
                });
            }
        }
    }
    shifts
}

fn parse(bytes: &[u8]) -> Result<Model<'_>, RecentreError> {
    onnx_rs::parse(bytes).map_err(|e| RecentreError::Parse(format!("{e:?}")))
}

fn opset(model: &Model) -> i64 {
    model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(1, |o| o.version)
}

fn graph_of<'m, 'a>(model: &'m Model<'a>) -> Result<&'m Graph<'a>, RecentreError> {
    model
        .graph
        .as_ref()
        .ok_or_else(|| RecentreError::Graph("holds no graph".into()))
}

/// The model with per-channel statistics of every Relu that directly follows
/// a (named, 2-D) Conv as extra outputs; its own outputs stay first.
pub fn calibration_model(bytes: &[u8]) -> Result<Calibration, RecentreError> {
    let model = parse(bytes)?;
    let graph = graph_of(&model)?;
    let producer: HashMap<&str, &Node> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(move |o| (*o, n)))
        .collect();
    let initializers: HashMap<&str, &TensorProto> =
        graph.initializer.iter().map(|t| (t.name(), t)).collect();
    let mut probes = Vec::new();
    for relu in graph.node.iter().filter(|n| n.op_type == OpType::Relu) {
        let (Some(input), Some(output)) = (relu.input.first(), relu.output.first()) else {
            continue;
        };
        let Some(conv) = producer.get(input) else {
            continue;
        };
        let is_2d = conv
            .input
            .get(1)
            .and_then(|w| initializers.get(w))
            .is_some_and(|w| w.dims().len() == 4);
        if conv.op_type == OpType::Conv && !conv.name.is_empty() && is_2d {
            probes.push((conv.name.to_string(), output.to_string()));
        }
    }
    let input_name = graph
        .non_init_inputs()
        .first()
        .map(|vi| vi.name.to_string())
        .ok_or_else(|| RecentreError::Graph("has no input".into()))?;
    let (bytes, probes) = instrument(bytes, &probes)?;
    Ok(Calibration {
        bytes,
        input_name,
        probes,
    })
}

/// Adds per-channel mean and spread outputs for each (conv, tensor).
fn instrument(
    bytes: &[u8],
    tensors: &[(String, String)],
) -> Result<(Vec<u8>, Vec<Probe>), RecentreError> {
    let model = parse(bytes)?;
    let version = opset(&model);
    let mut taken = Names::of(graph_of(&model)?);
    // Owned names and nodes first; the model then borrows them.
    let axes_name = taken.fresh("recentre/axes_0_2_3");
    let mut probes = Vec::new();
    let mut plans = Vec::new();
    for (conv, tensor) in tensors {
        let base = format!("recentre/{conv}");
        let probe = Probe {
            conv: conv.clone(),
            tensor: tensor.clone(),
            mean_output: taken.fresh(&format!("{base}/mean")),
            spread_output: taken.fresh(&format!("{base}/spread")),
        };
        let deviation = taken.fresh(&format!("{base}/deviation"));
        let squared = taken.fresh(&format!("{base}/squared"));
        plans.push((deviation, squared));
        probes.push(probe);
    }
    let mut model = model;
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| RecentreError::Graph("holds no graph".into()))?;
    // Opset 18 moved the axes from an attribute to an input.
    let axes = (version >= 18).then_some(axes_name.as_str());
    if version >= 18 {
        graph.initializer.push(TensorProto::from_i64(
            axes_name.as_str(),
            vec![3],
            vec![0, 2, 3],
        ));
    }
    for (probe, (deviation, squared)) in probes.iter().zip(&plans) {
        graph
            .node
            .push(reduce_mean(&probe.tensor, &probe.mean_output, axes));
        graph.node.push(Node {
            op_type: OpType::Sub,
            input: vec![probe.tensor.as_str(), probe.mean_output.as_str()],
            output: vec![deviation.as_str()],
            ..Default::default()
        });
        graph.node.push(Node {
            op_type: OpType::Mul,
            input: vec![deviation.as_str(), deviation.as_str()],
            output: vec![squared.as_str()],
            ..Default::default()
        });
        graph
            .node
            .push(reduce_mean(squared, &probe.spread_output, axes));
        graph.output.push(float_output(&probe.mean_output));
        graph.output.push(float_output(&probe.spread_output));
    }
    Ok((onnx_rs::encode(&model), probes))
}

/// ReduceMean over batch, height and width, keeping the dimensions; with
/// `axes`, the axes come from that input (opset 18 on).
fn reduce_mean<'s>(input: &'s str, output: &'s str, axes: Option<&'s str>) -> Node<'s> {
    let mut node = Node {
        op_type: OpType::ReduceMean,
        input: vec![input],
        output: vec![output],
        attribute: vec![int_attribute("keepdims", 1)],
        ..Default::default()
    };
    match axes {
        Some(axes) => node.input.push(axes),
        None => node.attribute.push(ints_attribute("axes", vec![0, 2, 3])),
    }
    node
}

fn float_output(name: &str) -> ValueInfo<'_> {
    ValueInfo {
        name,
        r#type: Some(TypeProto {
            value: Some(TypeValue::Tensor(TensorTypeProto {
                elem_type: DataType::Float,
                shape: None,
            })),
            denotation: "",
        }),
        ..Default::default()
    }
}

fn int_attribute(name: &str, value: i64) -> Attribute<'_> {
    Attribute {
        name,
        r#type: AttributeType::Int,
        i: value,
        ..Default::default()
    }
}

fn ints_attribute(name: &str, values: Vec<i64>) -> Attribute<'_> {
    Attribute {
        name,
        r#type: AttributeType::Ints,
        ints: values,
        ..Default::default()
    }
}

/// Every name in a graph, to make new ones that clash with none.
struct Names(HashSet<String>);

impl Names {
    fn of(graph: &Graph) -> Self {
        let mut names = HashSet::new();
        for node in &graph.node {
            names.insert(node.name.to_string());
            names.extend(node.input.iter().map(|s| s.to_string()));
            names.extend(node.output.iter().map(|s| s.to_string()));
        }
        names.extend(graph.initializer.iter().map(|t| t.name().to_string()));
        names.extend(graph.input.iter().map(|v| v.name.to_string()));
        names.extend(graph.output.iter().map(|v| v.name.to_string()));
        Self(names)
    }

    fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut n = 1;
        while self.0.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        self.0.insert(name.clone());
        name
    }
}

/// Runs the calibration frames through `run` (the calibration model on one
/// frame of `size` (height, width), input laid out 1x3xHxW; returns its
/// outputs as (name, shape, values)) and gathers each probe's statistics.
pub fn statistics<R>(
    calibration: &Calibration,
    size: (u32, u32),
    normalization: Normalization,
    mut run: R,
) -> Result<Vec<ChannelStats>, RecentreError>
where
    R: FnMut(&[f32]) -> Result<Vec<NamedOutput>, String>,
{
    let (height, width) = size;
    let mut preparer = Preparer::new(width, height, normalization);
    let mut input = vec![0.0f32; preparer.tensor_len()];
    let mut stats: Vec<ChannelStats> = calibration
        .probes
        .iter()
        .map(|p| ChannelStats::new(&p.conv, &p.tensor))
        .collect();
    for picture in calibration_pictures() {
        preparer
            .prepare(&picture.frame(), &mut input)
            .map_err(|e| RecentreError::Prepare(e.to_string()))?;
        let outputs = run(&input).map_err(RecentreError::Run)?;
        add_frame(calibration, &mut stats, &outputs)?;
    }
    Ok(stats)
}

/// Adds one run's probe outputs to `stats` (one per probe, in order).
fn add_frame(
    calibration: &Calibration,
    stats: &mut [ChannelStats],
    outputs: &NamedOutputs,
) -> Result<(), RecentreError> {
    for (probe, stat) in calibration.probes.iter().zip(stats.iter_mut()) {
        let mean = named(outputs, &probe.mean_output)?;
        let spread = named(outputs, &probe.spread_output)?;
        stat.add(mean, spread)
            .map_err(|reason| RecentreError::Output {
                name: probe.mean_output.clone(),
                reason,
            })?;
    }
    Ok(())
}

/// One output of a run: name, shape, values.
pub type NamedOutput = (String, Vec<usize>, Vec<f32>);
type NamedOutputs = [NamedOutput];

fn named<'o>(outputs: &'o NamedOutputs, name: &str) -> Result<&'o [f32], RecentreError> {
    outputs
        .iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, _, values)| values.as_slice())
        .ok_or_else(|| RecentreError::Output {
            name: name.to_string(),
            reason: "missing from the run's outputs".into(),
        })
}

/// A deterministic synthetic RGB picture for calibration.
struct Picture {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Picture {
    fn frame(&self) -> Frame<'_> {
        Frame {
            data: &self.rgb,
            width: self.width,
            height: self.height,
            stride: self.width as usize * 3,
            layout: PixelLayout::RGB,
        }
    }
}

/// Four pictures at 480x360, resized by the preparer as real frames are:
/// a colour gradient with a disc, noise with boxes, a figure-like shape on a
/// sky and ground, and stripes with a checkerboard.
fn calibration_pictures() -> Vec<Picture> {
    const W: u32 = 480;
    const H: u32 = 360;
    let make = |pixel: &dyn Fn(u32, u32) -> [u8; 3]| Picture {
        width: W,
        height: H,
        rgb: (0..H)
            .flat_map(|y| (0..W).flat_map(move |x| pixel(x, y)))
            .collect(),
    };
    let scale = |v: u32, max: u32| (v * 255 / max) as u8;
    let inside_disc = |x: u32, y: u32, cx: i64, cy: i64, r: i64| {
        let (dx, dy) = (i64::from(x) - cx, i64::from(y) - cy);
        dx * dx + dy * dy <= r * r
    };
    // A small LCG: the same noise on every machine.
    let noise = |x: u32, y: u32| -> u8 {
        let mut v = u64::from(y) * 1_000_003 + u64::from(x) * 7919 + 12345;
        v = v
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (v >> 56) as u8
    };
    vec![
        make(&|x, y| {
            if inside_disc(x, y, 260, 170, 110) {
                [230, 140, 60]
            } else {
                [scale(x, W), scale(y, H), 255 - scale(x, W)]
            }
        }),
        make(&|x, y| {
            if (60..200).contains(&x) && (80..300).contains(&y) {
                [20, 60, 200]
            } else if (260..420).contains(&x) && (40..180).contains(&y) {
                [240, 240, 230]
            } else {
                let n = noise(x, y);
                [n, n / 2 + 64, 255 - n]
            }
        }),
        make(&|x, y| {
            let head = inside_disc(x, y, 240, 110, 50);
            let body = (170..310).contains(&x) && (150..H).contains(&y);
            if head {
                [224, 172, 140]
            } else if body {
                [40, 40, 50]
            } else if y < H / 2 {
                [120 + scale(y, H) / 4, 170, 235]
            } else {
                [90, 120 + scale(x, W) / 8, 60]
            }
        }),
        make(&|x, y| {
            if (x / 40 + y / 40) % 2 == 0 && y > H / 2 {
                [250, 250, 250]
            } else if (x / 12) % 2 == 0 {
                [200, 30, 30]
            } else {
                [10, 10, 10]
            }
        }),
    ]
}

/// Calibrates `bytes` (a prepared model, batch-symbolic) at `size` (height,
/// width) on ONNX Runtime's plain CPU provider, one frame at a time, and
/// re-centres the channels [`choose`] picks.
pub fn calibrate_and_recentre(
    runtime: &Runtime,
    bytes: &[u8],
    size: (u32, u32),
    normalization: Normalization,
    threads: usize,
) -> Result<Recentred, RecentreError> {
    let calibration = calibration_model(bytes)?;
    let mut session = crate::model::providers::cpu::session(runtime, &calibration.bytes, threads)
        .map_err(|e| RecentreError::Run(e.to_string()))?;
    let shape = [1i64, 3, i64::from(size.0), i64::from(size.1)];
    let input_name = calibration.input_name.clone();
    let stats = statistics(&calibration, size, normalization, |input| {
        let tensor = TensorRef::from_array_view((shape, input)).map_err(|e| e.to_string())?;
        let outputs = session
            .run(ort::inputs![input_name.as_str() => tensor])
            .map_err(|e| e.to_string())?;
        let mut named = Vec::new();
        for (name, value) in &outputs {
            if let Ok((shape, data)) = value.try_extract_tensor::<f32>() {
                let dims = shape.iter().map(|&d| d.max(0) as usize).collect();
                named.push((name.to_string(), dims, data.to_vec()));
            }
        }
        Ok(named)
    })?;
    let shifts = choose(&stats);
    let (bytes, applied) = recentre(bytes, &shifts)?;
    let description = describe(&applied);
    Ok(Recentred {
        bytes,
        applied,
        description,
    })
}

/// "re-centred 2 channels: Conv_765 output 14 by 226, ...; skipped ...".
pub fn describe(applied: &[Applied]) -> String {
    let done: Vec<String> = applied
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Recentred { .. }))
        .map(|a| {
            format!(
                "{} output {} by {}",
                a.shift.conv, a.shift.channel, a.shift.by
            )
        })
        .collect();
    let skipped: Vec<String> = applied
        .iter()
        .filter_map(|a| match &a.outcome {
            Outcome::Skipped(why) => Some(format!(
                "{} output {} ({why})",
                a.shift.conv, a.shift.channel
            )),
            Outcome::Recentred { .. } => None,
        })
        .collect();
    let mut text = match done.len() {
        0 => "re-centred no channel".to_string(),
        1 => format!("re-centred 1 channel: {}", done[0]),
        n => format!("re-centred {n} channels: {}", done.join(", ")),
    };
    if !skipped.is_empty() {
        text.push_str(&format!("; skipped {}", skipped.join(", ")));
    }
    text
}

// ---- The rewrite ----

fn attribute<'n, 'a>(node: &'n Node<'a>, name: &str) -> Option<&'n Attribute<'a>> {
    node.attribute.iter().find(|a| a.name == name)
}

fn int_of(node: &Node, name: &str, default: i64) -> i64 {
    attribute(node, name).map_or(default, |a| a.i)
}

fn text_of<'n>(node: &'n Node, name: &str) -> Option<&'n str> {
    attribute(node, name).and_then(|a| std::str::from_utf8(a.s).ok())
}

fn node_label(node: &Node, index: usize) -> String {
    if node.name.is_empty() {
        format!("node #{index} ({})", node.op_type)
    } else {
        format!("{} ({})", node.name, node.op_type)
    }
}

/// Where tensors come from and go, and what is known of them.
struct GraphIndex<'g, 'a> {
    graph: &'g Graph<'a>,
    producer: HashMap<&'a str, usize>,
    consumers: HashMap<&'a str, Vec<(usize, usize)>>,
    outputs: HashSet<&'a str>,
    initializers: HashMap<&'a str, usize>,
    /// How many node inputs name each tensor (a shared bias is not edited in
    /// place).
    uses: HashMap<&'a str, usize>,
    /// Static channel counts (dimension 1), where known.
    channels: HashMap<&'a str, usize>,
}

impl<'g, 'a> GraphIndex<'g, 'a> {
    fn new(graph: &'g Graph<'a>) -> Self {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
        let mut uses: HashMap<&str, usize> = HashMap::new();
        for (i, node) in graph.node.iter().enumerate() {
            for &output in &node.output {
                producer.insert(output, i);
            }
            for (pos, &input) in node.input.iter().enumerate() {
                if !input.is_empty() {
                    consumers.entry(input).or_default().push((i, pos));
                    *uses.entry(input).or_default() += 1;
                }
            }
        }
        let mut index = Self {
            graph,
            producer,
            consumers,
            outputs: graph.output.iter().map(|o| o.name).collect(),
            initializers: graph
                .initializer
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name(), i))
                .collect(),
            uses,
            channels: HashMap::new(),
        };
        index.infer_channels();
        index
    }

    fn initializer(&self, name: &str) -> Option<&'g TensorProto<'a>> {
        self.initializers
            .get(name)
            .map(|&i| &self.graph.initializer[i])
    }

    /// One pass in node order (ONNX keeps nodes topologically sorted);
    /// anything not understood stays unknown.
    fn infer_channels(&mut self) {
        for input in &self.graph.input {
            if let Some(c) = input
                .tensor_shape()
                .and_then(|s| s.dim.get(1))
                .and_then(|d| match d.value {
                    onnx_rs::ast::Dimension::Value(v) if v > 0 => usize::try_from(v).ok(),
                    _ => None,
                })
            {
                self.channels.insert(input.name, c);
            }
        }
        for node in &self.graph.node {
            let Some(&output) = node.output.first() else {
                continue;
            };
            let first = node
                .input
                .first()
                .and_then(|i| self.channels.get(i).copied());
            let known = match node.op_type {
                OpType::Conv => node
                    .input
                    .get(1)
                    .and_then(|w| self.initializer(w))
                    .and_then(|w| w.dims().first().copied())
                    .and_then(|c| usize::try_from(c).ok()),
                OpType::Relu
                | OpType::Resize
                | OpType::Upsample
                | OpType::MaxPool
                | OpType::AveragePool
                | OpType::BatchNormalization
                | OpType::Identity
                | OpType::Sigmoid => first,
                OpType::Concat if int_of(node, "axis", 0) == 1 => node
                    .input
                    .iter()
                    .map(|i| self.channels.get(i).copied())
                    .sum::<Option<usize>>(),
                _ => None,
            };
            if let Some(c) = known {
                self.channels.insert(output, c);
            }
        }
    }

    /// The checks and facts of a Conv that is edited.
    fn conv(&self, index: usize) -> Result<ConvFacts, String> {
        let node = &self.graph.node[index];
        let label = node_label(node, index);
        if node.input.is_empty() || node.output.is_empty() {
            return Err(format!("{label} has no input or no output"));
        }
        let weight = node
            .input
            .get(1)
            .and_then(|w| self.initializer(w))
            .ok_or_else(|| format!("{label} has no weight initializer"))?;
        let dims = weight.dims();
        let [out_channels, in_channels, kh, kw] = dims else {
            return Err(format!("{label} is not a 2-D convolution"));
        };
        let size =
            |d: i64| usize::try_from(d).map_err(|_| format!("{label}: weight dims {dims:?}"));
        let (out_channels, in_channels, kh, kw) = (
            size(*out_channels)?,
            size(*in_channels)?,
            size(*kh)?,
            size(*kw)?,
        );
        let weights = weight
            .as_f32()
            .map(|w| w.into_owned())
            .filter(|w| {
                let len = out_channels
                    .checked_mul(in_channels)
                    .and_then(|n| n.checked_mul(kh))
                    .and_then(|n| n.checked_mul(kw));
                len == Some(w.len())
            })
            .ok_or_else(|| format!("{label}: its weights are not stored as floats"))?;
        let bias = match node.input.get(2).filter(|b| !b.is_empty()) {
            None => None,
            Some(name) => {
                let tensor = self
                    .initializer(name)
                    .ok_or_else(|| format!("{label}: its bias is not an initializer"))?;
                let values = tensor
                    .as_f32()
                    .map(|b| b.into_owned())
                    .filter(|b| b.len() == out_channels)
                    .ok_or_else(|| format!("{label}: its bias is not {out_channels} floats"))?;
                Some(values)
            }
        };
        let pads = match text_of(node, "auto_pad").unwrap_or("NOTSET") {
            "NOTSET" | "" => match attribute(node, "pads") {
                None => [0; 4],
                Some(a) => match a.ints.as_slice() {
                    &[t, l, b, r] => [t, l, b, r],
                    other => return Err(format!("{label}: pads {other:?}")),
                },
            },
            "VALID" => [0; 4],
            other => return Err(format!("{label} pads by auto_pad={other}")),
        };
        Ok(ConvFacts {
            out_channels,
            in_channels,
            kernel: kh * kw,
            kernel_height: dims[2],
            kernel_width: dims[3],
            weights,
            bias,
            pads,
            group: int_of(node, "group", 1),
        })
    }

    /// Follows the shifted channel from the producer Conv to the Convs that
    /// read it; an error says what does not carry the shift.
    fn route(&self, shift: &Shift) -> Result<Route, String> {
        let producer = self
            .graph
            .node
            .iter()
            .position(|n| n.name == shift.conv)
            .ok_or_else(|| format!("no node is named {}", shift.conv))?;
        let node = &self.graph.node[producer];
        if node.op_type != OpType::Conv {
            return Err(format!("{} is a {}, not a Conv", shift.conv, node.op_type));
        }
        let facts = self.conv(producer)?;
        if facts.bias.is_none() {
            return Err(format!("{} has no bias", shift.conv));
        }
        if shift.channel >= facts.out_channels {
            return Err(format!(
                "{} has {} output channels",
                shift.conv, facts.out_channels
            ));
        }
        if !shift.by.is_finite() {
            return Err(format!("the shift {} is not finite", shift.by));
        }
        let conv_out = node
            .output
            .first()
            .copied()
            .ok_or_else(|| format!("{} has no output", shift.conv))?;
        let readers = self
            .consumers
            .get(conv_out)
            .map_or(&[][..], |v| v.as_slice());
        let relu = match readers {
            [(relu, 0)]
                if self.graph.node[*relu].op_type == OpType::Relu
                    && !self.outputs.contains(conv_out) =>
            {
                *relu
            }
            _ => {
                return Err(format!(
                    "{}'s output is not read by one Relu alone",
                    shift.conv
                ));
            }
        };
        let start = self.graph.node[relu]
            .output
            .first()
            .copied()
            .ok_or_else(|| format!("{}'s Relu has no output", shift.conv))?;

        let mut consumers = Vec::new();
        let mut seen = HashSet::new();
        let mut queue = vec![(start, shift.channel)];
        while let Some((tensor, channel)) = queue.pop() {
            if !seen.insert((tensor, channel)) {
                continue;
            }
            if self.outputs.contains(tensor) {
                return Err(format!("{tensor} is a graph output"));
            }
            for &(reader, pos) in self.consumers.get(tensor).map_or(&[][..], |v| v.as_slice()) {
                let node = &self.graph.node[reader];
                let label = node_label(node, reader);
                let carries = |why: &str| format!("its path reaches {label}, {why}");
                let next = node.output.first().copied();
                match node.op_type {
                    // Reads only the shape.
                    OpType::Shape => {}
                    OpType::Resize | OpType::Upsample if pos == 0 => {
                        if text_of(node, "coordinate_transformation_mode")
                            == Some("tf_crop_and_resize")
                        {
                            return Err(carries("which extrapolates with a constant"));
                        }
                        if let Some(next) = next {
                            queue.push((next, channel));
                        }
                    }
                    OpType::MaxPool if pos == 0 => {
                        // Output 1 (indices) does not change with a shift.
                        if let Some(next) = next {
                            queue.push((next, channel));
                        }
                    }
                    OpType::Concat => {
                        if int_of(node, "axis", 0) != 1 {
                            return Err(carries("which does not join on axis 1"));
                        }
                        let mut offset = 0;
                        for before in &node.input[..pos] {
                            offset += self.channels.get(before).copied().ok_or_else(|| {
                                carries(&format!("where the channels of {before} are unknown"))
                            })?;
                        }
                        if let Some(next) = next {
                            queue.push((next, offset + channel));
                        }
                    }
                    OpType::Conv if pos == 0 => {
                        let facts = self.conv(reader)?;
                        if facts.group != 1 {
                            return Err(carries("a grouped convolution"));
                        }
                        if channel >= facts.in_channels {
                            return Err(carries(&format!(
                                "which has {} input channels",
                                facts.in_channels
                            )));
                        }
                        consumers.push((reader, channel));
                    }
                    _ => return Err(carries("which does not carry a constant shift")),
                }
            }
        }
        Ok(Route {
            producer,
            relu,
            consumers,
        })
    }
}

struct ConvFacts {
    out_channels: usize,
    in_channels: usize,
    kernel: usize,
    kernel_height: i64,
    kernel_width: i64,
    /// [out, in, kernel] in ONNX order.
    weights: Vec<f32>,
    bias: Option<Vec<f32>>,
    /// Top, left, bottom, right.
    pads: [i64; 4],
    group: i64,
}

impl ConvFacts {
    /// Weight of output `m`, input channel `c`, kernel position `k`.
    fn weight(&self, m: usize, c: usize, k: usize) -> f32 {
        self.weights[(m * self.in_channels + c) * self.kernel + k]
    }
}

struct Route {
    producer: usize,
    relu: usize,
    /// (Conv node, input channel) that read the shifted channel.
    consumers: Vec<(usize, usize)>,
}

/// Owned edits, made from the parsed model and then applied to it.
#[derive(Default)]
struct Plan {
    /// Node -> its new bias (replaced in place when only it uses the old
    /// one, else under `name`).
    biases: Vec<(usize, String, bool, Vec<f32>)>,
    /// Relu node -> Max with this constant.
    maxes: Vec<(usize, String, Vec<f32>)>,
    /// Consumer node -> its output is renamed; nodes to insert after it.
    borders: Vec<(usize, String, Vec<NewNode>)>,
    initializers: Vec<NewInit>,
}

struct NewInit {
    name: String,
    dims: Vec<i64>,
    data: InitData,
}

enum InitData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

struct NewNode {
    op: OpType<'static>,
    name: String,
    inputs: Vec<String>,
    output: String,
    attributes: Vec<NewAttr>,
}

enum NewAttr {
    Int(&'static str, i64),
    Ints(&'static str, Vec<i64>),
    FloatTensor(&'static str, f32),
    Text(&'static str, &'static str),
}

impl NewAttr {
    fn to_attribute(&self) -> Attribute<'static> {
        match self {
            Self::Int(name, v) => int_attribute(name, *v),
            Self::Ints(name, v) => ints_attribute(name, v.clone()),
            Self::FloatTensor(name, v) => Attribute {
                name,
                r#type: AttributeType::Tensor,
                t: Some(TensorProto::from_f32("", vec![1], vec![*v])),
                ..Default::default()
            },
            Self::Text(name, v) => Attribute {
                name,
                r#type: AttributeType::String,
                s: v.as_bytes(),
                ..Default::default()
            },
        }
    }
}

/// Re-centres each of `shifts` that can be carried exactly; returns the
/// model and, per shift, what was done or why not.
pub fn recentre(bytes: &[u8], shifts: &[Shift]) -> Result<(Vec<u8>, Vec<Applied>), RecentreError> {
    let model = parse(bytes)?;
    let version = opset(&model);
    let graph = graph_of(&model)?;
    let index = GraphIndex::new(graph);

    let mut applied = Vec::new();
    let mut routes = Vec::new();
    let mut taken_channels = HashSet::new();
    for shift in shifts {
        let outcome = if !taken_channels.insert((shift.conv.clone(), shift.channel)) {
            Err("the same channel was asked for twice".to_string())
        } else if version < 11 {
            Err(format!("the model's opset {version} is older than 11"))
        } else {
            index.route(shift)
        };
        match outcome {
            Ok(route) => {
                let consumers = route
                    .consumers
                    .iter()
                    .map(|&(n, _)| node_label(&graph.node[n], n))
                    .collect();
                routes.push((shift.clone(), route));
                applied.push(Applied {
                    shift: shift.clone(),
                    outcome: Outcome::Recentred { consumers },
                });
            }
            Err(why) => applied.push(Applied {
                shift: shift.clone(),
                outcome: Outcome::Skipped(why),
            }),
        }
    }
    if routes.is_empty() {
        return Ok((bytes.to_vec(), applied));
    }
    let plan = plan(&index, &routes).map_err(RecentreError::Graph)?;
    drop(index);

    // The model now borrows the plan's names.
    let mut model = model;
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| RecentreError::Graph("holds no graph".into()))?;
    apply(graph, &plan);
    Ok((onnx_rs::encode(&model), applied))
}

fn plan(index: &GraphIndex, routes: &[(Shift, Route)]) -> Result<Plan, String> {
    let graph = index.graph;
    let mut names = Names::of(graph);
    let mut plan = Plan::default();
    // Per Conv node: bias deltas; per Relu: shifts by channel; per consumer:
    // (input channel, shift).
    // Ordered maps: the same shifts give the same bytes.
    let mut bias_delta: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let mut relus: BTreeMap<usize, Vec<(usize, f32)>> = BTreeMap::new();
    let mut readers: BTreeMap<usize, Vec<(usize, f32)>> = BTreeMap::new();
    let mut facts: BTreeMap<usize, ConvFacts> = BTreeMap::new();
    let facts_of = |facts: &mut BTreeMap<usize, ConvFacts>, node: usize| {
        if let std::collections::btree_map::Entry::Vacant(e) = facts.entry(node) {
            e.insert(index.conv(node)?);
        }
        Ok::<(), String>(())
    };
    for (shift, route) in routes {
        facts_of(&mut facts, route.producer)?;
        let out = facts[&route.producer].out_channels;
        bias_delta
            .entry(route.producer)
            .or_insert_with(|| vec![0.0; out])[shift.channel] -= f64::from(shift.by);
        relus
            .entry(route.relu)
            .or_default()
            .push((shift.channel, shift.by));
        for &(consumer, channel) in &route.consumers {
            facts_of(&mut facts, consumer)?;
            readers
                .entry(consumer)
                .or_default()
                .push((channel, shift.by));
        }
    }

    for (&consumer, list) in &readers {
        let f = &facts[&consumer];
        let delta = bias_delta
            .entry(consumer)
            .or_insert_with(|| vec![0.0; f.out_channels]);
        for (m, d) in delta.iter_mut().enumerate() {
            for &(c, s) in list {
                let sum: f64 = (0..f.kernel).map(|k| f64::from(f.weight(m, c, k))).sum();
                *d += f64::from(s) * sum;
            }
        }
        if f.pads.iter().any(|&p| p != 0) {
            plan.borders.push(border(
                graph,
                consumer,
                f,
                list,
                &mut names,
                &mut plan.initializers,
            ));
        }
    }

    for (&node_index, delta) in &bias_delta {
        let f = &facts[&node_index];
        let old = f.bias.clone().unwrap_or_else(|| vec![0.0; f.out_channels]);
        let new: Vec<f32> = old
            .iter()
            .zip(delta)
            .map(|(&b, &d)| (f64::from(b) + d) as f32)
            .collect();
        let node = &graph.node[node_index];
        let existing = node.input.get(2).filter(|b| !b.is_empty()).copied();
        let (name, in_place) = match existing {
            Some(name) if index.uses.get(name) == Some(&1) => (name.to_string(), true),
            _ => (names.fresh(&format!("{}/recentred_bias", node.name)), false),
        };
        plan.biases.push((node_index, name, in_place, new));
    }

    for (&relu, list) in &relus {
        let producer = index
            .producer
            .get(graph.node[relu].input[0])
            .copied()
            .ok_or("a Relu lost its producer")?;
        let channels = facts[&producer].out_channels;
        let mut floor = vec![0.0f32; channels];
        for &(c, s) in list {
            floor[c] = -s;
        }
        let name = names.fresh(&format!("{}/recentre_floor", graph.node[producer].name));
        plan.maxes.push((relu, name, floor));
    }
    Ok(plan)
}

/// The nodes that add `-s * conv(P, W[:, c])` to `consumer`'s output, with
/// P one on the consumer's zero padding and zero on its input.
fn border(
    graph: &Graph,
    consumer: usize,
    f: &ConvFacts,
    list: &[(usize, f32)],
    names: &mut Names,
    inits: &mut Vec<NewInit>,
) -> (usize, String, Vec<NewNode>) {
    let node = &graph.node[consumer];
    let input = node.input[0].to_string();
    let output = node.output[0].to_string();
    let base = format!("{}/recentre_border", node.name);
    let fresh = |names: &mut Names, what: &str| names.fresh(&format!("{base}/{what}"));
    let before = fresh(names, "before");
    let shape = fresh(names, "shape");
    let hw = fresh(names, "hw");
    let dims = fresh(names, "dims");
    let zeros = fresh(names, "zeros");
    let canvas = fresh(names, "canvas");
    let correction = fresh(names, "correction");
    let hw_index = fresh(names, "hw_index");
    let one_one = fresh(names, "one_one");
    let pads = fresh(names, "pads");
    let one = fresh(names, "one");
    let weights = fresh(names, "weights");

    let mut w = vec![0.0f32; f.out_channels * f.kernel];
    for m in 0..f.out_channels {
        for k in 0..f.kernel {
            let sum: f64 = list
                .iter()
                .map(|&(c, s)| -f64::from(s) * f64::from(f.weight(m, c, k)))
                .sum();
            w[m * f.kernel + k] = sum as f32;
        }
    }
    let [t, l, b, r] = f.pads;
    inits.push(NewInit {
        name: hw_index.clone(),
        dims: vec![2],
        data: InitData::I64(vec![2, 3]),
    });
    inits.push(NewInit {
        name: one_one.clone(),
        dims: vec![2],
        data: InitData::I64(vec![1, 1]),
    });
    inits.push(NewInit {
        name: pads.clone(),
        dims: vec![8],
        data: InitData::I64(vec![0, 0, t, l, 0, 0, b, r]),
    });
    inits.push(NewInit {
        name: one.clone(),
        dims: vec![],
        data: InitData::F32(vec![1.0]),
    });
    inits.push(NewInit {
        name: weights.clone(),
        dims: vec![f.out_channels as i64, 1, f.kernel_height, f.kernel_width],
        data: InitData::F32(w),
    });

    let copied: Vec<NewAttr> = ["strides", "dilations", "kernel_shape"]
        .into_iter()
        .filter_map(|name| attribute(node, name).map(|a| NewAttr::Ints(name, a.ints.clone())))
        .collect();
    let new = |op, what: &str, inputs: Vec<&String>, output: &String, attributes| NewNode {
        op,
        name: format!("{base}/{what}"),
        inputs: inputs.into_iter().cloned().collect(),
        output: output.clone(),
        attributes,
    };
    let nodes = vec![
        new(OpType::Shape, "Shape", vec![&input], &shape, vec![]),
        new(
            OpType::Gather,
            "Gather",
            vec![&shape, &hw_index],
            &hw,
            vec![NewAttr::Int("axis", 0)],
        ),
        new(
            OpType::Concat,
            "Concat",
            vec![&one_one, &hw],
            &dims,
            vec![NewAttr::Int("axis", 0)],
        ),
        new(
            OpType::ConstantOfShape,
            "ConstantOfShape",
            vec![&dims],
            &zeros,
            vec![NewAttr::FloatTensor("value", 0.0)],
        ),
        new(
            OpType::Pad,
            "Pad",
            vec![&zeros, &pads, &one],
            &canvas,
            vec![NewAttr::Text("mode", "constant")],
        ),
        new(
            OpType::Conv,
            "Conv",
            vec![&canvas, &weights],
            &correction,
            copied,
        ),
        new(
            OpType::Add,
            "Add",
            vec![&before, &correction],
            &output,
            vec![],
        ),
    ];
    (consumer, before, nodes)
}

fn apply<'p>(graph: &mut Graph<'p>, plan: &'p Plan) {
    for (node, name, in_place, values) in &plan.biases {
        let dims = vec![values.len() as i64];
        let tensor = TensorProto::from_f32(name.as_str(), dims, values.clone());
        if *in_place {
            if let Some(t) = graph.initializer.iter_mut().find(|t| t.name() == name) {
                *t = tensor;
            }
        } else {
            graph.initializer.push(tensor);
            let inputs = &mut graph.node[*node].input;
            inputs.resize(inputs.len().max(3), "");
            inputs[2] = name.as_str();
        }
    }
    for (relu, name, floor) in &plan.maxes {
        let dims = vec![1, floor.len() as i64, 1, 1];
        graph
            .initializer
            .push(TensorProto::from_f32(name.as_str(), dims, floor.clone()));
        let node = &mut graph.node[*relu];
        node.op_type = OpType::Max;
        node.input.truncate(1);
        node.input.push(name.as_str());
    }
    for init in &plan.initializers {
        let name = init.name.as_str();
        let dims = init.dims.clone();
        graph.initializer.push(match &init.data {
            InitData::F32(v) => TensorProto::from_f32(name, dims, v.clone()),
            InitData::I64(v) => TensorProto::from_i64(name, dims, v.clone()),
        });
    }
    let mut after: HashMap<usize, &[NewNode]> = HashMap::new();
    for (consumer, before, nodes) in &plan.borders {
        graph.node[*consumer].output[0] = before.as_str();
        after.insert(*consumer, nodes);
    }
    let old = std::mem::take(&mut graph.node);
    for (i, node) in old.into_iter().enumerate() {
        graph.node.push(node);
        for new in after.get(&i).copied().unwrap_or_default() {
            graph.node.push(Node {
                op_type: new.op.clone(),
                name: new.name.as_str(),
                input: new.inputs.iter().map(String::as_str).collect(),
                output: vec![new.output.as_str()],
                attribute: new.attributes.iter().map(NewAttr::to_attribute).collect(),
                ..Default::default()
            });
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::graph;
    use std::path::PathBuf;

    pub(crate) fn top() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    pub(crate) fn runtime() -> std::sync::Arc<Runtime> {
        crate::runtime::load(None, None, ort::logging::LogLevel::Warning)
            .expect("ONNX Runtime loads (make setup)")
            .runtime
    }

    /// U2NetP as the element prepares it, at `size` (None: its own).
    pub(crate) fn u2netp(size: Option<(u32, u32)>) -> Vec<u8> {
        let bytes = std::fs::read(top().join("models/u2netp.onnx")).expect("models/u2netp.onnx");
        graph::prepare(&bytes, size)
            .expect("U2NetP is U2Net-shaped")
            .bytes
    }

    /// Runs `bytes` on `input` (batch x channels x h x w) on the plain CPU
    /// provider; returns every output by name.
    pub(crate) fn run(
        runtime: &Runtime,
        bytes: &[u8],
        input: &[f32],
        batch: usize,
        (h, w): (u32, u32),
    ) -> Vec<NamedOutput> {
        let mut session =
            crate::model::providers::cpu::session(runtime, bytes, 0).expect("session");
        let name = session.inputs()[0].name().to_string();
        let channels = input.len() / (batch * h as usize * w as usize).max(1);
        let shape = [batch as i64, channels as i64, i64::from(h), i64::from(w)];
        let tensor = TensorRef::from_array_view((shape, input)).unwrap();
        let outputs = session.run(ort::inputs![name.as_str() => tensor]).unwrap();
        outputs
            .iter()
            .map(|(name, value)| {
                let (shape, data) = value.try_extract_tensor::<f32>().unwrap();
                let dims = shape.iter().map(|&d| d as usize).collect();
                (name.to_string(), dims, data.to_vec())
            })
            .collect()
    }

    /// A photo of `.deps/photos` prepared as the element does, in `layout`.
    #[cfg(feature = "cli")]
    pub(crate) fn photo_input_as(
        name: &str,
        (h, w): (u32, u32),
        layout: crate::prep::InputLayout,
    ) -> Vec<f32> {
        let path = top().join(".deps/photos").join(name);
        let img = image::open(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (make setup)", path.display()))
            .to_rgb8();
        let frame = Frame {
            data: img.as_raw(),
            width: img.width(),
            height: img.height(),
            stride: img.width() as usize * 3,
            layout: PixelLayout::RGB,
        };
        let mut preparer = Preparer::new(w, h, Normalization::IMAGENET).with_layout(layout);
        let mut input = vec![0.0; preparer.tensor_len()];
        preparer.prepare(&frame, &mut input).unwrap();
        input
    }

    #[cfg(feature = "cli")]
    fn photo_input(name: &str, size: (u32, u32)) -> Vec<f32> {
        photo_input_as(name, size, crate::prep::InputLayout::Planar)
    }

    fn shifts(list: &[(&str, usize, f32)]) -> Vec<Shift> {
        list.iter()
            .map(|&(conv, channel, by)| Shift {
                conv: conv.into(),
                channel,
                by,
            })
            .collect()
    }

    fn picked(shifts: &[Shift]) -> Vec<(&str, usize)> {
        shifts
            .iter()
            .map(|s| (s.conv.as_str(), s.channel))
            .collect()
    }

    fn output<'o>(outputs: &'o NamedOutputs, name: &str) -> &'o [f32] {
        named(outputs, name).unwrap()
    }

    pub(crate) fn max_abs_difference(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn frames_pool_and_the_rule_takes_large_constant_channels() {
        let mut stats = ChannelStats::new("Conv_1", "r1");
        // Two frames: channel 0 at 10 then 12, each with variance 1.
        stats
            .add(
                &[10.0, 226.3, 226.0, 3.1, -40.0],
                &[1.0, 0.04, 9.0, 1e-6, 0.01],
            )
            .unwrap();
        stats
            .add(
                &[12.0, 226.3, 226.0, 3.1, -40.0],
                &[1.0, 0.04, 9.0, 1e-6, 0.01],
            )
            .unwrap();
        assert_eq!(stats.frames(), 2);
        assert!((stats.mean(0) - 11.0).abs() < 1e-12);
        // Within-frame variance 1 plus the frames' own spread (1 each side).
        assert!((stats.std(0) - 2f64.sqrt()).abs() < 1e-12);
        assert!((stats.std(1) - 0.2).abs() < 1e-6);
        assert_eq!(
            stats.add(&[1.0], &[1.0]).unwrap_err(),
            "1 channels, earlier frames had 5"
        );
        assert_eq!(
            stats.add(&[1.0, 2.0], &[1.0]).unwrap_err(),
            "2 means but 1 spreads"
        );

        assert_eq!(bf16_step(226.3), 1.0);
        assert_eq!(bf16_step(53.2), 0.25);
        assert_eq!(round_to_bf16(226.324), 226.0);
        assert_eq!(round_to_bf16(53.253), 53.25);
        assert_eq!(round_to_bf16(-40.1), -40.0);
        // Channel 0: too wide; 1: large and constant; 2: large, std 3 > 2
        // steps; 3: constant but small; 4: negative, large and constant.
        assert_eq!(
            choose(&[stats]),
            shifts(&[("Conv_1", 1, 226.0), ("Conv_1", 4, -40.0)])
        );
    }

    #[test]
    fn the_rule_picks_the_two_bad_channels_of_u2netp() {
        let runtime = runtime();
        let calibration = calibration_model(&u2netp(None)).unwrap();
        // Every Relu of U2NetP follows a Conv; d0 stays first.
        assert_eq!(calibration.probes.len(), 112);
        assert_eq!(calibration.input_name, "input.1");
        let stats = statistics(&calibration, (320, 320), Normalization::IMAGENET, |input| {
            Ok(run(&runtime, &calibration.bytes, input, 1, (320, 320)))
        })
        .unwrap();
        assert!(stats.iter().all(|s| s.frames() == 4));
        let chosen = choose(&stats);
        for shift in &chosen {
            let s = stats.iter().find(|s| s.conv == shift.conv).unwrap();
            eprintln!(
                "{} output {}: mean {:.3}, std {:.4}, bf16 step {}, shift {}",
                shift.conv,
                shift.channel,
                s.mean(shift.channel),
                s.std(shift.channel),
                bf16_step(s.mean(shift.channel).abs()),
                shift.by
            );
        }
        assert_eq!(picked(&chosen), [("Conv_765", 14), ("Conv_898", 12)]);
    }

    #[cfg(feature = "cli")]
    #[test]
    fn recentred_u2netp_gives_the_same_masks_in_fp32_at_any_size_and_batch() {
        let runtime = runtime();
        let original = u2netp(None);
        let started = std::time::Instant::now();
        let done =
            calibrate_and_recentre(&runtime, &original, (320, 320), Normalization::IMAGENET, 0)
                .unwrap();
        eprintln!("{} (in {:?})", done.description, started.elapsed());
        eprintln!("{:?}", done.applied);
        assert!(
            done.description.starts_with(
                "re-centred 2 channels: Conv_765 output 14 by 226, Conv_898 output 12 by 53"
            ),
            "{}",
            done.description
        );
        let Outcome::Recentred { consumers } = &done.applied[0].outcome else {
            panic!("{:?}", done.applied[0]);
        };
        assert_eq!(consumers, &["Conv_787 (Conv)"]);

        let input = photo_input("astronaut.png", (320, 320));
        let before = run(&runtime, &original, &input, 1, (320, 320));
        let after = run(&runtime, &done.bytes, &input, 1, (320, 320));
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].1, [1, 1, 320, 320]);
        let d0 = |o: &NamedOutputs| o[0].2.clone();
        let difference = max_abs_difference(&d0(&before), &d0(&after));
        eprintln!("320x320: max |d0 - ref| {difference}");
        assert!(difference < 1e-4, "320x320: max |d0 - ref| {difference}");
        // For bench/bf16_recentre_check.py.
        if let Some(path) = std::env::var_os("U2NETMATTE_WRITE_RECENTRED") {
            std::fs::write(&path, &done.bytes).unwrap();
            // And as the element runs it: the picture split in two parts.
            let split = crate::model::split_input::split_input(&done.bytes).unwrap();
            let mut split_path = path;
            split_path.push(".split.onnx");
            std::fs::write(split_path, split).unwrap();
        }

        // The channel itself now sits near 0 instead of 226.
        let calibration = calibration_model(&original).unwrap();
        let probe = calibration
            .probes
            .iter()
            .find(|p| p.conv == "Conv_765")
            .unwrap();
        let target = [(probe.conv.clone(), probe.tensor.clone())];
        for (bytes, expected) in [(&original, 226.3f32), (&done.bytes, 0.0)] {
            let (probed, probes) = instrument(bytes, &target).unwrap();
            let outputs = run(&runtime, &probed, &input, 1, (320, 320));
            let mean = output(&outputs, &probes[0].mean_output)[14];
            assert!((mean - expected).abs() < 0.5, "mean {mean}, not {expected}");
        }

        // The same shifts on the model at 256x256, for a batch of two.
        let shifts: Vec<Shift> = done.applied.iter().map(|a| a.shift.clone()).collect();
        let small = u2netp(Some((256, 256)));
        let (patched, applied) = recentre(&small, &shifts).unwrap();
        assert_eq!(applied, done.applied);
        let mut input = photo_input("chelsea.png", (256, 256));
        input.extend(photo_input("coffee.png", (256, 256)));
        let before = run(&runtime, &small, &input, 2, (256, 256));
        let after = run(&runtime, &patched, &input, 2, (256, 256));
        assert_eq!(after[0].1, [2, 1, 256, 256]);
        let difference = max_abs_difference(&d0(&before), &d0(&after));
        eprintln!("256x256 x2: max |d0 - ref| {difference}");
        assert!(difference < 1e-4, "256x256 x2: max |d0 - ref| {difference}");
    }

    // A small graph: Conv+Relu (a, b) -> Concat -> Resize -> MaxPool -> a
    // Conv with asymmetric padding and stride 2 (output y); Conv+Relu (e) ->
    // Add (output z). Input dimensions are symbolic.
    pub(crate) fn small_model() -> Vec<u8> {
        use onnx_rs::ast::{Dimension, OperatorSetId, TensorShape, TensorShapeDimension};
        let mut seed = 1u64;
        let mut values = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect()
        };
        let initializer = vec![
            TensorProto::from_f32("wa", vec![4, 3, 3, 3], values(108)),
            TensorProto::from_f32("ba", vec![4], vec![0.1, -0.2, 7.5, 0.3]),
            TensorProto::from_f32("wb", vec![2, 3, 1, 1], values(6)),
            TensorProto::from_f32("bb", vec![2], vec![0.2, 5.0]),
            TensorProto::from_f32("wc", vec![3, 6, 3, 3], values(162)),
            TensorProto::from_f32("bc", vec![3], vec![0.0, 0.1, -0.1]),
            TensorProto::from_f32("we", vec![2, 3, 1, 1], values(6)),
            TensorProto::from_f32("be", vec![2], vec![9.0, 0.0]),
            TensorProto::from_f32("roi", vec![0], vec![]),
            TensorProto::from_f32("scales", vec![4], vec![1.0, 1.0, 2.0, 2.0]),
        ];
        let node = |op: &'static str,
                    name: &'static str,
                    input: Vec<&'static str>,
                    output: &'static str,
                    attribute| Node {
            op_type: OpType::from(op),
            name,
            input,
            output: vec![output],
            attribute,
            ..Default::default()
        };
        let text = |name: &'static str, value: &'static str| Attribute {
            name,
            r#type: AttributeType::String,
            s: value.as_bytes(),
            ..Default::default()
        };
        let pad1 = || {
            vec![
                ints_attribute("pads", vec![1, 1, 1, 1]),
                ints_attribute("kernel_shape", vec![3, 3]),
            ]
        };
        let nodes = vec![
            node("Conv", "conv_a", vec!["x", "wa", "ba"], "a0", pad1()),
            node("Relu", "relu_a", vec!["a0"], "a", vec![]),
            node("Conv", "conv_b", vec!["x", "wb", "bb"], "b0", vec![]),
            node("Relu", "relu_b", vec!["b0"], "b", vec![]),
            node(
                "Concat",
                "cat",
                vec!["b", "a"],
                "cat",
                vec![int_attribute("axis", 1)],
            ),
            node(
                "Resize",
                "up",
                vec!["cat", "roi", "scales"],
                "up",
                vec![text("mode", "linear")],
            ),
            node(
                "MaxPool",
                "pool",
                vec!["up"],
                "pool",
                vec![
                    ints_attribute("kernel_shape", vec![2, 2]),
                    ints_attribute("strides", vec![2, 2]),
                ],
            ),
            node(
                "Conv",
                "conv_c",
                vec!["pool", "wc", "bc"],
                "y",
                vec![
                    ints_attribute("pads", vec![2, 1, 0, 1]),
                    ints_attribute("strides", vec![2, 2]),
                    ints_attribute("kernel_shape", vec![3, 3]),
                ],
            ),
            node("Conv", "conv_e", vec!["x", "we", "be"], "e0", vec![]),
            node("Relu", "relu_e", vec!["e0"], "e", vec![]),
            node("Add", "add_z", vec!["e", "e"], "z", vec![]),
        ];
        let param = |p: &'static str| TensorShapeDimension {
            value: Dimension::Param(p),
            denotation: "",
        };
        let mut input = float_output("x");
        if let Some(TypeProto {
            value: Some(TypeValue::Tensor(t)),
            ..
        }) = input.r#type.as_mut()
        {
            t.shape = Some(TensorShape {
                dim: vec![
                    param("n"),
                    TensorShapeDimension {
                        value: Dimension::Value(3),
                        denotation: "",
                    },
                    param("h"),
                    param("w"),
                ],
            });
        }
        onnx_rs::encode(&Model {
            ir_version: 6,
            opset_import: vec![OperatorSetId {
                domain: "",
                version: 11,
            }],
            graph: Some(Graph {
                node: nodes,
                initializer,
                input: vec![input],
                output: vec![float_output("y"), float_output("z")],
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn a_shift_reaching_an_add_is_skipped_and_the_others_stay_exact() {
        let runtime = runtime();
        let model = small_model();
        let asked = shifts(&[
            ("conv_a", 2, 7.5),
            ("conv_b", 1, 5.0),
            ("conv_e", 0, 9.0),
            ("conv_x", 0, 1.0),
            ("conv_a", 2, 7.5),
            ("conv_a", 4, 1.0),
        ]);
        let (patched, applied) = recentre(&model, &asked).unwrap();
        let outcomes: Vec<&Outcome> = applied.iter().map(|a| &a.outcome).collect();
        let on_c = || Outcome::Recentred {
            consumers: vec!["conv_c (Conv)".into()],
        };
        let skipped = |why: &str| Outcome::Skipped(why.into());
        assert_eq!(
            outcomes,
            [
                &on_c(),
                &on_c(),
                &skipped("its path reaches add_z (Add), which does not carry a constant shift"),
                &skipped("no node is named conv_x"),
                &skipped("the same channel was asked for twice"),
                &skipped("conv_a has 4 output channels"),
            ]
        );
        assert_eq!(
            describe(&applied[..4]),
            "re-centred 2 channels: conv_a output 2 by 7.5, conv_b output 1 by 5; skipped \
             conv_e output 0 (its path reaches add_z (Add), which does not carry a constant \
             shift), conv_x output 0 (no node is named conv_x)"
        );

        // Exact at two sizes and batches; y's border rows and columns are
        // where a missing correction would show.
        for (batch, (h, w)) in [(1, (8, 10)), (2, (13, 7))] {
            let input: Vec<f32> = (0..batch * 3 * h * w)
                .map(|i| ((i * 37) % 17) as f32 / 8.0 - 1.0)
                .collect();
            let size = (h as u32, w as u32);
            let before = run(&runtime, &model, &input, batch, size);
            let after = run(&runtime, &patched, &input, batch, size);
            for name in ["y", "z"] {
                let (b, a) = (output(&before, name), output(&after, name));
                assert!(b.iter().any(|v| v.abs() > 1.0));
                let difference = max_abs_difference(b, a);
                eprintln!("{name} at {batch}x{h}x{w}: max difference {difference}");
                assert!(difference < 1e-4, "{name} at {batch}x{h}x{w}: {difference}");
            }
        }
    }

    #[test]
    fn garbage_is_an_error() {
        let garbage = b"this is not a protobuf \xff\xff\xff\xff\xff";
        assert!(matches!(
            calibration_model(garbage),
            Err(RecentreError::Parse(_))
        ));
        let e = recentre(garbage, &shifts(&[("Conv_765", 14, 226.0)])).unwrap_err();
        assert!(matches!(e, RecentreError::Parse(_)), "{e:?}");
        let empty = onnx_rs::encode(&Model::default());
        assert_eq!(
            calibration_model(&empty).unwrap_err().to_string(),
            "the model holds no graph"
        );
        assert_eq!(
            recentre(&empty, &[]).unwrap_err().to_string(),
            "the model holds no graph"
        );
    }
}
