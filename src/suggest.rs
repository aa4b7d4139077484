//! "Did you mean": the nearest known word to a misspelt one, for the messages of the rules
//! reader and the expression parser.

/// ` (did you mean `x`?)` when a known key is close to the unknown one.
pub fn suggestion(unknown: &str, known: &[&str]) -> String {
    // Case is compared too, but a word that differs only in case is always the nearest.
    known
        .iter()
        .map(|k| (if k.eq_ignore_ascii_case(unknown) { 1.0 } else { strsim::jaro_winkler(unknown, k) }, k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map_or_else(|| format!(" (allowed: {})", known.join(", ")), |(_, k)| format!(" (did you mean `{k}`?)"))
}

#[cfg(test)]
mod tests {
    use super::suggestion;

    #[test]
    fn the_nearest_word_or_every_allowed_one() {
        assert_eq!(suggestion("evnt", &["event", "meta"]), " (did you mean `event`?)");
        assert_eq!(suggestion("zzz", &["event", "meta"]), " (allowed: event, meta)");
        assert_eq!(suggestion("At", &["at"]), " (did you mean `at`?)");
    }
}
