//! Human durations as written on the command line and in the environment (`--every`, `--timeout`,
//! `--retry-backoff`, `--older-than`).
//!
//! The grammar is deliberately strict, so that a typo is an error rather than a surprise:
//!
//! - a bare integer is a number of seconds: `90`;
//! - otherwise one or more `<integer><unit>` parts with units `d` (86 400 s), `h`, `m` and `s`, each unit
//!   at most once and in that order, with nothing between them: `90s`, `15m`, `1h30m`, `7d`, `1d12h`;
//! - whitespace around the whole value is ignored, whitespace inside it is not allowed (`2h 30m` is refused);
//! - the total must be at least one second and at most [`MAX_DURATION_SECS`] (100 years of 365 days).
//!
//! [`format_duration`] writes the same notation, so `parse_duration(&format_duration(d)) == Ok(d)` for every
//! whole-second `d` in range.

use std::time::Duration;

/// The longest duration [`parse_duration`] accepts: 100 years of 365 days, in seconds.
pub const MAX_DURATION_SECS: u64 = 100 * 365 * 86_400;

/// What every error message says is expected.
const EXPECTED: &str = "expected a number of seconds or a combination like 90s, 15m, 1h30m, 7d";

/// Why a duration was refused. Each message is one line naming the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The input was empty or only whitespace.
    #[error("invalid duration: the value is empty; {EXPECTED}")]
    Empty,
    /// The input does not follow the grammar.
    #[error("invalid duration `{}`: {reason}; {EXPECTED}", .input.escape_debug())]
    Syntax {
        /// The input, trimmed.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The input adds up to zero seconds.
    #[error("invalid duration `{}`: it must be at least one second", .0.escape_debug())]
    Zero(String),
    /// The input adds up to more than [`MAX_DURATION_SECS`].
    #[error("invalid duration `{}`: it is longer than the maximum of 100 years ({MAX_DURATION_SECS} seconds)", .0.escape_debug())]
    TooLong(String),
}

/// Parses a human duration such as `90`, `90s`, `15m`, `1h30m`, `7d` or `1d12h`; see the
/// [module documentation](self) for the exact grammar and bounds.
pub fn parse_duration(raw: &str) -> Result<Duration, DurationError> {
    let input = raw.trim();
    if input.is_empty() {
        return Err(DurationError::Empty);
    }
    let syntax = |reason: String| DurationError::Syntax {
        input: input.to_owned(),
        reason,
    };
    // Overflow of the arithmetic below and a total over the bound are the same mistake to the user.
    let too_long = || DurationError::TooLong(input.to_owned());

    if input.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = input.parse().map_err(|_| too_long())?;
        return checked_total(input, secs);
    }
    if input.starts_with('-') {
        return Err(syntax("a duration cannot be negative".to_owned()));
    }

    let mut total: u64 = 0;
    // Index in UNITS of the last unit seen; each next unit must come strictly later.
    let mut last_unit: Option<usize> = None;
    let mut rest = input;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (number, after) = rest.split_at(digits);
        let Some(unit) = after.chars().next() else {
            return Err(syntax(format!(
                "`{number}` at the end has no unit (d, h, m or s)"
            )));
        };
        if number.is_empty() {
            return Err(syntax(if UNITS.iter().any(|(u, _)| *u == unit) {
                format!("unit `{unit}` has no number before it")
            } else {
                format!("unexpected `{}`", unit.escape_debug())
            }));
        }
        let Some(index) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(syntax(format!(
                "unknown unit `{}` (use d, h, m or s)",
                unit.escape_debug()
            )));
        };
        if let Some(previous) = last_unit {
            if index == previous {
                return Err(syntax(format!("unit `{unit}` appears more than once")));
            }
            if index < previous {
                return Err(syntax(format!(
                    "unit `{unit}` comes after `{}`; write units from largest to smallest (d, h, m, s)",
                    UNITS[previous].0
                )));
            }
        }
        last_unit = Some(index);
        let value: u64 = number.parse().map_err(|_| too_long())?;
        let part = value.checked_mul(UNITS[index].1).ok_or_else(too_long)?;
        total = total.checked_add(part).ok_or_else(too_long)?;
        rest = &after[unit.len_utf8()..];
    }
    checked_total(input, total)
}

/// The units, largest first, with their length in seconds.
const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];

fn checked_total(input: &str, secs: u64) -> Result<Duration, DurationError> {
    match secs {
        0 => Err(DurationError::Zero(input.to_owned())),
        s if s > MAX_DURATION_SECS => Err(DurationError::TooLong(input.to_owned())),
        s => Ok(Duration::from_secs(s)),
    }
}

/// Writes `d` in whole seconds (sub-second parts are dropped), largest units first and zero parts omitted:
/// 90 s is `1m30s`, 3 600 s `1h`, 5 400 s `1h30m`, 604 800 s `7d`, and zero `0s`.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, len) in UNITS {
        let count = secs / len;
        if count > 0 {
            out.push_str(&count.to_string());
            out.push(unit);
            secs %= len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(raw: &str) -> u64 {
        parse_duration(raw)
            .unwrap_or_else(|e| panic!("{raw:?} should parse: {e}"))
            .as_secs()
    }

    fn error(raw: &str) -> DurationError {
        match parse_duration(raw) {
            Ok(d) => panic!("{raw:?} should be refused, got {d:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn accepts_bare_seconds_and_unit_combinations() {
        assert_eq!(secs("90"), 90);
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("15m"), 900);
        assert_eq!(secs("1h30m"), 5_400);
        assert_eq!(secs("7d"), 604_800);
        assert_eq!(secs("1d12h"), 129_600);
        assert_eq!(secs("1d2h3m4s"), 93_784);
        assert_eq!(secs("0h30m"), 1_800);
        assert_eq!(secs("  2h\t\n"), 7_200);
        assert_eq!(secs("007m"), 420);
        assert_eq!(secs("100m"), 6_000);
    }

    #[test]
    fn accepts_exactly_the_maximum() {
        assert_eq!(secs("36500d"), MAX_DURATION_SECS);
        assert_eq!(secs(&MAX_DURATION_SECS.to_string()), MAX_DURATION_SECS);
        assert_eq!(secs("36499d23h59m60s"), MAX_DURATION_SECS);
    }

    #[test]
    fn refuses_empty_and_zero() {
        assert_eq!(error(""), DurationError::Empty);
        assert_eq!(error("   "), DurationError::Empty);
        assert_eq!(error("0"), DurationError::Zero("0".into()));
        assert_eq!(error("0s"), DurationError::Zero("0s".into()));
        assert_eq!(error("0d0h0m0s"), DurationError::Zero("0d0h0m0s".into()));
    }

    #[test]
    fn refuses_bad_syntax_with_a_reason() {
        for (raw, reason) in [
            ("-5", "a duration cannot be negative"),
            ("-5m", "a duration cannot be negative"),
            ("+5", "unexpected `+`"),
            ("5x", "unknown unit `x` (use d, h, m or s)"),
            ("5M", "unknown unit `M` (use d, h, m or s)"),
            ("1w", "unknown unit `w` (use d, h, m or s)"),
            ("5ms", "unit `s` has no number before it"),
            ("h", "unit `h` has no number before it"),
            ("1h30", "`30` at the end has no unit (d, h, m or s)"),
            ("1h1h", "unit `h` appears more than once"),
            (
                "30m1h",
                "unit `h` comes after `m`; write units from largest to smallest (d, h, m, s)",
            ),
            ("2h 30m", "unexpected ` `"),
            ("1.5h", "unknown unit `.` (use d, h, m or s)"),
            ("1_000s", "unknown unit `_` (use d, h, m or s)"),
            ("٣s", "unexpected `٣`"),
            ("5s\n5s", "unexpected `\\n`"),
        ] {
            assert_eq!(
                error(raw),
                DurationError::Syntax {
                    input: raw.trim().into(),
                    reason: reason.into()
                },
                "{raw:?}"
            );
        }
    }

    #[test]
    fn refuses_values_over_the_maximum_and_overflow() {
        for raw in [
            "36501d",
            "3153600001",
            "36500d1s",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999999s",
            "213503982334601d",
            "18446744073709551615d",
            "5124095576030431h1m",
        ] {
            assert_eq!(error(raw), DurationError::TooLong(raw.into()), "{raw:?}");
        }
    }

    #[test]
    fn errors_are_one_line_naming_the_input_and_what_is_expected() {
        assert_eq!(
            error("5x").to_string(),
            "invalid duration `5x`: unknown unit `x` (use d, h, m or s); \
             expected a number of seconds or a combination like 90s, 15m, 1h30m, 7d"
        );
        assert_eq!(
            error("").to_string(),
            "invalid duration: the value is empty; \
             expected a number of seconds or a combination like 90s, 15m, 1h30m, 7d"
        );
        assert_eq!(
            error("0s").to_string(),
            "invalid duration `0s`: it must be at least one second"
        );
        assert_eq!(
            error("200y").to_string(),
            "invalid duration `200y`: unknown unit `y` (use d, h, m or s); \
             expected a number of seconds or a combination like 90s, 15m, 1h30m, 7d"
        );
        assert_eq!(
            error("40000d").to_string(),
            "invalid duration `40000d`: it is longer than the maximum of 100 years (3153600000 seconds)"
        );
        for raw in ["5s\n5s", "1h\r\n2", "\u{1b}[31m"] {
            assert!(
                !error(raw).to_string().contains(['\n', '\r', '\u{1b}']),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn formats_largest_units_first_and_omits_zero_parts() {
        for (secs, text) in [
            (0, "0s"),
            (1, "1s"),
            (59, "59s"),
            (60, "1m"),
            (90, "1m30s"),
            (3_600, "1h"),
            (3_601, "1h1s"),
            (5_400, "1h30m"),
            (86_400, "1d"),
            (93_784, "1d2h3m4s"),
            (604_800, "7d"),
            (MAX_DURATION_SECS, "36500d"),
        ] {
            assert_eq!(format_duration(Duration::from_secs(secs)), text);
        }
        assert_eq!(format_duration(Duration::from_millis(1_999)), "1s");
        assert_eq!(format_duration(Duration::MAX), "213503982334601d7h15s");
    }

    #[test]
    fn parse_inverts_format_over_the_whole_range() {
        let mut values: Vec<u64> = (1..=200_000).collect();
        values.extend(
            (0..40)
                .map(|shift| 1u64 << shift)
                .filter(|s| *s <= MAX_DURATION_SECS),
        );
        values.extend([MAX_DURATION_SECS - 1, MAX_DURATION_SECS]);
        // A fixed linear congruential sequence keeps the sample reproducible without a dependency.
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..200_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            values.push((state >> 11) % MAX_DURATION_SECS + 1);
        }
        for secs in values {
            let d = Duration::from_secs(secs);
            assert_eq!(
                parse_duration(&format_duration(d)),
                Ok(d),
                "{secs} s as {}",
                format_duration(d)
            );
        }
    }
}
