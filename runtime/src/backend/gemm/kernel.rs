//! Micro-kernels: one call multiplies up to [`MR`] input rows by one packed panel slice of
//! `kc × NR` weights and writes (or adds into) an `MR × NR` block of the output. The block's
//! accumulators live in registers for the whole depth, so each weight loaded from memory feeds
//! one fused multiply-add per input row.
//!
//! This is the one place the CPU backend uses `unsafe`: the kernels read and write through raw
//! pointers because the driver hands disjoint output blocks to several threads at once, and the
//! AVX-512 kernel needs the vendor intrinsics.
#![allow(unsafe_code)]

/// Columns in a weight panel: two 16-float AVX-512 vectors.
pub const NR: usize = 32;

/// The most input rows one kernel call covers: 12 rows × 2 vectors = 24 accumulator registers of
/// the 32, leaving room for the two weight vectors and the broadcast input value.
pub const MR: usize = 12;

/// The instruction set the kernels run on, chosen once per backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F: 16-wide fused multiply-add, masked loads and stores for ragged edges.
    Avx512,
    /// Plain Rust the compiler vectorises for the target's baseline; any CPU.
    Portable,
}

impl Isa {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Isa {
        Isa::supported().into_iter().next().unwrap_or(Isa::Portable)
    }

    /// Every kernel this CPU can run, fastest first (tests check each against the reference).
    pub fn supported() -> Vec<Isa> {
        let mut isas = Vec::new();
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            isas.push(Isa::Avx512);
        }
        isas.push(Isa::Portable);
        isas
    }

    /// The name shown in the backend's description.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Portable => "portable",
        }
    }
}

/// One kernel call's operands.
///
/// `a` points at the input block's values for the slice's first depth, packed depth-major (the
/// `rows` values of one depth, then the next depth's); `b` at `kc × NR` packed weights; `c` at the output block's first element (row stride
/// `ldc`), of which the first `cols` columns exist.
pub struct Tile {
    /// The packed input block at this depth: `kc` runs of `rows` values.
    pub a: *const f32,
    /// The panel slice: `kc` rows of `NR` weights, 64-byte aligned.
    pub b: *const f32,
    /// The output block's first element.
    pub c: *mut f32,
    /// Distance between output rows, in floats.
    pub ldc: usize,
    /// Depth of this slice.
    pub kc: usize,
    /// Output columns that exist (at most `NR`; the panel is zero-padded past them).
    pub cols: usize,
    /// Add into the output block (a later depth slice) instead of overwriting it.
    pub accumulate: bool,
    /// Weights to fetch into cache while this call computes, `NR` floats per depth step (the next
    /// slice, for the first row block over a slice); null for none. Only a hint: never read.
    pub prefetch: *const f32,
}

/// Multiplies `rows` input rows by the tile's panel slice.
///
/// # Safety
/// `1 <= rows <= MR`; `isa` is one [`Isa::supported`] returned; `a` is readable for
/// `kc · rows` floats; `b` is readable for `kc · NR` floats and 64-byte aligned;
/// `c` is readable and writable for `cols` floats in each of `rows` rows `ldc` apart, and no other
/// thread touches those floats during the call.
pub unsafe fn multiply(isa: Isa, rows: usize, tile: &Tile) {
    debug_assert!((1..=MR).contains(&rows) && tile.cols <= NR);
    match isa {
        // SAFETY: forwarded from the caller; `Avx512` is only in `Isa::supported()` when the CPU
        // has AVX-512F.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::TILES[rows - 1](tile) },
        // SAFETY: forwarded from the caller.
        _ => unsafe { PORTABLE[rows - 1](tile) },
    }
}

/// The portable kernel for each row count.
const PORTABLE: [unsafe fn(&Tile); MR] = [
    portable::<1>,
    portable::<2>,
    portable::<3>,
    portable::<4>,
    portable::<5>,
    portable::<6>,
    portable::<7>,
    portable::<8>,
    portable::<9>,
    portable::<10>,
    portable::<11>,
    portable::<12>,
];

/// The same arithmetic in plain Rust (no fused multiply-add, which would be a library call on a
/// CPU without it), for CPUs without AVX-512.
///
/// # Safety
/// As [`multiply`].
unsafe fn portable<const R: usize>(t: &Tile) {
    let mut acc = [[0.0f32; NR]; R];
    // SAFETY: every pointer offset below stays inside the extents the caller guarantees.
    unsafe {
        if t.accumulate {
            for (r, row) in acc.iter_mut().enumerate() {
                let out = std::slice::from_raw_parts(t.c.add(r * t.ldc), t.cols);
                row[..t.cols].copy_from_slice(out);
            }
        }
        for depth in 0..t.kc {
            let weights = &*t.b.add(depth * NR).cast::<[f32; NR]>();
            for (r, row) in acc.iter_mut().enumerate() {
                let x = *t.a.add(depth * R + r);
                for (sum, w) in row.iter_mut().zip(weights) {
                    *sum += x * w;
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            let out = std::slice::from_raw_parts_mut(t.c.add(r * t.ldc), t.cols);
            out.copy_from_slice(&row[..t.cols]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, __mmask16, _MM_HINT_T1, _mm_prefetch, _mm512_fmadd_ps, _mm512_load_ps,
        _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps,
    };

    use super::{MR, NR, Tile};

    /// The AVX-512 kernel for each row count.
    pub const TILES: [unsafe fn(&Tile); MR] = [
        tile::<1>, tile::<2>, tile::<3>, tile::<4>, tile::<5>, tile::<6>, tile::<7>, tile::<8>,
        tile::<9>, tile::<10>, tile::<11>, tile::<12>,
    ];

    /// Lanes `0..cols` of a 16-lane vector.
    fn lanes(cols: usize) -> __mmask16 {
        if cols >= 16 {
            u16::MAX
        } else {
            ((1u32 << cols) - 1) as u16
        }
    }

    /// `R` rows × 32 columns: per depth step two aligned weight loads and `2R` fused
    /// multiply-adds against the broadcast input value. Ragged right edges use masked loads and
    /// stores, which never touch (or fault on) the lanes masked off.
    ///
    /// # Safety
    /// As [`super::multiply`], on a CPU with AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize>(t: &Tile) {
        let low = lanes(t.cols);
        let high = lanes(t.cols.saturating_sub(16));
        let mut acc: [[__m512; 2]; R] = [[_mm512_setzero_ps(); 2]; R];
        // SAFETY: every pointer offset below stays inside the extents the caller guarantees, and
        // `b` is 64-byte aligned with `NR` a multiple of 16, so both weight loads are aligned.
        unsafe {
            if t.accumulate {
                for (r, sums) in acc.iter_mut().enumerate() {
                    let out = t.c.add(r * t.ldc);
                    sums[0] = _mm512_maskz_loadu_ps(low, out);
                    sums[1] = _mm512_maskz_loadu_ps(high, out.add(16));
                }
            }
            let mut a = t.a;
            let mut b = t.b;
            let mut ahead = t.prefetch;
            for _ in 0..t.kc {
                if !ahead.is_null() {
                    // Into L2: the next slice is needed after this call and the other row blocks
                    // over this slice, which would evict it from L1 first.
                    _mm_prefetch::<_MM_HINT_T1>(ahead.cast());
                    _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(16).cast());
                    ahead = ahead.wrapping_add(NR);
                }
                let w0 = _mm512_load_ps(b);
                let w1 = _mm512_load_ps(b.add(16));
                for (r, sums) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*a.add(r));
                    sums[0] = _mm512_fmadd_ps(x, w0, sums[0]);
                    sums[1] = _mm512_fmadd_ps(x, w1, sums[1]);
                }
                a = a.add(R);
                b = b.add(NR);
            }
            for (r, sums) in acc.iter().enumerate() {
                let out = t.c.add(r * t.ldc);
                _mm512_mask_storeu_ps(out, low, sums[0]);
                _mm512_mask_storeu_ps(out.add(16), high, sums[1]);
            }
        }
    }
}
