//! Counts by errno or protocol error code, as a person reads them in a table:
//! `ECONNREFUSED: 35, ETIMEDOUT: 2` (summary.json keeps the numbers).

use std::collections::BTreeMap;

/// The symbolic name of an errno (`ECONNREFUSED`), or its number if it has none.
pub fn errno_name(errno: i32) -> String {
    match nix::errno::Errno::from_raw(errno) {
        nix::errno::Errno::UnknownErrno => format!("errno {errno}"),
        e => format!("{e:?}"),
    }
}

/// `NAME: count` pairs, the largest count first; "none" when empty.
pub fn by_name<K: Copy + Ord>(counts: &BTreeMap<K, u64>, name: impl Fn(K) -> String) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    let mut pairs: Vec<(K, u64)> = counts.iter().map(|(&k, &n)| (k, n)).collect();
    pairs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    pairs
        .iter()
        .map(|&(k, n)| format!("{}: {n}", name(k)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The protocol's name of an ERROR/GOAWAY code (`SLOW_CONSUMER`), or its number.
pub fn error_code_name(code: u16) -> String {
    proto::ErrorCode(code)
        .name()
        .map_or_else(|| format!("code {code}"), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_and_codes_are_named_largest_first() {
        let failed = BTreeMap::from([(111, 35), (110, 2), (4242, 1)]);
        assert_eq!(
            by_name(&failed, errno_name),
            "ECONNREFUSED: 35, ETIMEDOUT: 2, errno 4242: 1"
        );
        assert_eq!(by_name(&BTreeMap::<i32, u64>::new(), errno_name), "none");
        let errors = BTreeMap::from([(6u16, 3), (77, 1)]);
        assert_eq!(
            by_name(&errors, error_code_name),
            "SLOW_CONSUMER: 3, code 77: 1"
        );
    }
}
