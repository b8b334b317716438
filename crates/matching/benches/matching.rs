#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Quick Match at scale: N integration companies against N portal companies.
//!
//!   cargo bench -p mspbridge-matching --bench matching -- --companies 10000 --threshold 70
//!
//! The portal side has N distinct names built from word lists (place or person, optional
//! second word, trade). The integration side has 60 % of them written differently (a legal
//! form, case and punctuation, a typo, "The", `&` for "and", word order) and 40 % companies
//! the portal does not have. Prints the time to index and match, and how many proposals
//! were right, wrong, missed and flagged.

use std::collections::HashSet;
use std::time::Instant;

use mspbridge_matching::{Candidate, quick_match};

const PLACES: [&str; 40] = [
    "Oak",
    "Summit",
    "Northern",
    "Harbor",
    "Granite",
    "Silver",
    "Cedar",
    "Riverside",
    "Pioneer",
    "Golden",
    "Evergreen",
    "Coastal",
    "Prairie",
    "Metro",
    "Maple",
    "Lakeside",
    "Redwood",
    "Highland",
    "Meadow",
    "Falcon",
    "Orion",
    "Beacon",
    "Keystone",
    "Liberty",
    "Sterling",
    "Aspen",
    "Willow",
    "Canyon",
    "Crescent",
    "Ironwood",
    "Bayview",
    "Hillcrest",
    "Westfield",
    "Eastgate",
    "Southport",
    "Brookside",
    "Fairview",
    "Glenwood",
    "Kingsley",
    "Lincoln",
];
const PEOPLE: [&str; 40] = [
    "Smith", "Garcia", "Nguyen", "Patel", "Kim", "Müller", "Rossi", "Silva", "Brown", "Jones",
    "Wilson", "Moore", "Clark", "Lewis", "Walker", "Hall", "Young", "King", "Wright", "Lopez",
    "O'Brien", "Kowalski", "Dubois", "Schmidt", "Novak", "Larsen", "Fischer", "Costa", "Ivanov",
    "Tanaka", "Murphy", "Reyes", "Bennett", "Foster", "Hughes", "Price", "Sanders", "Ward", "Cole",
    "Hayes",
];
const TRADES: [&str; 40] = [
    "Dental",
    "Logistics",
    "Law Group",
    "Accounting",
    "Builders",
    "Veterinary",
    "Realty",
    "Consulting",
    "Bakery",
    "Engineering",
    "Clinic",
    "Motors",
    "Insurance",
    "Architects",
    "Foods",
    "Media",
    "Plumbing",
    "Roofing",
    "Pharmacy",
    "Printing",
    "Electric",
    "Fitness",
    "Landscaping",
    "Marketing",
    "Staffing",
    "Trucking",
    "Catering",
    "Optometry",
    "Chiropractic",
    "Florist",
    "Hardware",
    "Brewing",
    "Tutoring",
    "Security",
    "Cleaning",
    "Storage",
    "Imaging",
    "Surveying",
    "Welding",
    "Upholstery",
];
const LEGAL: [&str; 8] = [
    "Inc", "LLC", "Ltd", "Pty Ltd", "GmbH", "Corp.", "Co.", "Limited",
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len())]
    }
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn distinct_names(rng: &mut Rng, n: usize, taken: &mut HashSet<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let name = match rng.below(3) {
            0 => format!("{} {}", rng.pick(&PLACES), rng.pick(&TRADES)),
            1 => format!(
                "{} & {} {}",
                rng.pick(&PEOPLE),
                rng.pick(&PEOPLE),
                rng.pick(&TRADES)
            ),
            _ => format!(
                "{} {} {}",
                rng.pick(&PLACES),
                rng.pick(&PEOPLE),
                rng.pick(&TRADES)
            ),
        };
        if taken.insert(name.clone()) {
            out.push(name);
        }
    }
    out
}

fn variant(rng: &mut Rng, name: &str) -> String {
    match rng.below(6) {
        0 => format!("{name} {}", rng.pick(&LEGAL)),
        1 => name.to_uppercase().replace(' ', ", "),
        2 => {
            // A swapped pair of letters inside the longest word.
            let mut words: Vec<String> = name.split(' ').map(str::to_string).collect();
            let (i, _) = words
                .iter()
                .enumerate()
                .max_by_key(|(_, w)| w.chars().count())
                .unwrap();
            let mut chars: Vec<char> = words[i].chars().collect();
            if chars.len() > 4 {
                let at = 1 + rng.below(chars.len() - 3);
                chars.swap(at, at + 1);
            }
            words[i] = chars.into_iter().collect();
            words.join(" ")
        }
        3 => format!("The {name}"),
        4 => name.replace('&', "and"),
        _ => {
            let mut words: Vec<&str> = name.split(' ').collect();
            words.rotate_left(1);
            words.join(" ")
        }
    }
}

fn main() {
    let n: usize = arg("--companies", "10000").parse().unwrap();
    let threshold: u8 = arg("--threshold", "70").parse().unwrap();
    let mut rng = Rng(0x5EED);
    let mut taken = HashSet::new();
    let portal_names = distinct_names(&mut rng, n, &mut taken);
    let portal: Vec<Candidate<usize>> = portal_names
        .iter()
        .enumerate()
        .map(|(i, name)| Candidate::named(i, name.clone()))
        .collect();
    let known = n * 6 / 10;
    let mut incoming: Vec<Candidate<usize>> = Vec::with_capacity(n);
    // (incoming index → the portal company it really is)
    let mut truth = vec![None; n];
    for (i, t) in truth.iter_mut().enumerate().take(known) {
        let p = (i * 7919) % n;
        incoming.push(Candidate::named(i, variant(&mut rng, &portal_names[p])));
        *t = Some(p);
    }
    for (k, name) in distinct_names(&mut rng, n - known, &mut taken)
        .into_iter()
        .enumerate()
    {
        incoming.push(Candidate::named(known + k, name));
    }

    let started = Instant::now();
    let proposals = quick_match(&portal, &incoming, threshold);
    let took = started.elapsed();

    let (mut right, mut wrong, mut flagged) = (0, 0, 0);
    for p in &proposals {
        if truth[p.incoming] == Some(p.portal) {
            right += 1;
        } else {
            wrong += 1;
        }
        if p.ambiguity.is_some() {
            flagged += 1;
        }
    }
    let proposed: HashSet<usize> = proposals.iter().map(|p| p.incoming).collect();
    let missed = (0..known).filter(|i| !proposed.contains(i)).count();
    let wrong_unflagged = proposals
        .iter()
        .filter(|p| truth[p.incoming] != Some(p.portal) && p.ambiguity.is_none())
        .count();
    if std::env::args().any(|a| a == "--show-wrong") {
        for p in proposals
            .iter()
            .filter(|p| truth[p.incoming] != Some(p.portal) && p.ambiguity.is_none())
            .take(15)
        {
            let really =
                truth[p.incoming].map_or("(not in the portal)", |t| portal_names[t].as_str());
            eprintln!(
                "{} -> {} ({} %, {}); really {really}",
                p.incoming_name, p.portal_name, p.confidence, p.reason
            );
        }
    }
    println!(
        "| {n} × {n} | {threshold} % | {:.2} | {} | {right} | {wrong} ({wrong_unflagged} unflagged) | {missed} of {known} | {flagged} |",
        took.as_secs_f64(),
        proposals.len()
    );
}
