//! Unix milliseconds → RFC 3339 in UTC (the guest has no time library; pure arithmetic).

/// `2026-01-01T00:00:15Z`, or `2026-01-01T00:00:15.250Z` when the milliseconds are not 0;
/// `None` outside the years 0000–9999, which RFC 3339 cannot write.
pub fn from_unix_ms(ms: i64) -> Option<String> {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return None;
    }
    let (h, mi, s) = (of_day / 3600, of_day % 3600 / 60, of_day % 60);
    let frac = if milli == 0 {
        String::new()
    } else {
        format!(".{milli:03}")
    };
    Some(format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}Z"))
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
