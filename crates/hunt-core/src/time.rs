//! Instants and durations as the engine sees them.
//!
//! Time is an input to the engine, never read from a clock here: a [`Timestamp`]
//! is milliseconds since the Unix epoch, parsed from and printed as RFC 3339.

use std::fmt;

/// A point in time, in milliseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

/// A length of time in milliseconds, written in hunts files as `90s`, `5m`, `1h30m`, `2d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub i64);

impl Timestamp {
    /// Parses an RFC 3339 date-time such as `2026-11-27T10:00:00Z`.
    pub fn parse(text: &str) -> Result<Timestamp, String> {
        chrono::DateTime::parse_from_rfc3339(text.trim())
            .map(|t| Timestamp(t.timestamp_millis()))
            .map_err(|e| {
                format!("`{text}` is not an RFC 3339 time ({e}); write e.g. 2026-11-27T10:00:00Z")
            })
    }

    /// The time `d` later.
    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.0))
    }

    /// The time as a chrono value, for CEL and printing.
    pub fn to_chrono(self) -> chrono::DateTime<chrono::FixedOffset> {
        chrono::DateTime::from_timestamp_millis(self.0)
            .unwrap_or_default()
            .fixed_offset()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.to_chrono();
        if self.0 % 1000 == 0 {
            write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%SZ"))
        } else {
            write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%S%.3fZ"))
        }
    }
}

/// In JSON, an RFC 3339 date-time (as it is serialized there).
impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "An RFC 3339 date-time, e.g. 2026-11-27T10:00:00Z.",
            "type": "string",
            "format": "date-time"
        })
    }
}

/// RFC 3339 text in human-readable formats (JSON, YAML); milliseconds as an integer in
/// binary ones (postcard snapshots), which is smaller and needs no parsing.
impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_i64(self.0)
        }
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            Timestamp::parse(&text).map_err(serde::de::Error::custom)
        } else {
            i64::deserialize(d).map(Timestamp)
        }
    }
}

/// The longest duration a hunts file may write: 10 years, far beyond any hunt.
const DURATION_MS_MAX: i64 = 10 * 366 * 24 * 3600 * 1000;

impl Duration {
    pub const fn from_secs(s: i64) -> Duration {
        Duration(s * 1000)
    }

    /// Parses `500ms`, `90s`, `5m`, `1h30m`, `2d` (units: ms, s, m, h, d; at least one).
    pub fn parse(text: &str) -> Result<Duration, String> {
        let hint =
            "write a number followed by a unit (ms, s, m, h, d), e.g. `90s`, `5m` or `1h30m`";
        let t = text.trim();
        if t.is_empty() {
            return Err(format!("empty duration; {hint}"));
        }
        let bytes = t.as_bytes();
        let mut i = 0;
        let mut total: i64 = 0;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if start == i {
                return Err(format!(
                    "`{text}` is not a duration: expected a number at `{}`; {hint}",
                    &t[start..]
                ));
            }
            let n: i64 = t[start..i]
                .parse()
                .map_err(|_| format!("`{text}` is too large a duration"))?;
            let ustart = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            let unit_ms = match &t[ustart..i] {
                "ms" => 1,
                "s" => 1000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "" => return Err(format!("`{text}` is missing a unit after `{n}`; {hint}")),
                u => return Err(format!("`{text}` has an unknown unit `{u}`; {hint}")),
            };
            total = n
                .checked_mul(unit_ms)
                .and_then(|x| total.checked_add(x))
                .filter(|x| *x <= DURATION_MS_MAX)
                .ok_or_else(|| format!("`{text}` is longer than the 10-year limit"))?;
        }
        Ok(Duration(total))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0;
        if ms == 0 {
            return write!(f, "0s");
        }
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1000),
            ("ms", 1),
        ] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(Duration::parse("90s"), Ok(Duration(90_000)));
        assert_eq!(Duration::parse("1h30m"), Ok(Duration(5_400_000)));
        assert_eq!(Duration::parse("2d"), Ok(Duration(172_800_000)));
        assert_eq!(Duration::parse("250ms"), Ok(Duration(250)));
        assert_eq!(Duration(5_400_000).to_string(), "1h30m");
        for bad in [
            "",
            "5",
            "m",
            "5x",
            "1h 30m",
            "-5m",
            "99999999999999999999d",
            "4000d",
        ] {
            assert!(Duration::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn timestamps_round_trip() {
        let t = Timestamp::parse("2026-11-27T10:00:00Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-27T10:00:00Z");
        let t2 = Timestamp::parse("2026-11-27T11:00:00.250+01:00").unwrap();
        assert_eq!(t2.0 - t.0, 250);
        assert!(Timestamp::parse("27/11/2026").is_err());
    }
}
