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

/// The trailing legal forms of `name` as written ("Ltd", "L.L.C.") and the rest of the
/// name before them, the way [`tokens`] drops them (never the last word left).
fn split_legal_forms(name: &str) -> (String, Vec<String>) {
    let words: Vec<&str> = name.split_whitespace().collect();
    let key = |w: &str| -> String {
        w.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let mut cut = words.len();
    while cut > 1 {
        let k = key(words[cut - 1]);
        if k.is_empty() || LEGAL_FORMS.contains(&k.as_str()) {
            cut -= 1;
        } else {
            break;
        }
    }
    let forms = words[cut..]
        .iter()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric() && c != '.'))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    let core = words[..cut]
        .join(" ")
        .trim_end_matches(|c: char| !c.is_alphanumeric())
        .to_string();
    (core, forms)
}

/// Why two names with the same [`normalise`] key count as the same name, in words for an
/// admin: `same name`, or `same name once "Ltd"/"Inc" and case are ignored`.
pub fn why_same_name(a: &str, b: &str) -> String {
    if a.trim() == b.trim() {
        return "same name".into();
    }
    let mut ignored: Vec<String> = Vec::new();
    let (core_a, forms_a) = split_legal_forms(a);
    let (core_b, forms_b) = split_legal_forms(b);
    let quoted = |f: &[String]| format!("\"{}\"", f.join(" "));
    match (forms_a.is_empty(), forms_b.is_empty()) {
        (true, true) => {}
        _ if forms_a == forms_b => {}
        (false, true) => ignored.push(quoted(&forms_a)),
        (true, false) => ignored.push(quoted(&forms_b)),
        (false, false) => ignored.push(format!("{}/{}", quoted(&forms_a), quoted(&forms_b))),
    }
    // The rest, one rule at a time, each named only when it was needed.
    type Step = (&'static str, fn(&str) -> String);
    let steps: [Step; 4] = [
        ("case", |s| s.to_lowercase()),
        ("accents", |s| {
            let mut out = String::new();
            for c in s.nfkd().filter(|c| !is_combining_mark(*c)) {
                fold(c, &mut out);
            }
            out
        }),
        ("punctuation and spacing", |s| {
            s.replace(['&', '+'], " and ")
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        }),
        ("abbreviations and a leading \"The\"", |s| {
            let mut words: Vec<String> = s
                .split_whitespace()
                .map(|w| {
                    ABBREVIATIONS
                        .iter()
                        .find(|(a, _)| *a == w)
                        .map_or_else(|| w.to_string(), |(_, full)| full.to_string())
                })
                .collect();
            if words.len() > 1 && words[0].eq_ignore_ascii_case("the") {
                words.remove(0);
            }
            words.join(" ")
        }),
    ];
    let run = |skip: Option<usize>| {
        let (mut x, mut y) = (core_a.clone(), core_b.clone());
        for (i, (_, step)) in steps.iter().enumerate() {
            if Some(i) != skip {
                (x, y) = (step(&x), step(&y));
            }
        }
        x == y
    };
    if core_a != core_b {
        if run(None) {
            let needed: Vec<&str> = (0..steps.len())
                .filter(|i| !run(Some(*i)))
                .map(|i| steps[i].0)
                .collect();
            if needed.is_empty() {
                // Several rules would each do: name the first that changes anything.
                if let Some((label, _)) = steps
                    .iter()
                    .find(|(_, step)| step(&core_a) != core_a || step(&core_b) != core_b)
                {
                    ignored.push(label.to_string());
                }
            } else {
                ignored.extend(needed.into_iter().map(str::to_string));
            }
        } else {
            ignored.push("case, punctuation and spelled-out initials".into());
        }
    }
    match ignored.len() {
        0 => "same name".into(),
        1 => {
            let one = &ignored[0];
            let verb = if one == "case" || (one.starts_with('"') && !one.contains('/')) {
                "is"
            } else {
                "are"
            };
            format!("same name once {one} {verb} ignored")
        }
        n => format!(
            "same name once {} and {} are ignored",
            ignored[..n - 1].join(", "),
            ignored[n - 1]
        ),
    }
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
    fn why_two_names_are_the_same_is_said_in_words() {
        for (a, b, why) in [
            ("Acme", "Acme", "same name"),
            (
                "Northern Architects Ltd",
                "Northern Architects Inc",
                "same name once \"Ltd\"/\"Inc\" are ignored",
            ),
            (
                "Northern Architects Ltd",
                "NORTHERN ARCHITECTS INC.",
                "same name once \"Ltd\"/\"INC.\" and case are ignored",
            ),
            (
                "Acme, L.L.C.",
                "acme",
                "same name once \"L.L.C.\" and case are ignored",
            ),
            (
                "Müller GmbH",
                "Muller",
                "same name once \"GmbH\" and accents are ignored",
            ),
            (
                "Smith & Jones",
                "Smith and Jones",
                "same name once punctuation and spacing are ignored",
            ),
        ] {
            assert_eq!(normalise(a), normalise(b), "{a} / {b}");
            assert_eq!(why_same_name(a, b), why, "{a} / {b}");
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
