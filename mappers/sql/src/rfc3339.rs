//! Timestamps as the SQL source writes them → RFC 3339 in UTC (the guest has no time
//! library; pure arithmetic).
//!
//! Accepted: `YYYY-MM-DD`, then `T`, `t` or a space, `HH:MM:SS`, an optional fraction
//! (`.` and digits), and an optional offset: `Z`, `z`, `±HH`, `±HHMM`, `±HH:MM` or
//! `±HH:MM:SS` (PostgreSQL's text form of old zones); no offset means UTC (a `timestamp
//! without time zone`, which the source reads as UTC). That covers `to_jsonb` of a
//! `timestamptz` (`2026-01-01T00:00:10.5+00:00`) and of a `timestamp`
//! (`2026-01-01T00:00:10`), and a timestamp selected as text (`2026-01-01 00:00:10+00`).
//! `infinity`, BC dates and years past 9999 are not timestamps RFC 3339 can write.

/// The instant as `2026-01-01T00:00:10Z` (UTC), the fraction kept without trailing zeros
/// (`.5`, none when `.000`), so two spellings of one instant give one text; `None` when
/// `text` is not a timestamp of the forms above.
pub fn to_utc(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let s = b.get(from..from + len)?;
        s.iter()
            .all(u8::is_ascii_digit)
            .then(|| s.iter().fold(0i64, |n, d| n * 10 + i64::from(*d - b'0')))
    };
    let at = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt ") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (y, m, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hh, mm, ss) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    let mut i = 19;
    let mut frac = "";
    if at(i, b".") {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        frac = text[i + 1..i + 1 + digits].trim_end_matches('0');
        i += 1 + digits;
    }
    let offset = offset_seconds(&text[i..])?;
    let secs = days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss - offset;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    if !(0..=9999).contains(&y) {
        return None;
    }
    let of_day = secs.rem_euclid(86_400);
    let (hh, mm, ss) = (of_day / 3600, of_day % 3600 / 60, of_day % 60);
    let dot = if frac.is_empty() { "" } else { "." };
    Some(format!(
        "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}{dot}{frac}Z"
    ))
}

/// The offset east of UTC in seconds: none (UTC), `Z`, `±HH`, `±HHMM`, `±HH:MM`, `±HH:MM:SS`.
fn offset_seconds(zone: &str) -> Option<i64> {
    let sign = match zone.as_bytes().first() {
        None => return Some(0),
        Some(b'Z' | b'z') if zone.len() == 1 => return Some(0),
        Some(b'+') => 1,
        Some(b'-') => -1,
        Some(_) => return None,
    };
    let mut parts = [0i64; 3];
    let mut rest = &zone[1..];
    for (n, part) in parts.iter_mut().enumerate() {
        if rest.is_empty() && n > 0 {
            break;
        }
        if n > 0 {
            rest = rest.strip_prefix(':').unwrap_or(rest);
        }
        let two = rest.get(..2)?;
        if !two.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        *part = two.parse().ok()?;
        rest = &rest[2..];
    }
    let [h, m, s] = parts;
    (rest.is_empty() && h <= 23 && m <= 59 && s <= 59).then_some(sign * (h * 3600 + m * 60 + s))
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
