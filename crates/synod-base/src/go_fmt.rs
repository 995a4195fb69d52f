//! The handful of Go standard-library text formats that etcdctl's output and errors are made
//! of: `time.Duration` strings, `strconv.Quote` (`%q`), `strconv.Unquote`, `ParseInt` and
//! `ParseBool` with their error texts.
//!
//! They are reimplemented rather than approximated with Rust's own formats because
//! scripts compare etcdctl's output as text: `took = 1.5ms`, not `1.5ms` vs `1.500ms`.

use std::time::Duration;

/// Formats a duration as Go's `time.Duration.String()` does: `0s`, `850ns`, `1.5µs`,
/// `3.272568ms`, `2.5s`, `1m30s`, `2h0m0s`.
pub fn format_duration(duration: Duration) -> String {
    let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000_000_000 {
        let (precision, unit) = match nanos {
            n if n < 1_000 => (0, "ns"),
            n if n < 1_000_000 => (3, "µs"),
            _ => (6, "ms"),
        };
        return format!("{}{unit}", with_fraction(nanos, precision));
    }
    let seconds = with_fraction(nanos % 60_000_000_000, 9);
    let minutes = nanos / 60_000_000_000;
    match (minutes / 60, minutes % 60) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// `value / 10^precision` with the fraction's trailing zeros (and a bare point) dropped.
fn with_fraction(value: u64, precision: u32) -> String {
    let scale = 10u64.pow(precision);
    let (whole, fraction) = (value / scale, value % scale);
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:0width$}", width = precision as usize);
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Parses a duration as Go's `time.ParseDuration` does: a sequence of decimal numbers with
/// units (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), such as `2s`, `1.5s` or `1m30s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("time: invalid duration {}", quote(text.as_bytes()));
    let body = text.strip_prefix('+').unwrap_or(text);
    if let Some(magnitude) = body.strip_prefix('-') {
        // Go accepts negative durations; as timeouts they mean "already expired".
        return if !magnitude.is_empty() && magnitude.chars().all(|c| c == '0') {
            Ok(Duration::ZERO)
        } else {
            Err(format!("negative duration {text} is not allowed"))
        };
    }
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.is_empty() {
        return Err(invalid());
    }
    let mut rest = body;
    let mut total_nanos: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit_nanos = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("time: missing unit in duration {}", quote(text.as_bytes()))),
            unit => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    quote(unit.as_bytes()),
                    quote(text.as_bytes())
                ));
            }
        };
        rest = &rest[unit_len..];
        total_nanos += value * unit_nanos;
    }
    if total_nanos > i64::MAX as f64 {
        return Err(invalid());
    }
    Ok(Duration::from_nanos(total_nanos.round() as u64))
}

/// Quotes bytes as Go's `strconv.Quote` (and so `fmt`'s `%q`) does: printable characters
/// stay, the usual escapes are used, and bytes that are not UTF-8 become `\xNN`.
pub fn quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\u{7}' => out.push_str("\\a"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{b}' => out.push_str("\\v"),
                c if is_go_printable(c) => out.push(c),
                c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
                c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push_str(&format!("\\U{:08x}", c as u32)),
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out.push('"');
    out
}

/// Go's `unicode.IsPrint`, approximated without Unicode tables: graphic characters and the
/// ASCII space are printable; controls, other spaces, separators, surrogates and
/// non-characters are not.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(c as u32, 0xad | 0x200b..=0x200f | 0x2028..=0x202e | 0x2060..=0x206f | 0xfeff | 0xfff9..=0xfffb)
        && (c as u32) & 0xfffe != 0xfffe
        && !matches!(c as u32, 0xe000..=0xf8ff | 0xf0000..=0x10ffff)
}

/// Unquotes a Go double-quoted or back-quoted string literal (`strconv.Unquote`). Escapes
/// such as `\x00` can produce bytes that are not UTF-8, so the result is bytes.
pub fn unquote(literal: &[u8]) -> Result<Vec<u8>, String> {
    let invalid = || "invalid syntax".to_string();
    if literal.len() < 2 {
        return Err(invalid());
    }
    let (open, close) = (literal[0], literal[literal.len() - 1]);
    let body = &literal[1..literal.len() - 1];
    if open == b'`' && close == b'`' {
        if body.contains(&b'`') {
            return Err(invalid());
        }
        return Ok(body.iter().copied().filter(|&b| b != b'\r').collect());
    }
    if open != b'"' || close != b'"' || body.contains(&b'\n') {
        return Err(invalid());
    }
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let byte = body[i];
        if byte == b'"' {
            return Err(invalid());
        }
        if byte != b'\\' {
            out.push(byte);
            i += 1;
            continue;
        }
        let escape = *body.get(i + 1).ok_or_else(invalid)?;
        i += 2;
        let simple = match escape {
            b'a' => Some(7),
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(11),
            b'\\' => Some(b'\\'),
            b'"' => Some(b'"'),
            _ => None,
        };
        if let Some(value) = simple {
            out.push(value);
            continue;
        }
        match escape {
            b'x' => {
                let hex = body.get(i..i + 2).ok_or_else(invalid)?;
                let text = std::str::from_utf8(hex).map_err(|_| invalid())?;
                out.push(u8::from_str_radix(text, 16).map_err(|_| invalid())?);
                i += 2;
            }
            b'0'..=b'7' => {
                let octal = body.get(i - 1..i + 2).ok_or_else(invalid)?;
                let text = std::str::from_utf8(octal).map_err(|_| invalid())?;
                let value = u32::from_str_radix(text, 8).map_err(|_| invalid())?;
                out.push(u8::try_from(value).map_err(|_| invalid())?);
                i += 2;
            }
            b'u' | b'U' => {
                let width = if escape == b'u' { 4 } else { 8 };
                let hex = body.get(i..i + width).ok_or_else(invalid)?;
                let text = std::str::from_utf8(hex).map_err(|_| invalid())?;
                let code = u32::from_str_radix(text, 16).map_err(|_| invalid())?;
                let c = char::from_u32(code).ok_or_else(invalid)?;
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                i += width;
            }
            _ => return Err(invalid()),
        }
    }
    Ok(out)
}

/// Go's `strconv.ParseInt(text, base, 64)` for base 10 or 16, with its error text.
pub fn parse_int(text: &str, base: u32) -> Result<i64, String> {
    // Rust accepts a lone sign and a few other forms Go rejects only via the digit check.
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    let well_formed = !digits.is_empty() && digits.chars().all(|c| c.is_digit(base));
    let reason = match i64::from_str_radix(text, base) {
        Ok(value) if well_formed => return Ok(value),
        Err(e)
            if well_formed
                && matches!(
                    e.kind(),
                    std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow
                ) =>
        {
            "value out of range"
        }
        _ => "invalid syntax",
    };
    Err(format!("strconv.ParseInt: parsing {}: {reason}", quote(text.as_bytes())))
}

/// Go's `strconv.ParseBool`, which pflag uses for `--flag=value` on boolean flags.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("strconv.ParseBool: parsing {}: invalid syntax", quote(text.as_bytes()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations print as Go prints them, including the micro sign and dropped zeros.
    #[test]
    fn durations_print_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(850), "850ns"),
            (Duration::from_nanos(1_500), "1.5µs"),
            (Duration::from_nanos(3_272_568), "3.272568ms"),
            (Duration::from_millis(2), "2ms"),
            (Duration::from_millis(2_500), "2.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(7200), "2h0m0s"),
            (Duration::from_nanos(3_723_000_000_001), "1h2m3.000000001s"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_duration(duration), text);
        }
    }

    /// Go's duration syntax parses, and the errors name the input.
    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("10").unwrap_err(), "time: missing unit in duration \"10\"");
        assert_eq!(parse_duration("3x").unwrap_err(), "time: unknown unit \"x\" in duration \"3x\"");
        assert_eq!(parse_duration("").unwrap_err(), "time: invalid duration \"\"");
    }

    /// `%q` escapes what Go escapes and keeps printable Unicode.
    #[test]
    fn quote_matches_go() {
        assert_eq!(quote(b"foo"), r#""foo""#);
        assert_eq!(quote(b"a\"b\\c\n\t\x00\x7f"), r#""a\"b\\c\n\t\x00\x7f""#);
        assert_eq!(quote("héllo ✓".as_bytes()), "\"héllo ✓\"");
        assert_eq!(quote(b"\xff\xfe"), r#""\xff\xfe""#);
        assert_eq!(quote("\u{2028}".as_bytes()), r#""\u2028""#);
    }

    /// Go string literals unquote, including escapes that make raw bytes.
    #[test]
    fn unquote_matches_go() {
        assert_eq!(unquote(br#""foo bar""#).unwrap(), b"foo bar");
        assert_eq!(unquote(br#""a\"b\n\x41\101\u00e9""#).unwrap(), "a\"b\nAAé".as_bytes());
        assert_eq!(unquote(br#""\xff""#).unwrap(), b"\xff");
        assert_eq!(unquote(b"`raw\\n`").unwrap(), b"raw\\n");
        assert!(unquote(br#""unterminated"#).is_err());
        assert!(unquote(br#""bad \q""#).is_err());
        assert!(unquote(br#""inner " quote""#).is_err());
    }

    /// Integer parsing accepts what Go accepts and words errors as Go does.
    #[test]
    fn parse_int_matches_go() {
        assert_eq!(parse_int("42", 10), Ok(42));
        assert_eq!(parse_int("-7", 10), Ok(-7));
        assert_eq!(parse_int("ff", 16), Ok(255));
        assert_eq!(parse_int("abc", 10).unwrap_err(), r#"strconv.ParseInt: parsing "abc": invalid syntax"#);
        assert_eq!(parse_int("", 16).unwrap_err(), r#"strconv.ParseInt: parsing "": invalid syntax"#);
        assert_eq!(parse_int("-", 10).unwrap_err(), r#"strconv.ParseInt: parsing "-": invalid syntax"#);
        assert_eq!(parse_int("0x10", 16).unwrap_err(), r#"strconv.ParseInt: parsing "0x10": invalid syntax"#);
        assert_eq!(
            parse_int("99999999999999999999", 10).unwrap_err(),
            r#"strconv.ParseInt: parsing "99999999999999999999": value out of range"#
        );
    }
}
