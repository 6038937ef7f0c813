//! UTC timestamps with nanosecond precision, written and read as RFC 3339.
//!
//! CRI log lines and Kubernetes statuses carry times such as
//! `2021-07-15T19:28:47.123456789Z`. The calendar arithmetic is done here by hand
//! (Howard Hinnant's `days_from_civil` / `civil_from_days`) rather than with a
//! date crate: it is a few lines, and the firmware is size-sensitive.
//!
//! A [`Timestamp`] always lies in the years 0000 to 9999, the only years RFC 3339
//! can write (four-digit year). Keeping that as an invariant of the type means
//! formatting can never fail or panic, whatever value it is given.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

const NANOS_PER_SEC: u32 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;
/// Seconds from the Unix epoch to 0000-01-01T00:00:00Z (proleptic Gregorian).
const MIN_UNIX_SECS: i64 = -62_167_219_200;
/// Seconds from the Unix epoch to 9999-12-31T23:59:59Z.
const MAX_UNIX_SECS: i64 = 253_402_300_799;
/// How much of a rejected input an error message repeats: a malformed log line
/// can be kilobytes long, and the message only needs enough to recognise it.
const ERROR_INPUT_CHARS: usize = 64;

/// Why a time could not be built, converted or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// The text is not an RFC 3339 date-time this module accepts.
    #[error("invalid RFC 3339 timestamp {input:?}: {reason}")]
    Invalid {
        /// The rejected text (its first 64 characters).
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The calendar fields do not name a real instant (e.g. February 30).
    #[error("invalid date-time: {0}")]
    InvalidDateTime(&'static str),
    /// The instant lies outside the years 0000 to 9999.
    #[error(
        "time is outside 0000-01-01T00:00:00Z..=9999-12-31T23:59:59.999999999Z, \
         the range RFC 3339 can write"
    )]
    OutOfRange,
    /// A sub-second part of a billion nanoseconds or more.
    #[error("nanoseconds {0} out of range (must be below 1000000000)")]
    InvalidNanos(u32),
}

/// A calendar date and time of day in UTC, as the fields of a [`Timestamp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UtcDateTime {
    /// Year, 0 to 9999.
    pub year: u16,
    /// Month, 1 to 12.
    pub month: u8,
    /// Day of the month, 1 to 31.
    pub day: u8,
    /// Hour, 0 to 23.
    pub hour: u8,
    /// Minute, 0 to 59.
    pub minute: u8,
    /// Second, 0 to 59 (leap seconds are not represented, as in Unix time).
    pub second: u8,
    /// Nanoseconds within the second, below 1 000 000 000.
    pub nanosecond: u32,
}

/// A point in time in UTC: seconds since the Unix epoch plus nanoseconds.
///
/// Ordered chronologically. Always within the years 0000 to 9999 (see the module
/// documentation). Serialized with serde as its RFC 3339 text with nine
/// fractional digits, the form CRI logs and Kubernetes `metav1.Time` readers take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    // Field order matters: the derived ordering compares seconds first.
    secs: i64,
    nanos: u32,
}

impl Timestamp {
    /// 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Timestamp = Timestamp { secs: 0, nanos: 0 };
    /// The earliest representable instant, 0000-01-01T00:00:00Z.
    pub const MIN: Timestamp = Timestamp {
        secs: MIN_UNIX_SECS,
        nanos: 0,
    };
    /// The latest representable instant, 9999-12-31T23:59:59.999999999Z.
    pub const MAX: Timestamp = Timestamp {
        secs: MAX_UNIX_SECS,
        nanos: NANOS_PER_SEC - 1,
    };

    /// The instant `secs` seconds and `nanos` nanoseconds after the Unix epoch
    /// (`secs` negative for earlier instants; `nanos` always counts forward).
    pub fn from_unix(secs: i64, nanos: u32) -> Result<Self, TimeError> {
        if nanos >= NANOS_PER_SEC {
            return Err(TimeError::InvalidNanos(nanos));
        }
        if !(MIN_UNIX_SECS..=MAX_UNIX_SECS).contains(&secs) {
            return Err(TimeError::OutOfRange);
        }
        Ok(Timestamp { secs, nanos })
    }

    /// Whole seconds since the Unix epoch (floor: negative before 1970).
    pub fn unix_seconds(&self) -> i64 {
        self.secs
    }

    /// Nanoseconds past [`Self::unix_seconds`], below 1 000 000 000.
    pub fn subsec_nanos(&self) -> u32 {
        self.nanos
    }

    /// The current time from the system clock.
    ///
    /// A clock set outside the years 0000 to 9999 (not something a real clock
    /// does) is clamped to [`Self::MIN`] or [`Self::MAX`]: log writers call this
    /// for every record and must not fail on it.
    pub fn now() -> Self {
        match Self::from_system_time(SystemTime::now()) {
            Ok(t) => t,
            Err(_) => {
                if SystemTime::now() < SystemTime::UNIX_EPOCH {
                    Self::MIN
                } else {
                    Self::MAX
                }
            }
        }
    }

    /// Converts a [`SystemTime`], including times before 1970.
    pub fn from_system_time(time: SystemTime) -> Result<Self, TimeError> {
        match time.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(after) => {
                let secs = i64::try_from(after.as_secs()).map_err(|_| TimeError::OutOfRange)?;
                Self::from_unix(secs, after.subsec_nanos())
            }
            Err(before) => {
                // `before` is the positive distance back from the epoch; turn it
                // into a floored second plus a forward nanosecond count.
                let back = before.duration();
                let secs = i64::try_from(back.as_secs()).map_err(|_| TimeError::OutOfRange)?;
                if back.subsec_nanos() == 0 {
                    Self::from_unix(-secs, 0)
                } else {
                    let secs = secs.checked_add(1).ok_or(TimeError::OutOfRange)?;
                    Self::from_unix(-secs, NANOS_PER_SEC - back.subsec_nanos())
                }
            }
        }
    }

    /// The same instant as a [`SystemTime`].
    ///
    /// `None` only where `SystemTime` cannot hold the years 0000 to 9999 (not the
    /// case on Linux, whose `SystemTime` counts seconds in 64 bits even on
    /// 32-bit ARM); the checked arithmetic keeps this free of panics anyway.
    pub fn to_system_time(&self) -> Option<SystemTime> {
        if self.secs >= 0 {
            let since = Duration::new(self.secs.unsigned_abs(), self.nanos);
            SystemTime::UNIX_EPOCH.checked_add(since)
        } else {
            SystemTime::UNIX_EPOCH
                .checked_sub(Duration::from_secs(self.secs.unsigned_abs()))?
                .checked_add(Duration::from_nanos(u64::from(self.nanos)))
        }
    }

    /// The calendar fields of this instant in UTC.
    pub fn to_utc(&self) -> UtcDateTime {
        let days = self.secs.div_euclid(SECS_PER_DAY);
        let second_of_day = self.secs.rem_euclid(SECS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        // The type's range invariant keeps every field within its target type;
        // the fallbacks are unreachable but keep this free of panics.
        UtcDateTime {
            year: u16::try_from(year).unwrap_or(0),
            month: u8::try_from(month).unwrap_or(1),
            day: u8::try_from(day).unwrap_or(1),
            hour: u8::try_from(second_of_day / 3600).unwrap_or(0),
            minute: u8::try_from(second_of_day % 3600 / 60).unwrap_or(0),
            second: u8::try_from(second_of_day % 60).unwrap_or(0),
            nanosecond: self.nanos,
        }
    }

    /// The instant named by UTC calendar fields, checking each field.
    pub fn from_utc(dt: &UtcDateTime) -> Result<Self, TimeError> {
        from_fields(dt, 0).map_err(|e| match e {
            FieldError::Invalid(reason) => TimeError::InvalidDateTime(reason),
            FieldError::OutOfRange => TimeError::OutOfRange,
        })
    }

    /// RFC 3339 in UTC with exactly nine fractional digits and `Z`, e.g.
    /// `2021-07-15T19:28:47.123456789Z`: the fixed width the CRI log format
    /// uses, so that log lines sort and align as text.
    pub fn format_rfc3339_nano(&self) -> String {
        let d = self.to_utc();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
            d.year, d.month, d.day, d.hour, d.minute, d.second, d.nanosecond
        )
    }

    /// Parses an RFC 3339 date-time: `YYYY-MM-DDTHH:MM:SS`, an optional fraction
    /// of 1 to 9 digits, then `Z` or a `+hh:mm`/`-hh:mm` offset.
    ///
    /// Accepts what Kubernetes writers produce (Go's RFC3339 and RFC3339Nano,
    /// which drop trailing zeros of the fraction). Lower-case `t` and `z` are
    /// accepted as RFC 3339 allows. Rejected: leap seconds (`:60`, which Unix
    /// time cannot represent; Go rejects them too), more than nine fractional
    /// digits, a space instead of `T`, and anything after the offset.
    pub fn parse_rfc3339(input: &str) -> Result<Self, TimeError> {
        parse(input.as_bytes()).map_err(|e| match e {
            FieldError::Invalid(reason) => TimeError::Invalid {
                input: input.chars().take(ERROR_INPUT_CHARS).collect(),
                reason,
            },
            FieldError::OutOfRange => TimeError::OutOfRange,
        })
    }
}

impl TryFrom<SystemTime> for Timestamp {
    type Error = TimeError;

    fn try_from(time: SystemTime) -> Result<Self, TimeError> {
        Self::from_system_time(time)
    }
}

impl fmt::Display for Timestamp {
    /// Writes [`Timestamp::format_rfc3339_nano`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format_rfc3339_nano())
    }
}

impl FromStr for Timestamp {
    type Err = TimeError;

    /// Same as [`Timestamp::parse_rfc3339`].
    fn from_str(s: &str) -> Result<Self, TimeError> {
        Self::parse_rfc3339(s)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.format_rfc3339_nano())
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = Timestamp;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp string")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse_rfc3339(v).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(Visitor)
    }
}

/// A field-level failure, turned into a [`TimeError`] by the caller, which knows
/// whether there is input text to quote.
enum FieldError {
    Invalid(&'static str),
    OutOfRange,
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Hinnant's
/// algorithm: count in 400-year eras starting in March, so the leap day is last).
/// Callers keep `year` within 0..=9999, far from any overflow.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let mp = (month + 9) % 12; // March = 0 ... February = 11
    let doy = (153 * mp + 2) / 5 + day - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month, day) of a day number.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Checks calendar fields and returns the instant they name, `offset_secs`
/// (east of UTC) subtracted.
fn from_fields(dt: &UtcDateTime, offset_secs: i64) -> Result<Timestamp, FieldError> {
    let year = i64::from(dt.year);
    let month = i64::from(dt.month);
    let day = i64::from(dt.day);
    if year > 9999 {
        return Err(FieldError::Invalid("year above 9999"));
    }
    if !(1..=12).contains(&month) {
        return Err(FieldError::Invalid("month out of range"));
    }
    if !(1..=days_in_month(year, month)).contains(&day) {
        return Err(FieldError::Invalid("day out of range for the month"));
    }
    if dt.hour > 23 {
        return Err(FieldError::Invalid("hour out of range"));
    }
    if dt.minute > 59 {
        return Err(FieldError::Invalid("minute out of range"));
    }
    if dt.second > 59 {
        return Err(FieldError::Invalid(
            "second out of range (leap seconds are not supported)",
        ));
    }
    if dt.nanosecond >= NANOS_PER_SEC {
        return Err(FieldError::Invalid("nanoseconds out of range"));
    }
    let secs = days_from_civil(year, month, day) * SECS_PER_DAY
        + i64::from(dt.hour) * 3600
        + i64::from(dt.minute) * 60
        + i64::from(dt.second)
        - offset_secs;
    if !(MIN_UNIX_SECS..=MAX_UNIX_SECS).contains(&secs) {
        return Err(FieldError::OutOfRange);
    }
    Ok(Timestamp {
        secs,
        nanos: dt.nanosecond,
    })
}

/// A cursor over the input bytes; every accessor checks bounds, so no input can
/// make the parser index out of range.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn expect(&mut self, wanted: &[u8], reason: &'static str) -> Result<u8, FieldError> {
        match self.peek() {
            Some(b) if wanted.contains(&b) => {
                self.pos += 1;
                Ok(b)
            }
            _ => Err(FieldError::Invalid(reason)),
        }
    }

    /// Exactly `n` ASCII digits as a number (`n` is at most 4 here).
    fn digits(&mut self, n: usize, reason: &'static str) -> Result<u32, FieldError> {
        let mut value = 0u32;
        for _ in 0..n {
            match self.peek() {
                Some(b @ b'0'..=b'9') => {
                    value = value * 10 + u32::from(b - b'0');
                    self.pos += 1;
                }
                _ => return Err(FieldError::Invalid(reason)),
            }
        }
        Ok(value)
    }
}

/// Narrows a parsed number of at most two digits.
fn two_digits(value: u32) -> u8 {
    u8::try_from(value).unwrap_or(u8::MAX)
}

fn parse(bytes: &[u8]) -> Result<Timestamp, FieldError> {
    let mut c = Cursor { bytes, pos: 0 };
    let year = c.digits(4, "expected a four-digit year")?;
    c.expect(b"-", "expected '-' after the year")?;
    let month = c.digits(2, "expected a two-digit month")?;
    c.expect(b"-", "expected '-' after the month")?;
    let day = c.digits(2, "expected a two-digit day")?;
    c.expect(b"Tt", "expected 'T' between date and time")?;
    let hour = c.digits(2, "expected a two-digit hour")?;
    c.expect(b":", "expected ':' after the hour")?;
    let minute = c.digits(2, "expected two-digit minutes")?;
    c.expect(b":", "expected ':' after the minutes")?;
    let second = c.digits(2, "expected two-digit seconds")?;

    let mut nanosecond = 0u32;
    if c.peek() == Some(b'.') {
        c.pos += 1;
        let mut count = 0u32;
        while let Some(b @ b'0'..=b'9') = c.peek() {
            if count == 9 {
                return Err(FieldError::Invalid("more than nine fractional digits"));
            }
            nanosecond = nanosecond * 10 + u32::from(b - b'0');
            count += 1;
            c.pos += 1;
        }
        if count == 0 {
            return Err(FieldError::Invalid("expected digits after '.'"));
        }
        nanosecond *= 10u32.pow(9 - count);
    }

    let offset_secs = match c.expect(b"Zz+-", "expected 'Z' or a +hh:mm/-hh:mm offset")? {
        b'Z' | b'z' => 0,
        sign => {
            let hours = c.digits(2, "expected a two-digit offset hour")?;
            c.expect(b":", "expected ':' in the offset")?;
            let minutes = c.digits(2, "expected two-digit offset minutes")?;
            if hours > 23 || minutes > 59 {
                return Err(FieldError::Invalid("offset out of range"));
            }
            let secs = i64::from(hours) * 3600 + i64::from(minutes) * 60;
            if sign == b'-' { -secs } else { secs }
        }
    };
    if c.pos != bytes.len() {
        return Err(FieldError::Invalid("unexpected text after the time zone"));
    }

    let dt = UtcDateTime {
        year: u16::try_from(year).unwrap_or(u16::MAX),
        month: two_digits(month),
        day: two_digits(day),
        hour: two_digits(hour),
        minute: two_digits(minute),
        second: two_digits(second),
        nanosecond,
    };
    from_fields(&dt, offset_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64, nanos: u32) -> Timestamp {
        Timestamp::from_unix(secs, nanos).unwrap()
    }

    fn parse_ok(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    /// Deterministic pseudo-random numbers (SplitMix64) so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn formats_known_instants() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000000000Z"),
            (1_626_377_327, 123_456_789, "2021-07-15T19:28:47.123456789Z"),
            // Leap day.
            (1_709_210_096, 1, "2024-02-29T12:34:56.000000001Z"),
            (1_709_251_199, 999_999_999, "2024-02-29T23:59:59.999999999Z"),
            (1_709_251_200, 0, "2024-03-01T00:00:00.000000000Z"),
            // 2000 is a leap year (divisible by 400).
            (951_782_400, 0, "2000-02-29T00:00:00.000000000Z"),
            // Past the 32-bit time_t limit.
            (2_147_483_647, 0, "2038-01-19T03:14:07.000000000Z"),
            (2_147_483_648, 500, "2038-01-19T03:14:08.000000500Z"),
            (4_102_444_800, 0, "2100-01-01T00:00:00.000000000Z"),
            // Before 1970.
            (-1, 999_999_999, "1969-12-31T23:59:59.999999999Z"),
            (-86_400, 0, "1969-12-31T00:00:00.000000000Z"),
            (-2_208_988_800, 0, "1900-01-01T00:00:00.000000000Z"),
            (MIN_UNIX_SECS, 0, "0000-01-01T00:00:00.000000000Z"),
            (MAX_UNIX_SECS, 999_999_999, "9999-12-31T23:59:59.999999999Z"),
        ];
        for (secs, nanos, text) in cases {
            let t = ts(secs, nanos);
            assert_eq!(t.format_rfc3339_nano(), text, "{secs}.{nanos}");
            assert_eq!(t.to_string(), text);
            assert_eq!(parse_ok(text), t, "{text}");
        }
        assert_eq!(
            Timestamp::MIN.format_rfc3339_nano(),
            "0000-01-01T00:00:00.000000000Z"
        );
        assert_eq!(
            Timestamp::MAX.format_rfc3339_nano(),
            "9999-12-31T23:59:59.999999999Z"
        );
    }

    /// Walks every day from 1600 to 2500 with a naive calendar (increment the
    /// day, roll over months and years) and checks both conversions against it,
    /// so the arithmetic is not only checked against itself.
    #[test]
    fn day_conversion_matches_naive_calendar() {
        let (mut y, mut m, mut d) = (1600i64, 1i64, 1i64);
        let mut days = days_from_civil(1600, 1, 1);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        while y < 2500 {
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            days += 1;
            d += 1;
            if d > days_in_month(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn round_trips_many_values() {
        let mut rng = Rng(42);
        let span = (MAX_UNIX_SECS - MIN_UNIX_SECS) as u64 + 1;
        for i in 0..20_000 {
            let secs = if i % 2 == 0 {
                MIN_UNIX_SECS + rng.below(span) as i64
            } else {
                // Concentrate half of the values around today's dates.
                rng.below(5_000_000_000) as i64 - 1_000_000_000
            };
            let nanos = rng.below(u64::from(NANOS_PER_SEC)) as u32;
            let t = ts(secs, nanos);
            let text = t.format_rfc3339_nano();
            assert_eq!(text.len(), 30, "{text}");
            assert_eq!(parse_ok(&text), t);
            assert_eq!(Timestamp::from_utc(&t.to_utc()).unwrap(), t);
            assert_eq!(
                Timestamp::from_system_time(t.to_system_time().unwrap()).unwrap(),
                t
            );
        }
    }

    #[test]
    fn text_order_matches_time_order() {
        let mut rng = Rng(7);
        let mut values: Vec<Timestamp> = (0..500)
            .map(|_| {
                ts(
                    rng.below(4_000_000_000) as i64,
                    rng.below(1_000_000_000) as u32,
                )
            })
            .collect();
        let mut texts: Vec<String> = values.iter().map(Timestamp::format_rfc3339_nano).collect();
        values.sort();
        texts.sort();
        let sorted: Vec<String> = values.iter().map(Timestamp::format_rfc3339_nano).collect();
        assert_eq!(texts, sorted);
    }

    #[test]
    fn parses_variable_precision_and_offsets() {
        let base = ts(1_626_377_327, 0);
        assert_eq!(parse_ok("2021-07-15T19:28:47Z"), base);
        assert_eq!(parse_ok("2021-07-15t19:28:47z"), base);
        assert_eq!(
            parse_ok("2021-07-15T19:28:47.1Z"),
            ts(1_626_377_327, 100_000_000)
        );
        assert_eq!(
            parse_ok("2021-07-15T19:28:47.000001Z"),
            ts(1_626_377_327, 1_000)
        );
        assert_eq!(
            parse_ok("2021-07-15T19:28:47.123456789Z"),
            ts(1_626_377_327, 123_456_789)
        );
        assert_eq!(parse_ok("2021-07-15T21:28:47+02:00"), base);
        assert_eq!(
            parse_ok("2021-07-15T18:58:47.5-00:30"),
            ts(1_626_377_327, 500_000_000)
        );
        assert_eq!(parse_ok("2021-07-15T19:28:47-00:00"), base);
        // An offset can move the date across a day, month and year boundary.
        assert_eq!(
            parse_ok("2021-01-01T01:00:00+02:00"),
            parse_ok("2020-12-31T23:00:00Z")
        );
        assert_eq!(parse_ok("1969-12-31T23:59:59.5Z"), ts(-1, 500_000_000));
    }

    #[test]
    fn rejects_garbage() {
        let bad = [
            "",
            "garbage",
            "2021-07-15",
            "2021-07-15T19:28:47",
            "2021-07-15 19:28:47Z",
            "2021-07-15T19:28:47.Z",
            "2021-07-15T19:28:47.1234567890Z",
            "2021-07-15T19:28:47ZZ",
            "2021-07-15T19:28:47Z ",
            " 2021-07-15T19:28:47Z",
            "2021-7-15T19:28:47Z",
            "21-07-15T19:28:47Z",
            "2021-13-15T19:28:47Z",
            "2021-00-15T19:28:47Z",
            "2021-07-00T19:28:47Z",
            "2021-07-32T19:28:47Z",
            "2021-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
            "2021-04-31T00:00:00Z",
            "2021-07-15T24:00:00Z",
            "2021-07-15T19:60:00Z",
            "2021-07-15T23:59:60Z",
            "2021-07-15T19:28:47+2:00",
            "2021-07-15T19:28:47+0200",
            "2021-07-15T19:28:47+24:00",
            "2021-07-15T19:28:47+02:60",
            "2021-07-15T19:28:47+02:00Z",
            "+2021-07-15T19:28:47Z",
            "2021-07-15T19:28:4７Z",
            "２０２１-07-15T19:28:47Z",
            "2021-07-15T19:28:47.12345678\u{e9}Z",
        ];
        for s in bad {
            let err = Timestamp::parse_rfc3339(s).expect_err(s);
            assert!(matches!(err, TimeError::Invalid { .. }), "{s:?}: {err:?}");
        }
        // Valid syntax, but the offset moves the instant out of the years
        // 0000..=9999.
        for s in ["0000-01-01T00:30:00+01:00", "9999-12-31T23:59:59-00:01"] {
            assert_eq!(
                Timestamp::parse_rfc3339(s),
                Err(TimeError::OutOfRange),
                "{s}"
            );
        }
        // Every strict prefix of a valid timestamp is rejected.
        let good = "2021-07-15T19:28:47.123+02:00";
        for end in 0..good.len() {
            assert!(
                Timestamp::parse_rfc3339(&good[..end]).is_err(),
                "{}",
                &good[..end]
            );
        }
        // Long input is quoted only in part.
        let long = "x".repeat(10_000);
        let message = Timestamp::parse_rfc3339(&long).unwrap_err().to_string();
        assert!(message.len() < 200, "{message}");
    }

    /// Random mutations of valid text: the parser must return (Ok or Err), never
    /// panic, and whatever it accepts must format to a valid timestamp again.
    #[test]
    fn mutated_input_never_panics() {
        let mut rng = Rng(99);
        let alphabet = b"0123456789-:.TZtz+- \xff";
        for _ in 0..50_000 {
            let mut bytes = b"2024-02-29T23:59:59.999999999+23:59".to_vec();
            for _ in 0..=rng.below(3) {
                let at = rng.below(bytes.len() as u64) as usize;
                match rng.below(3) {
                    0 => bytes[at] = alphabet[rng.below(alphabet.len() as u64) as usize],
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, alphabet[rng.below(alphabet.len() as u64) as usize]),
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(t) = Timestamp::parse_rfc3339(&text) {
                assert_eq!(parse_ok(&t.format_rfc3339_nano()), t);
            }
        }
    }

    #[test]
    fn from_unix_checks_range() {
        assert_eq!(
            Timestamp::from_unix(0, 1_000_000_000),
            Err(TimeError::InvalidNanos(1_000_000_000))
        );
        assert_eq!(
            Timestamp::from_unix(MAX_UNIX_SECS + 1, 0),
            Err(TimeError::OutOfRange)
        );
        assert_eq!(
            Timestamp::from_unix(MIN_UNIX_SECS - 1, 0),
            Err(TimeError::OutOfRange)
        );
        assert_eq!(
            Timestamp::from_unix(i64::MIN, 0),
            Err(TimeError::OutOfRange)
        );
        assert_eq!(
            Timestamp::from_unix(i64::MAX, 0),
            Err(TimeError::OutOfRange)
        );
        let bad_day = UtcDateTime {
            year: 2023,
            month: 2,
            day: 29,
            hour: 0,
            minute: 0,
            second: 0,
            nanosecond: 0,
        };
        assert!(matches!(
            Timestamp::from_utc(&bad_day),
            Err(TimeError::InvalidDateTime(_))
        ));
        let too_late = UtcDateTime {
            year: 10_000,
            day: 1,
            ..bad_day
        };
        assert!(Timestamp::from_utc(&too_late).is_err());
    }

    #[test]
    fn converts_system_time() {
        let epoch = SystemTime::UNIX_EPOCH;
        let after = epoch + Duration::new(1, 500_000_000);
        assert_eq!(
            Timestamp::from_system_time(after).unwrap(),
            ts(1, 500_000_000)
        );
        let before = epoch - Duration::new(1, 250_000_000);
        assert_eq!(
            Timestamp::from_system_time(before).unwrap(),
            ts(-2, 750_000_000)
        );
        let exactly = epoch - Duration::from_secs(86_400);
        assert_eq!(Timestamp::try_from(exactly).unwrap(), ts(-86_400, 0));
        for t in [
            ts(-2, 750_000_000),
            ts(0, 0),
            ts(1_626_377_327, 123_456_789),
        ] {
            assert_eq!(
                Timestamp::from_system_time(t.to_system_time().unwrap()).unwrap(),
                t
            );
        }
        let now = Timestamp::now();
        assert!(now > parse_ok("2020-01-01T00:00:00Z"), "{now}");
        assert!(now < parse_ok("2200-01-01T00:00:00Z"), "{now}");
    }

    #[test]
    fn serde_uses_rfc3339_text() {
        let t = ts(1_626_377_327, 123_456_789);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2021-07-15T19:28:47.123456789Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        assert_eq!(
            serde_json::from_str::<Timestamp>("\"2021-07-15T21:28:47.123456789+02:00\"").unwrap(),
            t
        );
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
        assert!(serde_json::from_str::<Timestamp>("1626377327").is_err());
        assert!(serde_json::from_str::<Timestamp>("null").is_err());
        let list: Vec<Timestamp> = serde_json::from_str("[\"1970-01-01T00:00:00Z\"]").unwrap();
        assert_eq!(list, vec![Timestamp::UNIX_EPOCH]);
    }

    #[test]
    fn from_str_and_display_agree() {
        let t: Timestamp = "2038-01-19T03:14:08Z".parse().unwrap();
        assert_eq!(t.unix_seconds(), 2_147_483_648);
        assert_eq!(t.subsec_nanos(), 0);
        assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
    }
}
