//! How a CUDA backend stores weights and the activations fed to matrix products. Products always
//! accumulate in FP32; biases, activations functions and softmax always run in FP32.

use std::fmt;
use std::str::FromStr;

/// Storage precision of weights (and of the activations a product reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// 32-bit floats: results match the CPU backend to rounding.
    #[default]
    Fp32,
    /// IEEE half precision: half the weight memory and bandwidth, tensor-core products; 11
    /// significant bits, range ±65504.
    Fp16,
    /// bfloat16: FP32's range with 8 significant bits.
    Bf16,
}

impl Precision {
    /// Every accepted spelling, for error messages.
    pub const NAMES: &'static str = "fp32, fp16, bf16";

    /// Bytes one stored weight takes.
    pub fn bytes(self) -> usize {
        match self {
            Precision::Fp32 => 4,
            Precision::Fp16 | Precision::Bf16 => 2,
        }
    }

    /// `values` in this half-precision format as raw bits, rounded to nearest even. `None` for
    /// FP32, which is stored as is.
    pub fn encode_half(self, values: &[f32]) -> Option<Vec<u16>> {
        match self {
            Precision::Fp32 => None,
            Precision::Fp16 => Some(
                values
                    .iter()
                    .map(|v| half::f16::from_f32(*v).to_bits())
                    .collect(),
            ),
            Precision::Bf16 => Some(
                values
                    .iter()
                    .map(|v| half::bf16::from_f32(*v).to_bits())
                    .collect(),
            ),
        }
    }

    /// `value` rounded to this precision and back: what a stored weight or activation becomes.
    /// Used to measure the accuracy effect of a precision on the CPU, where the arithmetic is the
    /// same as on the GPU (exact products of rounded values, FP32 sums).
    pub fn round(self, value: f32) -> f32 {
        match self {
            Precision::Fp32 => value,
            Precision::Fp16 => half::f16::from_f32(value).to_f32(),
            Precision::Bf16 => half::bf16::from_f32(value).to_f32(),
        }
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "fp32" | "f32" | "float32" => Ok(Precision::Fp32),
            "fp16" | "f16" | "float16" | "half" => Ok(Precision::Fp16),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            other => Err(format!(
                "invalid precision '{other}'; valid: {}",
                Precision::NAMES
            )),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for p in [Precision::Fp32, Precision::Fp16, Precision::Bf16] {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        }
        assert_eq!(
            "int8".parse::<Precision>().unwrap_err(),
            "invalid precision 'int8'; valid: fp32, fp16, bf16"
        );
    }

    #[test]
    fn half_formats_round_to_nearest() {
        // 1 + 2^-11 (fp16) and 1 + 2^-8 (bf16) are halfway between two values: ties go to the even
        // one, 1.0.
        assert_eq!(Precision::Fp16.round(1.0 + 2f32.powi(-11)), 1.0);
        assert_eq!(Precision::Bf16.round(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(
            Precision::Bf16.round(1.0 + 2f32.powi(-7)),
            1.0 + 2f32.powi(-7)
        );
        assert_eq!(Precision::Fp16.round(70000.0), f32::INFINITY);
        assert_eq!(Precision::Bf16.round(70000.0), 70144.0);
        assert_eq!(
            Precision::Fp16.encode_half(&[1.0, -2.0]).unwrap(),
            vec![0x3c00, 0xc000]
        );
        assert_eq!(Precision::Bf16.encode_half(&[1.0]).unwrap(), vec![0x3f80]);
        assert!(Precision::Fp32.encode_half(&[1.0]).is_none());
    }
}
