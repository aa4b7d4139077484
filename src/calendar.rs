//! Loyalty time: the programme's time zone, campaign schedules and the periods that limits count
//! in. Everything here works on *event time* (the event's `occurred_at`, else when it was
//! received), never on the clock. The zone database is built into the binary (jiff's bundled
//! tzdb), so a machine without `/usr/share/zoneinfo` computes the same answers.
//!
//! ```
//! use fluxflow::calendar::{Schedule, Zone};
//!
//! let berlin = Zone::named("Europe/Berlin").unwrap();
//! let weekends = Schedule::parse(None, None, Some(&["sat", "sun"]), Some("08:00-20:00")).unwrap();
//! let saturday_noon: jiff::Timestamp = "2026-12-05T11:00:00Z".parse().unwrap();
//! let monday_noon: jiff::Timestamp = "2026-12-07T11:00:00Z".parse().unwrap();
//! assert!(weekends.contains(saturday_noon, &berlin));
//! assert!(!weekends.contains(monday_noon, &berlin));
//! ```

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::TimeZone;

/// An IANA time zone, kept with its name for messages and `GET /v1/rules`.
#[derive(Clone)]
pub struct Zone {
    name: Box<str>,
    tz: TimeZone,
}

impl Zone {
    /// UTC, the default of a programme.
    pub fn utc() -> Zone {
        Zone { name: "UTC".into(), tz: TimeZone::UTC }
    }

    /// A zone by its IANA name (`Europe/Berlin`); the error suggests the nearest known name.
    pub fn named(name: &str) -> Result<Zone, String> {
        match TimeZone::get(name) {
            Ok(tz) => Ok(Zone { name: name.into(), tz }),
            Err(_) => Err(format!("unknown time zone `{name}`{}", nearest_zone(name))),
        }
    }

    /// The zone's IANA name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The wall-clock date and time of an instant in this zone.
    pub fn civil(&self, at: Timestamp) -> DateTime {
        self.tz.to_datetime(at)
    }

    /// The instant a local date and time stands for. A time skipped by a daylight-saving change
    /// is taken as the same wall-clock time after the change; a repeated one as its first
    /// occurrence (jiff's "compatible" rule, as most calendars do).
    pub fn instant(&self, local: DateTime) -> Timestamp {
        self.tz.to_ambiguous_timestamp(local).compatible().unwrap_or(Timestamp::MAX)
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Zone({})", self.name)
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Zone) -> bool {
        self.name == other.name
    }
}

impl serde::Serialize for Zone {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name)
    }
}

/// ` (did you mean `X`?)` for the zone name closest to `name`, or nothing.
fn nearest_zone(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let best = jiff::tz::db()
        .available()
        .map(|candidate| {
            let candidate = candidate.as_str().to_owned();
            let distance = strsim::levenshtein(&lower, &candidate.to_ascii_lowercase());
            (distance, candidate)
        })
        .min();
    match best {
        Some((distance, candidate)) if distance <= 4.max(name.len() / 3) => format!(" (did you mean `{candidate}`?)"),
        _ => String::new(),
    }
}

/// One end of a schedule: a local date (the whole day), a local date and time, or an absolute
/// instant (written with an offset).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// `2026-12-01`.
    Date(Date),
    /// `2026-12-01T18:00` (local to the schedule's zone).
    Local(DateTime),
    /// `2026-12-01T18:00:00+01:00`.
    Absolute(Timestamp),
}

impl Bound {
    /// Reads `2026-12-01`, `2026-12-01T18:00[:00]` or an RFC 3339 time with an offset.
    pub fn parse(text: &str) -> Result<Bound, String> {
        if let Ok(at) = Timestamp::from_str(text) {
            return Ok(Bound::Absolute(at));
        }
        if let Ok(local) = DateTime::from_str(text) {
            if text.contains('T') || text.contains(' ') {
                return Ok(Bound::Local(local));
            }
        }
        Date::from_str(text).map(Bound::Date).map_err(|_| {
            format!(
                "`{text}` is not a date (2026-12-01), a local date-time (2026-12-01T18:00) or a time with an offset"
            )
        })
    }

    /// The first instant of the bound: a date starts at its local midnight.
    fn start(&self, zone: &Zone) -> Timestamp {
        match *self {
            Bound::Date(date) => zone.instant(date.to_datetime(Time::midnight())),
            Bound::Local(local) => zone.instant(local),
            Bound::Absolute(at) => at,
        }
    }

    /// The exclusive end of the bound: a date alone includes that whole day.
    fn end(&self, zone: &Zone) -> Timestamp {
        match *self {
            Bound::Date(date) => match date.tomorrow() {
                Ok(next) => zone.instant(next.to_datetime(Time::midnight())),
                Err(_) => Timestamp::MAX,
            },
            other => other.start(zone),
        }
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Date(d) => write!(f, "{d}"),
            Bound::Local(l) => write!(f, "{l}"),
            Bound::Absolute(a) => write!(f, "{a}"),
        }
    }
}

/// Days of the week, as a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Days(u8);

/// The names of the days, Monday first, as rules write them.
pub const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Days {
    /// Reads day names (`mon`..`sun`, any case).
    pub fn parse(names: &[&str]) -> Result<Days, String> {
        let mut days = Days::default();
        for name in names {
            let lower = name.to_ascii_lowercase();
            let index = DAY_NAMES
                .iter()
                .position(|d| *d == lower)
                .ok_or_else(|| format!("`{name}` is not a day: write mon, tue, wed, thu, fri, sat or sun"))?;
            days.0 |= 1 << index;
        }
        Ok(days)
    }

    /// True when the set holds the weekday.
    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.to_monday_zero_offset()) != 0
    }

    /// The names of the days in the set, Monday first.
    pub fn names(self) -> Vec<&'static str> {
        DAY_NAMES.iter().enumerate().filter(|(i, _)| self.0 & (1 << i) != 0).map(|(_, n)| *n).collect()
    }
}

/// `"08:00-20:00"`: a daily window of wall-clock time, start inclusive, end exclusive; a window
/// whose end is before its start runs past midnight (`"22:00-02:00"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hours {
    start: Time,
    /// `None` for `24:00`, the end of the day.
    end: Option<Time>,
}

impl Hours {
    /// Reads `HH:MM-HH:MM` (`24:00` allowed as an end).
    pub fn parse(text: &str) -> Result<Hours, String> {
        let bad = || format!("`{text}` is not a window of hours such as \"08:00-20:00\"");
        let (start, end) = text.split_once('-').ok_or_else(bad)?;
        let clock = |t: &str| -> Result<Option<Time>, String> {
            let t = t.trim();
            if t == "24:00" {
                return Ok(None);
            }
            let (h, m) = t.split_once(':').ok_or_else(bad)?;
            let (h, m) = (h.parse::<i8>().map_err(|_| bad())?, m.parse::<i8>().map_err(|_| bad())?);
            if t.len() != 5 {
                return Err(bad());
            }
            Time::new(h, m, 0, 0).map(Some).map_err(|_| bad())
        };
        let start = clock(start)?.ok_or_else(|| format!("`{text}`: a window cannot start at 24:00"))?;
        let end = clock(end)?;
        if end == Some(start) {
            return Err(format!("`{text}` is empty: its start and end are the same time"));
        }
        Ok(Hours { start, end })
    }

    /// The date on which the window holding `local` started, if `local` is inside one.
    fn window_start(&self, local: DateTime) -> Option<Date> {
        let t = local.time();
        match self.end {
            None => (t >= self.start).then(|| local.date()),
            Some(end) if self.start < end => (self.start <= t && t < end).then(|| local.date()),
            // Past midnight: the evening part starts today, the morning part started yesterday.
            Some(_) if t >= self.start => Some(local.date()),
            Some(end) if t < end => local.date().yesterday().ok(),
            Some(_) => None,
        }
    }
}

impl fmt::Display for Hours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = self.end.map_or_else(|| "24:00".to_owned(), |e| e.strftime("%H:%M").to_string());
        write!(f, "{}-{end}", self.start.strftime("%H:%M"))
    }
}

/// When a scenario is considered, in local wall-clock time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Schedule {
    /// Inclusive start.
    pub from: Option<Bound>,
    /// End: a date alone includes that day, a date-time is exclusive.
    pub until: Option<Bound>,
    /// The local days on which a window of `hours` starts (or the event's day, without hours).
    pub days: Option<Days>,
    /// The daily window.
    pub hours: Option<Hours>,
    /// The schedule's own zone, instead of the programme's.
    pub zone: Option<Zone>,
}

impl Schedule {
    /// Reads the parts of a schedule (each as written); the first problem is returned.
    pub fn parse(
        from: Option<&str>,
        until: Option<&str>,
        days: Option<&[&str]>,
        hours: Option<&str>,
    ) -> Result<Schedule, String> {
        Ok(Schedule {
            from: from.map(Bound::parse).transpose()?,
            until: until.map(Bound::parse).transpose()?,
            days: days.map(Days::parse).transpose()?,
            hours: hours.map(Hours::parse).transpose()?,
            zone: None,
        })
    }

    /// True when `until` comes before `from` (in `zone`, for local bounds): such a schedule is
    /// never open.
    pub fn is_backwards(&self, zone: &Zone) -> bool {
        match (&self.from, &self.until) {
            (Some(from), Some(until)) => {
                until.end(self.zone.as_ref().unwrap_or(zone)) <= from.start(self.zone.as_ref().unwrap_or(zone))
            }
            _ => false,
        }
    }

    /// True when the event time `at` lies inside the schedule; `zone` is the programme's, used
    /// unless the schedule names its own.
    pub fn contains(&self, at: Timestamp, zone: &Zone) -> bool {
        let zone = self.zone.as_ref().unwrap_or(zone);
        if self.from.is_some_and(|from| at < from.start(zone)) || self.until.is_some_and(|until| at >= until.end(zone))
        {
            return false;
        }
        if self.days.is_none() && self.hours.is_none() {
            return true;
        }
        let local = zone.civil(at);
        let day = match &self.hours {
            Some(hours) => match hours.window_start(local) {
                Some(day) => day,
                None => return false,
            },
            None => local.date(),
        };
        self.days.is_none_or(|days| days.contains(day.weekday()))
    }
}

/// What a limit counts in: a calendar period of the programme's zone, a rolling window ending at
/// the event, or all time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// The local day.
    Day,
    /// The local week, Monday first.
    Week,
    /// The local month.
    Month,
    /// The local year.
    Year,
    /// The last N hours.
    RollingHours(u32),
    /// The last N days (N × 24 hours).
    RollingDays(u32),
    /// All time.
    Lifetime,
}

impl Period {
    /// Reads `day`, `week`, `month`, `year`, `lifetime`, `<N>d` or `<N>h` (N from 1 to 36,500
    /// days or 876,000 hours).
    pub fn parse(text: &str) -> Result<Period, String> {
        let bad = || {
            format!(
                "`{text}` is not a period: write day, week, month, year, lifetime, or a rolling window such as 30d or 24h"
            )
        };
        Ok(match text {
            "day" => Period::Day,
            "week" => Period::Week,
            "month" => Period::Month,
            "year" => Period::Year,
            "lifetime" => Period::Lifetime,
            _ => {
                // The unit is split off as a char, not a byte, so text ending in a multi-byte
                // character is refused rather than cut inside it.
                let mut chars = text.chars();
                let unit = chars.next_back();
                let n: u32 = chars.as_str().parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
                match unit {
                    Some('d') if n <= 36_500 => Period::RollingDays(n),
                    Some('h') if n <= 876_000 => Period::RollingHours(n),
                    _ => return Err(bad()),
                }
            }
        })
    }

    /// True for `<N>d` and `<N>h`.
    pub fn is_rolling(self) -> bool {
        matches!(self, Period::RollingDays(_) | Period::RollingHours(_))
    }

    /// The instants `[start, end)` of the period that holds `at`. A rolling window ends one
    /// microsecond (the ledger's resolution) after `at`, so the event itself counts; calendar periods follow the zone's wall clock, so a
    /// day across a daylight-saving change is 23 or 25 hours long.
    pub fn bounds(self, at: Timestamp, zone: &Zone) -> (Timestamp, Timestamp) {
        let local = zone.civil(at).date();
        let start_of = |date: Date| zone.instant(date.to_datetime(Time::midnight()));
        let after = |date: Result<Date, jiff::Error>| date.map_or(Timestamp::MAX, start_of);
        let hours = |n: u32| jiff::SignedDuration::from_hours(i64::from(n));
        let just_after = at.checked_add(jiff::SignedDuration::from_micros(1)).unwrap_or(Timestamp::MAX);
        match self {
            Period::Day => (start_of(local), after(local.tomorrow())),
            Period::Week => {
                let monday = local
                    .checked_sub(jiff::Span::new().days(i64::from(local.weekday().to_monday_zero_offset())))
                    .unwrap_or(local);
                (start_of(monday), after(monday.checked_add(jiff::Span::new().days(7))))
            }
            Period::Month => {
                let first = local.first_of_month();
                (start_of(first), after(first.checked_add(jiff::Span::new().months(1))))
            }
            Period::Year => {
                let first = local.first_of_year();
                (start_of(first), after(first.checked_add(jiff::Span::new().years(1))))
            }
            Period::RollingHours(n) => (at.checked_sub(hours(n)).unwrap_or(Timestamp::MIN), just_after),
            Period::RollingDays(n) => {
                (at.checked_sub(hours(n.saturating_mul(24))).unwrap_or(Timestamp::MIN), just_after)
            }
            Period::Lifetime => (Timestamp::MIN, Timestamp::MAX),
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Period::Day => write!(f, "day"),
            Period::Week => write!(f, "week"),
            Period::Month => write!(f, "month"),
            Period::Year => write!(f, "year"),
            Period::RollingHours(n) => write!(f, "{n}h"),
            Period::RollingDays(n) => write!(f, "{n}d"),
            Period::Lifetime => write!(f, "lifetime"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn berlin() -> Zone {
        Zone::named("Europe/Berlin").unwrap()
    }

    #[test]
    fn zones_come_from_the_bundled_database_with_suggestions() {
        assert_eq!(berlin().name(), "Europe/Berlin");
        let err = Zone::named("Europe/Berln").unwrap_err();
        assert!(err.contains("did you mean `Europe/Berlin`?"), "{err}");
        assert!(!Zone::named("Mars/Olympus").unwrap_err().contains("did you mean"));
    }

    #[test]
    fn dates_include_the_whole_day_and_date_times_are_exclusive() {
        let s = Schedule::parse(Some("2026-12-01"), Some("2026-12-31"), None, None).unwrap();
        let z = berlin();
        assert!(!s.contains(at("2026-11-30T22:59:59Z"), &z), "before local midnight of the 1st");
        assert!(s.contains(at("2026-11-30T23:00:00Z"), &z), "local midnight of the 1st");
        assert!(s.contains(at("2026-12-31T22:59:59Z"), &z), "the last second of the 31st");
        assert!(!s.contains(at("2026-12-31T23:00:00Z"), &z));
        let s = Schedule::parse(None, Some("2026-12-24T14:00"), None, None).unwrap();
        assert!(s.contains(at("2026-12-24T12:59:59Z"), &z));
        assert!(!s.contains(at("2026-12-24T13:00:00Z"), &z), "a date-time end is exclusive");
        let s = Schedule::parse(Some("2026-12-24T14:00:00+00:00"), None, None, None).unwrap();
        assert!(!s.contains(at("2026-12-24T13:59:59Z"), &z), "an offset makes it absolute");
        assert!(s.contains(at("2026-12-24T14:00:00Z"), &z));
    }

    #[test]
    fn windows_past_midnight_belong_to_the_day_they_start() {
        let s = Schedule::parse(None, None, Some(&["fri"]), Some("22:00-02:00")).unwrap();
        let z = Zone::utc();
        assert!(s.contains(at("2026-12-04T23:00:00Z"), &z), "Friday 23:00");
        assert!(s.contains(at("2026-12-05T01:30:00Z"), &z), "Saturday 01:30 is Friday's window");
        assert!(!s.contains(at("2026-12-05T02:00:00Z"), &z), "the end is exclusive");
        assert!(!s.contains(at("2026-12-05T23:00:00Z"), &z), "Saturday's own window is not listed");
        assert!(!s.contains(at("2026-12-04T01:30:00Z"), &z), "Friday 01:30 is Thursday's window");
    }

    #[test]
    fn hours_follow_the_wall_clock_across_daylight_saving() {
        // 2026-03-29: Berlin skips 02:00-03:00; 2026-10-25 repeats 02:00-03:00.
        let s = Schedule::parse(None, None, None, Some("01:00-04:00")).unwrap();
        let z = berlin();
        assert!(s.contains(at("2026-03-29T00:30:00Z"), &z), "01:30 CET");
        assert!(s.contains(at("2026-03-29T01:30:00Z"), &z), "03:30 CEST");
        assert!(!s.contains(at("2026-03-29T02:00:00Z"), &z), "04:00 CEST");
        assert!(s.contains(at("2026-10-25T00:30:00Z"), &z), "02:30 CEST");
        assert!(s.contains(at("2026-10-25T01:30:00Z"), &z), "02:30 CET, the repeated hour");
        assert!(!s.contains(at("2026-10-25T03:00:00Z"), &z), "04:00 CET");
    }

    #[test]
    fn bad_parts_are_named() {
        assert!(Hours::parse("8-20").unwrap_err().contains("not a window of hours"));
        assert!(Hours::parse("08:00-08:00").unwrap_err().contains("empty"));
        assert!(Hours::parse("25:00-26:00").is_err());
        assert!(Hours::parse("20:00-24:00").is_ok());
        assert!(Days::parse(&["sat", "sunday"]).unwrap_err().contains("`sunday` is not a day"));
        assert!(Bound::parse("31.12.2026").unwrap_err().contains("is not a date"));
        assert!(Period::parse("fortnight").unwrap_err().contains("is not a period"));
        assert!(Period::parse("0d").is_err());
        assert_eq!(Period::parse("30d"), Ok(Period::RollingDays(30)));
        assert_eq!(Period::parse("24h"), Ok(Period::RollingHours(24)));
        for not_ascii in ["365€", "€", "7дн", "é"] {
            assert!(Period::parse(not_ascii).unwrap_err().contains("is not a period"), "{not_ascii}");
        }
    }

    #[test]
    fn calendar_periods_across_daylight_saving_and_month_ends() {
        let z = berlin();
        // The day of the spring change is 23 hours long.
        let (start, end) = Period::Day.bounds(at("2026-03-29T10:00:00Z"), &z);
        assert_eq!((start, end), (at("2026-03-28T23:00:00Z"), at("2026-03-29T22:00:00Z")));
        // The day of the autumn change is 25 hours long.
        let (start, end) = Period::Day.bounds(at("2026-10-25T10:00:00Z"), &z);
        assert_eq!((start, end), (at("2026-10-24T22:00:00Z"), at("2026-10-25T23:00:00Z")));
        // 23:30 local on Jan 31 is still January; 00:30 local on Feb 1 is February.
        let (start, end) = Period::Month.bounds(at("2026-01-31T22:30:00Z"), &z);
        assert_eq!((start, end), (at("2025-12-31T23:00:00Z"), at("2026-01-31T23:00:00Z")));
        let (start, _) = Period::Month.bounds(at("2026-01-31T23:30:00Z"), &z);
        assert_eq!(start, at("2026-01-31T23:00:00Z"));
        // Weeks start on Monday: Sunday 2026-12-06 belongs to the week of Monday 2026-11-30.
        let (start, end) = Period::Week.bounds(at("2026-12-06T12:00:00Z"), &Zone::utc());
        assert_eq!((start, end), (at("2026-11-30T00:00:00Z"), at("2026-12-07T00:00:00Z")));
        let (start, end) = Period::RollingHours(24).bounds(at("2026-12-06T12:00:00Z"), &z);
        assert_eq!(start, at("2026-12-05T12:00:00Z"));
        assert!(end > at("2026-12-06T12:00:00Z"));
    }
}
