#!/usr/bin/env python3
"""Writes labelled_pairs.jsonl: pairs of company names as a portal and a PSA might spell them,
labelled by construction (match = the same company, written differently; no match = two
companies that share words). Deterministic; rerun after changing the lists.

    python3 crates/matching/tests/data/make_labelled_pairs.py > crates/matching/tests/data/labelled_pairs.jsonl
"""
import json, random, sys

random.seed(20261124)

FIRST = ["Oak", "Summit", "Northern", "Blue Ridge", "Harbor", "Pioneer", "Cedar", "Golden", "Silver Lake",
         "Riverside", "Maple", "Granite", "Lakeside", "Evergreen", "Redwood", "Coastal", "Prairie", "Iron",
         "Crescent", "Highland", "Meadow", "Falcon", "Orion", "Beacon", "Keystone", "Liberty", "Sterling",
         "Aspen", "Willow", "Canyon"]
TRADE = ["Dental", "Law Group", "Motors", "Veterinary", "Plumbing", "Accounting", "Logistics", "Roofing",
         "Insurance", "Pharmacy", "Architects", "Bakery", "Construction", "Media", "Realty", "Consulting",
         "Engineering", "Fitness", "Printing", "Electric"]
PEOPLE = ["Smith", "Johnson", "Müller", "García", "O'Brien", "Nguyen", "Kowalski", "Dubois", "Rossi", "Schmidt",
          "Brown", "Taylor", "Martín", "Søren", "Łukasz"]
SUFFIX = ["Inc", "Inc.", "LLC", "L.L.C.", "Ltd", "Limited", "Pty Ltd", "GmbH", "Corp", "Corporation", "Co.", ""]
SIMILAR_TRADE = {"Dental": ["Legal", "Rental"], "Motors": ["Motels", "Meters"], "Plumbing": ["Printing", "Plumbers Supply"],
                 "Roofing": ["Flooring", "Roofing Supply"], "Media": ["Medical", "Metals"], "Realty": ["Reality Games", "Royalty"],
                 "Fitness": ["Finance", "Fishing"], "Electric": ["Electronics", "Eclectic"], "Bakery": ["Brewery", "Bakery Supply"],
                 "Accounting": ["Auctioning", "Accounting Software"]}
SIMILAR_FIRST = {"Summit": ["Summer"], "Northern": ["Southern", "Nothern Star"], "Harbor": ["Harper"], "Cedar": ["Cedars Hospital"],
                 "Golden": ["Golden Gate"], "Maple": ["Marble"], "Iron": ["Ironside"], "Orion": ["Onion"], "Aspen": ["Aspire"],
                 "Willow": ["Willowbrook"], "Beacon": ["Bacon"], "Liberty": ["Liberty Mutual"], "Falcon": ["Falconer"]}


# Names with words that are often abbreviated, and their abbreviations.
ABBREVIATED = [("Mountain View Dental", "Mtn View Dental"), ("Saint Mary's Pharmacy", "St Mary's Pharmacy"),
               ("Johnson Brothers Roofing", "Johnson Bros Roofing"), ("Pacific International Logistics", "Pacific Intl Logistics"),
               ("Taylor & Associates Accounting", "Taylor & Assoc Accounting"), ("Harbor Property Management", "Harbor Property Mgmt"),
               ("Keystone Technology Services", "Keystone Technology Svcs"), ("Northern Law Group", "Northern Law"),
               ("Cedar Dental Care", "Cedar Dental"), ("Smith Family Dentistry", "Smith Dentistry")]


def base_names():
    names = [a for a, _ in ABBREVIATED]
    for f in FIRST:
        names.append(f"{f} {random.choice(TRADE)}")
    for p in PEOPLE:
        names.append(f"{p} {random.choice(TRADE)}")
        names.append(f"{p} & {random.choice(PEOPLE)} {random.choice(TRADE)}")
    return names


def typo(s):
    letters = [i for i, c in enumerate(s) if c.isalpha()]
    i = random.choice(letters[1:-1])
    op = random.choice(["swap", "drop", "double"])
    if op == "swap" and i + 1 < len(s) and s[i + 1].isalpha():
        return s[:i] + s[i + 1] + s[i] + s[i + 2:]
    if op == "drop":
        return s[:i] + s[i + 1:]
    return s[:i] + s[i] + s[i:]


def strip_accents(s):
    table = str.maketrans("üéíóáñøłÜÉÍÓÁÑØŁ", "ueioanolUEIOANOL")
    return s.translate(table)


def variants(name):
    """(kind, spelling) of the same company."""
    out = []
    sfx = random.choice([x for x in SUFFIX if x])
    out.append(("legal suffix", f"{name} {sfx}"))
    out.append(("case and spacing", "  " + name.upper().replace(" ", "  ") + " "))
    out.append(("punctuation", name.replace(" ", ", ", 1) + "."))
    if "&" in name:
        out.append(("ampersand", name.replace("&", "and")))
    else:
        out.append(("the", f"The {name}"))
    if strip_accents(name) != name:
        out.append(("accents", strip_accents(name)))
    out.append(("typo", typo(name)))
    words = name.split()
    if len(words) >= 2:
        out.append(("word order", " ".join(words[1:] + words[:1])))
    out.append(("suffix and typo", f"{typo(name)} {random.choice(['Inc', 'LLC', 'Ltd'])}"))
    return out


def non_matches(name):
    """(kind, spelling) of a different company that shares words."""
    out = []
    words = name.split()
    for t, sims in SIMILAR_TRADE.items():
        if name.endswith(t):
            for s in sims:
                out.append(("similar trade", name[: -len(t)] + s))
    for f, sims in SIMILAR_FIRST.items():
        if name.startswith(f + " "):
            for s in sims:
                out.append(("similar first word", s + name[len(f):]))
    other = random.choice([t for t in TRADE if not name.endswith(t)])
    out.append(("same owner, other trade", " ".join(words[:-1]) + " " + other if len(words) > 1 else f"{name} {other}"))
    out.append(("unrelated", f"{random.choice(FIRST)} {random.choice(TRADE)}"))
    return [(k, s) for k, s in out if s.lower() != name.lower()]


rows = []
for name, short in ABBREVIATED:
    kind = "dropped word" if len(short.split()) < len(name.split()) else "abbreviation"
    rows.append((name, short, 1, kind))
for name in base_names():
    for kind, v in variants(name):
        rows.append((name, v, 1, kind))
    for kind, v in non_matches(name):
        rows.append((name, v, 0, kind))

for portal, integration, match, kind in rows:
    print(json.dumps({"portal": portal, "integration": integration, "match": bool(match), "kind": kind},
                     ensure_ascii=False))
