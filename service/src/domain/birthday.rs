use chrono::{Datelike, NaiveDate};

use super::{DateOfBirth, Username};

/// Whole calendar days from `today` to the next birthday of someone born on `date_of_birth`:
/// 0 on the birthday itself. Someone born on 29 February has their birthday on 28 February in
/// years that are not leap years.
pub fn days_until_birthday(date_of_birth: DateOfBirth, today: NaiveDate) -> u32 {
    let this_year = birthday_in(date_of_birth.date(), today.year());
    let next = if this_year >= today {
        this_year
    } else {
        birthday_in(date_of_birth.date(), today.year() + 1)
    };
    let days = (next - today).num_days();
    // A birthday is at most 366 days away, so the count always fits.
    u32::try_from(days).unwrap_or(u32::MAX)
}

fn birthday_in(date_of_birth: NaiveDate, year: i32) -> NaiveDate {
    date_of_birth
        .with_year(year)
        .or_else(|| NaiveDate::from_ymd_opt(year, 2, 28))
        .unwrap_or(date_of_birth)
}

/// What the service says to a user on a given day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Greeting {
    HappyBirthday,
    DaysToGo(u32),
}

impl Greeting {
    pub fn for_day(date_of_birth: DateOfBirth, today: NaiveDate) -> Self {
        match days_until_birthday(date_of_birth, today) {
            0 => Self::HappyBirthday,
            days => Self::DaysToGo(days),
        }
    }

    pub fn message(&self, username: &Username) -> String {
        match self {
            Self::HappyBirthday => format!("Hello, {username}! Happy birthday!"),
            Self::DaysToGo(days) => format!("Hello, {username}! Your birthday is in {days} day(s)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(raw: &str) -> NaiveDate {
        NaiveDate::parse_from_str(raw, "%Y-%m-%d").unwrap()
    }

    /// (born, today, days until the birthday)
    const CASES: &[(&str, &str, u32)] = &[
        // Born on 29 February: 28 February in common years, 29 February in leap years.
        ("2000-02-29", "2023-02-27", 1),
        ("2000-02-29", "2023-02-28", 0),
        ("2000-02-29", "2023-03-01", 365), // next is 2024-02-29
        ("2000-02-29", "2024-02-28", 1),
        ("2000-02-29", "2024-02-29", 0),
        ("2000-02-29", "2024-03-01", 364), // next is 2025-02-28
        ("2000-02-29", "2024-01-01", 59),
        ("2000-02-29", "2022-12-31", 59), // next is 2023-02-28
        ("2000-02-29", "2099-02-28", 0),  // 2099 is a common year
        ("2000-02-29", "2100-02-28", 0),  // 2100 is a common year: 28 February
        // Born on 28 February.
        ("1990-02-28", "2023-02-28", 0),
        ("1990-02-28", "2024-02-28", 0),
        ("1990-02-28", "2024-02-29", 365), // next is 2025-02-28
        ("1990-02-28", "2023-03-01", 364), // next is 2024-02-28
        ("1990-02-28", "2024-02-27", 1),
        // Born on 1 March: leap days in between count.
        ("1990-03-01", "2023-02-28", 1),
        ("1990-03-01", "2024-02-28", 2),
        ("1990-03-01", "2024-02-29", 1),
        ("1990-03-01", "2024-03-01", 0),
        ("1990-03-01", "2024-03-02", 364), // next is 2025-03-01
        ("1990-03-01", "2023-03-02", 365), // next is 2024-03-01, across 2024-02-29
        // New Year's Eve and Day.
        ("1990-12-31", "2023-12-31", 0),
        ("1990-12-31", "2024-01-01", 365), // 2024 is a leap year
        ("1990-12-31", "2023-01-01", 364),
        ("1990-01-01", "2023-12-31", 1),
        ("1990-01-01", "2024-01-01", 0),
        ("1990-01-01", "2024-01-02", 365), // next is 2025-01-01
        ("1990-01-01", "2023-01-02", 364),
        // Yesterday, today and tomorrow (in the calendar, whatever the year of birth).
        ("1990-06-14", "2024-06-15", 364), // birthday was yesterday
        ("1990-06-15", "2024-06-15", 0),   // birthday is today
        ("1990-06-16", "2024-06-15", 1),   // birthday is tomorrow
        ("2023-06-14", "2023-06-15", 365), // born yesterday: the year ahead holds 29 February
    ];

    #[test]
    fn counts_calendar_days_to_the_next_birthday() {
        for &(born, today, expected) in CASES {
            let date_of_birth = DateOfBirth::new(day(born), day(today)).expect(born);
            assert_eq!(
                days_until_birthday(date_of_birth, day(today)),
                expected,
                "born {born}, today {today}"
            );
        }
    }

    #[test]
    fn greets_on_the_birthday_and_counts_down_otherwise() {
        let ann = Username::parse("Ann").unwrap();
        let born = |raw| DateOfBirth::new(day(raw), day("2024-06-15")).unwrap();
        let today = day("2024-06-15");
        assert_eq!(
            Greeting::for_day(born("1990-06-15"), today).message(&ann),
            "Hello, Ann! Happy birthday!"
        );
        assert_eq!(
            Greeting::for_day(born("1990-06-16"), today).message(&ann),
            "Hello, Ann! Your birthday is in 1 day(s)"
        );
        assert_eq!(
            Greeting::for_day(born("1990-06-14"), today).message(&ann),
            "Hello, Ann! Your birthday is in 364 day(s)"
        );
    }
}
