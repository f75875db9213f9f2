//! Parsing CSV fields from bytes without allocating: integers, and decimals by the exact fast
//! path (a mantissa below 2^53 divided by a power of ten up to 10^22 is one correctly rounded
//! IEEE division, so the result equals the standard library's), other numbers by `str::parse`.

/// Powers of ten exactly representable as `f64`.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

fn sign(b: &[u8]) -> (bool, &[u8]) {
    match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    }
}

/// A decimal integer (optional sign), as `str::parse::<i64>` reads it.
pub(crate) fn parse_i64(b: &[u8]) -> Option<i64> {
    let (neg, d) = sign(b);
    if d.is_empty() || d.len() > 18 {
        return std::str::from_utf8(b).ok()?.parse().ok();
    }
    let mut v = 0i64;
    for &c in d {
        let x = c.wrapping_sub(b'0');
        if x > 9 {
            return None;
        }
        v = v * 10 + i64::from(x);
    }
    Some(if neg { -v } else { v })
}

/// A float, as `str::parse::<f64>` reads it.
pub(crate) fn parse_f64(b: &[u8]) -> Option<f64> {
    fast_f64(b).or_else(|| std::str::from_utf8(b).ok()?.parse().ok())
}

/// `[sign] digits [. digits]` with at most 19 digits, a mantissa up to 2^53 and at most 22
/// decimals; `None` for anything else.
fn fast_f64(b: &[u8]) -> Option<f64> {
    let (neg, d) = sign(b);
    // At most 19 digits (and a dot): the mantissa cannot overflow a `u64`.
    if d.len() > 20 || (d.len() == 20 && !d.contains(&b'.')) {
        return None;
    }
    let (mut mant, mut i) = (0u64, 0);
    while let Some(&c) = d.get(i) {
        let x = c.wrapping_sub(b'0');
        if x > 9 {
            break;
        }
        mant = mant * 10 + u64::from(x);
        i += 1;
    }
    let mut decimals = 0;
    if let Some(&c) = d.get(i) {
        if c != b'.' {
            return None;
        }
        for &c in &d[i + 1..] {
            let x = c.wrapping_sub(b'0');
            if x > 9 {
                return None;
            }
            mant = mant * 10 + u64::from(x);
        }
        decimals = d.len() - i - 1;
    }
    let digits = d.len() - usize::from(d.len() > i);
    if digits == 0 || mant > 1 << 53 {
        return None;
    }
    let v = mant as f64 / *POW10.get(decimals)?;
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_as_the_standard_library_does() {
        let cases = [
            "0",
            "-0",
            "+7",
            "12",
            "-73.98765432098765",
            "40.7",
            "0.1",
            "2.50",
            "5.",
            ".5",
            "-.5",
            "1e5",
            "1.5E-3",
            "inf",
            "NaN",
            "123456789012345678901",
            "0.30000000000000004",
            "9007199254740993",
            "-9223372036854775808",
            "9223372036854775807",
            "1..2",
            "-",
            "",
            "1-2",
            " 1",
            "٣",
        ];
        for c in cases {
            let want: Option<f64> = c.parse().ok();
            let got = parse_f64(c.as_bytes());
            assert_eq!(got.map(f64::to_bits), want.map(f64::to_bits), "f64 {c:?}");
            let want: Option<i64> = c.parse().ok();
            assert_eq!(parse_i64(c.as_bytes()), want, "i64 {c:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn decimals_match_the_standard_library(m in 0u64..(1 << 54), k in 0usize..25, neg: bool) {
            let digits = m.to_string();
            let s = if k < digits.len() {
                format!("{}{}.{}", if neg { "-" } else { "" }, &digits[..digits.len() - k], &digits[digits.len() - k..])
            } else {
                format!("{}0.{}{}", if neg { "-" } else { "" }, "0".repeat(k - digits.len()), digits)
            };
            let want: f64 = s.parse().unwrap();
            proptest::prop_assert_eq!(parse_f64(s.as_bytes()).map(f64::to_bits), Some(want.to_bits()), "{}", s);
        }
    }
}
