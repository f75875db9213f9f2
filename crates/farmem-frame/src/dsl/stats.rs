//! Order statistics and moments of plain values: the definitions every placement shares.

/// The median: the middle value, or the mean of the two middle values for an even count (as
/// pandas, polars and AIFM); `None` if empty. Reorders `v`; NaN must have been removed.
pub(crate) fn median(v: &mut [f64]) -> Option<f64> {
    let n = v.len();
    if n == 0 {
        return None;
    }
    let (_, hi, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
    let hi = *hi;
    if n % 2 == 1 {
        return Some(hi);
    }
    // The lower middle is the largest of the lower half.
    let lo = v[..n / 2]
        .iter()
        .copied()
        .max_by(f64::total_cmp)
        .unwrap_or(hi);
    Some(mid(lo, hi))
}

/// The mean of two middle values, as pandas computes it.
pub(crate) fn mid(lo: f64, hi: f64) -> f64 {
    (lo + hi) / 2.0
}

/// Quantile `q` with linear interpolation (pandas' default); `None` if empty. Sorts `v`.
pub(crate) fn quantile(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let frac = pos - lo as f64;
    Some(v[lo] + (v[hi] - v[lo]) * frac)
}

/// Sample standard deviation (`ddof = 1`), two-pass; `None` for fewer than two values.
pub(crate) fn std(v: &[f64]) -> Option<f64> {
    if v.len() < 2 {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let ss: f64 = v.iter().map(|x| (x - mean) * (x - mean)).sum();
    Some((ss / (n - 1.0)).sqrt())
}

/// Number of distinct values (by bits, `-0.0` and `0.0` equal).
pub(crate) fn n_unique(v: &[f64]) -> usize {
    let mut seen = std::collections::HashSet::new();
    for &x in v {
        seen.insert(if x == 0.0 { 0 } else { x.to_bits() });
    }
    seen.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_count_is_the_mean_of_the_middles() {
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut [5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&mut [7.0]), Some(7.0));
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [1.0, 1.0, 2.0, 9.0]), Some(1.5));
    }

    #[test]
    fn quantile_interpolates_like_pandas() {
        let mut v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&mut v, 0.5), Some(2.5));
        assert_eq!(quantile(&mut v, 0.0), Some(1.0));
        assert_eq!(quantile(&mut v, 1.0), Some(4.0));
        assert_eq!(quantile(&mut v, 0.25), Some(1.75));
    }

    #[test]
    fn std_and_distinct_counts() {
        let s = std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert!((s - 2.138_089_935_299_395).abs() < 1e-12, "{s}");
        assert_eq!(std(&[1.0]), None);
        assert_eq!(n_unique(&[1.0, 1.0, -0.0, 0.0, 2.0]), 3);
    }
}
