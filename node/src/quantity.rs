//! Resource quantities as the API server writes them (canonical form of
//! `k8s.io/apimachinery/pkg/api/resource.Quantity`), and read back for
//! comparison: the server re-canonicalises what it is sent, so a status is
//! compared by value, not by spelling, or it would look changed on every
//! sync.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

const BINARY_SUFFIXES: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

/// A byte count in the canonical binary-SI form (`24684092Ki`, `2Mi`,
/// `0`); below 1024 and when not a multiple of 1024, plain digits, as the
/// kubelet's allocatable ephemeral storage `257025515114`.
pub fn binary_si(bytes: u64) -> Quantity {
    let mut value = bytes;
    let mut suffix = "";
    if bytes >= 1024 {
        for next in BINARY_SUFFIXES {
            if value % 1024 != 0 {
                break;
            }
            value /= 1024;
            suffix = next;
        }
    }
    Quantity(format!("{value}{suffix}"))
}

/// A plain count (`cpu: "4"`, `pods: "110"`).
pub fn count(n: u64) -> Quantity {
    Quantity(n.to_string())
}

/// The value of a quantity in thousandths (`100m` → 100, `1Ki` → 1 024 000),
/// `None` for what is not a quantity or out of range. Enough of the grammar
/// for what servers write for node resources: a decimal number, then a
/// binary or decimal SI suffix or a decimal exponent.
pub fn milli_value(quantity: &Quantity) -> Option<i128> {
    let text = quantity.0.trim();
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    // Value × 1000 × 10^digits of the fraction, scaled back at the end.
    let digits: String = [whole, fraction].concat();
    let mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let scale_down = u32::try_from(fraction.len()).ok()?;
    let (multiplier, exponent10): (i128, i32) = match suffix {
        "" => (1, 0),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        e if e.starts_with(['e', 'E']) => (1, e[1..].parse().ok()?),
        _ => return None,
    };
    // Thousandths: exponent + 3, less the fraction's digits.
    let exponent = exponent10
        .checked_add(3)?
        .checked_sub(i32::try_from(scale_down).ok()?)?;
    let mut value = mantissa.checked_mul(multiplier)?;
    if exponent >= 0 {
        value = value.checked_mul(10i128.checked_pow(u32::try_from(exponent).ok()?)?)?;
    } else {
        // Below a thousandth: rounded up, as Quantity.MilliValue does.
        let divisor = 10i128.checked_pow(u32::try_from(-exponent).ok()?)?;
        value = (value + divisor - 1) / divisor;
    }
    Some(if negative { -value } else { value })
}

/// Whether two quantities have the same value (the same spelling when
/// either is not a quantity).
pub fn same(a: &Quantity, b: &Quantity) -> bool {
    match (milli_value(a), milli_value(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a.0 == b.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.to_owned())
    }

    #[test]
    fn canonical_binary_forms_as_recorded() {
        // The recorded K3s node's capacity and allocatable.
        assert_eq!(binary_si(24_684_092 * 1024).0, "24684092Ki");
        assert_eq!(binary_si(264_212_084 * 1024).0, "264212084Ki");
        assert_eq!(binary_si(257_025_515_114).0, "257025515114");
        assert_eq!(binary_si(0).0, "0");
        assert_eq!(binary_si(1000).0, "1000");
        assert_eq!(binary_si(1024).0, "1Ki");
        assert_eq!(binary_si(2 << 20).0, "2Mi");
        assert_eq!(binary_si(1 << 30).0, "1Gi");
        assert_eq!(binary_si(3 << 60).0, "3Ei");
        assert_eq!(binary_si(1 << 62).0, "4Ei");
        assert_eq!(count(110).0, "110");
    }

    #[test]
    fn values_of_what_servers_write() {
        assert_eq!(milli_value(&q("4")), Some(4000));
        assert_eq!(milli_value(&q("100m")), Some(100));
        assert_eq!(milli_value(&q("1Ki")), Some(1_024_000));
        assert_eq!(milli_value(&q("257025515k")), Some(257_025_515_000_000));
        assert_eq!(milli_value(&q("1.5Gi")), Some(1_610_612_736_000));
        assert_eq!(milli_value(&q("1e3")), Some(1_000_000));
        assert_eq!(milli_value(&q("-2")), Some(-2000));
        assert_eq!(milli_value(&q("1n")), Some(1));
        for bad in [
            "",
            "Ki",
            "x",
            "1Xi",
            "1..2",
            ".",
            "1e",
            "99999999999999999999999999999999999999999999Ei",
        ] {
            assert_eq!(milli_value(&q(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn same_value_other_spelling() {
        assert!(same(&q("257025515000"), &q("257025515k")));
        assert!(same(&q("1024Ki"), &q("1Mi")));
        assert!(!same(&q("1Mi"), &q("1M")));
        assert!(same(&q("weird"), &q("weird")));
        assert!(!same(&q("weird"), &q("1")));
    }
}
