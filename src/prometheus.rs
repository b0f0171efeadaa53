//! Prometheus text exposition helpers shared by the API's series and each
//! store's own.

use std::fmt::Write as _;

/// One histogram's series: cumulative `_bucket`s from per-bucket `counts`
/// (one per bound; anything past the last bound is only in `total`), then
/// `+Inf`, `_sum` and `_count`. `labels` is empty or ends with a comma.
pub fn histogram_series(
    out: &mut String,
    name: &str,
    labels: &str,
    bounds: &[f64],
    counts: &[u64],
    total: u64,
    sum_s: f64,
) {
    let mut cumulative = 0;
    for (le, n) in bounds.iter().zip(counts) {
        cumulative += n;
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {total}");
    let labels = labels.trim_end_matches(',');
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(
        out,
        "{name}_sum{braces} {sum_s}\n{name}_count{braces} {total}"
    );
}
