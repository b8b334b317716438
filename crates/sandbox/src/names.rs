//! Word lists the vendor sandboxes build their seeded companies and people from.

pub const ADJECTIVES: [&str; 16] = [
    "Blue",
    "Northern",
    "Summit",
    "Harbor",
    "Granite",
    "Silver",
    "Oak",
    "Bright",
    "Cedar",
    "Riverside",
    "Pioneer",
    "Golden",
    "Evergreen",
    "Coastal",
    "Prairie",
    "Metro",
];
pub const NOUNS: [&str; 16] = [
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
];
pub const SUFFIXES: [&str; 6] = ["LLC", "Inc", "Ltd", "Group", "Co", "Partners"];
pub const FIRST: [&str; 20] = [
    "Pat", "Alex", "Sam", "Jordan", "Taylor", "Morgan", "Casey", "Riley", "Jamie", "Robin",
    "Chris", "Dana", "Lee", "Avery", "Quinn", "Drew", "Emery", "Harper", "Kai", "Rowan",
];
pub const LAST: [&str; 20] = [
    "Smith", "Garcia", "Nguyen", "Patel", "Kim", "Müller", "Rossi", "Silva", "Brown", "Jones",
    "Wilson", "Moore", "Clark", "Lewis", "Walker", "Hall", "Young", "King", "Wright", "Lopez",
];

/// A company name for the `i`-th company: distinct for the first 256, numbered after.
pub fn company_name(rng: &mut crate::Rng, i: usize) -> String {
    let base = format!("{} {}", rng.pick(&ADJECTIVES), rng.pick(&NOUNS));
    if i < ADJECTIVES.len() * NOUNS.len() {
        format!("{base} {}", rng.pick(&SUFFIXES))
    } else {
        format!("{base} {i}")
    }
}

/// The web domain a seeded company would own: its name's letters and digits without the
/// legal suffix, under `.example` ("Pioneer Media LLC" → `pioneermedia.example`). Two
/// sandboxes seeding the same business give it the same domain, as real vendors would.
pub fn web_domain(name: &str) -> String {
    let mut words: Vec<&str> = name.split_whitespace().collect();
    if words.len() > 1 && words.last().is_some_and(|w| SUFFIXES.contains(w)) {
        words.pop();
    }
    let slug: String = words
        .concat()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_lowercase();
    format!("{slug}.example")
}

/// Ticket subjects the PSA sandboxes seed.
pub const TICKET_SUBJECTS: [&str; 8] = [
    "Printer offline",
    "Cannot reach the VPN",
    "New starter laptop",
    "Outlook keeps asking for a password",
    "Shared drive is full",
    "Phone system drops calls",
    "Backup job failed",
    "Request access to finance folder",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_domains_drop_the_legal_suffix_only() {
        assert_eq!(web_domain("Pioneer Media LLC"), "pioneermedia.example");
        assert_eq!(web_domain("Pioneer Media Inc"), "pioneermedia.example");
        assert_eq!(web_domain("Oak Law Group 300"), "oaklawgroup300.example");
        assert_eq!(web_domain("Group"), "group.example");
    }
}
