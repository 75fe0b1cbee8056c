//! Dates in the API's text forms, from Unix time (UTC, the proleptic Gregorian calendar).

/// `(year, month, day)` of a day counted from 1970-01-01 (Howard Hinnant's civil-from-days).
pub fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `2026-11-30` of a Unix time in seconds.
pub fn iso_date(unix_s: i64) -> String {
    let (year, month, day) = civil_date(unix_s.div_euclid(86_400));
    format!("{year:04}-{month:02}-{day:02}")
}

/// `2026-11-30T01:02:03.456Z` of a Unix time in milliseconds.
pub fn rfc3339_ms(unix_ms: i64) -> String {
    let (year, month, day) = civil_date(unix_ms.div_euclid(86_400_000));
    let ms = unix_ms.rem_euclid(86_400_000);
    let (h, m, s, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_unix_time() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_796_000_523_456), "2026-11-30T01:02:03.456Z");
        assert_eq!(iso_date(1_700_000_000), "2023-11-14");
        assert_eq!(iso_date(-1), "1969-12-31");
    }
}
