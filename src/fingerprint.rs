//! One 64-bit fingerprint of any hashable value, for "has this changed since I last looked?"
//! (watch filters, report digests, cache keys). Stable within a process, which is all its users
//! compare it across: never store one or send it to another process.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash};

/// The fingerprint of `value`: equal values give equal fingerprints.
pub fn fingerprint(value: &impl Hash) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_agree_and_different_values_differ() {
        assert_eq!(fingerprint(&("a", 1)), fingerprint(&("a", 1)));
        assert_ne!(fingerprint(&("a", 1)), fingerprint(&("a", 2)));
        assert_ne!(fingerprint(&"ab"), fingerprint(&"ba"));
    }
}
