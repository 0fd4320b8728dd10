//! Tensors of any protocol datatype, as models other than gpucap's own take them: their values,
//! read from JSON or the binary extension, written back the same two ways, and joined and split
//! along the first dimension for batching.

use half::{bf16, f16};
use serde_json::Value;

use super::DataType;

/// A tensor's values, flat and row-major, in the datatype's own representation.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum TensorData {
    Bool(Vec<bool>),
    Uint8(Vec<u8>),
    Uint16(Vec<u16>),
    Uint32(Vec<u32>),
    Uint64(Vec<u64>),
    Int8(Vec<i8>),
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp16(Vec<f16>),
    Bf16(Vec<bf16>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
    /// `BYTES`: each element an arbitrary byte string.
    Bytes(Vec<Vec<u8>>),
}

/// Runs `$body` with `$v` bound to the vector inside any variant of `$data`.
macro_rules! each {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => $body,
            TensorData::Uint8($v) => $body,
            TensorData::Uint16($v) => $body,
            TensorData::Uint32($v) => $body,
            TensorData::Uint64($v) => $body,
            TensorData::Int8($v) => $body,
            TensorData::Int16($v) => $body,
            TensorData::Int32($v) => $body,
            TensorData::Int64($v) => $body,
            TensorData::Fp16($v) => $body,
            TensorData::Bf16($v) => $body,
            TensorData::Fp32($v) => $body,
            TensorData::Fp64($v) => $body,
            TensorData::Bytes($v) => $body,
        }
    };
}

/// Builds the variant of `$datatype` around `$make`, a generic expression over the element type.
macro_rules! of_type {
    ($datatype:expr, $make:ident) => {
        match $datatype {
            DataType::Bool => TensorData::Bool($make!(bool)),
            DataType::Uint8 => TensorData::Uint8($make!(u8)),
            DataType::Uint16 => TensorData::Uint16($make!(u16)),
            DataType::Uint32 => TensorData::Uint32($make!(u32)),
            DataType::Uint64 => TensorData::Uint64($make!(u64)),
            DataType::Int8 => TensorData::Int8($make!(i8)),
            DataType::Int16 => TensorData::Int16($make!(i16)),
            DataType::Int32 => TensorData::Int32($make!(i32)),
            DataType::Int64 => TensorData::Int64($make!(i64)),
            DataType::Fp16 => TensorData::Fp16($make!(f16)),
            DataType::Bf16 => TensorData::Bf16($make!(bf16)),
            DataType::Fp32 => TensorData::Fp32($make!(f32)),
            DataType::Fp64 => TensorData::Fp64($make!(f64)),
            DataType::Bytes => TensorData::Bytes($make!(Vec<u8>)),
        }
    };
}

/// One element type's conversions from and to the wire.
trait Element: Sized + Clone {
    /// Bytes per element in the binary extension (`BYTES` are length-prefixed instead).
    const SIZE: usize;
    /// From one JSON value, or why not.
    fn from_json(v: &Value) -> Result<Self, String>;
    /// From exactly `SIZE` little-endian bytes.
    fn from_le(bytes: &[u8]) -> Result<Self, String>;
    /// Appends the little-endian bytes.
    fn put_le(&self, out: &mut Vec<u8>);
}

macro_rules! integer {
    ($($t:ty),*) => {$(
        impl Element for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn from_json(v: &Value) -> Result<Self, String> {
                let n = match v {
                    Value::Number(n) => n,
                    other => return Err(format!("expected an integer, found {}", kind(other))),
                };
                n.as_i64()
                    .and_then(|i| <$t>::try_from(i).ok())
                    .or_else(|| n.as_u64().and_then(|u| <$t>::try_from(u).ok()))
                    .ok_or_else(|| format!(
                        "{n} is not an integer in {}..={}",
                        <$t>::MIN,
                        <$t>::MAX
                    ))
            }
            fn from_le(bytes: &[u8]) -> Result<Self, String> {
                bytes.try_into().map(<$t>::from_le_bytes).map_err(|_| "short".into())
            }
            fn put_le(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}

integer!(u8, u16, u32, u64, i8, i16, i32, i64);

macro_rules! float {
    ($($t:ty => $from:expr, $name:literal);*) => {$(
        impl Element for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn from_json(v: &Value) -> Result<Self, String> {
                let x = match v {
                    Value::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is not a number"))?,
                    other => return Err(format!("expected a number, found {}", kind(other))),
                };
                let converted: $t = $from(x);
                // JSON numbers are finite; one that overflows the datatype is refused, not
                // turned into an infinity the model was never meant to see.
                if f64::from(converted).is_finite() {
                    Ok(converted)
                } else {
                    Err(format!("{x} is outside the range of {}", $name))
                }
            }
            fn from_le(bytes: &[u8]) -> Result<Self, String> {
                bytes.try_into().map(<$t>::from_le_bytes).map_err(|_| "short".into())
            }
            fn put_le(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}

float!(
    f32 => |x| x as f32, "FP32";
    f64 => |x| x, "FP64";
    f16 => f16::from_f64, "FP16";
    bf16 => bf16::from_f64, "BF16"
);

impl Element for bool {
    const SIZE: usize = 1;
    fn from_json(v: &Value) -> Result<Self, String> {
        v.as_bool()
            .ok_or_else(|| format!("expected true or false, found {}", kind(v)))
    }
    fn from_le(bytes: &[u8]) -> Result<Self, String> {
        match bytes {
            [0] => Ok(false),
            [1] => Ok(true),
            other => Err(format!("{other:?} is not a BOOL (0 or 1)")),
        }
    }
    fn put_le(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

impl Element for Vec<u8> {
    const SIZE: usize = 0;
    fn from_json(v: &Value) -> Result<Self, String> {
        v.as_str()
            .map(|s| s.as_bytes().to_vec())
            .ok_or_else(|| format!("expected a string, found {}", kind(v)))
    }
    fn from_le(_: &[u8]) -> Result<Self, String> {
        Err("BYTES elements are length-prefixed, not fixed-size".into())
    }
    fn put_le(&self, out: &mut Vec<u8>) {
        // The binary extension's BYTES element: a 4-byte little-endian length, then the bytes.
        out.extend_from_slice(&(self.len() as u32).to_le_bytes());
        out.extend_from_slice(self);
    }
}

/// Values at the leaves of a JSON (nested) array.
fn leaves(v: &Value) -> usize {
    match v {
        Value::Array(items) => items.iter().map(leaves).sum(),
        _ => 1,
    }
}

/// The JSON kind of `v`, for messages.
pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::String(_) => "a string",
        Value::Object(_) => "an object",
        Value::Array(_) => "an array",
        Value::Number(_) => "a number",
    }
}

fn flatten<T: Element>(v: &Value, count: usize, out: &mut Vec<T>) -> Result<(), String> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|item| flatten(item, count, out)),
        leaf => {
            if out.len() >= count {
                return Err(format!("has more values than the shape's {count}"));
            }
            let x = T::from_json(leaf).map_err(|e| format!("[{}]: {e}", out.len()))?;
            out.push(x);
            Ok(())
        }
    }
}

fn from_json<T: Element>(data: &Value, count: usize) -> Result<Vec<T>, String> {
    // Never more room than values the JSON holds: a request may claim any shape.
    let mut out = Vec::with_capacity(count.min(leaves(data)));
    flatten(data, count, &mut out)?;
    if out.len() != count {
        return Err(format!("has {} values; the shape needs {count}", out.len()));
    }
    Ok(out)
}

fn from_binary<T: Element>(bytes: &[u8], count: usize) -> Result<Vec<T>, String> {
    let Some(needed) = count.checked_mul(T::SIZE) else {
        return Err(format!(
            "the shape's {count} values of {} bytes are more than any body holds",
            T::SIZE
        ));
    };
    if bytes.len() != needed {
        return Err(format!(
            "{} bytes, but the shape needs {count} values of {} bytes = {needed}",
            bytes.len(),
            T::SIZE
        ));
    }
    bytes
        .chunks_exact(T::SIZE)
        .enumerate()
        .map(|(i, chunk)| T::from_le(chunk).map_err(|e| format!("element {i}: {e}")))
        .collect()
}

fn bytes_from_binary(mut bytes: &[u8], count: usize) -> Result<Vec<Vec<u8>>, String> {
    // Each element takes at least its 4-byte length: never more room than that.
    let mut out = Vec::with_capacity(count.min(bytes.len() / 4));
    while !bytes.is_empty() {
        if out.len() == count {
            return Err(format!(
                "holds more than the shape's {count} BYTES elements"
            ));
        }
        let Some((len, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(format!(
                "element {}: its 4-byte length is cut short",
                out.len()
            ));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(format!(
                "element {} claims {len} bytes; {} remain",
                out.len(),
                rest.len()
            ));
        }
        let (element, rest) = rest.split_at(len);
        out.push(element.to_vec());
        bytes = rest;
    }
    if out.len() != count {
        return Err(format!(
            "holds {} BYTES elements; the shape needs {count}",
            out.len()
        ));
    }
    Ok(out)
}

impl TensorData {
    /// The datatype of the values.
    pub fn datatype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::Uint8(_) => DataType::Uint8,
            TensorData::Uint16(_) => DataType::Uint16,
            TensorData::Uint32(_) => DataType::Uint32,
            TensorData::Uint64(_) => DataType::Uint64,
            TensorData::Int8(_) => DataType::Int8,
            TensorData::Int16(_) => DataType::Int16,
            TensorData::Int32(_) => DataType::Int32,
            TensorData::Int64(_) => DataType::Int64,
            TensorData::Fp16(_) => DataType::Fp16,
            TensorData::Bf16(_) => DataType::Bf16,
            TensorData::Fp32(_) => DataType::Fp32,
            TensorData::Fp64(_) => DataType::Fp64,
            TensorData::Bytes(_) => DataType::Bytes,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        each!(self, v => v.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `count` pseudo-random values of `datatype` from `seed`, for load generators and benchmarks:
    /// floats in [0, 1), integers in 0..100, alternating-ish booleans, short ASCII strings.
    pub fn random(datatype: DataType, count: usize, seed: u64) -> TensorData {
        let mut state = seed | 1;
        let mut next = move || {
            // xorshift64: fast, and plenty for inputs whose only job is to vary.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state >> 40
        };
        let unit = |bits: u64| bits as f64 / (1u64 << 24) as f64;
        macro_rules! make {
            (bool) => {
                (0..count).map(|_| next() & 1 == 1).collect::<Vec<bool>>()
            };
            (Vec<u8>) => {
                (0..count)
                    .map(|_| format!("s{}", next() % 1000).into_bytes())
                    .collect::<Vec<Vec<u8>>>()
            };
            (f16) => {
                (0..count)
                    .map(|_| f16::from_f64(unit(next())))
                    .collect::<Vec<f16>>()
            };
            (bf16) => {
                (0..count)
                    .map(|_| bf16::from_f64(unit(next())))
                    .collect::<Vec<bf16>>()
            };
            (f32) => {
                (0..count)
                    .map(|_| unit(next()) as f32)
                    .collect::<Vec<f32>>()
            };
            (f64) => {
                (0..count).map(|_| unit(next())).collect::<Vec<f64>>()
            };
            ($t:ty) => {
                (0..count)
                    .map(|_| (next() % 100) as $t)
                    .collect::<Vec<$t>>()
            };
        }
        of_type!(datatype, make)
    }

    /// `count` values of `datatype` from a request's JSON `data` (flat or nested).
    pub fn from_json(datatype: DataType, data: &Value, count: usize) -> Result<TensorData, String> {
        macro_rules! make {
            ($t:ty) => {
                from_json::<$t>(data, count)?
            };
        }
        Ok(of_type!(datatype, make))
    }

    /// `count` values of `datatype` from the binary extension's bytes.
    pub fn from_binary(
        datatype: DataType,
        bytes: &[u8],
        count: usize,
    ) -> Result<TensorData, String> {
        if datatype == DataType::Bytes {
            return bytes_from_binary(bytes, count).map(TensorData::Bytes);
        }
        macro_rules! make {
            ($t:ty) => {
                from_binary::<$t>(bytes, count)?
            };
        }
        Ok(of_type!(datatype, make))
    }

    /// Appends the values in the binary extension's encoding.
    pub fn put_binary(&self, out: &mut Vec<u8>) {
        each!(self, v => v.iter().for_each(|x| x.put_le(out)))
    }

    /// Bytes the binary extension's encoding takes.
    pub fn binary_len(&self) -> usize {
        match self {
            TensorData::Bytes(v) => v.iter().map(|b| 4 + b.len()).sum(),
            TensorData::Bool(v) => v.len(),
            other => other.len() * other.datatype().size().unwrap_or(0),
        }
    }

    /// Appends `other`'s values; `false` (and nothing appended) when the datatypes differ.
    pub fn append(&mut self, other: &TensorData) -> bool {
        macro_rules! join {
            ($($variant:ident),*) => {
                match (self, other) {
                    $((TensorData::$variant(a), TensorData::$variant(b)) => {
                        a.extend_from_slice(b);
                        true
                    })*
                    _ => false,
                }
            };
        }
        join!(
            Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Bf16, Fp32, Fp64,
            Bytes
        )
    }

    /// A copy of the elements `start..end`.
    pub fn slice(&self, start: usize, end: usize) -> TensorData {
        macro_rules! cut {
            ($($variant:ident),*) => {
                match self {
                    $(TensorData::$variant(v) => TensorData::$variant(v[start..end].to_vec()),)*
                }
            };
        }
        cut!(
            Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Bf16, Fp32, Fp64,
            Bytes
        )
    }
}

/// The values as a flat JSON array: numbers in their own type's shortest form (FP16 and BF16 as
/// the FP32 they widen to; NaN and infinities, which JSON lacks, as null), BYTES as strings.
impl serde::Serialize for TensorData {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            TensorData::Fp16(v) => serializer.collect_seq(v.iter().map(|x| x.to_f32())),
            TensorData::Bf16(v) => serializer.collect_seq(v.iter().map(|x| x.to_f32())),
            TensorData::Bytes(v) => {
                serializer.collect_seq(v.iter().map(|b| String::from_utf8_lossy(b)))
            }
            TensorData::Bool(v) => serializer.collect_seq(v),
            TensorData::Uint8(v) => serializer.collect_seq(v),
            TensorData::Uint16(v) => serializer.collect_seq(v),
            TensorData::Uint32(v) => serializer.collect_seq(v),
            TensorData::Uint64(v) => serializer.collect_seq(v),
            TensorData::Int8(v) => serializer.collect_seq(v),
            TensorData::Int16(v) => serializer.collect_seq(v),
            TensorData::Int32(v) => serializer.collect_seq(v),
            TensorData::Int64(v) => serializer.collect_seq(v),
            TensorData::Fp32(v) => serializer.collect_seq(v),
            TensorData::Fp64(v) => serializer.collect_seq(v),
        }
    }
}

/// A named tensor with its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values (as many as the shape's product).
    pub data: TensorData,
}

impl Tensor {
    /// Rows along the first dimension (1 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Elements per row.
    pub fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// Joins tensors of one datatype and the same trailing dimensions along the first; `None`
    /// for scalars, which have no first dimension.
    pub fn concat<'a>(parts: impl IntoIterator<Item = &'a Tensor>) -> Option<Tensor> {
        let mut parts = parts.into_iter();
        let first = parts.next().filter(|t| !t.shape.is_empty())?;
        let mut joined = first.clone();
        for part in parts {
            if part.shape.get(1..) != first.shape.get(1..) || !joined.data.append(&part.data) {
                return None;
            }
            joined.shape[0] += part.shape[0];
        }
        Some(joined)
    }

    /// Splits along the first dimension into pieces of `rows[i]` rows each.
    pub fn split(&self, rows: &[usize]) -> Vec<Tensor> {
        let row_len = self.row_len();
        let mut start = 0;
        rows.iter()
            .map(|&n| {
                let end = start + n * row_len;
                let mut shape = self.shape.clone();
                if let Some(first) = shape.first_mut() {
                    *first = n;
                }
                let piece = Tensor {
                    shape,
                    data: self.data.slice(start, end),
                };
                start = end;
                piece
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_datatype_round_trips_through_json_and_binary() {
        let cases = [
            (DataType::Bool, json!([true, false])),
            (DataType::Uint8, json!([0, 255])),
            (DataType::Uint64, json!([0, u64::MAX])),
            (DataType::Int8, json!([-128, 127])),
            (DataType::Int32, json!([[-5], [7]])),
            (DataType::Int64, json!([i64::MIN, i64::MAX])),
            (DataType::Fp16, json!([1.5, -2.0])),
            (DataType::Bf16, json!([1.5, -2.0])),
            (DataType::Fp32, json!([0.25, 3.0])),
            (DataType::Fp64, json!([0.1, 1e300])),
            (DataType::Bytes, json!(["héllo", ""])),
        ];
        for (datatype, data) in cases {
            let t = TensorData::from_json(datatype, &data, 2).unwrap();
            assert_eq!(t.datatype(), datatype);
            let mut bytes = Vec::new();
            t.put_binary(&mut bytes);
            assert_eq!(bytes.len(), t.binary_len(), "{datatype}");
            assert_eq!(TensorData::from_binary(datatype, &bytes, 2).unwrap(), t);
            let flat: Vec<Value> = match &data {
                Value::Array(items) => items
                    .iter()
                    .flat_map(|i| match i {
                        Value::Array(inner) => inner.clone(),
                        v => vec![v.clone()],
                    })
                    .collect(),
                _ => unreachable!(),
            };
            assert_eq!(
                serde_json::to_value(&t).unwrap(),
                Value::Array(flat),
                "{datatype}"
            );
        }
    }

    #[test]
    fn values_outside_the_datatype_are_refused_with_their_index() {
        let e = TensorData::from_json(DataType::Uint8, &json!([1, 256]), 2).unwrap_err();
        assert_eq!(e, "[1]: 256 is not an integer in 0..=255");
        let e = TensorData::from_json(DataType::Int64, &json!([1.5]), 1).unwrap_err();
        assert_eq!(
            e,
            "[0]: 1.5 is not an integer in -9223372036854775808..=9223372036854775807"
        );
        let e = TensorData::from_json(DataType::Fp16, &json!([1e6]), 1).unwrap_err();
        assert_eq!(e, "[0]: 1000000 is outside the range of FP16");
        let e = TensorData::from_binary(DataType::Int64, &[], usize::MAX / 4).unwrap_err();
        assert!(e.contains("more than any body holds"), "{e}");
        let e = TensorData::from_json(DataType::Bytes, &json!([1]), 1).unwrap_err();
        assert_eq!(e, "[0]: expected a string, found a number");
        let e = TensorData::from_json(DataType::Fp32, &json!([1, 2, 3]), 2).unwrap_err();
        assert_eq!(e, "has more values than the shape's 2");
        let e = TensorData::from_binary(DataType::Bool, &[1, 2], 2).unwrap_err();
        assert_eq!(e, "element 1: [2] is not a BOOL (0 or 1)");
        let e = TensorData::from_binary(DataType::Bytes, &[9, 0, 0, 0, b'a'], 1).unwrap_err();
        assert_eq!(e, "element 0 claims 9 bytes; 1 remain");
        let e = TensorData::from_binary(DataType::Int32, &[0; 7], 2).unwrap_err();
        assert_eq!(e, "7 bytes, but the shape needs 2 values of 4 bytes = 8");
    }

    #[test]
    fn tensors_concatenate_and_split_along_the_first_dimension() {
        let a = Tensor {
            shape: vec![1, 2],
            data: TensorData::Int64(vec![1, 2]),
        };
        let b = Tensor {
            shape: vec![2, 2],
            data: TensorData::Int64(vec![3, 4, 5, 6]),
        };
        let joined = Tensor::concat([&a, &b]).unwrap();
        assert_eq!(joined.shape, vec![3, 2]);
        assert_eq!(joined.split(&[1, 2]), vec![a.clone(), b]);
        let other_width = Tensor {
            shape: vec![1, 3],
            data: TensorData::Int64(vec![0; 3]),
        };
        assert!(Tensor::concat([&a, &other_width]).is_none());
        let other_type = Tensor {
            shape: vec![1, 2],
            data: TensorData::Fp32(vec![0.0; 2]),
        };
        assert!(Tensor::concat([&a, &other_type]).is_none());
    }
}
