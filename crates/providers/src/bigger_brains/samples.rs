//! The files BrainStation's Reseller Portal exports, generated for tests, benchmarks and the
//! demo (Bigger Brains has no API to play): a course catalogue and a team's progress.
//! Deterministic, in the formats `mspbridge_domain::training` reads.

use chrono::{DateTime, Duration, Utc};

const CATEGORIES: &[(&str, &[&str])] = &[
    (
        "Microsoft 365",
        &[
            "Getting Started",
            "Sharing Files",
            "OneDrive Essentials",
            "SharePoint Sites",
            "Planner Basics",
            "Forms and Surveys",
            "Loop Components",
            "Bookings",
        ],
    ),
    (
        "Excel",
        &[
            "PivotTables",
            "Formulas and Functions",
            "Charts",
            "Conditional Formatting",
            "XLOOKUP",
            "Power Query",
            "Data Validation",
            "Macros",
        ],
    ),
    (
        "Outlook",
        &[
            "Inbox Zero",
            "Calendar Sharing",
            "Rules and Alerts",
            "Shared Mailboxes",
            "Search Tips",
            "Signatures",
        ],
    ),
    (
        "Teams",
        &[
            "Meetings",
            "Channels",
            "Chat Etiquette",
            "Webinars",
            "Apps in Teams",
            "Live Events",
        ],
    ),
    (
        "Cybersecurity",
        &[
            "Phishing Awareness",
            "Passwords and MFA",
            "Safe Browsing",
            "Ransomware",
            "Social Engineering",
            "Working Remotely Securely",
            "Mobile Security",
            "Data Privacy",
        ],
    ),
    (
        "AI and Copilot",
        &[
            "Copilot in Word",
            "Copilot in Excel",
            "Prompting Basics",
            "Copilot in Teams",
            "Responsible AI",
        ],
    ),
    (
        "Windows 11",
        &[
            "Desktop Tour",
            "File Explorer",
            "Settings",
            "Snap Layouts",
            "Keyboard Shortcuts",
        ],
    ),
    (
        "Leadership",
        &[
            "Giving Feedback",
            "Running Meetings",
            "Delegation",
            "Coaching",
            "Managing Change",
        ],
    ),
    (
        "Compliance",
        &[
            "HIPAA Basics",
            "PCI Essentials",
            "GDPR Overview",
            "Records Retention",
        ],
    ),
    (
        "Soft Skills",
        &[
            "Time Management",
            "Writing Clear Email",
            "Presenting",
            "Customer Service",
            "Working in Teams",
        ],
    ),
];

const LEVELS: &[&str] = &["Beginner", "Intermediate", "Advanced"];

/// `n` courses: every (category, topic) at each level, then numbered parts.
pub fn catalogue_csv(n: usize) -> String {
    let mut out = String::from("Course ID,Title,Category,Duration,Level,URL\r\n");
    let mut i = 0usize;
    let mut part = 1;
    'outer: loop {
        for level in LEVELS {
            for (cat, topics) in CATEGORIES {
                for t in *topics {
                    if i == n {
                        break 'outer;
                    }
                    let title = if part == 1 {
                        format!("{cat}: {t} ({level})")
                    } else {
                        format!("{cat}: {t} ({level}, part {part})")
                    };
                    let minutes = 5 + (i * 7) % 55;
                    let duration = if i.is_multiple_of(4) {
                        format!("{minutes}m")
                    } else {
                        minutes.to_string()
                    };
                    out.push_str(&format!(
                        "BB-{:04},\"{}\",{cat},{duration},{level},https://getbiggerbrains.com/courses/bb-{:04}\r\n",
                        i + 1,
                        title.replace('"', "\"\""),
                        i + 1
                    ));
                    i += 1;
                }
            }
        }
        part += 1;
    }
    out
}

/// The course titles of [`catalogue_csv`] (first `n`), in order.
pub fn course_ids(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("BB-{i:04}")).collect()
}

/// A team's progress: each e-mail with `per_user` courses (by course id), statuses varied,
/// completions dated before `now`.
pub fn progress_csv(
    team: &str,
    emails: &[String],
    courses: usize,
    per_user: usize,
    now: DateTime<Utc>,
) -> String {
    let mut out = String::from("Team,Email,Course,Status,Score,Completed At\r\n");
    for (u, e) in emails.iter().enumerate() {
        for k in 0..per_user {
            let c = (u * 7 + k * 3) % courses.max(1) + 1;
            let (status, score, at) = match (u + k) % 4 {
                0 | 1 => (
                    "Completed",
                    format!("{}", 70 + (u + k) % 31),
                    (now - Duration::days(((u + k) % 40) as i64 + 1))
                        .format("%Y-%m-%d")
                        .to_string(),
                ),
                2 => ("In Progress", String::new(), String::new()),
                _ => ("Not Started", String::new(), String::new()),
            };
            out.push_str(&format!(
                "\"{team}\",{e},BB-{c:04},{status},{score},{at}\r\n"
            ));
        }
    }
    out
}
