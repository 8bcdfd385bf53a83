//! Durations written as `"30s"`, `"5m"`, `"1h 30m"` in the TOML file.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A `std::time::Duration` that reads and writes the human form (`"90s"`, `"5m"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    pub const fn millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }
    pub fn get(self) -> Duration {
        self.0
    }
    /// Whole seconds, as the policy and the actuator count time (`i64::MAX` past it).
    pub fn whole_secs(self) -> i64 {
        i64::try_from(self.0.as_secs()).unwrap_or(i64::MAX)
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0.as_secs_f64()
    }
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0s");
        }
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurVisitor)
    }
}

/// Reads a duration's text; a bare number gets the fix in its own value (`10` → `"10s"`).
struct DurVisitor;

impl DurVisitor {
    fn bare<E: serde::de::Error>(n: impl fmt::Display) -> E {
        E::custom(format!(
            "a duration is text with its unit: write \"{n}s\" (seconds) or \"{n}m\" \
             (minutes), not {n}"
        ))
    }
}

impl serde::de::Visitor<'_> for DurVisitor {
    type Value = Dur;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration with its unit, like \"30s\" or \"5m\"")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dur, E> {
        parse_duration(v).map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Dur, E> {
        Err(Self::bare(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Dur, E> {
        Err(Self::bare(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Dur, E> {
        Err(Self::bare(v))
    }
}

/// Parses `"30s"`, `"5m"`, `"1h 30m"`, `"250ms"`. A bare number is refused: the unit must be said.
pub fn parse_duration(text: &str) -> Result<Dur, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration: write it with a unit, like \"30s\" or \"5m\"".into());
    }
    if t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "duration {text:?} has no unit: write \"{t}s\" for seconds or \"{t}m\" for minutes"
        ));
    }
    humantime::parse_duration(t).map(Dur).map_err(|e| {
        format!("invalid duration {text:?}: {e} (examples: \"30s\", \"5m\", \"1h 30m\")")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operator_forms() {
        assert_eq!(parse_duration("30s").unwrap(), Dur::secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Dur::secs(300));
        assert_eq!(parse_duration("1h 30m").unwrap(), Dur::secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Dur::millis(250));
    }

    #[test]
    fn refuses_bare_numbers_and_garbage() {
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn displays_round_trip() {
        for s in ["30s", "5m", "1h 30m", "0s"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&d.to_string()).unwrap(), d);
        }
    }
}
