//! "Did you mean": the known name closest to a misspelt one, so an error about
//! `upstreem` says `upstream` instead of listing every field of the section.

/// The name of `known` nearest to `given` by edit distance, if it is near enough to be
/// the likely intent: at most one edit for short names, about one in three for longer.
pub(crate) fn closest<'a>(given: &str, known: &[&'a str]) -> Option<&'a str> {
    let given = given.to_ascii_lowercase();
    let allowed = (given.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (distance(&given, k), *k))
        .filter(|(d, _)| *d <= allowed)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// The message for an unknown `what` (`field`, `section`): the likely intent if there is
/// one, else every name there is.
pub(crate) fn unknown(what: &str, given: &str, known: &[&str]) -> String {
    match closest(given, known) {
        Some(k) => format!("unknown {what} `{given}`; did you mean `{k}`?"),
        None => format!(
            "unknown {what} `{given}`, expected one of {}",
            known
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Levenshtein distance, with a transposition of neighbours counted as one edit.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &[&str] = &[
        "name",
        "match",
        "upstream",
        "rewrite",
        "rate_limits",
        "auth",
    ];

    #[test]
    fn misspellings_find_their_field() {
        assert_eq!(closest("upstreem", ROUTE), Some("upstream"));
        assert_eq!(
            closest("upstraem", ROUTE),
            Some("upstream"),
            "a transposition"
        );
        assert_eq!(closest("rate_limit", ROUTE), Some("rate_limits"));
        assert_eq!(closest("Match", ROUTE), Some("match"));
        assert_eq!(closest("nmae", ROUTE), Some("name"));
    }

    #[test]
    fn far_names_list_the_fields() {
        assert_eq!(closest("backend", ROUTE), None);
        assert!(unknown("field", "backend", ROUTE).contains("expected one of `name`"));
        assert_eq!(
            unknown("field", "upstreem", ROUTE),
            "unknown field `upstreem`; did you mean `upstream`?"
        );
    }
}
