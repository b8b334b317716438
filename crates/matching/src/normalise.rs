//! Company names reduced to what identifies the company: accents folded, case and
//! punctuation dropped, `&` read as `and`, spelled-out initials joined (`L.L.C.` → `llc`),
//! common abbreviations spelled out (Intl, Bros, Mgmt…), a leading "The" and trailing legal
//! forms (Inc, LLC, Ltd, Limited, Pty, GmbH, Corp, Co…) removed.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Legal forms dropped from the end of a name (after punctuation is gone).
const LEGAL_FORMS: &[&str] = &[
    "inc",
    "incorporated",
    "llc",
    "llp",
    "lp",
    "ltd",
    "limited",
    "pty",
    "plc",
    "gmbh",
    "ag",
    "corp",
    "corporation",
    "co",
    "company",
    "sa",
    "sarl",
    "bv",
    "nv",
    "pllc",
    "pc",
    "oy",
    "ab",
    "srl",
    "spa",
    "kg",
    "lc",
];

/// Abbreviations read as the word they stand for (never ambiguous ones such as "st",
/// saint or street).
const ABBREVIATIONS: &[(&str, &str)] = &[
    ("intl", "international"),
    ("bros", "brothers"),
    ("assoc", "associates"),
    ("assocs", "associates"),
    ("mgmt", "management"),
    ("mtn", "mountain"),
    ("svc", "services"),
    ("svcs", "services"),
    ("dept", "department"),
];

/// Letters that do not decompose into a base letter and a mark.
fn fold(c: char, out: &mut String) {
    match c {
        'ß' => out.push_str("ss"),
        'æ' => out.push_str("ae"),
        'œ' => out.push_str("oe"),
        'ø' => out.push('o'),
        'ł' => out.push('l'),
        'đ' | 'ð' => out.push('d'),
        'þ' => out.push_str("th"),
        'ı' => out.push('i'),
        c => out.push(c),
    }
}

/// The identifying words of `name`, in order.
pub fn tokens(name: &str) -> Vec<String> {
    let mut cleaned = String::with_capacity(name.len() + 8);
    for c in name.nfkd() {
        if is_combining_mark(c) {
            continue;
        }
        match c {
            '&' | '+' => cleaned.push_str(" and "),
            // O'Brien and O’Brien are obrien.
            '\'' | '\u{2019}' | '`' => {}
            c if c.is_alphanumeric() => {
                for l in c.to_lowercase() {
                    fold(l, &mut cleaned);
                }
            }
            _ => cleaned.push(' '),
        }
    }
    // Runs of single letters are spelled-out initials: "l l c" → "llc", "a b c" → "abc".
    let mut toks: Vec<String> = Vec::new();
    let mut run = String::new();
    for t in cleaned.split_whitespace() {
        if t.chars().count() == 1 && t.chars().all(char::is_alphabetic) {
            run.push_str(t);
            continue;
        }
        if !run.is_empty() {
            toks.push(std::mem::take(&mut run));
        }
        toks.push(t.to_string());
    }
    if !run.is_empty() {
        toks.push(run);
    }
    for t in toks.iter_mut() {
        if let Some((_, full)) = ABBREVIATIONS.iter().find(|(a, _)| a == t) {
            *t = full.to_string();
        }
    }
    if toks.len() > 1 && toks[0] == "the" {
        toks.remove(0);
    }
    // Trailing legal forms (and the "and" of "Smith & Co"), never the last word left.
    while toks.len() > 1
        && toks
            .last()
            .is_some_and(|t| LEGAL_FORMS.contains(&t.as_str()) || t == "and")
    {
        toks.pop();
    }
    toks
}

/// `tokens` joined by single spaces: equal keys are the same name.
pub fn normalise(name: &str) -> String {
    tokens(name).join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_name_meet() {
        for (a, b) in [
            ("Acme Inc.", "ACME"),
            ("Acme, L.L.C.", "acme"),
            ("Smith & Jones Ltd", "Smith and Jones Limited"),
            ("The Smith Group", "Smith Group"),
            ("Müller GmbH", "Muller"),
            ("O’Brien Plumbing Co.", "OBrien Plumbing"),
            ("Straße Pty Ltd", "strasse"),
            ("A.B.C. Cleaning", "ABC Cleaning"),
            ("  Blue   Ridge\tDental ", "blue ridge dental"),
            ("Smith & Co", "Smith"),
            ("Johnson Bros. Intl", "Johnson Brothers International"),
        ] {
            assert_eq!(normalise(a), normalise(b), "{a} / {b}");
        }
    }

    #[test]
    fn words_that_identify_are_kept() {
        assert_eq!(normalise("Co"), "co", "a lone legal word is the name");
        assert_eq!(normalise("The"), "the");
        assert_eq!(normalise("Company Doctors Inc"), "company doctors");
        assert_ne!(normalise("Smith Dental"), normalise("Smith Legal"));
        assert_eq!(normalise("3M Co"), "3m");
        assert_eq!(normalise("!!!"), "");
    }
}
