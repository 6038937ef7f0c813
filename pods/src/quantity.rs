//! Kubernetes resource quantities (`100m`, `64Mi`, `1.5`, `2e3`), exact to the
//! nano-unit as `resource.Quantity` is: anything finer rounds up, as Kubernetes
//! rounds it (`Quantity` keeps at most nano precision, rounding away from zero is
//! not used for positives: it rounds up).

use std::fmt;
use std::str::FromStr;

/// Why a quantity string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not of the form `<number><suffix>`; the message is the apimachinery one.
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}"
    )]
    Syntax(String),
    /// Too large (or too precise) to be held; Kubernetes caps quantities at
    /// 2^63-1 units as well.
    #[error("quantity {0:?} is out of range")]
    OutOfRange(String),
}

/// A parsed quantity, held as nano-units (10^-9 of the unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Quantity {
    nanos: i128,
}

/// 10^9: nano-units per unit.
const NANO: i128 = 1_000_000_000;

/// Largest magnitude accepted: i64::MAX units, in nano-units.
const MAX_NANOS: i128 = (i64::MAX as i128) * NANO;

impl Quantity {
    /// Zero.
    pub const ZERO: Quantity = Quantity { nanos: 0 };

    /// Parses a quantity string as the API server accepts it.
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        parse(input).ok_or_else(|| QuantityError::Syntax(input.to_owned()))?
    }

    /// A quantity of whole units.
    pub fn from_units(units: i64) -> Self {
        Self {
            nanos: i128::from(units) * NANO,
        }
    }

    /// A quantity of milli-units (`250m`).
    pub fn from_milli(milli: i64) -> Self {
        Self {
            nanos: i128::from(milli) * 1_000_000,
        }
    }

    /// The value in nano-units.
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// Whole units, rounded up (`Quantity.Value()`), saturating at the i64 range.
    pub fn value(&self) -> i64 {
        scaled_ceil(self.nanos, NANO)
    }

    /// Milli-units, rounded up (`Quantity.MilliValue()`), saturating.
    pub fn milli_value(&self) -> i64 {
        scaled_ceil(self.nanos, 1_000_000)
    }

    /// Whether this is zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// Whether this is strictly positive.
    pub fn is_positive(&self) -> bool {
        self.nanos > 0
    }

    /// The sum, saturating at the representable range.
    pub fn saturating_add(self, other: Quantity) -> Quantity {
        Quantity {
            nanos: self
                .nanos
                .saturating_add(other.nanos)
                .clamp(-MAX_NANOS, MAX_NANOS),
        }
    }
}

/// `ceil(nanos / per)` as an i64, saturating.
fn scaled_ceil(nanos: i128, per: i128) -> i64 {
    let q = nanos.div_euclid(per);
    let q = if nanos.rem_euclid(per) != 0 { q + 1 } else { q };
    i64::try_from(q).unwrap_or(if q > 0 { i64::MAX } else { i64::MIN })
}

impl FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&k8s_openapi::apimachinery::pkg::api::resource::Quantity> for Quantity {
    type Error = QuantityError;
    fn try_from(
        q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    ) -> Result<Self, Self::Error> {
        Self::parse(&q.0)
    }
}

impl fmt::Display for Quantity {
    /// Canonical enough for messages: whole units when exact, else milli-units,
    /// else nano-units.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos % NANO == 0 {
            write!(f, "{}", self.nanos / NANO)
        } else if self.nanos % 1_000_000 == 0 {
            write!(f, "{}m", self.nanos / 1_000_000)
        } else {
            write!(f, "{}n", self.nanos)
        }
    }
}

/// `None`: syntax error; `Some(Err)`: out of range.
fn parse(input: &str) -> Option<Result<Quantity, QuantityError>> {
    let s = input.trim();
    if s.is_empty() || s.len() > 128 {
        return None;
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let negative = match bytes[0] {
        b'-' => {
            i = 1;
            true
        }
        b'+' => {
            i = 1;
            false
        }
        _ => false,
    };
    let int_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = &s[int_start..i];
    let mut frac_digits = "";
    if i < bytes.len() && bytes[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = &s[frac_start..i];
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        return None;
    }
    let suffix = &s[i..];
    let (exp10, exp2): (i32, u32) = match suffix {
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
            let rest = other.strip_prefix(['e', 'E'])?;
            let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
            if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            (rest.parse::<i32>().ok()?, 0)
        }
    };
    let mut all_digits = String::with_capacity(int_digits.len() + frac_digits.len());
    all_digits.push_str(int_digits);
    all_digits.push_str(frac_digits);
    let significant = all_digits.trim_start_matches('0');
    let out_of_range = || Some(Err(QuantityError::OutOfRange(input.to_owned())));
    if significant.is_empty() {
        return Some(Ok(Quantity::ZERO));
    }
    if significant.len() > 36 {
        return out_of_range();
    }
    let Ok(mantissa) = significant.parse::<i128>() else {
        return out_of_range();
    };
    let frac_len = i32::try_from(frac_digits.len()).ok()?;
    // value = mantissa * 2^exp2 * 10^(exp10 - frac_len); in nanos: one more 10^9.
    let Some(scaled) = mantissa.checked_mul(1i128 << exp2) else {
        return out_of_range();
    };
    let e = exp10 - frac_len + 9;
    let magnitude = if e >= 0 {
        let Some(p) = 10i128.checked_pow(e.unsigned_abs()) else {
            return out_of_range();
        };
        match scaled.checked_mul(p) {
            Some(v) => v,
            None => return out_of_range(),
        }
    } else {
        match 10i128.checked_pow(e.unsigned_abs()) {
            Some(p) => {
                let q = scaled / p;
                // Finer than a nano-unit: round up (towards +∞), as Kubernetes does.
                if scaled % p != 0 && !negative {
                    q + 1
                } else {
                    q
                }
            }
            // Smaller than any representable fraction.
            None => i128::from(!negative),
        }
    };
    if magnitude > MAX_NANOS {
        return out_of_range();
    }
    Some(Ok(Quantity {
        nanos: if negative { -magnitude } else { magnitude },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn decimal_and_binary_suffixes_as_apimachinery_reads_them() {
        assert_eq!(q("100m").milli_value(), 100);
        assert_eq!(q("1").milli_value(), 1000);
        assert_eq!(q("1.5").milli_value(), 1500);
        assert_eq!(q("64Mi").value(), 64 << 20);
        assert_eq!(q("1Gi").value(), 1 << 30);
        assert_eq!(q("1k").value(), 1000);
        assert_eq!(q("2M").value(), 2_000_000);
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(q("1E3").value(), 1000);
        assert_eq!(q("5e-3").milli_value(), 5);
        assert_eq!(q(".5").milli_value(), 500);
        assert_eq!(q("5.").value(), 5);
        assert_eq!(q("+2").value(), 2);
        assert_eq!(q("0").value(), 0);
        assert_eq!(q("1n").nanos(), 1);
        assert_eq!(q("3u").nanos(), 3000);
        assert_eq!(q("1Ei").value(), 1 << 60);
    }

    #[test]
    fn value_rounds_up_like_quantity_value() {
        // Quantity.Value() and MilliValue() round up to the next integer.
        assert_eq!(q("100m").value(), 1);
        assert_eq!(q("1.1").value(), 2);
        assert_eq!(q("0.5m").milli_value(), 1);
        assert_eq!(q("1n").milli_value(), 1);
        // Finer than nano rounds up to one nano.
        assert_eq!(q("1e-12").nanos(), 1);
        assert_eq!(q("-1.5").value(), -1);
    }

    #[test]
    fn comparisons_are_exact_across_notations() {
        assert_eq!(q("1"), q("1000m"));
        assert_eq!(q("1Ki"), q("1024"));
        assert_eq!(q("0.1"), q("100m"));
        assert!(q("129M") > q("123Mi"));
        assert_eq!(q("1").saturating_add(q("500m")), q("1.5"));
    }

    #[test]
    fn malformed_quantities_are_errors_not_panics() {
        for bad in [
            "", " ", "abc", "1x", "1Ki2", "1.2.3", "--1", "1e", "1e+", "Mi", ".", "1 Mi", "1mi",
            "1KI", "1e99999", "١",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(matches!(
            Quantity::parse("1e30"),
            Err(QuantityError::OutOfRange(_))
        ));
        assert!(matches!(
            Quantity::parse("99999999999999999999999999999999999999999"),
            Err(QuantityError::OutOfRange(_))
        ));
        assert!(matches!(
            Quantity::parse("16Ei"),
            Err(QuantityError::OutOfRange(_))
        ));
    }

    #[test]
    fn display_is_readable() {
        assert_eq!(q("1").to_string(), "1");
        assert_eq!(q("250m").to_string(), "250m");
        assert_eq!(q("1n").to_string(), "1n");
    }
}
