//! `%START_TIME%` formats: Envoy's default (`2026-11-23T07:05:12.345Z`) and strftime-style
//! formats with Envoy's fractional-second extensions (`%f`, `%3f`, `%E3S`), always in UTC.

use std::fmt::Write;
use std::time::SystemTime;

use time::OffsetDateTime;

/// A compiled time format.
#[derive(Debug, Clone)]
pub struct TimeFormat(Vec<Part>, bool);

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Year,
    Year2,
    Month,
    Day,
    DaySpace,
    Hour,
    Minute,
    Second,
    /// Seconds with `n` fractional digits (`%E3S`).
    SecondFrac(u8),
    /// Fractional seconds, `n` digits (`%f` = 9, `%3f` = 3).
    Frac(u8),
    Epoch,
    DayOfYear,
    WeekdayShort,
    MonthShort,
    Zone,
    ZoneName,
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl TimeFormat {
    /// Compile; an empty format is Envoy's default.
    pub fn parse(f: &str) -> TimeFormat {
        if f.is_empty() {
            let mut d = TimeFormat::parse("%Y-%m-%dT%H:%M:%E3SZ");
            d.1 = true;
            return d;
        }
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = f.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                lit.push(c);
                continue;
            }
            let mut digits = None;
            if let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                digits = Some(d as u8);
                chars.next();
            }
            let part = match (chars.next(), digits) {
                (Some('f'), d) => Part::Frac(d.unwrap_or(9)),
                (Some('E'), None) => {
                    let n = chars.next().and_then(|d| d.to_digit(10));
                    match (n, chars.next()) {
                        (Some(n), Some('S')) => Part::SecondFrac(n as u8),
                        _ => {
                            lit.push_str("%E");
                            continue;
                        }
                    }
                }
                (Some('Y'), None) => Part::Year,
                (Some('y'), None) => Part::Year2,
                (Some('m'), None) => Part::Month,
                (Some('d'), None) => Part::Day,
                (Some('e'), None) => Part::DaySpace,
                (Some('H'), None) => Part::Hour,
                (Some('M'), None) => Part::Minute,
                (Some('S'), None) => Part::Second,
                (Some('s'), None) => Part::Epoch,
                (Some('j'), None) => Part::DayOfYear,
                (Some('a'), None) => Part::WeekdayShort,
                (Some('b'), None) => Part::MonthShort,
                (Some('z'), None) => Part::Zone,
                (Some('Z'), None) => Part::ZoneName,
                (Some('T'), None) => {
                    flush(&mut lit, &mut parts);
                    parts.extend([
                        Part::Hour,
                        Part::Lit(":".into()),
                        Part::Minute,
                        Part::Lit(":".into()),
                        Part::Second,
                    ]);
                    continue;
                }
                (Some('F'), None) => {
                    flush(&mut lit, &mut parts);
                    parts.extend([
                        Part::Year,
                        Part::Lit("-".into()),
                        Part::Month,
                        Part::Lit("-".into()),
                        Part::Day,
                    ]);
                    continue;
                }
                (Some('%'), None) => {
                    lit.push('%');
                    continue;
                }
                (other, d) => {
                    lit.push('%');
                    if let Some(d) = d {
                        lit.push(char::from(b'0' + d));
                    }
                    if let Some(o) = other {
                        lit.push(o);
                    }
                    continue;
                }
            };
            flush(&mut lit, &mut parts);
            parts.push(part);
        }
        flush(&mut lit, &mut parts);
        TimeFormat(parts, false)
    }

    /// Format `t` in UTC.
    pub fn render(&self, t: SystemTime) -> String {
        let mut s = String::with_capacity(32);
        self.render_into(t, &mut s);
        s
    }

    /// Append `t`, formatted in UTC, to `out`. The default format keeps the text of the
    /// current second per thread, as Envoy does, and only adds the milliseconds.
    pub fn render_into(&self, t: SystemTime, out: &mut String) {
        thread_local! {
            static SECOND: std::cell::RefCell<(u64, String)> =
                const { std::cell::RefCell::new((u64::MAX, String::new())) };
        }
        if self.1 {
            let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            let done = SECOND.try_with(|c| {
                let mut c = c.borrow_mut();
                if c.0 != since.as_secs() {
                    let full = self.format(t);
                    // `2026-11-23T07:05:09` of `2026-11-23T07:05:09.123Z`
                    c.1 = full.get(..19).unwrap_or(&full).to_string();
                    c.0 = since.as_secs();
                }
                out.push_str(&c.1);
            });
            if done.is_ok() {
                let ms = since.subsec_millis();
                out.push('.');
                out.push(char::from(b'0' + (ms / 100) as u8));
                out.push(char::from(b'0' + (ms / 10 % 10) as u8));
                out.push(char::from(b'0' + (ms % 10) as u8));
                out.push('Z');
                return;
            }
        }
        out.push_str(&self.format(t));
    }

    fn format(&self, t: SystemTime) -> String {
        let dt = OffsetDateTime::from(t);
        let mut s = String::with_capacity(32);
        for p in &self.0 {
            let _ = match p {
                Part::Lit(l) => {
                    s.push_str(l);
                    Ok(())
                }
                Part::Year => write!(s, "{:04}", dt.year()),
                Part::Year2 => write!(s, "{:02}", dt.year().rem_euclid(100)),
                Part::Month => write!(s, "{:02}", u8::from(dt.month())),
                Part::Day => write!(s, "{:02}", dt.day()),
                Part::DaySpace => write!(s, "{:2}", dt.day()),
                Part::Hour => write!(s, "{:02}", dt.hour()),
                Part::Minute => write!(s, "{:02}", dt.minute()),
                Part::Second => write!(s, "{:02}", dt.second()),
                Part::SecondFrac(n) => {
                    let _ = write!(s, "{:02}", dt.second());
                    if *n > 0 {
                        s.push('.');
                    }
                    frac(&mut s, dt.nanosecond(), *n);
                    Ok(())
                }
                Part::Frac(n) => {
                    frac(&mut s, dt.nanosecond(), *n);
                    Ok(())
                }
                Part::Epoch => write!(s, "{}", dt.unix_timestamp()),
                Part::DayOfYear => write!(s, "{:03}", dt.ordinal()),
                Part::WeekdayShort => {
                    s.push_str(DAYS[usize::from(dt.weekday().number_days_from_monday())]);
                    Ok(())
                }
                Part::MonthShort => {
                    s.push_str(MONTHS[usize::from(u8::from(dt.month()) - 1)]);
                    Ok(())
                }
                Part::Zone => {
                    s.push_str("+0000");
                    Ok(())
                }
                Part::ZoneName => {
                    s.push_str("UTC");
                    Ok(())
                }
            };
        }
        s
    }
}

fn flush(lit: &mut String, parts: &mut Vec<Part>) {
    if !lit.is_empty() {
        parts.push(Part::Lit(std::mem::take(lit)));
    }
}

/// The first `digits` digits of the nanoseconds.
fn frac(s: &mut String, nanos: u32, digits: u8) {
    let digits = digits.min(9);
    let _ = write!(s, "{:09}", nanos);
    s.truncate(s.len() - usize::from(9 - digits));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn default_and_strftime_formats() {
        // 2026-11-23T07:05:09.123456789Z
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_795_417_509, 123_456_789);
        assert_eq!(TimeFormat::parse("").render(t), "2026-11-23T07:05:09.123Z");
        assert_eq!(
            TimeFormat::parse("%Y/%m/%d %T %z %s.%3f|%f|%1f %a %b %j %%").render(t),
            "2026/11/23 07:05:09 +0000 1795417509.123|123456789|1 Mon Nov 327 %"
        );
        assert_eq!(
            TimeFormat::parse("%E6S %F").render(t),
            "09.123456 2026-11-23"
        );
    }
}
