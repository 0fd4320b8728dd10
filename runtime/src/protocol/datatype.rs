//! Tensor datatypes of the protocol and their lossless conversion to FP32, the type models compute in.

use std::str::FromStr;

use half::{bf16, f16};

/// The protocol's tensor datatypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Bf16,
    Fp32,
    Fp64,
    Bytes,
}

/// Integers up to 2^24 in magnitude are exactly representable in FP32; larger ones may not be.
const F32_EXACT_INT: f64 = 16_777_216.0;

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DataType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use DataType::*;
        Ok(match s {
            "BOOL" => Bool,
            "UINT8" => Uint8,
            "UINT16" => Uint16,
            "UINT32" => Uint32,
            "UINT64" => Uint64,
            "INT8" => Int8,
            "INT16" => Int16,
            "INT32" => Int32,
            "INT64" => Int64,
            "FP16" => Fp16,
            "BF16" => Bf16,
            "FP32" => Fp32,
            "FP64" => Fp64,
            "BYTES" => Bytes,
            other => return Err(format!("unknown datatype '{other}'")),
        })
    }
}

/// Why an input value cannot be converted to FP32 without changing it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConversionError {
    /// JSON that is not a number.
    #[error("not a number")]
    NotANumber,
    /// Beyond FP32's range.
    #[error("{0} is outside the FP32 range")]
    OutsideFp32(f64),
    /// A fraction where the datatype is an integer type.
    #[error("{0} is not an integer, as {1:?} requires")]
    NotAnInteger(String, DataType),
    /// A binary element shorter than its datatype.
    #[error("short")]
    Short,
    /// A datatype that holds no numbers.
    #[error("{0:?} is not numeric")]
    NotNumeric(DataType),
    /// A value FP32 would round.
    #[error("{0} cannot be represented exactly as FP32; send FP32 data instead")]
    Inexact(f64),
    /// An integer outside what the datatype holds or FP32 represents exactly.
    #[error(
        "{value} is outside the range {lo}..={hi} that {datatype:?} input converts exactly to FP32"
    )]
    OutsideRange {
        /// The value.
        value: f64,
        /// The least allowed.
        lo: f64,
        /// The most allowed.
        hi: f64,
        /// Its datatype.
        datatype: DataType,
    },
}

impl DataType {
    /// The protocol's name for the datatype, e.g. `FP32`.
    pub fn name(self) -> &'static str {
        use DataType::*;
        match self {
            Bool => "BOOL",
            Uint8 => "UINT8",
            Uint16 => "UINT16",
            Uint32 => "UINT32",
            Uint64 => "UINT64",
            Int8 => "INT8",
            Int16 => "INT16",
            Int32 => "INT32",
            Int64 => "INT64",
            Fp16 => "FP16",
            Bf16 => "BF16",
            Fp32 => "FP32",
            Fp64 => "FP64",
            Bytes => "BYTES",
        }
    }

    /// Bytes per element in the binary extension, for numeric types.
    pub fn size(self) -> Option<usize> {
        use DataType::*;
        match self {
            Bool | Bytes => None,
            Uint8 | Int8 => Some(1),
            Uint16 | Int16 | Fp16 | Bf16 => Some(2),
            Uint32 | Int32 | Fp32 => Some(4),
            Uint64 | Int64 | Fp64 => Some(8),
        }
    }

    /// Converts one JSON number of this datatype to FP32, refusing values the datatype cannot hold
    /// or that FP32 cannot represent exactly (for types other than FP32 itself).
    pub fn json_to_f32(self, n: &serde_json::Number) -> Result<f32, ConversionError> {
        use DataType::*;
        match self {
            Fp32 => {
                let v = n.as_f64().ok_or(ConversionError::NotANumber)?;
                let f = v as f32;
                if f.is_finite() {
                    Ok(f)
                } else {
                    Err(ConversionError::OutsideFp32(v))
                }
            }
            Fp64 | Fp16 | Bf16 => self.float_to_f32(n.as_f64().ok_or(ConversionError::NotANumber)?),
            _ => {
                let v = if let Some(i) = n.as_i64() {
                    i as f64
                } else if let Some(u) = n.as_u64() {
                    u as f64
                } else {
                    return Err(ConversionError::NotAnInteger(n.to_string(), self));
                };
                self.int_to_f32(v)
            }
        }
    }

    /// Converts one little-endian element of the binary extension to FP32.
    pub fn bytes_to_f32(self, b: &[u8]) -> Result<f32, ConversionError> {
        use DataType::*;
        match self {
            Fp32 => Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            Fp16 => Ok(f16::from_le_bytes([b[0], b[1]]).to_f32()),
            Bf16 => Ok(bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            Fp64 => self.float_to_f32(f64::from_le_bytes(
                b.try_into().map_err(|_| ConversionError::Short)?,
            )),
            Uint8 => Ok(f32::from(b[0])),
            Int8 => Ok(f32::from(b[0] as i8)),
            Uint16 => Ok(f32::from(u16::from_le_bytes([b[0], b[1]]))),
            Int16 => Ok(f32::from(i16::from_le_bytes([b[0], b[1]]))),
            Uint32 => self.int_to_f32(f64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            Int32 => self.int_to_f32(f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            Uint64 => self.int_to_f32(u64::from_le_bytes(
                b.try_into().map_err(|_| ConversionError::Short)?,
            ) as f64),
            Int64 => self.int_to_f32(i64::from_le_bytes(
                b.try_into().map_err(|_| ConversionError::Short)?,
            ) as f64),
            Bool | Bytes => Err(ConversionError::NotNumeric(self)),
        }
    }

    fn float_to_f32(self, v: f64) -> Result<f32, ConversionError> {
        let f = v as f32;
        let exact = match self {
            DataType::Fp16 => f64::from(f16::from_f64(v).to_f32()) == v,
            DataType::Bf16 => f64::from(bf16::from_f64(v).to_f32()) == v,
            _ => f64::from(f) == v,
        };
        if v.is_nan() || exact {
            Ok(f)
        } else {
            Err(ConversionError::Inexact(v))
        }
    }

    fn int_to_f32(self, v: f64) -> Result<f32, ConversionError> {
        let (lo, hi) = match self {
            DataType::Uint8 => (0.0, 255.0),
            DataType::Uint16 => (0.0, 65_535.0),
            DataType::Int8 => (-128.0, 127.0),
            DataType::Int16 => (-32_768.0, 32_767.0),
            DataType::Uint32 | DataType::Uint64 => (0.0, F32_EXACT_INT),
            _ => (-F32_EXACT_INT, F32_EXACT_INT),
        };
        if v < lo || v > hi {
            return Err(ConversionError::OutsideRange {
                value: v,
                lo,
                hi,
                datatype: self,
            });
        }
        Ok(v as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> serde_json::Number {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn lossless_conversions_are_accepted() {
        assert_eq!(DataType::Fp32.json_to_f32(&num("0.1")).unwrap(), 0.1f32);
        assert_eq!(
            DataType::Int64.json_to_f32(&num("-16777216")).unwrap(),
            -16_777_216.0
        );
        assert_eq!(DataType::Fp64.json_to_f32(&num("0.5")).unwrap(), 0.5);
        assert_eq!(DataType::Uint8.bytes_to_f32(&[255]).unwrap(), 255.0);
        assert_eq!(
            DataType::Fp16
                .bytes_to_f32(&f16::from_f32(1.5).to_le_bytes())
                .unwrap(),
            1.5
        );
        assert_eq!(
            DataType::Int16
                .bytes_to_f32(&(-2i16).to_le_bytes())
                .unwrap(),
            -2.0
        );
    }

    #[test]
    fn lossy_conversions_are_refused() {
        assert!(
            DataType::Fp64
                .json_to_f32(&num("0.1"))
                .unwrap_err()
                .to_string()
                .contains("exactly")
        );
        assert!(DataType::Int32.json_to_f32(&num("16777217")).is_err());
        assert!(
            DataType::Int32
                .json_to_f32(&num("1.5"))
                .unwrap_err()
                .to_string()
                .contains("not an integer")
        );
        assert!(DataType::Uint8.json_to_f32(&num("256")).is_err());
        assert!(
            DataType::Fp32
                .json_to_f32(&num("1e300"))
                .unwrap_err()
                .to_string()
                .contains("FP32 range")
        );
        assert!(
            DataType::Int64
                .bytes_to_f32(&(1i64 << 40).to_le_bytes())
                .is_err()
        );
    }
}
