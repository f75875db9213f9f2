//! Calendar parts of timestamps in seconds since the Unix epoch (UTC, proleptic Gregorian).
//!
//! ```
//! use farmem_kernels::expr::calendar;
//! assert_eq!(calendar::hour(3_600 * 25 + 5), 1);
//! assert_eq!(calendar::weekday(0), 4); // 1970-01-01 was a Thursday
//! assert_eq!(calendar::month(1_456_790_399), 2); // 2016-02-29 23:59:59
//! assert_eq!(calendar::year(1_456_790_399), 2016);
//! assert_eq!(calendar::day(1_456_790_399), 29);
//! ```

const DAY: i64 = 86_400;

/// Hour of day 0..=23.
pub fn hour(t: i64) -> i64 {
    t.rem_euclid(DAY) / 3600
}

/// Minute of the hour 0..=59.
pub fn minute(t: i64) -> i64 {
    t.rem_euclid(3600) / 60
}

/// Day of week, 1 = Monday ..= 7 = Sunday.
pub fn weekday(t: i64) -> i64 {
    // 1970-01-01 was a Thursday (4).
    (t.div_euclid(DAY) + 3).rem_euclid(7) + 1
}

/// `(year, month 1..=12, day 1..=31)` (the days-from-civil algorithm, valid for every `i64`).
pub fn civil(t: i64) -> (i64, i64, i64) {
    let z = t.div_euclid(DAY) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Month 1..=12.
pub fn month(t: i64) -> i64 {
    let z = t.div_euclid(DAY) + 719_468;
    let doe = z - z.div_euclid(146_097) * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    if mp < 10 { mp + 3 } else { mp - 9 }
}

/// Year.
pub fn year(t: i64) -> i64 {
    civil(t).0
}

/// Day of month 1..=31.
pub fn day(t: i64) -> i64 {
    civil(t).2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_functions_match_known_dates() {
        // 2016-01-01 00:00:00 was a Friday.
        let t = 1_451_606_400;
        assert_eq!((hour(t), weekday(t), month(t)), (0, 5, 1));
        assert_eq!(civil(t), (2016, 1, 1));
        assert_eq!(civil(t - 1), (2015, 12, 31));
        assert_eq!(month(t - 1), 12);
        assert_eq!(weekday(-1), 3);
        assert_eq!(hour(-1), 23);
        assert_eq!(minute(-1), 59);
        assert_eq!(civil(-1), (1969, 12, 31));
        // 2000-02-29 12:00:00 and 2100-03-01.
        assert_eq!(civil(951_825_600), (2000, 2, 29));
        assert_eq!(month(4_107_542_400), 3);
        // The extremes do not overflow.
        for t in [i64::MIN, i64::MAX] {
            let (y, m, d) = civil(t);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d) && y != 0);
            assert_eq!(month(t), m);
        }
    }
}
