use chrono::NaiveDate;

/// A date of birth: a real calendar date strictly before "today" (the current UTC date).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateOfBirth(NaiveDate);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateOfBirthError {
    #[error("dateOfBirth must be a date written YYYY-MM-DD, for example 1990-05-17; got {0:?}")]
    Format(String),
    #[error("dateOfBirth {0:?} is not a real calendar date")]
    NotADate(String),
    #[error("dateOfBirth {given} must be before today ({today}, UTC)")]
    NotInThePast { given: NaiveDate, today: NaiveDate },
}

impl DateOfBirth {
    /// Parses strictly `YYYY-MM-DD` (four-digit year, two-digit month and day) and requires a
    /// date before `today`.
    pub fn parse(raw: &str, today: NaiveDate) -> Result<Self, DateOfBirthError> {
        let format_error = || DateOfBirthError::Format(raw.to_owned());
        let bytes = raw.as_bytes();
        let well_formed = bytes.len() == 10
            && bytes.iter().enumerate().all(|(i, b)| match i {
                4 | 7 => *b == b'-',
                _ => b.is_ascii_digit(),
            });
        if !well_formed {
            return Err(format_error());
        }
        // The shape is checked above, so every field is a plain run of ASCII digits.
        let number =
            |range: std::ops::Range<usize>| raw[range].parse::<u32>().map_err(|_| format_error());
        let year = i32::try_from(number(0..4)?).map_err(|_| format_error())?;
        let date = NaiveDate::from_ymd_opt(year, number(5..7)?, number(8..10)?)
            .ok_or_else(|| DateOfBirthError::NotADate(raw.to_owned()))?;
        Self::new(date, today)
    }

    /// Accepts an already typed date, still requiring it to be before `today`.
    pub fn new(date: NaiveDate, today: NaiveDate) -> Result<Self, DateOfBirthError> {
        if date >= today {
            return Err(DateOfBirthError::NotInThePast { given: date, today });
        }
        Ok(Self(date))
    }

    /// A date read back from the store, where only valid dates were ever written.
    pub fn from_stored(date: NaiveDate) -> Self {
        Self(date)
    }

    pub fn date(self) -> NaiveDate {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    const TODAY: (i32, u32, u32) = (2024, 3, 15);

    fn today() -> NaiveDate {
        day(TODAY.0, TODAY.1, TODAY.2)
    }

    #[test]
    fn accepts_real_dates_before_today() {
        let cases = [
            ("1990-05-17", day(1990, 5, 17)),
            ("2024-03-14", day(2024, 3, 14)),
            ("2000-02-29", day(2000, 2, 29)),
            ("0001-01-01", day(1, 1, 1)),
            ("1899-12-31", day(1899, 12, 31)),
        ];
        for (raw, expected) in cases {
            assert_eq!(
                DateOfBirth::parse(raw, today()).map(DateOfBirth::date),
                Ok(expected),
                "{raw}"
            );
        }
    }

    /// Each refused input with the error it gets: `Format` for any other shape, `NotADate`
    /// for a well-formed date missing from the calendar.
    #[test]
    fn refuses_other_shapes_and_unreal_dates() {
        let other_shapes = [
            "",
            "1990-5-17",
            "1990-05-7",
            "90-05-17",
            "19900517",
            "1990/05/17",
            "1990-05-17T00:00:00",
            " 1990-05-17",
            "1990-05-17 ",
            "+1990-05-17",
            "1990-05-1a",
            "17-05-1990",
            "1990-W20-1",
            "１９９０-05-17",
            "-990-05-17",
            "1990--5-17",
        ];
        let unreal = [
            "2023-02-29",
            "1900-02-29",
            "2021-04-31",
            "2021-13-01",
            "2021-00-10",
            "2021-01-00",
            "2021-01-32",
        ];
        let cases = other_shapes
            .iter()
            .map(|raw| (*raw, DateOfBirthError::Format(raw.to_string())))
            .chain(
                unreal
                    .iter()
                    .map(|raw| (*raw, DateOfBirthError::NotADate(raw.to_string()))),
            );
        for (raw, expected) in cases {
            assert_eq!(DateOfBirth::parse(raw, today()), Err(expected), "{raw:?}");
        }
    }

    #[test]
    fn refuses_today_and_later() {
        for (raw, given) in [
            ("2024-03-15", day(2024, 3, 15)),
            ("2024-03-16", day(2024, 3, 16)),
            ("2999-01-01", day(2999, 1, 1)),
        ] {
            assert_eq!(
                DateOfBirth::parse(raw, today()),
                Err(DateOfBirthError::NotInThePast {
                    given,
                    today: today()
                }),
                "{raw}"
            );
        }
    }

    #[test]
    fn errors_name_the_field() {
        for raw in ["x", "2023-02-29", "2999-01-01"] {
            let message = DateOfBirth::parse(raw, today()).unwrap_err().to_string();
            assert!(message.starts_with("dateOfBirth "), "{message}");
        }
    }
}
