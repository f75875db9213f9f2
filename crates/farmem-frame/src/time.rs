//! Timestamps: `YYYY-MM-DD HH:MM:SS` strings to and from seconds since the Unix epoch (UTC).
//!
//! Civil-date arithmetic after the well-known days-from-civil algorithm, no time zones.

/// Parses `YYYY-MM-DD HH:MM:SS` (or `YYYY-MM-DDTHH:MM:SS`, or a bare `YYYY-MM-DD`).
///
/// ```
/// assert_eq!(farmem_frame::time::parse_timestamp("1970-01-02 00:00:01"), Some(86_401));
/// assert_eq!(farmem_frame::time::parse_timestamp("2016-13-01 00:00:00"), None);
/// ```
pub fn parse_timestamp(s: &str) -> Option<i64> {
    parse_timestamp_bytes(s.as_bytes())
}

/// [`parse_timestamp`] of bytes.
pub(crate) fn parse_timestamp_bytes(b: &[u8]) -> Option<i64> {
    if b.len() != 10 && b.len() != 19 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let mut v = 0i64;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    };
    if b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    let (mut hh, mut mm, mut ss) = (0, 0, 0);
    if b.len() == 19 {
        if (b[10] != b' ' && b[10] != b'T') || b[13] != b':' || b[16] != b':' {
            return None;
        }
        (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if hh > 23 || mm > 59 || ss > 60 {
            return None;
        }
    }
    Some(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Formats seconds since the epoch as `YYYY-MM-DD HH:MM:SS`.
///
/// ```
/// assert_eq!(farmem_frame::time::format_timestamp(86_401), "1970-01-02 00:00:01");
/// ```
pub fn format_timestamp(t: i64) -> String {
    let (y, m, d) = civil(t);
    let s = t.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// `(year, month 1..=12, day 1..=31)` of a timestamp.
pub fn civil(t: i64) -> (i64, i64, i64) {
    civil_from_days(t.div_euclid(86_400))
}

/// Hour of day 0..=23.
pub fn hour(t: i64) -> i64 {
    t.rem_euclid(86_400) / 3600
}

/// Days since 1970-01-01 of a civil date.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date of days since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_across_years() {
        for t in (-100_000_000i64..2_000_000_000).step_by(9_999_991) {
            assert_eq!(parse_timestamp(&format_timestamp(t)), Some(t), "{t}");
        }
        assert_eq!(parse_timestamp("2016-02-29 23:59:59"), Some(1_456_790_399));
        assert_eq!(parse_timestamp("2015-02-29 00:00:00"), None);
        assert_eq!(parse_timestamp("2016-01-01T00:00:00"), Some(1_451_606_400));
        assert_eq!(parse_timestamp("2016-01-01"), Some(1_451_606_400));
        assert_eq!(parse_timestamp("2016-01-01 24:00:00"), None);
        assert_eq!(parse_timestamp("abcd-01-01 00:00:00"), None);
    }
}
