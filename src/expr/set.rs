//! The constant list of `x in [...]`, compiled into lookups: short strings (up to 7 bytes, most
//! category and tier names) packed into sorted integers, longer ones sorted by length then bytes,
//! a sorted list for numbers, flags for `true`, `false` and `null`. A binary search over a few
//! dozen integers beats hashing the needle for the lists rules hold. Membership means "some element `==`
//! x", with `==`'s rules (numbers within the tolerance, a number and a numeric string alike,
//! strings exactly), so the lookups keep those rules rather than plain hashing.

use serde_json::Value;

use super::eval::{EQUALITY_TOLERANCE, Val, json_number, values_equal, with_text};

/// A list literal, compiled for membership tests.
#[derive(Debug, Clone, Default)]
pub struct ConstSet {
    /// String elements of up to [`PACKED_LEN`] bytes, [`packed`] and sorted.
    short_strings: Vec<u64>,
    /// Longer string elements, sorted by length then bytes.
    long_strings: Vec<Box<str>>,
    /// Number elements, sorted: what a numeric string equals.
    numbers: Vec<f64>,
    /// Number elements and numeric string elements, sorted: what a number equals.
    numbers_and_numeric_strings: Vec<f64>,
    has_true: bool,
    has_false: bool,
    has_null: bool,
    /// Array and object elements, compared one by one (rare in rules).
    composites: Vec<Value>,
}

impl ConstSet {
    /// Compiles the elements of a list literal.
    pub fn new(items: &[Value]) -> ConstSet {
        let mut set = ConstSet::default();
        for item in items {
            match item {
                Value::String(s) => {
                    if let Some(n) = json_number(s) {
                        set.numbers_and_numeric_strings.push(n);
                    }
                    match packed(s) {
                        Some(key) => set.short_strings.push(key),
                        None => set.long_strings.push(s.as_str().into()),
                    }
                }
                Value::Number(n) => {
                    let n = n.as_f64().unwrap_or(f64::NAN);
                    set.numbers.push(n);
                    set.numbers_and_numeric_strings.push(n);
                }
                Value::Bool(true) => set.has_true = true,
                Value::Bool(false) => set.has_false = true,
                Value::Null => set.has_null = true,
                Value::Array(_) | Value::Object(_) => set.composites.push(item.clone()),
            }
        }
        set.short_strings.sort_unstable();
        set.short_strings.dedup();
        set.long_strings.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.as_bytes().cmp(b.as_bytes())));
        set.long_strings.dedup();
        set.numbers.sort_by(f64::total_cmp);
        set.numbers_and_numeric_strings.sort_by(f64::total_cmp);
        set
    }

    /// True when the list holds exactly this string.
    fn has_string(&self, s: &str) -> bool {
        match packed(s) {
            Some(key) => self.short_strings.binary_search(&key).is_ok(),
            None => {
                let first = self.long_strings.partition_point(|item| item.len() < s.len());
                self.long_strings[first..]
                    .iter()
                    .take_while(|item| item.len() == s.len())
                    .any(|item| item.as_bytes() == s.as_bytes())
            }
        }
    }

    /// True when some element `==` the value.
    pub fn contains(&self, value: Val<'_>) -> bool {
        match value {
            Val::Str(_) | Val::Folded(..) => with_text(value, |s| {
                self.has_string(s)
                    || (!self.numbers.is_empty() && json_number(s).is_some_and(|n| near(&self.numbers, n)))
            })
            .unwrap_or(false),
            Val::Num(n) => near(&self.numbers_and_numeric_strings, n),
            Val::Bool(b) => {
                if b {
                    self.has_true
                } else {
                    self.has_false
                }
            }
            Val::Null => self.has_null,
            Val::Array(_) | Val::Object(_) => {
                self.composites.iter().any(|item| values_equal(Val::from_json(item), value))
            }
        }
    }
}

/// Longest string packed into an integer.
const PACKED_LEN: usize = 7;

/// A string of up to [`PACKED_LEN`] bytes as one integer: its bytes, and its length in the top
/// byte (so `"a"` and `"a\0"` differ).
fn packed(s: &str) -> Option<u64> {
    let bytes = s.as_bytes();
    let len = u8::try_from(bytes.len()).ok().filter(|&n| usize::from(n) <= PACKED_LEN)?;
    let mut key = [0u8; 8];
    key[..bytes.len()].copy_from_slice(bytes);
    key[7] = len;
    Some(u64::from_le_bytes(key))
}

/// True when a sorted list holds a number `==` to `n` (within [`EQUALITY_TOLERANCE`]).
fn near(sorted: &[f64], n: f64) -> bool {
    let first = sorted.partition_point(|&x| x < n - EQUALITY_TOLERANCE);
    // The neighbours too: `n - tolerance` itself rounds.
    sorted[first.saturating_sub(1)..].iter().take(3).any(|&x| x == n || (x - n).abs() < EQUALITY_TOLERANCE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(items: Value) -> ConstSet {
        ConstSet::new(items.as_array().map_or(&[][..], Vec::as_slice))
    }

    #[test]
    fn membership_follows_equality() {
        let s = set(json!(["food", "12", 3, 0.3, true, null, [1, "a"]]));
        assert!(s.contains(Val::Str("food")));
        assert!(!s.contains(Val::Str("Food")));
        assert!(s.contains(Val::Num(12.0)), "a number equals a numeric string element");
        assert!(!s.contains(Val::Str("12.0")), "strings compare exactly with strings");
        assert!(s.contains(Val::Str("3.0")), "a numeric string equals a number element");
        assert!(s.contains(Val::Num(0.1 + 0.2)), "within the tolerance");
        assert!(s.contains(Val::Bool(true)));
        assert!(!s.contains(Val::Bool(false)));
        assert!(s.contains(Val::Null));
        let composite = json!([1, "a"]);
        assert!(s.contains(Val::from_json(&composite)));
        assert!(!set(json!([])).contains(Val::Str("x")));
    }

    #[test]
    fn short_and_long_strings() {
        let s = set(json!(["", "a", "a\u{0}", "seven77", "eight888", "a much longer category name"]));
        for found in ["", "a", "a\0", "seven77", "eight888", "a much longer category name"] {
            assert!(s.contains(Val::Str(found)), "{found:?}");
        }
        for missing in ["b", "a\0\0", "seven7", "eight88", "a much longer category namf"] {
            assert!(!s.contains(Val::Str(missing)), "{missing:?}");
        }
    }

    #[test]
    fn numbers_at_the_edges_of_the_list() {
        let s = set(json!([-5, 1, 1e9]));
        for n in [-5.0, 1.0, 1e9, 1.0 + 1e-12] {
            assert!(s.contains(Val::Num(n)), "{n}");
        }
        for n in [-6.0, 0.0, 2.0, 1e10] {
            assert!(!s.contains(Val::Num(n)), "{n}");
        }
    }
}
