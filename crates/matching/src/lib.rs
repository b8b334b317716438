//! Company matching, one matcher for the mapping grid, the import dialogs, Quick Match and
//! every provider:
//!
//! 1. **Identity**: an id both sides carry (a Datto site's Autotask company id, an M365
//!    tenant id stored on a PSA company) or a shared email or web domain (free-mail domains
//!    never count);
//! 2. **Name**: equal normalised names ([`normalise`]);
//! 3. **Similarity**: a percentage ([`similarity`]).
//!
//! Each suggestion carries its reason ("same domain (acme.com)", "name 86 %").
//! [`quick_match`] turns suggestions into one-to-one proposals: an integration company is
//! never proposed for two portal companies nor two for one; contested or close calls are
//! flagged and left unticked.

pub mod normalise;
pub mod score;

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

pub use normalise::{normalise, tokens, why_same_name};
pub use score::{Prepared, similarity};

/// The default Quick Match threshold (the slider runs from 40 to 100).
pub const DEFAULT_THRESHOLD: u8 = 70;
/// Suggestions within this many points of the best are a close call.
const CLOSE: u8 = 5;
/// Candidates scored per company (found through shared words and word beginnings).
const CANDIDATES: usize = 40;
/// Words more frequent than this among portal companies ("services", "group") do not
/// find candidates on their own.
const COMMON_WORD: usize = 200;

/// Domains that say nothing about the company.
const FREE_MAIL: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "yahoo.com",
    "icloud.com",
    "me.com",
    "aol.com",
    "proton.me",
    "protonmail.com",
    "gmx.com",
    "gmx.de",
    "web.de",
    "onmicrosoft.com",
];

/// A company on either side of a match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<K> {
    pub key: K,
    pub name: String,
    /// Web and email domains (`www.acme.com`, `https://acme.com/x`, `pat@acme.com`).
    pub domains: Vec<String>,
    /// Ids both sides may carry, with their kind (`"autotask company 29683000"`).
    pub identities: Vec<String>,
}

impl<K> Candidate<K> {
    pub fn named(key: K, name: impl Into<String>) -> Self {
        Self {
            key,
            name: name.into(),
            domains: vec![],
            identities: vec![],
        }
    }
}

/// The host part of a web address or email, lower-cased, without `www.`; `None` for
/// free-mail domains and things that are not domains.
pub fn domain_of(s: &str) -> Option<String> {
    let s = s.trim().to_lowercase();
    let s = s.rsplit('@').next().unwrap_or(&s);
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split(['/', '?', '#', ':']).next().unwrap_or_default();
    let host = host
        .strip_prefix("www.")
        .unwrap_or(host)
        .trim_end_matches('.');
    let ok = host.contains('.')
        && !host.starts_with('.')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    (ok && !FREE_MAIL
        .iter()
        .any(|f| host == *f || host.ends_with(&format!(".{f}"))))
    .then(|| host.to_string())
}

/// Why a suggestion was made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    SameIdentity { identity: String },
    SameDomain { domain: String },
    SameName,
    Name { percent: u8 },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::SameIdentity { identity } => write!(f, "same {identity}"),
            Reason::SameDomain { domain } => write!(f, "same domain ({domain})"),
            Reason::SameName => write!(f, "same name"),
            Reason::Name { percent } => write!(f, "name {percent} %"),
        }
    }
}

/// One portal company suggested for an integration company.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion<K> {
    pub key: K,
    pub name: String,
    pub confidence: u8,
    pub reason: Reason,
}

/// Portal companies indexed for matching.
pub struct Matcher<'a, K> {
    portal: &'a [Candidate<K>],
    prepared: Vec<Prepared>,
    by_key: HashMap<String, Vec<usize>>,
    by_domain: HashMap<String, Vec<usize>>,
    by_identity: HashMap<String, Vec<usize>>,
    by_word: HashMap<String, Vec<usize>>,
    by_start: HashMap<String, Vec<usize>>,
}

fn start(word: &str) -> String {
    word.chars().take(3).collect()
}

impl<'a, K: Clone> Matcher<'a, K> {
    pub fn new(portal: &'a [Candidate<K>]) -> Self {
        let mut m = Self {
            portal,
            prepared: Vec::with_capacity(portal.len()),
            by_key: HashMap::new(),
            by_domain: HashMap::new(),
            by_identity: HashMap::new(),
            by_word: HashMap::new(),
            by_start: HashMap::new(),
        };
        for (i, c) in portal.iter().enumerate() {
            let p = Prepared::new(&normalise(&c.name));
            m.by_key.entry(p.key.clone()).or_default().push(i);
            let words: HashSet<&String> = p.words().iter().collect();
            for w in words {
                m.by_word.entry(w.clone()).or_default().push(i);
                m.by_start.entry(start(w)).or_default().push(i);
            }
            for d in c.domains.iter().filter_map(|d| domain_of(d)) {
                m.by_domain.entry(d).or_default().push(i);
            }
            for id in &c.identities {
                m.by_identity.entry(id.clone()).or_default().push(i);
            }
            m.prepared.push(p);
        }
        for v in m
            .by_word
            .values_mut()
            .chain(m.by_start.values_mut())
            .chain(m.by_domain.values_mut())
        {
            v.dedup();
        }
        m
    }

    /// Up to `limit` portal companies for `c`, best first (identity and domain before
    /// names), each once, with its reason.
    pub fn suggest<J>(&self, c: &Candidate<J>, limit: usize) -> Vec<Suggestion<K>> {
        let mut found: Vec<(usize, u8, Reason, u8)> = Vec::new();
        let mut seen = HashSet::new();
        let mut add = |i: usize, confidence: u8, reason: Reason, rank: u8| {
            if seen.insert(i) {
                found.push((i, confidence, reason, rank));
            }
        };
        for id in &c.identities {
            for &i in self.by_identity.get(id).into_iter().flatten() {
                add(
                    i,
                    100,
                    Reason::SameIdentity {
                        identity: id.clone(),
                    },
                    0,
                );
            }
        }
        for d in c.domains.iter().filter_map(|d| domain_of(d)) {
            for &i in self.by_domain.get(&d).into_iter().flatten() {
                add(i, 100, Reason::SameDomain { domain: d.clone() }, 1);
            }
        }
        let p = Prepared::new(&normalise(&c.name));
        for &i in self.by_key.get(&p.key).into_iter().flatten() {
            add(i, 100, Reason::SameName, 2);
        }
        // Fuzzy: portal companies sharing a word, or failing that a word's beginning.
        let mut votes: HashMap<usize, u32> = HashMap::new();
        for w in p.words() {
            if let Some(list) = self.by_word.get(w).filter(|l| l.len() <= COMMON_WORD) {
                for &i in list {
                    *votes.entry(i).or_default() += 4;
                }
            }
            if let Some(list) = self
                .by_start
                .get(&start(w))
                .filter(|l| l.len() <= COMMON_WORD * 4)
            {
                for &i in list {
                    *votes.entry(i).or_default() += 1;
                }
            }
        }
        let mut ranked: Vec<(usize, u32)> = votes.into_iter().collect();
        ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (i, _) in ranked.into_iter().take(CANDIDATES) {
            let percent = p.similarity(&self.prepared[i]);
            if percent > 0 {
                add(i, percent, Reason::Name { percent }, 3);
            }
        }
        found.sort_by(|a, b| b.1.cmp(&a.1).then(a.3.cmp(&b.3)).then(a.0.cmp(&b.0)));
        found
            .into_iter()
            .take(limit)
            .map(|(i, confidence, reason, _)| Suggestion {
                key: self.portal[i].key.clone(),
                name: self.portal[i].name.clone(),
                confidence,
                reason,
            })
            .collect()
    }
}

/// What Quick Match proposes for one integration company.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal<I, K> {
    pub incoming: I,
    pub incoming_name: String,
    pub portal: K,
    pub portal_name: String,
    pub confidence: u8,
    pub reason: Reason,
    /// Set when the call is contested or close; such proposals start unticked.
    pub ambiguity: Option<String>,
}

impl<I, K> Proposal<I, K> {
    /// Ticked in the review dialog unless something makes it doubtful.
    pub fn selected(&self) -> bool {
        self.ambiguity.is_none()
    }
}

/// One-to-one proposals for `incoming` (unlinked integration companies of one
/// integration) among `portal` (portal companies not yet linked to that integration), at
/// `threshold` percent or more.
pub fn quick_match<I: Clone, K: Clone + Eq + Hash>(
    portal: &[Candidate<K>],
    incoming: &[Candidate<I>],
    threshold: u8,
) -> Vec<Proposal<I, K>> {
    let matcher = Matcher::new(portal);
    // Best and runner-up for each incoming company.
    let mut best: Vec<(usize, Suggestion<K>, Option<Suggestion<K>>)> = Vec::new();
    for (n, c) in incoming.iter().enumerate() {
        let mut s = matcher
            .suggest(c, 2)
            .into_iter()
            .filter(|s| s.confidence >= threshold);
        if let Some(first) = s.next() {
            best.push((n, first, s.next()));
        }
    }
    // Who wants each portal company.
    let mut wanted: HashMap<K, Vec<usize>> = HashMap::new();
    for (slot, (_, s, _)) in best.iter().enumerate() {
        wanted.entry(s.key.clone()).or_default().push(slot);
    }
    let mut out = Vec::new();
    for (slot, (n, s, runner_up)) in best.iter().enumerate() {
        let rivals = &wanted[&s.key];
        // The strongest claim wins the portal company (ties go to the first listed).
        let winner = rivals
            .iter()
            .copied()
            .max_by(|a, b| {
                best[*a]
                    .1
                    .confidence
                    .cmp(&best[*b].1.confidence)
                    .then(b.cmp(a))
            })
            .unwrap_or(slot);
        if winner != slot {
            continue;
        }
        let mut doubts = Vec::new();
        for &r in rivals.iter().filter(|r| **r != slot) {
            doubts.push(format!(
                "{} also matches {} ({} %)",
                incoming[best[r].0].name, s.name, best[r].1.confidence
            ));
        }
        if let Some(r) = runner_up
            && s.confidence.saturating_sub(r.confidence) <= CLOSE
        {
            doubts.push(format!(
                "{} is almost as close ({} %)",
                r.name, r.confidence
            ));
        }
        out.push(Proposal {
            incoming: incoming[*n].key.clone(),
            incoming_name: incoming[*n].name.clone(),
            portal: s.key.clone(),
            portal_name: s.name.clone(),
            confidence: s.confidence,
            reason: s.reason.clone(),
            ambiguity: (!doubts.is_empty()).then(|| doubts.join("; ")),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn portal() -> Vec<Candidate<u32>> {
        vec![
            Candidate {
                domains: vec!["https://www.acme.com/".into()],
                ..Candidate::named(1, "Acme Holdings")
            },
            Candidate::named(2, "Blue Ridge Dental"),
            Candidate::named(3, "Smith Legal"),
            Candidate {
                identities: vec!["autotask company 77".into()],
                ..Candidate::named(4, "Northwind")
            },
            Candidate::named(5, "Summit Plumbing"),
            Candidate::named(6, "Summit Plumbing Supply"),
        ]
    }

    #[test]
    fn identity_and_domain_come_before_names_with_their_reasons() {
        let p = portal();
        let m = Matcher::new(&p);
        let s = m.suggest(
            &Candidate {
                domains: vec!["pat@ACME.com".into(), "joe@gmail.com".into()],
                ..Candidate::named("x", "Totally Different")
            },
            3,
        );
        assert_eq!(s[0].key, 1);
        assert_eq!(s[0].reason.to_string(), "same domain (acme.com)");
        let s = m.suggest(
            &Candidate {
                identities: vec!["autotask company 77".into()],
                ..Candidate::named("y", "NW Traders")
            },
            1,
        );
        assert_eq!(
            (s[0].key, s[0].reason.to_string()),
            (4, "same autotask company 77".to_string())
        );
        let s = m.suggest(&Candidate::named("z", "Blue Ridge Dental, LLC"), 1);
        assert_eq!((s[0].key, &s[0].reason), (2, &Reason::SameName));
        let s = m.suggest(&Candidate::named("w", "Blue Rdige Dental"), 1);
        assert_eq!(s[0].key, 2);
        assert!(matches!(s[0].reason, Reason::Name { percent } if percent >= 85));
    }

    #[test]
    fn free_mail_and_non_domains_are_not_identities() {
        assert_eq!(domain_of("joe@gmail.com"), None);
        assert_eq!(domain_of("x@acme.onmicrosoft.com"), None);
        assert_eq!(domain_of("not a domain"), None);
        assert_eq!(
            domain_of("WWW.Acme.co.uk/contact"),
            Some("acme.co.uk".into())
        );
    }

    #[test]
    fn quick_match_is_one_to_one_and_flags_contests_and_close_calls() {
        let p = portal();
        let incoming = vec![
            Candidate::named("a", "Summit Plumbing Inc"),
            Candidate::named("b", "Summit Plumbing"),
            Candidate::named("c", "Smith Legal Services"),
            Candidate::named("d", "Unrelated Bakery"),
        ];
        let out = quick_match(&p, &incoming, DEFAULT_THRESHOLD);
        // "a" and "b" both normalise to "summit plumbing": one proposal, flagged.
        let summit: Vec<_> = out.iter().filter(|o| o.portal == 5).collect();
        assert_eq!(summit.len(), 1, "{out:?}");
        assert!(
            summit[0]
                .ambiguity
                .as_deref()
                .is_some_and(|a| a.contains("also matches Summit Plumbing")),
            "{summit:?}"
        );
        assert!(!summit[0].selected());
        assert!(out.iter().all(|o| o.incoming != "d"));
        let keys: Vec<_> = out.iter().map(|o| o.portal).collect();
        let unique: HashSet<_> = keys.iter().collect();
        assert_eq!(
            keys.len(),
            unique.len(),
            "one integration company per portal company"
        );
    }
}
