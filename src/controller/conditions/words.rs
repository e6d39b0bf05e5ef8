//! How messages name nodes and problems: a few by name, the rest counted.

use std::collections::BTreeSet;

/// How many nodes, or problems, a message or a list names; the rest are counted. A selector over
/// five hundred nodes must not make an object of five hundred names.
pub(super) const LISTED: usize = 10;

pub(super) fn list(names: &[&str]) -> String {
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    let names: Vec<&str> = unique.into_iter().collect();
    match names.len() {
        1 => format!("node {}", names[0]),
        n if n > LISTED => format!(
            "nodes {} and {} more",
            names[..LISTED].join(", "),
            n - LISTED
        ),
        _ => format!("nodes {}", names.join(", ")),
    }
}

pub(super) fn join<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    items
        .into_iter()
        .map(|s| s.as_ref().to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// `node X has` / `nodes X, Y have`.
pub(super) fn have(names: &[&str]) -> String {
    let listed = list(names);
    if listed.starts_with("nodes ") {
        format!("{listed} have")
    } else {
        format!("{listed} has")
    }
}

pub(super) fn count(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}
