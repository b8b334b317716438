//! Bigger Brains (BrainStation) training, pure. BrainStation is a library of training
//! videos the MSP resells to its client companies. It has no public API, so the portal
//! exchanges files with it: the MSP exports the course catalogue and each team's learner
//! progress from BrainStation's Reseller Portal and imports them here, and exports a
//! company's users as a CSV for BrainStation's user import.
//!
//! Every import is checked row by row: a bad row is reported with its line and column and
//! left out, the other rows are applied. Records carry stable keys and plain content, so
//! importing the same file again changes nothing.
//!
//! # CSV files
//!
//! The files read here are CSV as RFC 4180 defines it, with the leniencies spreadsheets
//! need:
//!
//! - Fields are separated by commas. A field may be enclosed in double quotes; it must be
//!   when it holds a comma, a double quote or a line break. Inside a quoted field a double
//!   quote is written twice (`"Say ""hi"""` reads `Say "hi"`), and commas and line breaks
//!   are part of the value.
//! - Lines end in CRLF or LF. A UTF-8 byte order mark at the start of the file is ignored.
//! - Spaces or tabs before an opening quote or after a closing quote are ignored. Every
//!   value is read without the spaces around it.
//! - The first row that is not empty is the header. Columns are found by their header
//!   name, ignoring case, spaces, underscores and hyphens (`Course ID`, `course_id` and
//!   `courseid` are one column), in any order. Columns the format does not name are
//!   ignored; a column the format names may appear only once.
//! - Every row must have as many fields as the header. Rows with no value at all (an empty
//!   line, or only commas) are skipped without a word, wherever they are.
//! - A file holds at most 100,000 data rows; a longer file is refused whole (split it).
//!
//! Line numbers in reports are the file's physical lines, counted from 1 at the top of the
//! file; a row whose quoted field spans lines is reported at the line where the row starts.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// The most data rows one file may hold. A BrainStation catalogue has a few hundred
/// courses and a team's progress a few thousand rows; a bigger file is a mistake (or an
/// attack on the importer's memory), refused whole.
pub const MAX_ROWS: usize = 100_000;
/// The longest course title (and course reference in a progress file), in characters.
pub const MAX_TITLE_CHARS: usize = 300;
/// The longest category name and course id, in characters.
pub const MAX_CATEGORY_CHARS: usize = 200;
/// The longest course address, in characters.
pub const MAX_URL_CHARS: usize = 2048;
/// The longest course, in minutes (a week of watching; longer is a typo).
pub const MAX_DURATION_MINUTES: u32 = 10_000;

/// How far ahead of `now` a completion time without a time zone (`2024-05-31`,
/// `2024-05-31 14:30`) may be: such a time is read as UTC, but it may have been written in
/// a zone up to 14 hours ahead of UTC, where the day has already begun.
const ZONELESS_GRACE_HOURS: i64 = 14;

/// The outcome of one import: the rows that passed, each with the line it starts on, and
/// one error per refused value, row or file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsvImport<T> {
    /// The rows to apply, in file order, each with the line where it starts.
    pub records: Vec<(usize, T)>,
    /// Why rows (or the whole file) were refused. A row with several bad values has one
    /// error per value.
    pub errors: Vec<RowError>,
    /// Data rows read (the header and skipped empty rows not counted); 0 when the file is
    /// refused before its rows are read (empty, or over [`MAX_ROWS`]).
    pub rows: usize,
}

impl<T> CsvImport<T> {
    /// One error that refuses the whole file.
    fn refused(error: RowError, rows: usize) -> Self {
        CsvImport {
            records: Vec::new(),
            errors: vec![error],
            rows,
        }
    }
}

/// Why a row, or one value in it, was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    /// The 1-based physical line where the row starts.
    pub line: usize,
    /// The column's header name as written in the file, when one value is at fault.
    pub column: Option<String>,
    pub message: String,
}

impl RowError {
    fn new(line: usize, message: impl Into<String>) -> Self {
        RowError {
            line,
            column: None,
            message: message.into(),
        }
    }
}

/// `line 7, column "duration": must be …`, or `line 7: …` when no column is at fault.
impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(column) => write!(
                f,
                "line {}, column \"{column}\": {}",
                self.line, self.message
            ),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

impl std::error::Error for RowError {}

// ---------------------------------------------------------------------------------------
// Course catalogue
// ---------------------------------------------------------------------------------------

/// A course's level. Words BrainStation adds later are kept as written in `Other`, like
/// the rest of the product keeps unknown vendor values, instead of refusing the row.
/// Stored as a plain string: `beginner`, `intermediate`, `advanced`, or the word as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Level {
    Beginner,
    Intermediate,
    Advanced,
    Other(String),
}

impl Level {
    /// Beginner, Intermediate or Advanced in any case; anything else kept trimmed as written.
    pub fn parse(raw: &str) -> Level {
        let raw = raw.trim();
        match raw.to_lowercase().as_str() {
            "beginner" => Level::Beginner,
            "intermediate" => Level::Intermediate,
            "advanced" => Level::Advanced,
            _ => Level::Other(raw.to_string()),
        }
    }

    /// The stored word.
    pub fn as_str(&self) -> &str {
        match self {
            Level::Beginner => "beginner",
            Level::Intermediate => "intermediate",
            Level::Advanced => "advanced",
            Level::Other(word) => word,
        }
    }

    /// The word shown to people.
    pub fn label(&self) -> &str {
        match self {
            Level::Beginner => "Beginner",
            Level::Intermediate => "Intermediate",
            Level::Advanced => "Advanced",
            Level::Other(word) => word,
        }
    }
}

impl From<String> for Level {
    fn from(s: String) -> Self {
        Level::parse(&s)
    }
}

impl From<Level> for String {
    fn from(level: Level) -> Self {
        level.as_str().to_string()
    }
}

/// One course of the BrainStation catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Course {
    /// The course's stable key in the portal, see [`course_key`].
    pub key: String,
    /// BrainStation's id of the course, when the file has one.
    pub course_id: Option<String>,
    pub title: String,
    pub category: String,
    pub duration_minutes: u32,
    pub level: Level,
    /// The course's page (always `https://`).
    pub url: String,
}

/// A course's stable key: `id:` and BrainStation's course id when there is one, else
/// `title:` and the title normalised by [`normalise_title`]. The prefixes keep an id from
/// ever meeting a title. A catalogue that gains course ids later gets new keys, so import
/// files of one shape (always with, or always without, the `course_id` column).
pub fn course_key(course_id: Option<&str>, title: &str) -> String {
    match course_id.map(str::trim).filter(|id| !id.is_empty()) {
        Some(id) => format!("id:{id}"),
        None => format!("title:{}", normalise_title(title)),
    }
}

/// A title as compared: lower-case, runs of white space (line breaks too) made one space,
/// no space at either end. `Intro  to\nExcel ` and `intro to excel` are one title.
pub fn normalise_title(title: &str) -> String {
    collapse_spaces(&title.to_lowercase())
}

/// The course a progress row's `course` names: the course whose id is that value
/// (ignoring ASCII case), else the course whose title is it (as [`normalise_title`]
/// compares titles).
pub fn find_course<'a>(courses: &'a [Course], reference: &str) -> Option<&'a Course> {
    let reference = reference.trim();
    courses
        .iter()
        .find(|c| {
            c.course_id
                .as_deref()
                .is_some_and(|id| id.eq_ignore_ascii_case(reference))
        })
        .or_else(|| {
            let title = normalise_title(reference);
            courses.iter().find(|c| normalise_title(&c.title) == title)
        })
}

/// A duration in minutes, 1 to [`MAX_DURATION_MINUTES`]: a whole number of minutes (`45`),
/// hours and/or minutes with units (`1h 30m`, `1h30m`, `2h`, `90m`, `90 min`,
/// `1 hour 30 minutes`; units `h`, `hr`, `hrs`, `hour`, `hours`, `m`, `min`, `mins`,
/// `minute`, `minutes`, any case), or hours and minutes as `h:mm` (`1:30`, `0:45`).
pub fn parse_duration(raw: &str) -> Result<u32, String> {
    let s = raw.trim().to_lowercase();
    let invalid = || {
        format!(
            "must be minutes (45), 1h 30m or 1:30, not \"{}\"",
            shown(raw)
        )
    };
    let minutes = if s.bytes().all(|b| b.is_ascii_digit()) {
        whole_number(&s).ok_or_else(invalid)?
    } else if let Some((h, m)) = s.split_once(':') {
        if m.len() != 2 || !m.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let hours = whole_number(h.trim()).ok_or_else(invalid)?;
        let mins = whole_number(m).ok_or_else(invalid)?;
        if mins >= 60 {
            return Err(invalid());
        }
        hours.saturating_mul(60).saturating_add(mins)
    } else {
        units_duration(&s).ok_or_else(invalid)?
    };
    if minutes == 0 || minutes > u64::from(MAX_DURATION_MINUTES) {
        return Err(format!(
            "must be from 1 to {MAX_DURATION_MINUTES} minutes, not \"{}\"",
            shown(raw)
        ));
    }
    u32::try_from(minutes).map_err(|_| invalid())
}

/// `1h 30m` and its kin: a number and an hour unit, a number and a minute unit, or both in
/// that order, spaces allowed between the parts.
fn units_duration(s: &str) -> Option<u64> {
    let mut rest = s.trim();
    let mut hours = None;
    let mut minutes = None;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number = whole_number(&rest[..digits])?;
        rest = rest[digits..].trim_start();
        let letters = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..letters];
        rest = rest[letters..].trim_start();
        match unit {
            "h" | "hr" | "hrs" | "hour" | "hours" if hours.is_none() && minutes.is_none() => {
                hours = Some(number)
            }
            "m" | "min" | "mins" | "minute" | "minutes" if minutes.is_none() => {
                minutes = Some(number)
            }
            _ => return None,
        }
    }
    if hours.is_none() && minutes.is_none() {
        return None;
    }
    Some(
        hours
            .unwrap_or(0)
            .saturating_mul(60)
            .saturating_add(minutes.unwrap_or(0)),
    )
}

/// The column names of a catalogue file, as compared (see [`header_key`]), and whether each
/// is required.
const CATALOGUE_COLUMNS: &[(&str, bool)] = &[
    ("title", true),
    ("category", true),
    ("duration", true),
    ("level", true),
    ("url", true),
    ("courseid", false),
];

/// Reads a course catalogue exported from BrainStation's Reseller Portal.
///
/// **Course catalogue CSV.** A CSV file (see the module's rules) with a header row and one
/// course per row. Columns:
///
/// | Column | Required | Value |
/// |---|---|---|
/// | `title` | yes | The course's title, at most 300 characters. Runs of spaces and line breaks are read as one space. |
/// | `category` | yes | The course's category, at most 200 characters (spaces as for the title). |
/// | `duration` | yes | The length, 1 to 10000 minutes: minutes (`45`), hours and minutes with units (`1h 30m`, `2h`, `90m`, `90 min`), or `h:mm` (`1:30`). |
/// | `level` | yes | `Beginner`, `Intermediate` or `Advanced`, in any case. Another word is kept as written, not refused. |
/// | `url` | yes | The course's page: an address starting with `https://`, at most 2048 characters, no spaces. |
/// | `course_id` | no | BrainStation's id of the course, at most 200 characters. |
///
/// Each course has a key: its `course_id` when the row has one, else its title compared
/// without case and extra spaces (see [`course_key`]). A row with the key of an earlier
/// row is reported as a duplicate of that row and not applied; the earlier row is.
pub fn parse_catalogue(text: &str) -> CsvImport<Course> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    import(text, CATALOGUE_COLUMNS, |row, errors| {
        let title = row.required("title", errors, |v| {
            text_value(v, MAX_TITLE_CHARS, "the title")
        });
        let category = row.required("category", errors, |v| {
            text_value(v, MAX_CATEGORY_CHARS, "the category")
        });
        let duration = row.required("duration", errors, parse_duration);
        let level = row.required("level", errors, |v| Ok(Level::parse(v)));
        let url = row.required("url", errors, parse_https_url);
        let course_id = row.optional("courseid", errors, |v| {
            if v.chars().count() > MAX_CATEGORY_CHARS {
                Err(format!("must be at most {MAX_CATEGORY_CHARS} characters"))
            } else {
                Ok(v.to_string())
            }
        });
        let (
            Some(title),
            Some(category),
            Some(duration_minutes),
            Some(level),
            Some(url),
            Ok(course_id),
        ) = (title, category, duration, level, url, course_id)
        else {
            return None;
        };
        let key = course_key(course_id.as_deref(), &title);
        if let Some(first) = seen.get(&key) {
            let (column, what) = match &course_id {
                Some(id) => ("courseid", format!("course_id \"{}\"", shown(id))),
                None => ("title", format!("title \"{}\"", shown(&title))),
            };
            errors.push(row.error(
                column,
                format!("the {what} is already on line {first}; this row is a duplicate and is not applied"),
            ));
            return None;
        }
        seen.insert(key.clone(), row.line);
        Some(Course {
            key,
            course_id,
            title,
            category,
            duration_minutes,
            level,
            url,
        })
    })
}

/// A one-line text: white space runs made one space, 1 to `max` characters.
fn text_value(raw: &str, max: usize, what: &str) -> Result<String, String> {
    let value = collapse_spaces(raw);
    let count = value.chars().count();
    if count > max {
        return Err(format!(
            "{what} must be at most {max} characters, this one has {count}"
        ));
    }
    Ok(value)
}

/// An `https://` address with something after the scheme and no white space.
fn parse_https_url(raw: &str) -> Result<String, String> {
    let ok = raw
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
        && raw.len() > 8
        && !raw.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(format!(
            "must be an address starting with https://, not \"{}\"",
            shown(raw)
        ));
    }
    if raw.chars().count() > MAX_URL_CHARS {
        return Err(format!("must be at most {MAX_URL_CHARS} characters"));
    }
    Ok(raw.to_string())
}

// ---------------------------------------------------------------------------------------
// Learner progress
// ---------------------------------------------------------------------------------------

/// Where a learner stands in a course. Words BrainStation adds later are kept as written
/// in `Other`. Stored as a plain string: `not_started`, `in_progress`, `completed`, or the
/// word as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ProgressStatus {
    NotStarted,
    InProgress,
    Completed,
    Other(String),
}

impl ProgressStatus {
    /// `Not Started`, `In Progress`, `Completed` in any case and with spaces, underscores or
    /// hyphens between the words or none (`not_started`, `in-progress`, `InProgress`);
    /// `complete` and `passed` also mean Completed. Anything else is kept trimmed as written.
    pub fn parse(raw: &str) -> ProgressStatus {
        let raw = raw.trim();
        match header_key(raw).as_str() {
            "notstarted" => ProgressStatus::NotStarted,
            "inprogress" => ProgressStatus::InProgress,
            "completed" | "complete" | "passed" => ProgressStatus::Completed,
            _ => ProgressStatus::Other(raw.to_string()),
        }
    }

    /// The stored word.
    pub fn as_str(&self) -> &str {
        match self {
            ProgressStatus::NotStarted => "not_started",
            ProgressStatus::InProgress => "in_progress",
            ProgressStatus::Completed => "completed",
            ProgressStatus::Other(word) => word,
        }
    }

    /// The words shown to people.
    pub fn label(&self) -> &str {
        match self {
            ProgressStatus::NotStarted => "Not started",
            ProgressStatus::InProgress => "In progress",
            ProgressStatus::Completed => "Completed",
            ProgressStatus::Other(word) => word,
        }
    }
}

impl From<String> for ProgressStatus {
    fn from(s: String) -> Self {
        ProgressStatus::parse(&s)
    }
}

impl From<ProgressStatus> for String {
    fn from(status: ProgressStatus) -> Self {
        status.as_str().to_string()
    }
}

/// A score from 0 to 100 percent, held in tenths of a percent (`87.5%` is 875).
///
/// Tenths rather than a float: a whole number compares exactly, so a re-imported file
/// hashes and compares equal to what is stored, and the record types can be `Eq`.
/// BrainStation shows scores with at most one decimal; finer input is rounded to the
/// nearest tenth. Stored (serialised) as that whole number of tenths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct Score(u16);

impl Score {
    /// 100 percent.
    pub const MAX_TENTHS: u16 = 1000;

    /// A score of `tenths` tenths of a percent, when it is at most 100 percent.
    pub fn from_tenths(tenths: u16) -> Option<Score> {
        (tenths <= Score::MAX_TENTHS).then_some(Score(tenths))
    }

    pub fn tenths(self) -> u16 {
        self.0
    }

    /// The score in percent, for display and charts.
    pub fn percent(self) -> f64 {
        f64::from(self.0) / 10.0
    }

    /// `87`, `87.5`, `87.25` (rounded to `87.3`), `87,5`, `.5`, each with or without a `%`
    /// sign; 0 to 100. A fraction like `0.875` is read as 0.875 percent, not 87.5.
    pub fn parse(raw: &str) -> Result<Score, String> {
        let invalid = || {
            format!(
                "must be a score from 0 to 100 (87, 87.5 or 87.5%), not \"{}\"",
                shown(raw)
            )
        };
        let s = raw.trim();
        let s = s.strip_suffix('%').unwrap_or(s).trim_end();
        let (whole, fraction) = s.split_once(['.', ',']).unwrap_or((s, ""));
        let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
            return Err(invalid());
        }
        let whole = whole.trim_start_matches('0');
        if whole.len() > 3 {
            return Err(invalid());
        }
        let whole: u32 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| invalid())?
        };
        let mut fraction = fraction.bytes().map(|b| u32::from(b - b'0'));
        let tenths = whole * 10 + fraction.next().unwrap_or(0);
        let tenths = tenths + u32::from(fraction.next().unwrap_or(0) >= 5);
        u16::try_from(tenths)
            .ok()
            .and_then(Score::from_tenths)
            .ok_or_else(invalid)
    }
}

/// `87.5%`, or `87%` for a whole number.
impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(10) {
            write!(f, "{}%", self.0 / 10)
        } else {
            write!(f, "{}.{}%", self.0 / 10, self.0 % 10)
        }
    }
}

impl TryFrom<u16> for Score {
    type Error = String;

    fn try_from(tenths: u16) -> Result<Self, Self::Error> {
        Score::from_tenths(tenths)
            .ok_or_else(|| format!("a score is at most 1000 tenths of a percent, not {tenths}"))
    }
}

impl From<Score> for u16 {
    fn from(score: Score) -> Self {
        score.0
    }
}

/// One learner's progress in one course.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The learner's e-mail, lower-case.
    pub email: String,
    /// The course as the file names it: its title or BrainStation's course id (see
    /// [`find_course`]), trimmed, runs of white space made one space.
    pub course: String,
    pub status: ProgressStatus,
    pub score: Option<Score>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl Progress {
    /// The row's stable key: the e-mail and the course as [`normalise_title`] compares it.
    pub fn key(&self) -> (String, String) {
        (self.email.clone(), normalise_title(&self.course))
    }
}

const PROGRESS_COLUMNS: &[(&str, bool)] = &[
    ("email", true),
    ("course", true),
    ("status", true),
    ("score", false),
    ("completedat", false),
    ("team", false),
];

/// Reads one team's learner progress exported from BrainStation's Reseller Portal. `team`
/// is the BrainStation team the file is imported for (the company's team name); `now` is
/// the time of the import.
///
/// **Learner progress CSV.** A CSV file (see the module's rules) with a header row and one
/// row per learner and course. Columns:
///
/// | Column | Required | Value |
/// |---|---|---|
/// | `email` | yes | The learner's e-mail address; compared without case. |
/// | `course` | yes | The course's title or its BrainStation course id, at most 300 characters. |
/// | `status` | yes | `Not Started`, `In Progress` or `Completed`, in any case, with spaces, underscores or hyphens between the words (`not_started`, `in-progress`); `complete` and `passed` mean Completed. Another word is kept as written, not refused. |
/// | `score` | no | 0 to 100, whole or with decimals, with or without a `%` sign (`87`, `87.5`, `87.5%`); kept to one decimal, rounded. |
/// | `completed_at` | no | When the course was completed: `2024-05-31`, `2024-05-31 14:30`, `2024-05-31 14:30:15`, `05/31/2024` (month first), `05/31/2024 2:30 PM`, or RFC 3339 (`2024-05-31T14:30:00Z`, `2024-05-31T16:30:00+02:00`). A time without a zone is read as UTC. It may not be in the future (a time without a zone may be up to 14 hours ahead, the furthest any zone is). It may be empty, also for a completed course. |
/// | `team` | no | The learner's team. When present and not empty it must be the team the file is imported for (compared without case), else the row is refused: it belongs to another company. |
///
/// A row for the same e-mail and course (compared as titles are) as an earlier row is
/// reported as a duplicate and not applied; the earlier row is. A course named by its
/// title in one row and by its id in another is not recognised as the same here.
pub fn parse_progress(text: &str, team: Option<&str>, now: DateTime<Utc>) -> CsvImport<Progress> {
    let expected_team = team.map(normalise_title).filter(|t| !t.is_empty());
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    import(text, PROGRESS_COLUMNS, |row, errors| {
        let email = row.required("email", errors, |v| {
            crate::validate::parse_email(v)
                .map_err(|_| format!("must be an e-mail address, not \"{}\"", shown(v)))
        });
        let course = row.required("course", errors, |v| {
            text_value(v, MAX_TITLE_CHARS, "the course")
        });
        let status = row.required("status", errors, |v| Ok(ProgressStatus::parse(v)));
        let score = row.optional("score", errors, Score::parse);
        let completed_at = row.optional("completedat", errors, |v| parse_completed_at(v, now));
        let team_ok = match &expected_team {
            Some(expected) => row
                .optional("team", errors, |v| {
                    if normalise_title(v) == *expected {
                        Ok(())
                    } else {
                        Err(format!(
                            "is \"{}\" but this file is imported for the team \"{}\"",
                            shown(v),
                            shown(team.unwrap_or_default().trim())
                        ))
                    }
                })
                .is_ok(),
            None => true,
        };
        let (Some(email), Some(course), Some(status), Ok(score), Ok(completed_at), true) =
            (email, course, status, score, completed_at, team_ok)
        else {
            return None;
        };
        let record = Progress {
            email,
            course,
            status,
            score,
            completed_at,
        };
        let key = record.key();
        if let Some(first) = seen.get(&key) {
            errors.push(RowError::new(
                row.line,
                format!(
                    "{} and the course \"{}\" are already on line {first}; this row is a duplicate and is not applied",
                    record.email,
                    shown(&record.course)
                ),
            ));
            return None;
        }
        seen.insert(key, row.line);
        Some(record)
    })
}

/// Date and time forms without a zone, read as UTC.
const DATE_TIME_FORMATS: &[&str] = &[
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y %I:%M:%S %p",
];

/// Date forms, read as midnight UTC.
const DATE_FORMATS: &[&str] = &["%Y-%m-%d", "%m/%d/%Y"];

/// A completion time in one of the forms [`parse_progress`] lists, not in the future.
fn parse_completed_at(raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let s = raw.trim();
    let zoned = DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|at| at.with_timezone(&Utc));
    let at = zoned.or_else(|| {
        DATE_TIME_FORMATS
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
            .or_else(|| {
                DATE_FORMATS
                    .iter()
                    .find_map(|f| NaiveDate::parse_from_str(s, f).ok())
                    .map(|d| d.and_time(NaiveTime::MIN))
            })
            .map(|naive| naive.and_utc())
    });
    // A year before 1970 is a two-digit year (`05/31/24` reads as year 24) or a typo.
    let Some(at) = at.filter(|at| at.year() >= 1970) else {
        return Err(format!(
            "must be a date such as 2024-05-31, 2024-05-31 14:30, 05/31/2024 or 2024-05-31T14:30:00Z, not \"{}\"",
            shown(raw)
        ));
    };
    let latest = if zoned.is_some() {
        now
    } else {
        now + TimeDelta::hours(ZONELESS_GRACE_HOURS)
    };
    if at > latest {
        return Err(format!("is in the future: \"{}\"", shown(raw)));
    }
    Ok(at)
}

// ---------------------------------------------------------------------------------------
// Exports
// ---------------------------------------------------------------------------------------

/// One portal user as BrainStation's user import takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportUser {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    /// The BrainStation team (the company's team name).
    pub team: String,
}

/// A company's users for BrainStation's user import.
///
/// **Users CSV.** The header `First Name,Last Name,Email,Team`, then one row per user in
/// the order given, each line ending in CRLF, UTF-8 without a byte order mark. A field
/// holding a comma, a double quote or a line break is enclosed in double quotes, its
/// double quotes written twice. A field starting with `=`, `+`, `-`, `@`, a tab or a
/// carriage return gets a leading apostrophe (`'`), so that a spreadsheet opening the file
/// shows it as text instead of running it as a formula; that apostrophe is then part of
/// the value BrainStation imports.
pub fn users_csv(users: &[ExportUser]) -> String {
    let mut out = String::new();
    write_row(&mut out, &["First Name", "Last Name", "Email", "Team"]);
    for u in users {
        write_row(&mut out, &[&u.first_name, &u.last_name, &u.email, &u.team]);
    }
    out
}

/// Active BrainStation users of one company in one month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    pub company_id: i64,
    pub company: String,
    /// `YYYY-MM`.
    pub month: String,
    pub active_users: u32,
}

/// A usage report.
///
/// **Usage CSV.** The header `Company,Month,Active users`, then one row per company and
/// month in the order given: the company's name, the month as `YYYY-MM`, the number of
/// active users. Lines, quoting and the apostrophe before formula characters as in
/// [`users_csv`].
pub fn usage_csv(rows: &[UsageRow]) -> String {
    let mut out = String::new();
    write_row(&mut out, &["Company", "Month", "Active users"]);
    for r in rows {
        write_row(
            &mut out,
            &[&r.company, &r.month, &r.active_users.to_string()],
        );
    }
    out
}

/// One CSV line of `fields`, ending in CRLF.
fn write_row(out: &mut String, fields: &[&str]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_field(out, field);
    }
    out.push_str("\r\n");
}

/// One field, guarded against formulas and quoted when RFC 4180 needs it.
fn write_field(out: &mut String, value: &str) {
    let guard = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = value.contains([',', '"', '\r', '\n']);
    if quote {
        out.push('"');
    }
    if guard {
        out.push('\'');
    }
    for c in value.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

// ---------------------------------------------------------------------------------------
// Reading CSV
// ---------------------------------------------------------------------------------------

/// One row as the reader found it, before its fields mean anything.
#[derive(Debug)]
struct RawRecord {
    /// The physical line where the row starts.
    line: usize,
    fields: Vec<String>,
    /// A fault in the row's CSV (a quote never closed, text after a closing quote).
    fault: Option<String>,
}

/// An RFC 4180 reader over a whole text, one row at a time.
struct Reader<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
}

impl<'a> Reader<'a> {
    fn new(text: &'a str) -> Self {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        Reader {
            chars: text.chars().peekable(),
            line: 1,
        }
    }

    /// The next row with a value or a fault; rows with no value are skipped.
    fn next_record(&mut self) -> Option<RawRecord> {
        loop {
            self.chars.peek()?;
            let record = self.record();
            if record.fault.is_some() || record.fields.iter().any(|f| !f.trim().is_empty()) {
                return Some(record);
            }
        }
    }

    /// One row, up to and including its line end.
    fn record(&mut self) -> RawRecord {
        let line = self.line;
        let mut fields = Vec::new();
        loop {
            let mut field = String::new();
            while let Some(&c @ (' ' | '\t')) = self.chars.peek() {
                field.push(c);
                self.chars.next();
            }
            if self.chars.peek() == Some(&'"') {
                self.chars.next();
                field.clear();
                let closed = self.quoted(&mut field);
                fields.push(field);
                if !closed {
                    return RawRecord {
                        line,
                        fields,
                        fault: Some(
                            "a quoted field starting on this line is never closed (a \" is missing)"
                                .to_string(),
                        ),
                    };
                }
                while matches!(self.chars.peek(), Some(' ' | '\t')) {
                    self.chars.next();
                }
                match self.chars.peek() {
                    Some(',') => {
                        self.chars.next();
                    }
                    None | Some('\r' | '\n') => {
                        self.end_line();
                        return RawRecord {
                            line,
                            fields,
                            fault: None,
                        };
                    }
                    Some(_) => {
                        let n = fields.len();
                        self.skip_line();
                        return RawRecord {
                            line,
                            fields,
                            fault: Some(format!(
                                "field {n} has text after its closing quote (a \" inside a quoted field is written twice: \"\")"
                            )),
                        };
                    }
                }
            } else {
                loop {
                    match self.chars.peek() {
                        Some(',') => {
                            self.chars.next();
                            break;
                        }
                        None | Some('\r' | '\n') => {
                            fields.push(field);
                            self.end_line();
                            return RawRecord {
                                line,
                                fields,
                                fault: None,
                            };
                        }
                        Some(&c) => {
                            field.push(c);
                            self.chars.next();
                        }
                    }
                }
                fields.push(field);
            }
        }
    }

    /// The rest of a quoted field, after its opening quote; false when the text ends first.
    fn quoted(&mut self, field: &mut String) -> bool {
        while let Some(c) = self.chars.next() {
            match c {
                '"' if self.chars.peek() == Some(&'"') => {
                    self.chars.next();
                    field.push('"');
                }
                '"' => return true,
                '\r' => {
                    field.push('\r');
                    if self.chars.peek() != Some(&'\n') {
                        self.line += 1;
                    }
                }
                '\n' => {
                    field.push('\n');
                    self.line += 1;
                }
                c => field.push(c),
            }
        }
        false
    }

    /// A line end (CRLF, LF or a lone CR), if one is next.
    fn end_line(&mut self) {
        match self.chars.peek() {
            Some('\r') => {
                self.chars.next();
                if self.chars.peek() == Some(&'\n') {
                    self.chars.next();
                }
                self.line += 1;
            }
            Some('\n') => {
                self.chars.next();
                self.line += 1;
            }
            _ => {}
        }
    }

    /// Everything up to and including the next line end.
    fn skip_line(&mut self) {
        while self.chars.next_if(|c| *c != '\r' && *c != '\n').is_some() {}
        self.end_line();
    }
}

/// The header row: its names as written, and where each known column is.
struct Header {
    names: Vec<String>,
    index: HashMap<&'static str, usize>,
}

/// A header name as compared: lower-case, without spaces, underscores and hyphens.
fn header_key(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_whitespace() && *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// The header row, its known columns found; a required column missing or a known column
/// named twice refuses the file.
fn read_header(record: RawRecord, columns: &[(&'static str, bool)]) -> Result<Header, RowError> {
    if let Some(fault) = record.fault {
        return Err(RowError::new(
            record.line,
            format!("the header row: {fault}"),
        ));
    }
    let names: Vec<String> = record.fields.iter().map(|f| f.trim().to_string()).collect();
    let mut index = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        let key = header_key(name);
        let Some(&(known, _)) = columns.iter().find(|(k, _)| *k == key) else {
            continue;
        };
        if let Some(first) = index.insert(known, i) {
            return Err(RowError::new(
                record.line,
                format!(
                    "the header names the column \"{}\" twice (columns {} and {}); keep one",
                    shown(name),
                    first + 1,
                    i + 1
                ),
            ));
        }
    }
    let missing: Vec<String> = columns
        .iter()
        .filter(|(key, required)| *required && !index.contains_key(key))
        .map(|(key, _)| format!("\"{}\"", display_name(key)))
        .collect();
    match missing.as_slice() {
        [] => Ok(Header { names, index }),
        [one] => Err(RowError::new(
            record.line,
            format!("the header has no {one} column; it is required"),
        )),
        many => Err(RowError::new(
            record.line,
            format!(
                "the header has no {} columns; they are required",
                many.join(", ")
            ),
        )),
    }
}

/// A column's name as the docs spell it.
fn display_name(key: &str) -> &str {
    match key {
        "courseid" => "course_id",
        "completedat" => "completed_at",
        other => other,
    }
}

/// One data row being checked.
struct Row<'a> {
    line: usize,
    header: &'a Header,
    fields: &'a [String],
}

impl<'a> Row<'a> {
    /// The value of a known column, trimmed; None when the column is absent or the value blank.
    fn value(&self, key: &str) -> Option<&'a str> {
        let i = *self.header.index.get(key)?;
        let v = self.fields.get(i)?.trim();
        (!v.is_empty()).then_some(v)
    }

    /// An error about the value of a known column, named as the file writes it.
    fn error(&self, key: &str, message: String) -> RowError {
        let column = match self.header.index.get(key) {
            Some(&i) => self.header.names.get(i).cloned(),
            None => Some(display_name(key).to_string()),
        };
        RowError {
            line: self.line,
            column,
            message,
        }
    }

    /// A required column's value read by `parse`; None, with the reason in `errors`, when
    /// it is blank or refused.
    fn required<T>(
        &self,
        key: &str,
        errors: &mut Vec<RowError>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let Some(v) = self.value(key) else {
            errors.push(self.error(key, "is empty; a value is required".to_string()));
            return None;
        };
        parse(v).map_err(|m| errors.push(self.error(key, m))).ok()
    }

    /// An optional column's value read by `parse`: Ok(None) when absent or blank, Err with
    /// the reason in `errors` when refused.
    fn optional<T>(
        &self,
        key: &str,
        errors: &mut Vec<RowError>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ()> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => parse(v)
                .map(Some)
                .map_err(|m| errors.push(self.error(key, m))),
        }
    }
}

/// Reads `text` as CSV with the known `columns`, and each data row with `check`, which
/// returns the row's record or pushes why it is refused.
fn import<T>(
    text: &str,
    columns: &[(&'static str, bool)],
    mut check: impl FnMut(&Row<'_>, &mut Vec<RowError>) -> Option<T>,
) -> CsvImport<T> {
    let mut reader = Reader::new(text);
    let Some(first) = reader.next_record() else {
        return CsvImport::refused(RowError::new(1, "the file is empty"), 0);
    };
    let mut raw = Vec::new();
    while let Some(record) = reader.next_record() {
        if raw.len() == MAX_ROWS {
            return CsvImport::refused(
                RowError::new(
                    record.line,
                    format!(
                        "the file has more than {MAX_ROWS} rows, the most one import takes; split it into smaller files"
                    ),
                ),
                0,
            );
        }
        raw.push(record);
    }
    let header = match read_header(first, columns) {
        Ok(header) => header,
        Err(error) => return CsvImport::refused(error, raw.len()),
    };
    let mut out = CsvImport {
        records: Vec::new(),
        errors: Vec::new(),
        rows: raw.len(),
    };
    for record in &raw {
        if let Some(fault) = &record.fault {
            out.errors.push(RowError::new(record.line, fault.clone()));
            continue;
        }
        if record.fields.len() != header.names.len() {
            out.errors.push(RowError::new(
                record.line,
                format!(
                    "has {} fields but the header has {}",
                    record.fields.len(),
                    header.names.len()
                ),
            ));
            continue;
        }
        let row = Row {
            line: record.line,
            header: &header,
            fields: &record.fields,
        };
        if let Some(value) = check(&row, &mut out.errors) {
            out.records.push((record.line, value));
        }
    }
    out
}

/// Runs of white space made one space, none at either end.
fn collapse_spaces(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A value quoted in a message: at most 60 characters, line breaks and other control
/// characters as spaces.
fn shown(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(60)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if value.chars().nth(60).is_some() {
        out.push('…');
    }
    out
}

/// A run of ASCII digits as a number; None when empty or absurdly long.
fn whole_number(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Some(0);
    }
    if digits.len() > 12 {
        return Some(u64::MAX);
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn rows(text: &str) -> Vec<(usize, Vec<String>)> {
        let mut reader = Reader::new(text);
        let mut out = Vec::new();
        while let Some(r) = reader.next_record() {
            assert!(r.fault.is_none(), "{:?}", r.fault);
            out.push((r.line, r.fields));
        }
        out
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 6, 15, 12, 0, 0).unwrap()
    }

    const CATALOGUE_HEADER: &str = "title,category,duration,level,url\n";

    fn one_error<T: fmt::Debug>(import: &CsvImport<T>) -> &RowError {
        assert_eq!(import.errors.len(), 1, "{:?}", import.errors);
        &import.errors[0]
    }

    #[test]
    fn quoted_fields_hold_commas_quotes_and_line_breaks() {
        let text = "a,b,c\n\"x, y\",\"say \"\"hi\"\"\",\"two\nlines\"\nplain,\"\",last\n";
        assert_eq!(
            rows(text),
            vec![
                (1, vec!["a".into(), "b".into(), "c".into()]),
                (
                    2,
                    vec!["x, y".into(), "say \"hi\"".into(), "two\nlines".into()]
                ),
                (4, vec!["plain".into(), "".into(), "last".into()]),
            ]
        );
        // Spaces around a quoted field are not part of it.
        assert_eq!(rows("a, \"b,c\" ,d")[0].1, vec!["a", "b,c", "d"]);
    }

    #[test]
    fn bom_crlf_and_trailing_empty_lines_are_ignored() {
        let text = "\u{feff}title,Category,DURATION,level,url\r\nIntro,Office,45,Beginner,https://x.test/1\r\n\r\n\r\n";
        let import = parse_catalogue(text);
        assert!(import.errors.is_empty(), "{:?}", import.errors);
        assert_eq!(import.rows, 1);
        assert_eq!(import.records[0].0, 2);
        assert_eq!(import.records[0].1.title, "Intro");
        // A quoted CRLF counts one line.
        let text = "title,category,duration,level,url\r\n\"Intro\r\nPart 2\",Office,45,Beginner,https://x.test/1\r\nNext,Office,45,Beginner,https://x.test/2\r\n";
        let import = parse_catalogue(text);
        assert_eq!(
            import.records.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![2, 4]
        );
        assert_eq!(import.records[0].1.title, "Intro Part 2");
    }

    #[test]
    fn columns_are_found_by_name_in_any_order_and_case() {
        let text = "URL,Level,Extra,Course ID,Duration,CATEGORY,Title\n\
                    https://x.test/a,advanced,whatever,BB-1,1h 30m,Security,Phishing 101\n";
        let import = parse_catalogue(text);
        assert!(import.errors.is_empty(), "{:?}", import.errors);
        let c = &import.records[0].1;
        assert_eq!(
            c,
            &Course {
                key: "id:BB-1".into(),
                course_id: Some("BB-1".into()),
                title: "Phishing 101".into(),
                category: "Security".into(),
                duration_minutes: 90,
                level: Level::Advanced,
                url: "https://x.test/a".into(),
            }
        );
        let import = parse_catalogue(
            "course_id,title,category,duration,level,url\n,  Intro   to\tExcel ,Office,45,Beginner,https://x.test\n",
        );
        assert_eq!(import.records[0].1.key, "title:intro to excel");
        assert_eq!(import.records[0].1.course_id, None);
    }

    #[test]
    fn whole_file_refusals() {
        for empty in ["", "\u{feff}", "\n\r\n", ",,,\n"] {
            let import = parse_catalogue(empty);
            assert_eq!(one_error(&import).to_string(), "line 1: the file is empty");
        }
        let import = parse_catalogue("title,category,level\nA,B,C\n");
        let e = one_error(&import);
        assert_eq!(e.line, 1);
        assert_eq!(e.column, None);
        assert!(e.message.contains("\"duration\", \"url\""), "{e}");
        assert!(import.records.is_empty());
        assert_eq!(import.rows, 1);
        let import = parse_catalogue("title,category,duration,level,url,Title\n");
        assert!(one_error(&import).message.contains("twice"));
        // Header only: nothing to do, nothing wrong.
        let import = parse_catalogue(CATALOGUE_HEADER);
        assert!(import.errors.is_empty() && import.records.is_empty());
        assert_eq!(import.rows, 0);
    }

    #[test]
    fn a_file_over_the_row_cap_is_refused_whole() {
        let mut text = String::from("email,course,status\n");
        for i in 0..=MAX_ROWS {
            text.push_str(&format!("u{i}@x.test,C,done\n"));
        }
        let import = parse_progress(&text, None, now());
        let e = one_error(&import);
        assert_eq!(e.line, MAX_ROWS + 2);
        assert!(e.message.contains("more than 100000 rows"), "{e}");
        assert!(import.records.is_empty());
        // Exactly the cap is fine.
        let cut = text.rfind("u100000@").unwrap();
        let import = parse_progress(&text[..cut], None, now());
        assert!(import.errors.is_empty());
        assert_eq!(import.rows, MAX_ROWS);
    }

    #[test]
    fn row_refusals_name_line_and_column() {
        let text = "Title,Category,Duration,Level,URL\n\
                    Good,Office,45,Beginner,https://x.test/1\n\
                    \n\
                    ,Office,soon,Beginner,http://x.test/2\n\
                    Short row,Office\n\
                    ,,,,\n\
                    \"Bad \"quote,Office,45,Beginner,https://x.test/3\n\
                    Fine,Office,0,Beginner,https://x.test/4\n";
        let import = parse_catalogue(text);
        assert_eq!(import.rows, 5);
        assert_eq!(import.records.len(), 1);
        let shown: Vec<String> = import.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            shown,
            vec![
                "line 4, column \"Title\": is empty; a value is required",
                "line 4, column \"Duration\": must be minutes (45), 1h 30m or 1:30, not \"soon\"",
                "line 4, column \"URL\": must be an address starting with https://, not \"http://x.test/2\"",
                "line 5: has 2 fields but the header has 5",
                "line 7: field 1 has text after its closing quote (a \" inside a quoted field is written twice: \"\")",
                "line 8, column \"Duration\": must be from 1 to 10000 minutes, not \"0\"",
            ]
        );
        let long = "x".repeat(301);
        let import = parse_catalogue(&format!(
            "{CATALOGUE_HEADER}{long},Office,45,Beginner,https://x.test\n"
        ));
        assert_eq!(one_error(&import).column.as_deref(), Some("title"));
        let import = parse_catalogue(&format!(
            "{CATALOGUE_HEADER}A,B,45,Beginner,https://x.test\n\"never closed,B,45\n"
        ));
        assert_eq!(import.records.len(), 1);
        assert_eq!(one_error(&import).line, 3);
        assert!(one_error(&import).message.contains("never closed"));
    }

    #[test]
    fn catalogue_duplicates_keep_the_first() {
        let text = "title,category,duration,level,url,course_id\n\
                    Intro to Excel,Office,45,Beginner,https://x.test/1,\n\
                    Other,Office,45,Beginner,https://x.test/2,BB-2\n\
                    intro  TO excel,Office,50,Beginner,https://x.test/3,\n\
                    Renamed,Office,45,Beginner,https://x.test/4,BB-2\n";
        let import = parse_catalogue(text);
        assert_eq!(import.records.len(), 2);
        assert_eq!(import.records[0].1.duration_minutes, 45);
        assert_eq!(import.errors.len(), 2);
        assert_eq!(import.errors[0].line, 4);
        assert_eq!(import.errors[0].column.as_deref(), Some("title"));
        assert!(import.errors[0].message.contains("line 2"));
        assert_eq!(import.errors[1].line, 5);
        assert_eq!(import.errors[1].column.as_deref(), Some("course_id"));
        assert!(import.errors[1].message.contains("line 3"));
        // A re-import reads the same records.
        assert_eq!(parse_catalogue(text), import);
    }

    #[test]
    fn unknown_level_and_status_are_kept() {
        let import = parse_catalogue(&format!(
            "{CATALOGUE_HEADER}A,B,45, Expert ,https://x.test\nC,B,45,INTERMEDIATE,https://x.test\n"
        ));
        assert_eq!(import.records[0].1.level, Level::Other("Expert".into()));
        assert_eq!(import.records[1].1.level, Level::Intermediate);
        assert_eq!(
            serde_json::to_string(&import.records[0].1.level).unwrap(),
            "\"Expert\""
        );
        let back: Level = serde_json::from_str("\"intermediate\"").unwrap();
        assert_eq!(back, Level::Intermediate);

        for (raw, want) in [
            ("Not Started", ProgressStatus::NotStarted),
            ("not_started", ProgressStatus::NotStarted),
            ("In Progress", ProgressStatus::InProgress),
            ("in-progress", ProgressStatus::InProgress),
            ("Completed", ProgressStatus::Completed),
            ("complete", ProgressStatus::Completed),
            ("PASSED", ProgressStatus::Completed),
            (" Failed ", ProgressStatus::Other("Failed".into())),
        ] {
            assert_eq!(ProgressStatus::parse(raw), want, "{raw}");
        }
        let s: ProgressStatus =
            serde_json::from_str(&serde_json::to_string(&ProgressStatus::InProgress).unwrap())
                .unwrap();
        assert_eq!(s, ProgressStatus::InProgress);
    }

    #[test]
    fn durations_in_every_form() {
        for (raw, want) in [
            ("45", 45),
            (" 045 ", 45),
            ("1h 30m", 90),
            ("1H30M", 90),
            ("2h", 120),
            ("90m", 90),
            ("90 min", 90),
            ("1 hour 30 minutes", 90),
            ("1 hr 5 mins", 65),
            ("1:30", 90),
            ("0:45", 45),
            ("10000", 10000),
        ] {
            assert_eq!(parse_duration(raw), Ok(want), "{raw}");
        }
        for raw in [
            "soon", "1.5", "1:3", "1:60", "30m 1h", "1h 1h", "h", "-5", "1d", "",
        ] {
            assert!(
                parse_duration(raw)
                    .unwrap_err()
                    .starts_with("must be minutes"),
                "{raw}"
            );
        }
        for raw in ["0", "0:00", "10001", "200h", "99999999999999999999"] {
            assert!(
                parse_duration(raw)
                    .unwrap_err()
                    .starts_with("must be from 1"),
                "{raw}"
            );
        }
    }

    #[test]
    fn scores_in_every_form() {
        for (raw, tenths) in [
            ("87", 870),
            ("87%", 870),
            ("87.5", 875),
            ("87.5 %", 875),
            ("87,5", 875),
            ("87.25", 873),
            ("87.24", 872),
            ("0", 0),
            ("100", 1000),
            ("100.0%", 1000),
            (".5", 5),
            ("99.96", 1000),
        ] {
            assert_eq!(Score::parse(raw).map(Score::tenths), Ok(tenths), "{raw}");
        }
        for raw in ["101", "100.1", "-1", "abc", "%", "8 7", "1e2", "1000"] {
            assert!(Score::parse(raw).is_err(), "{raw}");
        }
        assert_eq!(Score::parse("87.5").unwrap().to_string(), "87.5%");
        assert_eq!(Score::parse("87").unwrap().to_string(), "87%");
        assert_eq!(serde_json::to_string(&Score(875)).unwrap(), "875");
        assert!(serde_json::from_str::<Score>("1001").is_err());
    }

    fn progress(text: &str) -> CsvImport<Progress> {
        parse_progress(text, Some("Acme Corp"), now())
    }

    #[test]
    fn progress_rows_are_read() {
        let text = "Email,Course,Status,Score,Completed At,Team\n\
                    Ann@Example.com,Intro to Excel,Completed,87.5%,2025-06-01,acme  corp\n\
                    bob@example.com,BB-2,In Progress,,,\n";
        let import = progress(text);
        assert!(import.errors.is_empty(), "{:?}", import.errors);
        assert_eq!(
            import.records[0].1,
            Progress {
                email: "ann@example.com".into(),
                course: "Intro to Excel".into(),
                status: ProgressStatus::Completed,
                score: Score::from_tenths(875),
                completed_at: Some(Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap()),
            }
        );
        assert_eq!(
            import.records[0].1.key(),
            ("ann@example.com".into(), "intro to excel".into())
        );
        assert_eq!(import.records[1].1.score, None);
        assert_eq!(import.records[1].1.completed_at, None);
        // Completed without a date is fine; `completed_at` spelled with an underscore.
        let import = progress("email,course,status,completed_at\na@x.test,C,passed,\n");
        assert!(import.errors.is_empty());
        assert_eq!(import.records[0].1.status, ProgressStatus::Completed);
    }

    #[test]
    fn completion_dates_in_every_form_and_none_in_the_future() {
        let at = |y, mo, d, h, mi, s| Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap();
        for (raw, want) in [
            ("2025-05-31", at(2025, 5, 31, 0, 0, 0)),
            ("2025-05-31 14:30", at(2025, 5, 31, 14, 30, 0)),
            ("2025-05-31 14:30:15", at(2025, 5, 31, 14, 30, 15)),
            (
                "2025-05-31 14:30:15.250",
                at(2025, 5, 31, 14, 30, 15) + TimeDelta::milliseconds(250),
            ),
            ("2025-05-31T14:30:15", at(2025, 5, 31, 14, 30, 15)),
            ("05/31/2025", at(2025, 5, 31, 0, 0, 0)),
            ("5/3/2025", at(2025, 5, 3, 0, 0, 0)),
            ("05/31/2025 14:30", at(2025, 5, 31, 14, 30, 0)),
            ("05/31/2025 2:30 PM", at(2025, 5, 31, 14, 30, 0)),
            ("2025-05-31T14:30:00Z", at(2025, 5, 31, 14, 30, 0)),
            ("2025-05-31T16:30:00+02:00", at(2025, 5, 31, 14, 30, 0)),
            // Today in a zone ahead of UTC.
            ("2025-06-16", at(2025, 6, 16, 0, 0, 0)),
        ] {
            assert_eq!(parse_completed_at(raw, now()), Ok(want), "{raw}");
        }
        for raw in [
            "31/05/2025",
            "05/31/25",
            "yesterday",
            "2025-13-01",
            "2025-05-31 25:00",
        ] {
            assert!(
                parse_completed_at(raw, now())
                    .unwrap_err()
                    .starts_with("must be a date"),
                "{raw}"
            );
        }
        for raw in ["2025-06-17", "2025-06-15T12:00:01Z", "12/31/2099"] {
            assert!(
                parse_completed_at(raw, now())
                    .unwrap_err()
                    .starts_with("is in the future"),
                "{raw}"
            );
        }
        let import =
            progress("email,course,status,completed at\na@x.test,C,Completed,2030-01-01\n");
        assert_eq!(
            one_error(&import).to_string(),
            "line 2, column \"completed at\": is in the future: \"2030-01-01\""
        );
    }

    #[test]
    fn progress_refusals_name_line_and_column() {
        let text = "email,course,status,score\n\
                    not-an-email,C,Completed,50\n\
                    a@x.test,,Completed,150\n\
                    b@x.test,C,,\n";
        let import = progress(text);
        assert!(import.records.is_empty());
        let shown: Vec<String> = import.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            shown,
            vec![
                "line 2, column \"email\": must be an e-mail address, not \"not-an-email\"",
                "line 3, column \"course\": is empty; a value is required",
                "line 3, column \"score\": must be a score from 0 to 100 (87, 87.5 or 87.5%), not \"150\"",
                "line 4, column \"status\": is empty; a value is required",
            ]
        );
        let import = progress("email,status\na@x.test,Completed\n");
        assert_eq!(
            one_error(&import).to_string(),
            "line 1: the header has no \"course\" column; it is required"
        );
    }

    #[test]
    fn another_team_is_refused() {
        let text = "email,course,status,Team\n\
                    a@x.test,C,Completed,Acme Corp\n\
                    b@x.test,C,Completed,Globex\n\
                    c@x.test,C,Completed,\n";
        let import = progress(text);
        assert_eq!(import.records.len(), 2);
        assert_eq!(
            one_error(&import).to_string(),
            "line 3, column \"Team\": is \"Globex\" but this file is imported for the team \"Acme Corp\""
        );
        // No expected team: the column is not checked.
        let import = parse_progress(text, None, now());
        assert_eq!(import.records.len(), 3);
    }

    #[test]
    fn progress_duplicates_keep_the_first() {
        let text = "email,course,status\n\
                    a@x.test,Intro to Excel,In Progress\n\
                    A@X.test,intro to  excel,Completed\n\
                    a@x.test,Other,Completed\n";
        let import = progress(text);
        assert_eq!(import.records.len(), 2);
        assert_eq!(import.records[0].1.status, ProgressStatus::InProgress);
        let e = one_error(&import);
        assert_eq!(e.line, 3);
        assert!(e.message.contains("line 2"), "{e}");
    }

    #[test]
    fn exports_guard_formulas_and_quote() {
        let users = [
            ExportUser {
                first_name: "=HYPERLINK(\"x\")".into(),
                last_name: "+1".into(),
                email: "@evil".into(),
                team: "-Sales".into(),
            },
            ExportUser {
                first_name: "\tTab".into(),
                last_name: "\rCR".into(),
                email: "plain@x.test".into(),
                team: "A, B".into(),
            },
        ];
        assert_eq!(
            users_csv(&users),
            "First Name,Last Name,Email,Team\r\n\
             \"'=HYPERLINK(\"\"x\"\")\",'+1,'@evil,'-Sales\r\n\
             '\tTab,\"'\rCR\",plain@x.test,\"A, B\"\r\n"
        );
        assert_eq!(users_csv(&[]), "First Name,Last Name,Email,Team\r\n");
        let usage = [UsageRow {
            company_id: 7,
            company: "=cmd|' /C calc'!A0".into(),
            month: "2025-06".into(),
            active_users: 12,
        }];
        assert_eq!(
            usage_csv(&usage),
            "Company,Month,Active users\r\n'=cmd|' /C calc'!A0,2025-06,12\r\n"
        );
    }

    #[test]
    fn users_csv_reads_back() {
        let users = vec![
            ExportUser {
                first_name: "Anne-Marie".into(),
                last_name: "O'Brien, Jr.".into(),
                email: "anne@x.test".into(),
                team: "The \"A\" Team".into(),
            },
            ExportUser {
                first_name: "Zoë".into(),
                last_name: "Two\nLines".into(),
                email: "zoe@x.test".into(),
                team: "".into(),
            },
        ];
        let read = rows(&users_csv(&users));
        assert_eq!(read[0].1, vec!["First Name", "Last Name", "Email", "Team"]);
        let back: Vec<ExportUser> = read[1..]
            .iter()
            .map(|(_, f)| ExportUser {
                first_name: f[0].clone(),
                last_name: f[1].clone(),
                email: f[2].clone(),
                team: f[3].clone(),
            })
            .collect();
        assert_eq!(back, users);
        assert_eq!(read[2].0, 3);
    }

    #[test]
    fn a_catalogue_of_280_courses_parses_clean() {
        let levels = ["Beginner", "Intermediate", "Advanced"];
        let durations = ["45", "1h 30m", "90m", "1:30", "2h", "15"];
        let mut text = String::from("Course ID,Title,Category,Duration,Level,URL\r\n");
        for i in 0..280 {
            text.push_str(&format!(
                "BB-{i:04},\"Course {i}: Working with \"\"Excel\"\", part {}\",{},{},{},https://brainstation.test/courses/{i}\r\n",
                i % 7,
                ["Office", "Security", "Teams"][i % 3],
                durations[i % durations.len()],
                levels[i % 3],
            ));
        }
        let import = parse_catalogue(&text);
        assert!(import.errors.is_empty(), "{:?}", &import.errors[..1]);
        assert_eq!(import.rows, 280);
        assert_eq!(import.records.len(), 280);
        assert_eq!(import.records[279].0, 281);
        assert_eq!(
            import.records[1].1.title,
            "Course 1: Working with \"Excel\", part 1"
        );
        assert_eq!(import.records[1].1.duration_minutes, 90);
    }

    #[test]
    fn courses_are_found_by_id_or_title() {
        let import = parse_catalogue(
            "course_id,title,category,duration,level,url\nBB-1,Intro to Excel,O,45,Beginner,https://x.test\n,Phishing,S,45,Beginner,https://x.test\n",
        );
        let courses: Vec<Course> = import.records.into_iter().map(|(_, c)| c).collect();
        assert_eq!(
            find_course(&courses, "bb-1").map(|c| c.title.as_str()),
            Some("Intro to Excel")
        );
        assert_eq!(
            find_course(&courses, " PHISHING ").map(|c| c.key.as_str()),
            Some("title:phishing")
        );
        assert!(find_course(&courses, "nothing").is_none());
    }
}
