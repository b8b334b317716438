//! Similarity of two normalised names as a percentage.
//!
//! Two views are blended: character bigrams of the name with its words sorted
//! (Sørensen–Dice, which forgives typos, spacing and word order), and an alignment of words
//! (each word of one name against its closest word of the other, weighted by length, in
//! both directions, so a name that contains the other plus more words is not the same
//! name). Word pairs that differ by more than a typo (Jaro–Winkler below 0.9: "dental" and
//! "legal") count for little, so names that share most words but differ in the one that
//! matters stay below the default threshold.

/// How close two words must be to count as the same word with a typo.
const TYPO: f64 = 0.9;
/// What a word pair below `TYPO` is still worth, relative to its closeness.
const UNRELATED_WORD: f64 = 0.25;
/// Factor per word that has no counterpart on the other side.
const UNMATCHED_WORD: f64 = 0.8;
/// Weight of the word alignment; the rest is the bigram view.
const WORDS: f64 = 0.85;

/// A normalised name prepared for many comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub key: String,
    words: Vec<String>,
    /// Bigrams of the words sorted and joined, sorted (a multiset).
    bigrams: Vec<(char, char)>,
}

impl Prepared {
    /// From a normalised name (see [`crate::normalise`]).
    pub fn new(key: &str) -> Self {
        let words: Vec<String> = key.split_whitespace().map(str::to_string).collect();
        let mut sorted = words.clone();
        sorted.sort_unstable();
        let joined: Vec<char> = sorted.join(" ").chars().collect();
        let mut bigrams: Vec<(char, char)> = joined.windows(2).map(|w| (w[0], w[1])).collect();
        bigrams.sort_unstable();
        Self {
            key: words.join(" "),
            words,
            bigrams,
        }
    }

    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// Similarity to `other`, 0–100 (100 only for equal keys); symmetric.
    pub fn similarity(&self, other: &Prepared) -> u8 {
        if self.key.is_empty() || other.key.is_empty() {
            return 0;
        }
        if self.key == other.key {
            return 100;
        }
        // The weaker direction: a name that contains the other plus more is another name.
        // Every word of one name against every word of the other, once.
        let sims: Vec<f64> = self
            .words
            .iter()
            .flat_map(|a| other.words.iter().map(move |b| word_similarity(a, b)))
            .collect();
        let cols = other.words.len();
        let row_best = |i: usize| {
            sims[i * cols..(i + 1) * cols]
                .iter()
                .copied()
                .fold(0.0, f64::max)
        };
        let col_best = |j: usize| {
            (0..self.words.len())
                .map(|i| sims[i * cols + j])
                .fold(0.0, f64::max)
        };
        let forward: Vec<f64> = (0..self.words.len()).map(row_best).collect();
        let backward: Vec<f64> = (0..cols).map(col_best).collect();
        // The weaker direction: a name that contains the other plus more is another name.
        let words = coverage(&self.words, &forward).min(coverage(&other.words, &backward));
        let chars = dice(&self.bigrams, &other.bigrams);
        // Each word without a counterpart on the other side (not even with a typo) makes
        // it less likely to be the same company, however long the shared part.
        let unmatched = |best: &[f64]| best.iter().filter(|b| **b < TYPO).count();
        let unmatched = unmatched(&forward).max(unmatched(&backward));
        let score = (WORDS * words + (1.0 - WORDS) * chars) * UNMATCHED_WORD.powi(unmatched as i32);
        ((score * 100.0).round() as u8).min(99)
    }
}

fn word_similarity(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    let jw = strsim::jaro_winkler(a, b);
    if jw >= TYPO { jw } else { jw * UNRELATED_WORD }
}

/// How much of `words` (by letters) finds itself on the other side, given each word's
/// best similarity there.
fn coverage(words: &[String], best: &[f64]) -> f64 {
    let total: usize = words.iter().map(|w| w.chars().count()).sum();
    if total == 0 {
        return 0.0;
    }
    let found: f64 = words
        .iter()
        .zip(best)
        .map(|(w, b)| b * w.chars().count() as f64)
        .sum();
    found / total as f64
}

/// Sørensen–Dice over two sorted bigram multisets.
fn dice(a: &[(char, char)], b: &[(char, char)]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut common) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Equal => {
                common += 1;
                i += 1;
                j += 1;
            }
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
        }
    }
    2.0 * common as f64 / (a.len() + b.len()) as f64
}

/// Similarity of two normalised names (see [`crate::normalise`]), 0–100.
pub fn similarity(a: &str, b: &str) -> u8 {
    Prepared::new(a).similarity(&Prepared::new(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalise;

    fn sim(a: &str, b: &str) -> u8 {
        similarity(&normalise(a), &normalise(b))
    }

    #[test]
    fn typos_and_order_score_high_other_words_low() {
        assert_eq!(sim("Acme Inc", "ACME LLC"), 100);
        assert!(sim("Johnson Plumbing", "Jonson Plumbing") >= 85);
        assert!(sim("Blue Ridge Dental", "Dental Blue Ridge") >= 85);
        assert!(sim("Smith Dental", "Smith Legal") < 70);
        assert!(sim("Golden Accounting", "Golden Accounting Software") < 85);
        assert!(sim("Oak Motors", "Pioneer Bakery") < 30);
        assert_eq!(sim("", "Acme"), 0);
    }
}
