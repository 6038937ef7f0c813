//! What the benchmark drivers (`src/bin/bench-*.rs`) share: their command line
//! and the summary of a series of timings.

use std::path::PathBuf;
use std::time::Duration;

/// `--armlet <release binary> [--runs N]` (or another flag naming the binary
/// under test: `--devserver`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchArgs {
    /// The binary under test, absolute (drivers may change their mount
    /// namespace, which resets their working directory).
    pub binary: PathBuf,
    /// Runs per tool.
    pub runs: usize,
}

impl BenchArgs {
    /// Parses the arguments after the program name; errors end with `usage`.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        usage: &str,
        default_runs: usize,
    ) -> Result<Self, String> {
        Self::parse_with("--armlet", args, usage, default_runs)
    }

    /// As [`BenchArgs::parse`], with `flag` naming the binary under test.
    pub fn parse_with(
        flag: &str,
        args: impl IntoIterator<Item = String>,
        usage: &str,
        default_runs: usize,
    ) -> Result<Self, String> {
        let mut binary = None;
        let mut runs = default_runs;
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let mut value = || it.next().ok_or(format!("{arg} needs a value\n{usage}"));
            match arg.as_str() {
                f if f == flag => binary = Some(PathBuf::from(value()?)),
                "--runs" => {
                    let v = value()?;
                    runs = v
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or(format!("--runs: `{v}` is not a positive number"))?;
                }
                other => return Err(format!("unexpected argument `{other}`\n{usage}")),
            }
        }
        let binary: PathBuf = binary.ok_or(format!("{flag} is required\n{usage}"))?;
        let binary = std::fs::canonicalize(&binary)
            .map_err(|e| format!("{flag} {}: {e}", binary.display()))?;
        Ok(Self { binary, runs })
    }
}

/// A series of timings summarised, in seconds (see [`Stats::scaled`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// How many.
    pub runs: usize,
    /// The median (mean of the middle two for an even count).
    pub median: f64,
    /// The 90th percentile, by nearest rank.
    pub p90: f64,
    /// The fastest.
    pub min: f64,
    /// The slowest.
    pub max: f64,
}

impl Stats {
    /// The summary of `times` (NaN for an empty series).
    pub fn of(times: &[Duration]) -> Self {
        let mut s: Vec<f64> = times.iter().map(Duration::as_secs_f64).collect();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => s[n / 2],
            _ => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        };
        // Nearest rank: the smallest time at least 90 % of the runs did not exceed.
        let p90 = (n * 9)
            .div_ceil(10)
            .checked_sub(1)
            .and_then(|i| s.get(i))
            .copied()
            .unwrap_or(f64::NAN);
        Self {
            runs: n,
            median,
            p90,
            min: s.first().copied().unwrap_or(f64::NAN),
            max: s.last().copied().unwrap_or(f64::NAN),
        }
    }

    /// The same in other units (`1e3` for milliseconds).
    pub fn scaled(self, factor: f64) -> Self {
        Self {
            median: self.median * factor,
            p90: self.p90 * factor,
            min: self.min * factor,
            max: self.max * factor,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments() {
        let a = BenchArgs::parse(args(&["--armlet", "/bin/sh", "--runs", "3"]), "u", 50).unwrap();
        assert_eq!((a.binary.is_absolute(), a.runs), (true, 3));
        let d = BenchArgs::parse_with("--devserver", args(&["--devserver", "/bin/sh"]), "u", 5)
            .unwrap();
        assert_eq!(d.runs, 5);
        assert!(
            BenchArgs::parse_with("--devserver", args(&["--armlet", "/bin/sh"]), "u", 5).is_err()
        );
        assert_eq!(
            BenchArgs::parse(args(&["--armlet", "/bin/sh"]), "u", 50)
                .unwrap()
                .runs,
            50
        );
        for bad in [&["--runs", "0"][..], &["--armlet"], &["--what"], &[]] {
            assert!(BenchArgs::parse(args(bad), "u", 5).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn summaries() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        let s = Stats::of(&ms(&[30, 10, 20, 40])).scaled(1e3);
        assert_eq!((s.runs, s.min, s.max), (4, 10.0, 40.0));
        assert!((s.median - 25.0).abs() < 1e-9 && (s.p90 - 40.0).abs() < 1e-9);
        let ten: Vec<u64> = (1..=10).collect();
        assert!((Stats::of(&ms(&ten)).scaled(1e3).p90 - 9.0).abs() < 1e-9);
        assert!(Stats::of(&[]).median.is_nan());
    }
}
