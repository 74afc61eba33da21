//! Kubernetes resource quantities (`"500m"`, `"2"`, `"1.5Gi"`, `"64Mi"`, `"1e3"`).
//!
//! Parsed exactly into integer **nano-units** (`1` → 1_000_000_000), the finest unit the
//! quantity format names (`n`), so sums of container quantities are exact. Conversions to
//! millicores and bytes round **up**, like `Quantity.MilliValue()` / `Quantity.Value()` in
//! `k8s.io/apimachinery`, which is what the scheduler and the kubelet use.

/// An exact, non-negative amount in nano-units.
pub type Nanos = i128;

const NANO: i128 = 1_000_000_000;

/// Why a quantity string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "failed to parse quantity {0:?}: not a Kubernetes quantity (e.g. 500m, 2, 1.5Gi, 64Mi)"
    )]
    Syntax(String),
    #[error("failed to use quantity {0:?}: negative resource amounts are not valid")]
    Negative(String),
    #[error("failed to use quantity {0:?}: too large")]
    Overflow(String),
}

/// Parses a quantity into nano-units (rounded up below one nano-unit).
pub fn parse(input: &str) -> Result<Nanos, QuantityError> {
    let s = input.trim();
    let syntax = || QuantityError::Syntax(input.to_owned());
    let overflow = || QuantityError::Overflow(input.to_owned());

    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let num_len = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(num_len);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(syntax());
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));

    // mantissa × 10^exp10 × 2^exp2
    let mut mantissa: i128 = 0;
    for c in int_part.chars().chain(frac_part.chars()) {
        let d = i128::from(c.to_digit(10).ok_or_else(syntax)? as u8);
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(d))
            .ok_or_else(overflow)?;
    }
    let frac_len = i32::try_from(frac_part.len()).map_err(|_| overflow())?;
    let (mut exp10, exp2): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        other => {
            // Decimal exponent: e3, E-2 (a lone "E" is exa, handled above).
            let exp = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))
                .ok_or_else(syntax)?;
            let parsed: i32 = exp.parse().map_err(|_| syntax())?;
            if !(-40..=40).contains(&parsed) {
                return Err(overflow());
            }
            (parsed, 0)
        }
    };
    exp10 -= frac_len;
    if negative && mantissa != 0 {
        return Err(QuantityError::Negative(input.to_owned()));
    }

    // value in nanos = mantissa × 2^exp2 × 10^(exp10 + 9), rounded up.
    let scaled = mantissa
        .checked_mul(1i128.checked_shl(exp2).ok_or_else(overflow)?)
        .ok_or_else(overflow)?;
    let e = exp10 + 9;
    if e >= 0 {
        let p = 10i128.checked_pow(e.unsigned_abs()).ok_or_else(overflow)?;
        scaled.checked_mul(p).ok_or_else(overflow)
    } else {
        match 10i128.checked_pow(e.unsigned_abs()) {
            Some(p) => Ok(div_ceil(scaled, p)),
            // Divisor beyond i128: any non-zero value is below one nano-unit.
            None => Ok(i128::from(scaled > 0)),
        }
    }
}

fn div_ceil(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b != 0 { q + 1 } else { q }
}

/// Nano-units to milli-units, rounded up (`Quantity.MilliValue()`).
pub fn to_milli_ceil(n: Nanos) -> u64 {
    u64::try_from(div_ceil(n.max(0), 1_000_000)).unwrap_or(u64::MAX)
}

/// Nano-units to whole units, rounded up (`Quantity.Value()`).
pub fn to_units_ceil(n: Nanos) -> u64 {
    u64::try_from(div_ceil(n.max(0), NANO)).unwrap_or(u64::MAX)
}

/// Nano-units to a float (for fractional counts such as GPU slices).
pub fn to_f64(n: Nanos) -> f64 {
    // Exact for every realistic count; GPU counts are small integers or simple fractions.
    #[allow(
        clippy::cast_precision_loss,
        reason = "counts far below 2^53 nano-units"
    )]
    let v = n as f64 / NANO as f64;
    v
}

/// One whole unit in nano-units.
pub const ONE: Nanos = NANO;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_seen_in_the_field() {
        assert_eq!(parse("500m").map(to_milli_ceil), Ok(500));
        assert_eq!(parse("2").map(to_milli_ceil), Ok(2000));
        assert_eq!(parse("0.5").map(to_milli_ceil), Ok(500));
        assert_eq!(parse("1.5").map(to_milli_ceil), Ok(1500));
        assert_eq!(
            parse("100u").map(to_milli_ceil),
            Ok(1),
            "rounds up like MilliValue"
        );
        assert_eq!(parse("250000000n").map(to_milli_ceil), Ok(250));
        assert_eq!(parse("64Mi").map(to_units_ceil), Ok(64 * 1024 * 1024));
        assert_eq!(parse("1.5Gi").map(to_units_ceil), Ok(1_610_612_736));
        assert_eq!(parse("4G").map(to_units_ceil), Ok(4_000_000_000));
        assert_eq!(parse("1e3").map(to_units_ceil), Ok(1000));
        assert_eq!(parse("1E3").map(to_units_ceil), Ok(1000));
        assert_eq!(
            parse("2E").map(to_units_ceil),
            Ok(2_000_000_000_000_000_000)
        );
        assert_eq!(parse("12e-1").map(to_milli_ceil), Ok(1200));
        assert_eq!(parse("128974848").map(to_units_ceil), Ok(128_974_848));
        assert_eq!(parse("129e6").map(to_units_ceil), Ok(129_000_000));
        assert_eq!(parse("123Mi").map(to_units_ceil), Ok(128_974_848));
        assert_eq!(parse("0").map(to_units_ceil), Ok(0));
        assert_eq!(parse("1").map(to_f64), Ok(1.0));
    }

    #[test]
    fn rejects_garbage_and_negatives() {
        for bad in ["", "m", "1.2.3", "abc", "1Qi", "5 m", "1e", "--1", "1e999"] {
            assert!(parse(bad).is_err(), "{bad:?} must be rejected");
        }
        assert_eq!(parse("-1"), Err(QuantityError::Negative("-1".to_owned())));
    }
}
