//! The CPU backend's dense layer, `Y = activation(X · W + b)`, for weights that never change.
//!
//! `W` is packed once, when the backend is built, into panels of [`kernel::NR`] columns stored
//! depth-major — the order the kernel reads them — so a batch streams each weight from memory
//! exactly once per row block and never re-packs. A general GEMM packs its right-hand side on
//! every call; at serving batch sizes (1–64 rows) that packing costs as much as the product.
//!
//! Work is split into tasks of (row block, run of panels) that write disjoint parts of `Y`; a
//! thread pool that lives as long as the backend runs them, so its threads are warm between the
//! layers of a pass and between batches. Bias and the element-wise activation are applied to each
//! task's block right after its last depth slice, while it is still in cache.

mod kernel;

use std::ops::Range;

use rayon::prelude::*;

pub use kernel::Isa;
use kernel::{MR, NR, Tile};

use crate::model::Activation;

/// Depth of one kernel call: a `KC × NR` panel slice is 32 KiB, which stays in L1 while every row
/// block of a task passes over it.
const KC: usize = 256;

/// The most rows one task covers: its input block (`MC × KC` floats, 192 KiB) stays in L2.
const MC: usize = 16 * MR;

/// The largest task input (rows × depth, in bytes) still walked panel by panel; see `run_task`.
const PANELS_OUTER_MAX_INPUT: usize = 1 << 20;

/// Tasks per thread, so a thread that finishes early takes over work and none idles at the end.
const TASKS_PER_THREAD: usize = 16;

/// Below this many multiply-adds a layer runs on the calling thread: handing it to the pool would
/// cost more than it saves.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// 16 floats on a 64-byte boundary: the packed weights' storage unit, so every vector load of a
/// panel is aligned and no load straddles two cache lines.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct CacheLine([f32; 16]);

/// A `k × n` weight matrix packed into `⌈n / NR⌉` panels. Panel `p` holds columns
/// `p·NR .. p·NR + NR` as `k` consecutive rows of `NR` floats, zero past column `n`.
pub struct PackedWeights {
    k: usize,
    n: usize,
    lines: Vec<CacheLine>,
}

impl PackedWeights {
    /// Packs row-major `weights` (`k` rows of `n` columns).
    pub fn pack(weights: &[f32], k: usize, n: usize) -> PackedWeights {
        assert_eq!(weights.len(), k * n, "weights are not {k} × {n}");
        let panels = n.div_ceil(NR);
        let lines_per_row = NR / 16;
        let mut lines = vec![CacheLine([0.0; 16]); panels * k * lines_per_row];
        for (depth, row) in weights.chunks_exact(n.max(1)).enumerate() {
            for (panel, columns) in row.chunks(NR).enumerate() {
                let first = (panel * k + depth) * lines_per_row;
                for (line, values) in lines[first..first + lines_per_row]
                    .iter_mut()
                    .zip(columns.chunks(16))
                {
                    line.0[..values.len()].copy_from_slice(values);
                }
            }
        }
        PackedWeights { k, n, lines }
    }

    /// Input width: the depth of the product.
    pub fn rows(&self) -> usize {
        self.k
    }

    /// Output width.
    pub fn columns(&self) -> usize {
        self.n
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    /// The first weight of panel `p` at depth `depth`.
    fn panel_at(&self, p: usize, depth: usize) -> *const f32 {
        self.lines[(p * self.k + depth) * (NR / 16)..]
            .as_ptr()
            .cast()
    }
}

/// The threads a backend computes on, kept for its lifetime.
pub struct Threads {
    pool: Option<rayon::ThreadPool>,
    count: usize,
}

impl Threads {
    /// `count` compute threads; with one, everything runs on the calling thread.
    pub fn new(count: usize) -> Result<Threads, rayon::ThreadPoolBuildError> {
        let pool = if count > 1 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(count)
                    .thread_name(|i| format!("gpucap-cpu-{i}"))
                    .build()?,
            )
        } else {
            None
        };
        Ok(Threads { pool, count })
    }

    /// How many threads compute.
    pub fn count(&self) -> usize {
        self.count
    }
}

/// One layer's operands.
pub struct Dense<'a> {
    /// The packed weights.
    pub weights: &'a PackedWeights,
    /// One bias per output column.
    pub bias: &'a [f32],
    /// Applied after the bias.
    pub activation: Activation,
}

/// A part of the output one thread computes on its own.
#[derive(Debug, Clone, PartialEq)]
struct Task {
    rows: Range<usize>,
    panels: Range<usize>,
}

/// The output buffer, shared by the tasks that each write their own disjoint blocks of it.
#[derive(Clone, Copy)]
struct Output(*mut f32);

// SAFETY: tasks write disjoint (row, column) blocks of the buffer (see `tasks`), and the buffer
// outlives the parallel section that uses it.
#[allow(unsafe_code)]
unsafe impl Send for Output {}
// SAFETY: as for `Send`.
#[allow(unsafe_code)]
unsafe impl Sync for Output {}

/// `output[m × n] = activation(input[m × k] · W + bias)`, all row-major. `packed_input` is scratch
/// for at least `m × k` floats.
pub fn dense(
    isa: Isa,
    threads: &Threads,
    layer: &Dense<'_>,
    input: &[f32],
    m: usize,
    packed_input: &mut [f32],
    output: &mut [f32],
) {
    let (k, n) = (layer.weights.k, layer.weights.n);
    assert!(
        input.len() == m * k
            && output.len() == m * n
            && layer.bias.len() == n
            && packed_input.len() >= m * k,
        "dense layer operands do not match {m} × {k} · {k} × {n}"
    );
    if m == 0 || n == 0 {
        return;
    }
    // Each row group's input packs into its own chunk of the scratch.
    let chunk = rows_per_group(m) * k.max(1);
    let packed = &mut packed_input[..m * k];
    let out = Output(output.as_mut_ptr());
    match &threads.pool {
        Some(pool) if m * k * n >= PARALLEL_MIN_MACS => pool.install(|| {
            packed
                .par_chunks_mut(chunk)
                .zip(input.par_chunks(chunk))
                .for_each(|(to, from)| pack_rows(from, k, to));
            let pass = Pass {
                isa,
                layer,
                packed,
                out,
            };
            tasks(m, layer.weights.panels(), threads.count)
                .par_iter()
                .for_each(|task| pass.run(task));
        }),
        _ => {
            for (to, from) in packed.chunks_mut(chunk).zip(input.chunks(chunk)) {
                pack_rows(from, k, to);
            }
            let pass = Pass {
                isa,
                layer,
                packed,
                out,
            };
            tasks(m, layer.weights.panels(), 1)
                .iter()
                .for_each(|task| pass.run(task));
        }
    }
    if layer.activation == Activation::Softmax {
        for row in output.chunks_exact_mut(n) {
            crate::model::softmax_in_place(row);
        }
    }
}

/// Rows per group: at most [`MC`], whole kernel blocks, groups as even as possible.
fn rows_per_group(m: usize) -> usize {
    m.div_ceil(m.div_ceil(MC)).next_multiple_of(MR)
}

/// Packs one row group of the input for the kernel: each of its [`row_blocks`] (`R` rows
/// starting at row `s` of the group) becomes `k` consecutive runs of `R` values, at `s · k`. The
/// kernel then reads its rows' values for one depth from one place, instead of from `R` rows a
/// whole row apart, which for power-of-two widths all land in the same L1 cache set.
fn pack_rows(rows: &[f32], k: usize, to: &mut [f32]) {
    let count = rows.len() / k.max(1);
    for (start, len) in row_blocks(0..count) {
        let block = &mut to[start * k..(start + len) * k];
        for r in 0..len {
            let row = &rows[(start + r) * k..(start + r + 1) * k];
            for (depth, value) in row.iter().enumerate() {
                block[depth * len + r] = *value;
            }
        }
    }
}

/// Splits `m` rows × `panels` panels into about [`TASKS_PER_THREAD`] tasks per thread: rows in
/// the groups of [`rows_per_group`], then panels in even runs. With one thread, one task per row
/// group covers every panel.
fn tasks(m: usize, panels: usize, threads: usize) -> Vec<Task> {
    let rows_per_group = rows_per_group(m);
    let row_groups = m.div_ceil(rows_per_group);
    let panel_groups = if threads > 1 {
        (threads * TASKS_PER_THREAD)
            .div_ceil(row_groups)
            .clamp(1, panels)
    } else {
        1
    };
    let panels_per_group = panels.div_ceil(panel_groups);
    let mut tasks = Vec::new();
    for first_row in (0..m).step_by(rows_per_group) {
        for first_panel in (0..panels).step_by(panels_per_group) {
            tasks.push(Task {
                rows: first_row..(first_row + rows_per_group).min(m),
                panels: first_panel..(first_panel + panels_per_group).min(panels),
            });
        }
    }
    tasks
}

/// Splits `rows` into blocks of at most [`MR`] rows, as even as possible: 64 rows run as
/// 11+11+11+11+10+10 rather than 5×12+4, because a short block keeps too few accumulators busy to
/// hide the multiply-add latency.
fn row_blocks(rows: Range<usize>) -> impl Iterator<Item = (usize, usize)> {
    let blocks = rows.len().div_ceil(MR);
    let (base, longer) = (rows.len() / blocks.max(1), rows.len() % blocks.max(1));
    (0..blocks).scan(rows.start, move |next, i| {
        let len = base + usize::from(i < longer);
        let block = (*next, len);
        *next += len;
        Some(block)
    })
}

/// What every task of one layer's product shares.
struct Pass<'a, 'b> {
    isa: Isa,
    layer: &'a Dense<'b>,
    /// The input, packed by [`pack_rows`].
    packed: &'a [f32],
    out: Output,
}

impl Pass<'_, '_> {
    /// Computes one task's block, then applies bias and activation to it.
    ///
    /// The loop order depends on whether the task's input (`rows × k`) fits in half of L2. If it
    /// does (serving batches), panels go outermost and each panel's slices follow one another in
    /// memory, one stream the prefetcher follows. If not (large batches), depth slices go
    /// outermost, so the task's input slice (`rows × KC`, at most 192 KiB) stays in L2 while the
    /// panels pass; panels outermost would read the whole input once per panel, from L3.
    fn run(&self, task: &Task) {
        let weights = self.layer.weights;
        let k = weights.k;
        // Depth slices start every KC; at least one, so a zero-depth layer still writes its
        // (zero) products.
        let slices = (0..k.max(1)).step_by(KC);
        let next_slice = |depth: usize| Some(depth + KC).filter(|&next| next < k);
        let panels = task.panels.clone();
        if task.rows.len() * k * size_of::<f32>() <= PANELS_OUTER_MAX_INPUT {
            for panel in panels.clone() {
                for depth in slices.clone() {
                    let next = match next_slice(depth) {
                        Some(next) => weights.panel_at(panel, next),
                        None if panel + 1 < panels.end => weights.panel_at(panel + 1, 0),
                        None => std::ptr::null(),
                    };
                    self.block(&task.rows, panel, depth, next);
                }
            }
        } else {
            for depth in slices {
                for panel in panels.clone() {
                    let next = if panel + 1 < panels.end {
                        weights.panel_at(panel + 1, depth)
                    } else {
                        next_slice(depth).map_or(std::ptr::null(), |next| {
                            weights.panel_at(panels.start, next)
                        })
                    };
                    self.block(&task.rows, panel, depth, next);
                }
            }
        }
        self.finish(task);
    }

    /// One panel's depth slice (from `depth`, [`KC`] deep or to the end) over every row block of
    /// `rows`. `next` is the weights the task reads after this slice: the first row block fetches
    /// them towards the cache while it computes, so no later call waits on memory.
    fn block(&self, rows: &Range<usize>, panel: usize, depth: usize, next: *const f32) {
        let (k, n) = (self.layer.weights.k, self.layer.weights.n);
        let first_col = panel * NR;
        for (i, (row, count)) in row_blocks(rows.clone()).enumerate() {
            let tile = Tile {
                // The block's packed values start at `row · k`; its depth slice `depth` runs of
                // `count` values in.
                a: self.packed[row * k + depth * count..].as_ptr(),
                b: self.layer.weights.panel_at(panel, depth),
                // SAFETY: `row < m` and `first_col < n`, so the offset is inside `output`.
                #[allow(unsafe_code)]
                c: unsafe { self.out.0.add(row * n + first_col) },
                ldc: n,
                kc: KC.min(k - depth),
                cols: NR.min(n - first_col),
                accumulate: depth > 0,
                prefetch: if i == 0 { next } else { std::ptr::null() },
            };
            // SAFETY: `count` is 1..=MR; `isa` came from `Isa::supported`; the packed block
            // holds `kc · count` values from its depth `depth`; the panel slice holds `kc · NR`
            // aligned floats; the output block (`count` rows of `cols` columns) lies inside
            // `output` and belongs to this task alone.
            #[allow(unsafe_code)]
            unsafe {
                kernel::multiply(self.isa, count, &tile)
            };
        }
    }

    /// Bias and the element-wise activation over the task's block, while it is in cache.
    fn finish(&self, task: &Task) {
        let n = self.layer.weights.n;
        for panel in task.panels.clone() {
            let first_col = panel * NR;
            let cols = NR.min(n - first_col);
            let bias = &self.layer.bias[first_col..first_col + cols];
            for row in task.rows.clone() {
                // SAFETY: this task's own block of `output` (see `Output`), and no other
                // reference to it exists while this one lives.
                #[allow(unsafe_code)]
                let values = unsafe {
                    std::slice::from_raw_parts_mut(self.out.0.add(row * n + first_col), cols)
                };
                self.layer
                    .activation
                    .apply_elementwise_with_bias(values, bias);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward_bench::random_values;

    /// The textbook product in f64, bias and activation applied.
    fn reference(input: &[f32], weights: &[f32], bias: &[f32], m: usize, k: usize) -> Vec<f32> {
        let n = bias.len();
        let mut y = vec![0.0; m * n];
        for r in 0..m {
            for c in 0..n {
                let mut sum = f64::from(bias[c]);
                for d in 0..k {
                    sum += f64::from(input[r * k + d]) * f64::from(weights[d * n + c]);
                }
                y[r * n + c] = sum as f32;
            }
        }
        y
    }

    #[test]
    fn every_kernel_matches_the_reference_at_ragged_sizes() {
        // Row counts cover every kernel height and several row groups; depths cover partial and
        // several depth slices; widths partial, single and many panels.
        for isa in Isa::supported() {
            for threads in [1, 3] {
                let pool = Threads::new(threads).unwrap();
                for (m, k, n) in [
                    (1, 1, 1),
                    (1, 300, 33),
                    (5, 17, 64),
                    (12, 256, 31),
                    (13, 513, 97),
                    (200, 64, 40),
                    (400, 40, 70),
                ] {
                    let input = random_values(m * k, 1);
                    let weights = random_values(k * n, 2);
                    let bias = random_values(n, 3);
                    let packed = PackedWeights::pack(&weights, k, n);
                    let mut got = vec![f32::NAN; m * n];
                    let layer = Dense {
                        weights: &packed,
                        bias: &bias,
                        activation: Activation::Identity,
                    };
                    let mut scratch = vec![f32::NAN; m * k];
                    dense(isa, &pool, &layer, &input, m, &mut scratch, &mut got);
                    let want = reference(&input, &weights, &bias, m, k);
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= 1e-4 * (1.0 + w.abs()) * (k as f32).sqrt(),
                            "{isa:?}, {threads} threads, {m}×{k}·{k}×{n} [{i}]: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn zero_depth_gives_the_bias() {
        for isa in Isa::supported() {
            let packed = PackedWeights::pack(&[], 0, 3);
            let mut out = vec![f32::NAN; 6];
            let layer = Dense {
                weights: &packed,
                bias: &[1.0, -2.0, 3.0],
                activation: Activation::Relu,
            };
            let threads = Threads::new(1).unwrap();
            dense(isa, &threads, &layer, &[], 2, &mut [], &mut out);
            assert_eq!(out, [1.0, 0.0, 3.0, 1.0, 0.0, 3.0]);
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_across_panels() {
        let (m, k, n) = (3, 8, 70);
        let packed = PackedWeights::pack(&random_values(k * n, 5), k, n);
        let bias = random_values(n, 6);
        let mut out = vec![0.0; m * n];
        let layer = Dense {
            weights: &packed,
            bias: &bias,
            activation: Activation::Softmax,
        };
        dense(
            Isa::detect(),
            &Threads::new(2).unwrap(),
            &layer,
            &random_values(m * k, 7),
            m,
            &mut vec![0.0; m * k],
            &mut out,
        );
        for row in out.chunks(n) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn tasks_cover_the_output_once() {
        for (m, panels, threads) in [
            (1, 1, 2),
            (1, 128, 2),
            (64, 32, 2),
            (1024, 128, 2),
            (7, 3, 16),
        ] {
            let mut covered = vec![0u8; m * panels];
            for task in tasks(m, panels, threads) {
                assert!(task.rows.len() % MR == 0 || task.rows.end == m, "{task:?}");
                for r in task.rows.clone() {
                    for p in task.panels.clone() {
                        covered[r * panels + p] += 1;
                    }
                }
            }
            assert!(covered.iter().all(|&c| c == 1), "{m} {panels} {threads}");
        }
    }

    #[test]
    fn row_blocks_are_even_and_cover_the_rows() {
        let sizes = |r: Range<usize>| row_blocks(r).map(|(_, n)| n).collect::<Vec<_>>();
        assert_eq!(sizes(0..64), [11, 11, 11, 11, 10, 10]);
        assert_eq!(sizes(5..17), [12]);
        assert_eq!(sizes(0..1), [1]);
        assert!(sizes(3..3).is_empty());
        assert_eq!(
            row_blocks(7..20).map(|(s, _)| s).collect::<Vec<_>>(),
            [7, 14]
        );
    }

    #[test]
    fn packed_rows_are_depth_major_within_each_block() {
        // 14 rows of width 2 form blocks of 7 and 7.
        let rows: Vec<f32> = (0..28).map(|v| v as f32).collect();
        let mut to = vec![0.0; 28];
        pack_rows(&rows, 2, &mut to);
        assert_eq!(&to[..7], &[0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0]);
        assert_eq!(&to[7..14], &[1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0]);
        assert_eq!(to[14], 14.0);
    }

    #[test]
    fn packing_pads_the_last_panel_with_zeros() {
        let packed = PackedWeights::pack(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3);
        let floats: Vec<f32> = packed.lines.iter().flat_map(|l| l.0).collect();
        assert_eq!(floats.len(), 2 * NR);
        assert_eq!(&floats[..4], &[1.0, 2.0, 3.0, 0.0]);
        assert_eq!(&floats[NR..NR + 4], &[4.0, 5.0, 6.0, 0.0]);
    }
}
