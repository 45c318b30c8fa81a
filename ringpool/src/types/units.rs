//! Byte sizes: parsing `4G`-style arguments and printing `4 GiB`.

use std::fmt;

/// A byte count that prints in binary units (`512 KiB`, `1.5 GiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        let mut unit = 0;
        let mut v = self.0;
        while unit + 1 < UNITS.len() && v >= 1024 && v.is_multiple_of(1024) {
            v /= 1024;
            unit += 1;
        }
        if v < 1024 || unit + 1 == UNITS.len() {
            return write!(f, "{} {}", v, UNITS[unit]);
        }
        // Not an exact multiple: one decimal of the largest unit that fits.
        let mut x = v as f64;
        while unit + 1 < UNITS.len() && x >= 1024.0 {
            x /= 1024.0;
            unit += 1;
        }
        write!(f, "{:.1} {}", x, UNITS[unit])
    }
}

/// Parses a size such as `4096`, `512K`, `64M`, `4G`, `1T`, `2GiB` or `1.5G`
/// (binary units; case-insensitive; an optional `B`/`iB` suffix).
///
/// # Errors
/// A message naming the input when it is empty, has an unknown unit, or
/// overflows 64 bits.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let stripped = lower.strip_suffix("ib").or_else(|| lower.strip_suffix('b')).unwrap_or(&lower);
    let (num, mult) = match stripped.chars().last() {
        Some('k') => (&stripped[..stripped.len() - 1], 1u64 << 10),
        Some('m') => (&stripped[..stripped.len() - 1], 1 << 20),
        Some('g') => (&stripped[..stripped.len() - 1], 1 << 30),
        Some('t') => (&stripped[..stripped.len() - 1], 1 << 40),
        Some(c) if c.is_ascii_digit() || c == '.' => (stripped, 1),
        _ => return Err(format!("invalid size {s:?}: expected a number with an optional unit K, M, G or T")),
    };
    let num = num.trim();
    if num.is_empty() {
        return Err(format!("invalid size {s:?}: no number"));
    }
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(|| format!("size {s:?} does not fit in 64 bits"));
    }
    match num.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => {
            let v = x * mult as f64;
            if v > u64::MAX as f64 {
                return Err(format!("size {s:?} does not fit in 64 bits"));
            }
            Ok(v.round() as u64)
        }
        _ => Err(format!("invalid size {s:?}: {num:?} is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_units() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size(" 1T ").unwrap(), 1 << 40);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in ["", "G", "abc", "4X", "-1G", "99999999999999999999T", "1e400G"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn prints_binary_units() {
        assert_eq!(Bytes(0).to_string(), "0 B");
        assert_eq!(Bytes(512 << 10).to_string(), "512 KiB");
        assert_eq!(Bytes(64 << 20).to_string(), "64 MiB");
        assert_eq!(Bytes(3 << 29).to_string(), "1.5 GiB");
        assert_eq!(Bytes(4 << 30).to_string(), "4 GiB");
        assert_eq!(Bytes(1000).to_string(), "1000 B");
        assert_eq!(Bytes(u64::MAX / 2).to_string(), "8.0 EiB");
        assert_eq!(Bytes(u64::MAX).to_string(), "16.0 EiB");
    }
}
