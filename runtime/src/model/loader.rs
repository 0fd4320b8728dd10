//! Reading and validating a `.safetensors` model file.
//!
//! Every check names the tensor or metadata key at fault, because the person reading the error is
//! usually the ML engineer who exported the file and needs to know which part of the export to fix.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::{Activation, Layer, Model};

/// The value of `gpucap.format` in every model file.
pub const FORMAT_NAME: &str = "gpucap-ffn";
/// The only format version this runtime reads.
pub const FORMAT_VERSION: &str = "1";

const KEY_FORMAT: &str = "gpucap.format";
const KEY_VERSION: &str = "gpucap.format_version";
const KEY_LAYERS: &str = "gpucap.layers";
const KEY_ACTIVATIONS: &str = "gpucap.activations";
const KEY_INPUT: &str = "gpucap.input";
const KEY_OUTPUT: &str = "gpucap.output";
const KEY_LABELS: &str = "gpucap.labels";
const KEY_DESCRIPTION: &str = "gpucap.description";
const KNOWN_KEYS: [&str; 8] = [
    KEY_FORMAT,
    KEY_VERSION,
    KEY_LAYERS,
    KEY_ACTIVATIONS,
    KEY_INPUT,
    KEY_OUTPUT,
    KEY_LABELS,
    KEY_DESCRIPTION,
];

/// Why a model file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file could not be read at all.
    #[error("cannot read model file {path}: {source}")]
    Io {
        /// The path that was opened.
        path: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The bytes are not a well-formed safetensors file (truncated, corrupt header, bad offsets).
    #[error("not a valid safetensors file: {0}")]
    Container(String),
    /// A required metadata key is absent.
    #[error("metadata key '{key}' is missing; {hint}")]
    MissingMetadata {
        /// The key.
        key: &'static str,
        /// What the key should hold.
        hint: &'static str,
    },
    /// A metadata key holds a value this runtime cannot use.
    #[error("metadata key '{key}' = {value:?} is invalid: {reason}")]
    BadMetadata {
        /// The key.
        key: String,
        /// The value found.
        value: String,
        /// What would be valid.
        reason: String,
    },
    /// A tensor the layer list names is not in the file.
    #[error("tensor '{tensor}' (for layer '{layer}') is missing from the file")]
    MissingTensor {
        /// The expected tensor name.
        tensor: String,
        /// The layer that needs it.
        layer: String,
    },
    /// A tensor is stored in a type this runtime does not compute in.
    #[error("tensor '{tensor}' has dtype {found}; this runtime reads F32 tensors only")]
    Dtype {
        /// The tensor.
        tensor: String,
        /// The dtype found.
        found: String,
    },
    /// A tensor's shape does not fit the network.
    #[error("tensor '{tensor}' has shape {found:?}; expected {expected}")]
    Shape {
        /// The tensor.
        tensor: String,
        /// The shape found.
        found: Vec<usize>,
        /// A description of the expected shape.
        expected: String,
    },
    /// A weight or bias is NaN or infinite.
    #[error("tensor '{tensor}' holds a non-finite value ({value}) at element {index}")]
    NonFinite {
        /// The tensor.
        tensor: String,
        /// Flat index of the first bad element.
        index: usize,
        /// The value found.
        value: f32,
    },
    /// The file carries tensors no layer uses: almost always an export of the wrong layer list.
    #[error("tensor '{tensor}' is not used by any layer listed in '{KEY_LAYERS}'")]
    UnusedTensor {
        /// The tensor.
        tensor: String,
    },
}

/// Reads and validates a model file.
pub fn load_model(path: &Path) -> Result<Model, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_model(&bytes)
}

/// Validates a model held in memory. Never panics, whatever the bytes.
pub fn parse_model(bytes: &[u8]) -> Result<Model, ModelError> {
    let tensors =
        SafeTensors::deserialize(bytes).map_err(|e| ModelError::Container(e.to_string()))?;
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| ModelError::Container(e.to_string()))?;
    let empty = HashMap::new();
    let meta = header.metadata().as_ref().unwrap_or(&empty);
    check_known_keys(meta)?;

    let format = required(meta, KEY_FORMAT, "it must be \"gpucap-ffn\"")?;
    if format != FORMAT_NAME {
        return Err(bad(
            KEY_FORMAT,
            format,
            format!("expected \"{FORMAT_NAME}\""),
        ));
    }
    let version = required(meta, KEY_VERSION, "it must be \"1\"")?;
    if version != FORMAT_VERSION {
        return Err(bad(
            KEY_VERSION,
            version,
            format!("this runtime reads version {FORMAT_VERSION}"),
        ));
    }

    let layer_names = parse_layer_names(required(
        meta,
        KEY_LAYERS,
        "it lists the layer names in order, comma-separated",
    )?)?;
    let activations = parse_activations(
        required(
            meta,
            KEY_ACTIVATIONS,
            "it lists one activation per layer, comma-separated",
        )?,
        layer_names.len(),
    )?;

    let mut used = HashSet::new();
    let mut layers: Vec<Layer> = Vec::with_capacity(layer_names.len());
    for (name, activation) in layer_names.into_iter().zip(activations) {
        let weight_name = format!("{name}.weight");
        let bias_name = format!("{name}.bias");
        let (weight, wshape) = read_f32(&tensors, &weight_name, &name)?;
        if wshape.len() != 2 || wshape.contains(&0) {
            return Err(ModelError::Shape {
                tensor: weight_name,
                found: wshape,
                expected: "[in_features, out_features], both at least 1".into(),
            });
        }
        let (in_features, out_features) = (wshape[0], wshape[1]);
        if let Some(prev) = layers.last()
            && prev.out_features != in_features
        {
            return Err(ModelError::Shape {
                tensor: weight_name,
                found: wshape,
                expected: format!(
                    "[{}, _]: layer '{}' produces rows of width {}",
                    prev.out_features, prev.name, prev.out_features
                ),
            });
        }
        let (bias, bshape) = read_f32(&tensors, &bias_name, &name)?;
        if bshape != [out_features] {
            return Err(ModelError::Shape {
                tensor: bias_name,
                found: bshape,
                expected: format!("[{out_features}] to match '{weight_name}'"),
            });
        }
        used.insert(weight_name);
        used.insert(bias_name);
        layers.push(Layer {
            name,
            weight,
            bias,
            in_features,
            out_features,
            activation,
        });
    }

    let mut unused: Vec<_> = tensors
        .names()
        .into_iter()
        .filter(|n| !used.contains(*n))
        .collect();
    unused.sort();
    if let Some(tensor) = unused.first() {
        return Err(ModelError::UnusedTensor {
            tensor: tensor.to_string(),
        });
    }

    let output_width = layers.last().map_or(0, |l| l.out_features);
    let labels = match meta.get(KEY_LABELS) {
        None => None,
        Some(raw) => Some(parse_labels(raw, output_width)?),
    };
    Ok(Model {
        input_name: tensor_name(meta, KEY_INPUT, "input")?,
        output_name: tensor_name(meta, KEY_OUTPUT, "output")?,
        labels,
        description: meta.get(KEY_DESCRIPTION).cloned(),
        layers,
    })
}

fn bad(key: &str, value: &str, reason: String) -> ModelError {
    ModelError::BadMetadata {
        key: key.into(),
        value: value.into(),
        reason,
    }
}

/// A misspelt `gpucap.` key would otherwise be silently ignored; keys outside that prefix are the
/// exporter's own (training run ids and the like) and are left alone.
fn check_known_keys(meta: &HashMap<String, String>) -> Result<(), ModelError> {
    let mut keys: Vec<_> = meta.keys().collect();
    keys.sort();
    for key in keys {
        if key.starts_with("gpucap.") && !KNOWN_KEYS.contains(&key.as_str()) {
            return Err(bad(
                key,
                &meta[key],
                format!(
                    "unknown gpucap key; known keys are {}",
                    KNOWN_KEYS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn required<'m>(
    meta: &'m HashMap<String, String>,
    key: &'static str,
    hint: &'static str,
) -> Result<&'m str, ModelError> {
    meta.get(key)
        .map(String::as_str)
        .ok_or(ModelError::MissingMetadata { key, hint })
}

fn parse_layer_names(raw: &str) -> Result<Vec<String>, ModelError> {
    let names: Vec<String> = raw.split(',').map(|s| s.trim().to_string()).collect();
    let mut seen = HashSet::new();
    for name in &names {
        if name.is_empty() {
            return Err(bad(KEY_LAYERS, raw, "a layer name is empty".into()));
        }
        if !seen.insert(name) {
            return Err(bad(
                KEY_LAYERS,
                raw,
                format!("layer '{name}' is listed twice"),
            ));
        }
    }
    Ok(names)
}

fn parse_activations(raw: &str, layers: usize) -> Result<Vec<Activation>, ModelError> {
    let parsed: Vec<Activation> = raw
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|reason| bad(KEY_ACTIVATIONS, raw, reason))?;
    if parsed.len() != layers {
        return Err(bad(
            KEY_ACTIVATIONS,
            raw,
            format!(
                "{} activations for {layers} layers in '{KEY_LAYERS}'",
                parsed.len()
            ),
        ));
    }
    Ok(parsed)
}

fn parse_labels(raw: &str, output_width: usize) -> Result<Vec<String>, ModelError> {
    let labels: Vec<String> = serde_json::from_str(raw).map_err(|e| {
        bad(
            KEY_LABELS,
            raw,
            format!("expected a JSON array of strings ({e})"),
        )
    })?;
    if labels.len() != output_width {
        return Err(bad(
            KEY_LABELS,
            raw,
            format!(
                "{} labels for an output of width {output_width}",
                labels.len()
            ),
        ));
    }
    Ok(labels)
}

fn tensor_name(
    meta: &HashMap<String, String>,
    key: &str,
    default: &str,
) -> Result<String, ModelError> {
    let name = meta.get(key).map_or(default, String::as_str);
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(name.to_string())
    } else {
        Err(bad(
            key,
            name,
            "a tensor name of ASCII letters, digits, '_', '-' or '.'".into(),
        ))
    }
}

fn read_f32(
    tensors: &SafeTensors<'_>,
    name: &str,
    layer: &str,
) -> Result<(Vec<f32>, Vec<usize>), ModelError> {
    let view = tensors
        .tensor(name)
        .map_err(|_| ModelError::MissingTensor {
            tensor: name.into(),
            layer: layer.into(),
        })?;
    if view.dtype() != Dtype::F32 {
        return Err(ModelError::Dtype {
            tensor: name.into(),
            found: format!("{:?}", view.dtype()),
        });
    }
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(ModelError::NonFinite {
            tensor: name.into(),
            index,
            value,
        });
    }
    Ok((values, view.shape().to_vec()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    /// Builds a safetensors file from (name, shape, values) and metadata pairs.
    pub fn build(tensors: &[(&str, Vec<usize>, Vec<f32>)], meta: &[(&str, &str)]) -> Vec<u8> {
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(n, s, v)| {
                let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                (n.to_string(), s.clone(), b)
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = bytes
            .iter()
            .map(|(n, s, b)| {
                (
                    n.clone(),
                    TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
                )
            })
            .collect();
        let meta: HashMap<String, String> = meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        safetensors::serialize(views, Some(meta)).unwrap()
    }

    pub fn two_layer_meta() -> Vec<(&'static str, &'static str)> {
        vec![
            (KEY_FORMAT, FORMAT_NAME),
            (KEY_VERSION, "1"),
            (KEY_LAYERS, "h,out"),
            (KEY_ACTIVATIONS, "relu,softmax"),
            (KEY_INPUT, "x"),
            (KEY_OUTPUT, "probs"),
        ]
    }

    pub fn two_layer() -> Vec<(&'static str, Vec<usize>, Vec<f32>)> {
        vec![
            (
                "h.weight",
                vec![3, 4],
                (0..12).map(|i| i as f32 * 0.1).collect(),
            ),
            ("h.bias", vec![4], vec![0.0, 0.1, -0.1, 0.2]),
            (
                "out.weight",
                vec![4, 2],
                vec![0.5, -0.5, 1.0, 0.0, 0.0, 1.0, -1.0, 0.5],
            ),
            ("out.bias", vec![2], vec![0.0, 0.0]),
        ]
    }

    fn err(tensors: &[(&str, Vec<usize>, Vec<f32>)], meta: &[(&str, &str)]) -> String {
        parse_model(&build(tensors, meta)).unwrap_err().to_string()
    }

    #[test]
    fn loads_a_valid_model() {
        let m = parse_model(&build(&two_layer(), &two_layer_meta())).unwrap();
        assert_eq!((m.input_width(), m.output_width()), (3, 2));
        assert_eq!(m.input_name, "x");
        assert_eq!(m.layers[1].activation, Activation::Softmax);
        assert_eq!(m.parameter_count(), 12 + 4 + 8 + 2);
    }

    #[test]
    fn rejections_name_the_tensor_or_key() {
        let meta = two_layer_meta();
        let mut broken_chain = two_layer();
        broken_chain[2] = ("out.weight", vec![5, 2], vec![0.0; 10]);
        insta::assert_snapshot!(err(&broken_chain, &meta), @"tensor 'out.weight' has shape [5, 2]; expected [4, _]: layer 'h' produces rows of width 4");

        let mut nan = two_layer();
        nan[1].2[2] = f32::NAN;
        insta::assert_snapshot!(err(&nan, &meta), @"tensor 'h.bias' holds a non-finite value (NaN) at element 2");

        let mut bias = two_layer();
        bias[3] = ("out.bias", vec![3], vec![0.0; 3]);
        insta::assert_snapshot!(err(&bias, &meta), @"tensor 'out.bias' has shape [3]; expected [2] to match 'out.weight'");

        let mut extra = two_layer();
        extra.push(("stray", vec![1], vec![0.0]));
        insta::assert_snapshot!(err(&extra, &meta), @"tensor 'stray' is not used by any layer listed in 'gpucap.layers'");

        let mut missing = two_layer();
        missing.remove(3);
        insta::assert_snapshot!(err(&missing, &meta), @"tensor 'out.bias' (for layer 'out') is missing from the file");

        let no_acts: Vec<_> = meta
            .iter()
            .copied()
            .filter(|(k, _)| *k != KEY_ACTIVATIONS)
            .collect();
        insta::assert_snapshot!(err(&two_layer(), &no_acts), @"metadata key 'gpucap.activations' is missing; it lists one activation per layer, comma-separated");

        let mut bad_act = meta.clone();
        bad_act[3] = (KEY_ACTIVATIONS, "relu,swish");
        insta::assert_snapshot!(err(&two_layer(), &bad_act), @r#"metadata key 'gpucap.activations' = "relu,swish" is invalid: unknown activation 'swish'; valid activations are identity, relu, gelu, gelu_tanh, tanh, sigmoid, softmax"#);

        let mut typo = meta.clone();
        typo.push(("gpucap.lables", "[]"));
        insta::assert_snapshot!(err(&two_layer(), &typo), @r#"metadata key 'gpucap.lables' = "[]" is invalid: unknown gpucap key; known keys are gpucap.format, gpucap.format_version, gpucap.layers, gpucap.activations, gpucap.input, gpucap.output, gpucap.labels, gpucap.description"#);

        let mut labels = meta.clone();
        labels.push((KEY_LABELS, r#"["a","b","c"]"#));
        insta::assert_snapshot!(err(&two_layer(), &labels), @r#"metadata key 'gpucap.labels' = "[\"a\",\"b\",\"c\"]" is invalid: 3 labels for an output of width 2"#);
    }

    #[test]
    fn rejects_other_dtypes() {
        let data = vec![0u8; 2 * 3 * 4];
        let view = TensorView::new(Dtype::F16, vec![3, 4], &data).unwrap();
        let meta: HashMap<String, String> = [
            (KEY_FORMAT, FORMAT_NAME),
            (KEY_VERSION, "1"),
            (KEY_LAYERS, "h"),
            (KEY_ACTIVATIONS, "relu"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let bytes = safetensors::serialize([("h.weight", view)], Some(meta)).unwrap();
        let e = parse_model(&bytes).unwrap_err().to_string();
        assert_eq!(
            e,
            "tensor 'h.weight' has dtype F16; this runtime reads F32 tensors only"
        );
    }

    #[test]
    fn truncated_file_is_a_container_error() {
        let bytes = build(&two_layer(), &two_layer_meta());
        for cut in [0, 4, 8, 20, bytes.len() - 1] {
            let e = parse_model(&bytes[..cut]).unwrap_err();
            assert!(matches!(e, ModelError::Container(_)), "cut at {cut}: {e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse_model(&bytes);
        }

        #[test]
        fn corrupted_valid_files_never_panic(pos in 0usize..400, byte in proptest::prelude::any::<u8>()) {
            let mut bytes = build(&two_layer(), &two_layer_meta());
            let at = pos % bytes.len();
            bytes[at] = byte;
            let _ = parse_model(&bytes);
        }
    }
}
