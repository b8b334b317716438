#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Properties of the normaliser, the scorer and Quick Match over generated names.

use std::collections::HashSet;

use mspbridge_matching::{Candidate, normalise, quick_match, similarity};
use proptest::prelude::*;

/// Words that are never legal forms, "the" or "and" (they start with q and a vowel).
fn word() -> impl Strategy<Value = String> {
    "q[aeiou][a-z]{1,6}"
}

fn name() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(word(), 1..5)
}

fn any_text() -> impl Strategy<Value = String> {
    "[ -~àéüßøŁ’&]{0,40}"
}

proptest! {
    #[test]
    fn normalising_twice_changes_nothing(s in any_text()) {
        let once = normalise(&s);
        prop_assert_eq!(normalise(&once), once);
    }

    #[test]
    fn case_spacing_punctuation_and_legal_forms_do_not_matter(
        words in name(),
        sep in prop::sample::select(vec![" ", "  ", ", ", " - ", ". ", "\t"]),
        suffix in prop::sample::select(vec!["", " Inc.", " LLC", ", L.L.C.", " Pty Ltd", " GmbH", " Corp", " & Co", " Limited"]),
        the in any::<bool>(),
        upper in any::<bool>(),
    ) {
        let plain = words.join(" ");
        let mut styled = format!("{}{}{suffix}", if the { "The " } else { "" }, words.join(sep));
        if upper {
            styled = styled.to_uppercase();
        }
        prop_assert_eq!(normalise(&styled), normalise(&plain));
    }

    #[test]
    fn ampersand_is_and_and_accents_fold(words in name()) {
        let a = format!("{} & {}", words[0], words.join(" "));
        let b = format!("{} and {}", words[0], words.join(" "));
        prop_assert_eq!(normalise(&a), normalise(&b));
        let accented = words.join(" ").replace('a', "á").replace('e', "é").replace('u', "ü");
        prop_assert_eq!(normalise(&accented), normalise(&words.join(" ")));
    }

    #[test]
    fn scores_are_symmetric_bounded_and_100_only_for_equal_names(a in any_text(), b in any_text()) {
        let (na, nb) = (normalise(&a), normalise(&b));
        let s = similarity(&na, &nb);
        prop_assert_eq!(s, similarity(&nb, &na));
        prop_assert!(s <= 100);
        prop_assert_eq!(s == 100, !na.is_empty() && na == nb);
        if !na.is_empty() {
            prop_assert_eq!(similarity(&na, &na), 100);
        }
    }

    #[test]
    fn reordered_words_score_high_but_not_as_the_same_name(words in prop::collection::hash_set(word(), 2..4)) {
        let words: Vec<String> = words.into_iter().collect();
        let mut reversed = words.clone();
        reversed.reverse();
        let s = similarity(&normalise(&words.join(" ")), &normalise(&reversed.join(" ")));
        prop_assert!((90..100).contains(&s), "{:?}: {}", words, s);
    }

    #[test]
    fn a_typo_in_a_long_word_keeps_the_name_above_the_default(words in prop::collection::vec("q[aeiou][a-z]{6,9}", 2..4), at in 2usize..6) {
        let mut typo = words.clone();
        let w = &mut typo[0];
        let i = at.min(w.len() - 2);
        let mut chars: Vec<char> = w.chars().collect();
        chars.swap(i, i + 1);
        *w = chars.into_iter().collect();
        let s = similarity(&normalise(&words.join(" ")), &normalise(&typo.join(" ")));
        prop_assert!(s >= 70, "{:?} / {:?}: {}", words, typo, s);
    }

    #[test]
    fn quick_match_never_pairs_one_company_twice(
        portal in prop::collection::vec(prop::collection::vec(prop::sample::select(vec!["qalpha", "qbeta", "qgamma", "qdelta", "qomega"]), 1..3), 1..25),
        incoming in prop::collection::vec(prop::collection::vec(prop::sample::select(vec!["qalpha", "qbeta", "qgamma", "qdelta", "qomega"]), 1..3), 1..25),
        threshold in 40u8..=100,
    ) {
        let p: Vec<Candidate<usize>> = portal.iter().enumerate().map(|(i, w)| Candidate::named(i, w.join(" "))).collect();
        let n: Vec<Candidate<usize>> = incoming.iter().enumerate().map(|(i, w)| Candidate::named(i, w.join(" "))).collect();
        let out = quick_match(&p, &n, threshold);
        let portals: HashSet<usize> = out.iter().map(|o| o.portal).collect();
        let incomings: HashSet<usize> = out.iter().map(|o| o.incoming).collect();
        prop_assert_eq!(portals.len(), out.len());
        prop_assert_eq!(incomings.len(), out.len());
        prop_assert!(out.iter().all(|o| o.confidence >= threshold));
    }
}
