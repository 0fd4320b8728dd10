//! Traffic traces: reading them (CSV, two forms), turning them into arrivals, and generating the
//! shipped ones.
//!
//! - **Arrivals**: one arrival time in seconds per line, in order.
//! - **Rates**: a header `second,requests_per_second`, then rows; each rate holds until the next
//!   row, and the last one for as long as the step before it. Arrivals are a Poisson process at
//!   that rate, drawn from the run's seed.
//!
//! Blank lines and lines starting with `#` are skipped in both.

use std::f64::consts::PI;
use std::path::{Path, PathBuf};

use super::rng::SplitMix64;

/// The header of a rate trace.
pub const RATE_HEADER: &str = "second,requests_per_second";

/// The latest second a trace may name: 366 days. The simulator steps through virtual time in
/// nanoseconds and ticks once a second, so a longer trace would take hours to replay and, far
/// enough out, no longer fit its clock.
pub const MAX_SECOND: f64 = 366.0 * 24.0 * 3600.0;

/// A trace.
#[derive(Debug, Clone, PartialEq)]
pub enum Trace {
    /// Arrival times in seconds, non-decreasing.
    Arrivals(Vec<f64>),
    /// `(from second, requests per second)`, strictly increasing seconds, and where the last
    /// rate ends.
    Rates {
        /// The steps.
        steps: Vec<(f64, f64)>,
        /// The end of the trace, in seconds.
        end: f64,
    },
}

/// A trace that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("trace {}{}: {message}", path.display(), line.map(|l| format!(", line {l}")).unwrap_or_default())]
pub struct TraceError {
    /// The file.
    pub path: PathBuf,
    /// The line at fault, 1-based, when one is.
    pub line: Option<usize>,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl Trace {
    /// Reads a trace file.
    pub fn read(path: &Path) -> Result<Trace, TraceError> {
        let text = std::fs::read_to_string(path).map_err(|e| TraceError {
            path: path.to_path_buf(),
            line: None,
            message: e.to_string(),
        })?;
        Trace::parse(&text).map_err(|(line, message)| TraceError {
            path: path.to_path_buf(),
            line,
            message,
        })
    }

    /// Parses a trace's text; the error names the line (1-based) at fault.
    pub fn parse(text: &str) -> Result<Trace, (Option<usize>, String)> {
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
        let Some((first_no, first)) = lines.next() else {
            return Err((None, "no data; give arrival times (one per line) or a header `second,requests_per_second` and rows".into()));
        };
        let number =
            |line: usize, field: &str, what: &str| -> Result<f64, (Option<usize>, String)> {
                let v: f64 = field
                    .trim()
                    .parse()
                    .map_err(|_| (Some(line), format!("{what} {field:?} is not a number")))?;
                if !v.is_finite() || v < 0.0 {
                    return Err((Some(line), format!("{what} {field} is not a number ≥ 0")));
                }
                Ok(v)
            };
        let time = |line: usize, field: &str, what: &str| -> Result<f64, (Option<usize>, String)> {
            let v = number(line, field, what)?;
            if v > MAX_SECOND {
                return Err((
                    Some(line),
                    format!(
                        "{what} {field} is past {MAX_SECOND} (366 days), the longest trace the simulator replays; split the trace"
                    ),
                ));
            }
            Ok(v)
        };
        if first.replace(' ', "") == RATE_HEADER {
            let mut steps: Vec<(f64, f64)> = Vec::new();
            let mut last_no = first_no;
            for (no, line) in lines {
                last_no = no;
                let mut fields = line.split(',');
                let (Some(s), Some(r), None) = (fields.next(), fields.next(), fields.next()) else {
                    return Err((
                        Some(no),
                        format!("{line:?} is not `second,requests_per_second`"),
                    ));
                };
                let second = time(no, s, "second")?;
                let rate = number(no, r, "requests_per_second")?;
                if let Some((prev, _)) = steps.last()
                    && second <= *prev
                {
                    return Err((
                        Some(no),
                        format!(
                            "second {second} does not come after {prev}; rows must be in increasing time"
                        ),
                    ));
                }
                steps.push((second, rate));
            }
            let end = match steps.as_slice() {
                [] => return Err((Some(first_no), "a header but no rows".into())),
                [only] => only.0 + 1.0,
                [.., a, b] => b.0 + (b.0 - a.0),
            };
            if end > MAX_SECOND {
                return Err((
                    Some(last_no),
                    format!(
                        "the last rate holds until second {end} (one step past its row), past {MAX_SECOND} (366 days); end the trace earlier"
                    ),
                ));
            }
            return Ok(Trace::Rates { steps, end });
        }
        if first.contains(',') {
            return Err((
                Some(first_no),
                format!("{first:?} is neither an arrival time nor the header `{RATE_HEADER}`"),
            ));
        }
        let mut arrivals = Vec::new();
        for (no, line) in std::iter::once((first_no, first)).chain(lines) {
            let t = time(no, line, "arrival time")?;
            if let Some(prev) = arrivals.last()
                && t < *prev
            {
                return Err((
                    Some(no),
                    format!("arrival {t} is before {prev}; times must not go back"),
                ));
            }
            arrivals.push(t);
        }
        Ok(Trace::Arrivals(arrivals))
    }

    /// Where the trace ends, in seconds.
    pub fn end(&self) -> f64 {
        match self {
            Trace::Arrivals(a) => a.last().copied().unwrap_or(0.0),
            Trace::Rates { end, .. } => *end,
        }
    }

    /// The highest rate over any one minute (for rate traces, the highest step), per second.
    pub fn peak_rate(&self) -> f64 {
        match self {
            Trace::Rates { steps, .. } => steps.iter().map(|s| s.1).fold(0.0, f64::max),
            Trace::Arrivals(a) => {
                let mut best = 0usize;
                let mut start = 0;
                for (i, t) in a.iter().enumerate() {
                    while a[start] < t - 60.0 {
                        start += 1;
                    }
                    best = best.max(i + 1 - start);
                }
                best as f64 / 60.0_f64.min(self.end().max(1.0))
            }
        }
    }

    /// The arrivals, in order; rate traces draw them from `seed`.
    pub fn arrivals(&self, seed: u64) -> Arrivals<'_> {
        Arrivals {
            trace: self,
            rng: SplitMix64::new(seed),
            index: 0,
            at: self.start(),
        }
    }

    fn start(&self) -> f64 {
        match self {
            Trace::Arrivals(_) => 0.0,
            Trace::Rates { steps, .. } => steps.first().map_or(0.0, |s| s.0),
        }
    }

    /// The trace as CSV text (rate traces with six decimals).
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        match self {
            Trace::Arrivals(a) => {
                for t in a {
                    out.push_str(&format!("{t}\n"));
                }
            }
            Trace::Rates { steps, .. } => {
                out.push_str(RATE_HEADER);
                out.push('\n');
                for (s, r) in steps {
                    out.push_str(&format!("{s},{r:.3}\n"));
                }
            }
        }
        out
    }
}

/// Arrival times of a trace, in seconds.
pub struct Arrivals<'a> {
    trace: &'a Trace,
    rng: SplitMix64,
    index: usize,
    at: f64,
}

impl Iterator for Arrivals<'_> {
    type Item = f64;

    fn next(&mut self) -> Option<f64> {
        match self.trace {
            Trace::Arrivals(a) => {
                let t = a.get(self.index).copied();
                self.index += 1;
                t
            }
            Trace::Rates { steps, end } => loop {
                let (_, rate) = *steps.get(self.index)?;
                let step_end = steps.get(self.index + 1).map_or(*end, |s| s.0);
                // A Poisson process restarted at each step boundary: its memorylessness makes
                // that exact.
                let next = if rate > 0.0 {
                    self.at + self.rng.exponential(rate)
                } else {
                    f64::INFINITY
                };
                if next < step_end {
                    self.at = next;
                    return Some(next);
                }
                self.at = step_end;
                self.index += 1;
            },
        }
    }
}

/// The shapes `gpucap-fabric trace` generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// A week: a daily cycle whose night trough is about a tenth of the day's peak, quieter
    /// weekends, and a few short bursts each day.
    DiurnalWeek,
    /// Two days: a quiet baseline, then a product launch jumps to the peak within ten minutes
    /// and decays over hours to a higher plateau.
    Launch,
    /// A day at half the peak, with a little noise.
    Flat,
}

/// Generates a rate trace of `shape` with one step per `step` seconds, peaking at `peak` requests
/// per second; the same seed gives the same trace.
pub fn generate(shape: Shape, peak: f64, step: f64, seed: u64) -> Trace {
    let mut rng = SplitMix64::new(seed);
    let days = match shape {
        Shape::DiurnalWeek => 7.0,
        Shape::Launch => 2.0,
        Shape::Flat => 1.0,
    };
    let end = days * 86_400.0;
    let n = (end / step).round() as usize;
    // Bursts of the diurnal week: three a day between 08:00 and 22:00, 3–15 minutes long.
    let bursts: Vec<(f64, f64, f64)> = (0..7 * 3)
        .map(|i| {
            let day = (i / 3) as f64;
            let start = day * 86_400.0 + 8.0 * 3600.0 + rng.uniform() * 14.0 * 3600.0;
            let length = 180.0 + rng.uniform() * 720.0;
            let lift = 1.25 + rng.uniform() * 0.2;
            (start, start + length, lift)
        })
        .collect();
    let steps = (0..n)
        .map(|i| {
            let t = i as f64 * step;
            let hour = (t / 3600.0) % 24.0;
            let noise = 1.0 + 0.04 * (2.0 * rng.uniform() - 1.0);
            let rate = match shape {
                Shape::DiurnalWeek => {
                    let day = (t / 86_400.0).floor() as usize;
                    let weekend = if day % 7 >= 5 { 0.6 } else { 1.0 };
                    // Lowest at 03:00, highest at 15:00; the day peak is 70 % of `peak`, bursts
                    // reach it.
                    let cycle = ((1.0 - (2.0 * PI * (hour - 3.0) / 24.0).cos()) / 2.0).powf(1.5);
                    let lift = bursts
                        .iter()
                        .find(|(a, b, _)| (*a..*b).contains(&t))
                        .map_or(1.0, |b| b.2);
                    0.7 * peak * (0.1 + 0.9 * cycle) * weekend * lift
                }
                Shape::Launch => {
                    let launch = 86_400.0 + 9.0 * 3600.0;
                    let base = 0.12
                        * peak
                        * (0.8 + 0.4 * ((1.0 - (2.0 * PI * (hour - 3.0) / 24.0).cos()) / 2.0));
                    if t < launch {
                        base
                    } else {
                        let since = t - launch;
                        let ramp = (since / 600.0).min(1.0);
                        let decay = 0.35 + 0.65 * (-since / (3.0 * 3600.0)).exp2();
                        base.max(peak * ramp * decay / 1.05)
                    }
                }
                Shape::Flat => 0.5 * peak,
            };
            (t, (rate * noise).min(peak))
        })
        .collect();
    Trace::Rates { steps, end }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_parse_and_bad_lines_are_named() {
        assert_eq!(
            Trace::parse("# two\n0.5\n1.0\n\n1.0\n").unwrap(),
            Trace::Arrivals(vec![0.5, 1.0, 1.0])
        );
        let t = Trace::parse("second,requests_per_second\n0,10\n60,20\n").unwrap();
        assert_eq!(
            t,
            Trace::Rates {
                steps: vec![(0.0, 10.0), (60.0, 20.0)],
                end: 120.0
            }
        );
        assert_eq!(t.peak_rate(), 20.0);
        let cases = [
            ("0.5\nsoon\n", 2, "\"soon\" is not a number"),
            ("2\n1\n", 2, "before 2"),
            (
                "second,requests_per_second\n0,1\n0,2\n",
                3,
                "does not come after 0",
            ),
            ("second,requests_per_second\n0,-1\n", 2, "not a number ≥ 0"),
            (
                "second,requests_per_second\n0,1\n1e11,1\n",
                3,
                "second 1e11 is past 31622400 (366 days)",
            ),
            ("0\n31622401\n", 2, "arrival time 31622401 is past 31622400"),
            (
                "second,requests_per_second\n0,1\n# the end\n31622400,1\n",
                4,
                "the last rate holds until second 63244800",
            ),
            (
                "second,requests_per_second\n0\n",
                2,
                "is not `second,requests_per_second`",
            ),
            (
                "time,rate\n0,1\n",
                1,
                "neither an arrival time nor the header",
            ),
        ];
        for (text, line, message) in cases {
            let (l, m) = Trace::parse(text).unwrap_err();
            assert_eq!(l, Some(line), "{text}: {m}");
            assert!(m.contains(message), "{text}: {m}");
        }
        assert!(
            Trace::parse("# nothing\n")
                .unwrap_err()
                .1
                .contains("no data")
        );
    }

    #[test]
    fn rate_traces_give_poisson_arrivals_at_their_rate_the_same_for_a_seed() {
        let t = Trace::parse("second,requests_per_second\n0,1000\n10,0\n20,200\n").unwrap();
        let a: Vec<f64> = t.arrivals(7).collect();
        let b: Vec<f64> = t.arrivals(7).collect();
        assert_eq!(a, b);
        let first = a.iter().filter(|&&x| x < 10.0).count();
        let silent = a.iter().filter(|&&x| (10.0..20.0).contains(&x)).count();
        let last = a.iter().filter(|&&x| x >= 20.0).count();
        assert!((9_500..10_500).contains(&first), "{first}");
        assert_eq!(silent, 0);
        assert!((1_800..2_200).contains(&last), "{last}");
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
        assert!(*a.last().unwrap() < 30.0);
        assert_ne!(a, t.arrivals(8).collect::<Vec<_>>());
    }

    #[test]
    fn the_diurnal_week_has_a_night_trough_near_a_tenth_of_the_day_peak() {
        let t = generate(Shape::DiurnalWeek, 1000.0, 60.0, 1);
        assert_eq!(t, generate(Shape::DiurnalWeek, 1000.0, 60.0, 1));
        let Trace::Rates { steps, end } = &t else {
            panic!("a rate trace")
        };
        assert_eq!(*end, 7.0 * 86_400.0);
        assert_eq!(steps.len(), 7 * 1440);
        // Tuesday: 03:00 against the day's highest minute.
        let day: Vec<f64> = steps[1440..2880].iter().map(|s| s.1).collect();
        let night = day[3 * 60];
        let top = day.iter().copied().fold(0.0, f64::max);
        let ratio = night / top;
        assert!((0.06..0.14).contains(&ratio), "{ratio}");
        assert!(t.peak_rate() <= 1000.0);
    }
}
