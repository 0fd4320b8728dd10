//! Activation functions, and the fused bias + activation pass the CPU backend runs on each block
//! of a product.

use std::fmt;
use std::str::FromStr;

/// An activation applied element-wise (or row-wise, for softmax) after a layer's bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// No activation: `y = x`.
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// Exact GELU, `x · Φ(x)` with the error function (PyTorch's default).
    Gelu,
    /// GELU with the tanh approximation (PyTorch's `approximate="tanh"`).
    GeluTanh,
    /// Hyperbolic tangent.
    Tanh,
    /// Logistic sigmoid.
    Sigmoid,
    /// Softmax over each row, computed stably (the row maximum is subtracted first).
    Softmax,
}

impl Activation {
    /// Every accepted spelling, for error messages.
    pub const NAMES: &'static str = "identity, relu, gelu, gelu_tanh, tanh, sigmoid, softmax";

    /// Adds `bias` to `values` (one per column) and applies the element-wise part of the
    /// activation in the same pass, so the data is read and written once. Softmax is row-wise:
    /// here it only adds the bias, and the caller runs [`softmax_in_place`] over each whole row.
    pub fn apply_elementwise_with_bias(self, values: &mut [f32], bias: &[f32]) {
        for (x, b) in values.iter_mut().zip(bias) {
            *x = self.scalar(*x + b);
        }
    }

    /// The element-wise part of the activation (softmax is row-wise and handled by the caller).
    fn scalar(self, x: f32) -> f32 {
        match self {
            Activation::Identity | Activation::Softmax => x,
            Activation::Relu => x.max(0.0),
            Activation::Gelu => 0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2)),
            Activation::GeluTanh => {
                const SQRT_2_OVER_PI: f32 = 0.797_884_6;
                0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh())
            }
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        }
    }
}

/// Softmax of one row in place. Subtracting the maximum keeps `exp` from overflowing for large
/// logits; the result is identical in exact arithmetic.
pub fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for x in row.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in row.iter_mut() {
        *x /= sum;
    }
}

impl FromStr for Activation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "identity" | "linear" | "none" => Activation::Identity,
            "relu" => Activation::Relu,
            "gelu" => Activation::Gelu,
            "gelu_tanh" => Activation::GeluTanh,
            "tanh" => Activation::Tanh,
            "sigmoid" => Activation::Sigmoid,
            "softmax" => Activation::Softmax,
            other => {
                return Err(format!(
                    "unknown activation '{other}'; valid activations are {}",
                    Activation::NAMES
                ));
            }
        })
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Activation::Identity => "identity",
            Activation::Relu => "relu",
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_tanh",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
            Activation::Softmax => "softmax",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_stable_for_huge_logits() {
        let mut row = [1000.0, 1001.0, 999.0];
        softmax_in_place(&mut row);
        assert!(row.iter().all(|x| x.is_finite()));
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(row[1] > row[0] && row[0] > row[2]);
    }

    #[test]
    fn activations_match_their_definitions() {
        let cases = [
            (Activation::Relu, -2.0, 0.0),
            (Activation::Relu, 3.0, 3.0),
            (Activation::Sigmoid, 0.0, 0.5),
            (Activation::Sigmoid, 2.0, 0.880_797_1),
            (Activation::Sigmoid, -3.0, 0.047_425_87),
            (Activation::Tanh, 0.0, 0.0),
            (Activation::Tanh, 1.0, 0.761_594_2),
            (Activation::Tanh, -0.5, -0.462_117_16),
            (Activation::Gelu, 1.0, 0.841_344_7),
            (Activation::Gelu, -1.0, -0.158_655_25),
            (Activation::Gelu, 2.0, 1.954_499_7),
            (Activation::GeluTanh, 1.0, 0.841_192),
            (Activation::GeluTanh, -1.0, -0.158_808),
            (Activation::Identity, -7.5, -7.5),
        ];
        for (act, x, want) in cases {
            let got = act.scalar(x);
            assert!((got - want).abs() < 1e-5, "{act}({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn bias_is_added_per_column() {
        let mut row = [0.0, 1.0];
        Activation::Relu.apply_elementwise_with_bias(&mut row, &[1.0, -2.0]);
        assert_eq!(row, [1.0, 0.0]);
    }

    #[test]
    fn names_round_trip() {
        for name in Activation::NAMES.split(", ") {
            let act: Activation = name.parse().unwrap();
            assert_eq!(act.to_string(), name);
        }
        assert!(
            "swish"
                .parse::<Activation>()
                .unwrap_err()
                .contains("valid activations")
        );
    }
}
