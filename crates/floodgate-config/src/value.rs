//! Typed scalar values written as text in the config: durations (`250ms`, `5s`, `1h30m`),
//! byte sizes (`16KiB`, `10MB`, `512`), rates (`100/s`, `5000/min`) and percentages (`25%`).
//! Each parses once at load time with a message that says what was expected.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserialize, Deserializer, Visitor};

macro_rules! text_value {
    ($ty:ident, $name:literal, $expecting:literal, $pattern:literal, $accept_int:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$ty, E> {
                        s.parse().map_err(E::custom)
                    }
                    fn visit_i64<E: de::Error>(self, n: i64) -> Result<$ty, E> {
                        let accept: Option<fn(i64) -> Result<$ty, String>> = $accept_int;
                        match accept {
                            Some(f) => f(n).map_err(E::custom),
                            None => Err(E::custom(format!("expected {}, found the number {n} without a unit", $expecting))),
                        }
                    }
                    fn visit_u64<E: de::Error>(self, n: u64) -> Result<$ty, E> {
                        self.visit_i64(i64::try_from(n).unwrap_or(i64::MAX))
                    }
                }
                d.deserialize_any(V)
            }
        }
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "string", "pattern": $pattern, "description": $expecting })
            }
        }
    };
}

/// A span of time, at millisecond resolution or finer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

text_value!(
    Duration,
    "Duration",
    "a duration such as 250ms, 5s, 2m, 1h or 1h30m (units: us, ms, s, m, h, d)",
    r"^([0-9]+(\.[0-9]+)?(us|ms|s|m|h|d))+$",
    None
);

impl FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid duration {s:?}: expected a number with a unit, such as 250ms, 5s, 2m, 1h or 1h30m (units: us, ms, s, m, h, d)"
            )
        };
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total = 0f64;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            if num_len == 0 {
                return Err(bad());
            }
            let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let secs = match &rest[..unit_len] {
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" | "min" => 60.0,
                "h" => 3600.0,
                "d" => 86400.0,
                _ => return Err(bad()),
            };
            total += n * secs;
            rest = &rest[unit_len..];
        }
        if !total.is_finite() || total > 10.0 * 365.0 * 86400.0 {
            return Err(format!("invalid duration {s:?}: longer than ten years"));
        }
        Ok(Duration(std::time::Duration::from_secs_f64(total)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) && ms > 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

/// A number of bytes; a bare number means bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

text_value!(
    ByteSize,
    "ByteSize",
    "a size such as 512, 16KiB, 10MiB or 1GB (units: B, KB, MB, GB, KiB, MiB, GiB)",
    r"^[0-9]+(\.[0-9]+)? ?([KMG]i?B|B)?$",
    Some(|n: i64| u64::try_from(n)
        .map(ByteSize)
        .map_err(|_| format!("invalid size {n}: must not be negative")))
);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid size {s:?}: expected a number of bytes with an optional unit, such as 512, 16KiB, 10MiB or 1GB"
            )
        };
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let n: f64 = t[..split].parse().map_err(|_| bad())?;
        let mult = match t[split..].trim() {
            "" | "B" => 1u64,
            "KB" | "kB" => 1000,
            "MB" => 1000 * 1000,
            "GB" => 1000 * 1000 * 1000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => return Err(bad()),
        };
        let bytes = n * mult as f64;
        if !bytes.is_finite() || bytes > u64::MAX as f64 / 2.0 {
            return Err(bad());
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that divides the size exactly: `8KiB`, `5MiB`, `1000B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// A number of events per period, such as `100/s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// How many events.
    pub count: u64,
    /// Per how long.
    pub per: std::time::Duration,
}

text_value!(
    Rate,
    "Rate",
    "a rate such as 100/s, 5000/min, 20/5s or 1000/h (units: s, sec, second, seconds, m, min, minute, minutes, h, hr, hour, hours, d, day, days; or a duration)",
    r"^[0-9]+ ?/ ?([0-9]+(\.[0-9]+)?(us|ms|s|m|h|d))*(s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?)?$",
    None
);

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid rate {s:?}: expected a count per period, such as 100/s, 5000/min, 20/5s \
                 or 1000/h (a unit: s, sec, second(s), m, min, minute(s), h, hr, hour(s), d, \
                 day(s); or a duration such as 5s or 1h30m)"
            )
        };
        let (count, per) = s.split_once('/').ok_or_else(bad)?;
        let count: u64 = count.trim().parse().map_err(|_| bad())?;
        let per = per.trim();
        let per = match per {
            "s" | "sec" | "secs" | "second" | "seconds" => std::time::Duration::from_secs(1),
            "m" | "min" | "mins" | "minute" | "minutes" => std::time::Duration::from_secs(60),
            "h" | "hr" | "hrs" | "hour" | "hours" => std::time::Duration::from_secs(3600),
            "d" | "day" | "days" => std::time::Duration::from_secs(86400),
            other => other.parse::<Duration>().map_err(|_| bad())?.0,
        };
        if per.is_zero() {
            return Err(bad());
        }
        Ok(Rate { count, per })
    }
}

/// A share between 0% and 100%, stored as a fraction.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Percent(pub f64);

text_value!(
    Percent,
    "Percent",
    "a percentage from 0% to 100%, such as 25% or 0.5%",
    r"^[0-9]+(\.[0-9]+)?%$",
    None
);

impl FromStr for Percent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid percentage {s:?}: expected a number from 0 to 100 followed by %, such as 25%"
            )
        };
        let n: f64 = s
            .trim()
            .strip_suffix('%')
            .ok_or_else(bad)?
            .trim()
            .parse()
            .map_err(|_| bad())?;
        if !(0.0..=100.0).contains(&n) {
            return Err(bad());
        }
        Ok(Percent(n / 100.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as Std;

    #[test]
    fn durations() {
        assert_eq!(
            "250ms".parse::<Duration>(),
            Ok(Duration(Std::from_millis(250)))
        );
        assert_eq!(
            "1h30m".parse::<Duration>(),
            Ok(Duration(Std::from_secs(5400)))
        );
        assert_eq!(
            "1.5s".parse::<Duration>(),
            Ok(Duration(Std::from_millis(1500)))
        );
        for bad in ["", "5", "s", "5x", "-1s", "1s2"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!("16KiB".parse::<ByteSize>(), Ok(ByteSize(16384)));
        assert_eq!("10MB".parse::<ByteSize>(), Ok(ByteSize(10_000_000)));
        assert_eq!("512".parse::<ByteSize>(), Ok(ByteSize(512)));
        assert!("10 potatoes".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(5 << 20).to_string(), "5MiB");
        assert_eq!(ByteSize(32 * 1024).to_string(), "32KiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
        assert_eq!(ByteSize(0).to_string(), "0B");
    }

    #[test]
    fn rates_and_percentages() {
        assert_eq!(
            "100/s".parse::<Rate>(),
            Ok(Rate {
                count: 100,
                per: Std::from_secs(1)
            })
        );
        assert_eq!(
            "20/5s".parse::<Rate>(),
            Ok(Rate {
                count: 20,
                per: Std::from_secs(5)
            })
        );
        for (text, secs) in [
            ("2/sec", 1),
            ("2/seconds", 1),
            ("2/ minute", 60),
            ("2/mins", 60),
            ("2/hrs", 3600),
            ("2/days", 86400),
            ("2/1h30m", 5400),
        ] {
            assert_eq!(
                text.parse::<Rate>().map(|r| r.per),
                Ok(Std::from_secs(secs)),
                "{text}"
            );
        }
        assert!("2/fortnight".parse::<Rate>().is_err());
        assert!("100".parse::<Rate>().is_err());
        assert!("5/0s".parse::<Rate>().is_err());
        assert_eq!("25%".parse::<Percent>(), Ok(Percent(0.25)));
        assert!("101%".parse::<Percent>().is_err());
        assert!("0.3".parse::<Percent>().is_err());
    }

    proptest::proptest! {
        /// Any text: no panic in any value parser.
        #[test]
        fn any_text_parses_or_is_refused(text in "[ -~]{0,30}") {
            let _ = text.parse::<Duration>();
            let _ = text.parse::<ByteSize>();
            let _ = text.parse::<Rate>();
            let _ = text.parse::<Percent>();
        }

        /// What the renderers write reads back as the same value.
        #[test]
        fn rendered_values_read_back(ms in 1u64..1_000_000_000, bytes in 0u64..(1u64 << 50)) {
            let d = Duration(Std::from_millis(ms));
            proptest::prop_assert_eq!(d.to_string().parse::<Duration>(), Ok(d));
            let b = ByteSize(bytes);
            proptest::prop_assert_eq!(b.to_string().parse::<ByteSize>(), Ok(b));
        }

        /// Rates built from their parts read back as those parts.
        #[test]
        fn rates_read_back(count in 1u64..1_000_000, secs in 1u64..100_000) {
            let r: Rate = format!("{count}/{secs}s").parse().unwrap();
            proptest::prop_assert_eq!((r.count, r.per), (count, Std::from_secs(secs)));
        }
    }
}
