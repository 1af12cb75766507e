use std::fmt;

/// The longest username accepted, in letters.
pub const MAX_USERNAME_LEN: usize = 64;

/// A username: 1 to 64 ASCII letters, case-sensitive (`Ann` and `ann` are two users).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    #[error("username must not be empty: use 1 to 64 ASCII letters (A-Z, a-z)")]
    Empty,
    #[error("username is {0} characters long: use at most 64 ASCII letters (A-Z, a-z)")]
    TooLong(usize),
    #[error("username may contain only ASCII letters (A-Z, a-z); found {0:?}")]
    NotALetter(char),
}

impl Username {
    pub fn parse(raw: &str) -> Result<Self, UsernameError> {
        if raw.is_empty() {
            return Err(UsernameError::Empty);
        }
        if let Some(bad) = raw.chars().find(|c| !c.is_ascii_alphabetic()) {
            return Err(UsernameError::NotALetter(bad));
        }
        // Only ASCII letters remain, so bytes and characters count alike.
        if raw.len() > MAX_USERNAME_LEN {
            return Err(UsernameError::TooLong(raw.len()));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ascii_letters_of_any_case() {
        for raw in ["a", "Ann", "ann", "ZZZ", &"x".repeat(MAX_USERNAME_LEN)] {
            let name = Username::parse(raw).expect(raw);
            assert_eq!(name.as_str(), raw, "stored exactly as given");
        }
    }

    #[test]
    fn keeps_case_so_two_spellings_are_two_users() {
        assert_ne!(Username::parse("Ann"), Username::parse("ann"));
    }

    #[test]
    fn refuses_anything_else_with_the_reason() {
        let cases: &[(&str, UsernameError)] = &[
            ("", UsernameError::Empty),
            (&"x".repeat(65), UsernameError::TooLong(65)),
            ("ann1", UsernameError::NotALetter('1')),
            ("ann smith", UsernameError::NotALetter(' ')),
            ("ann-smith", UsernameError::NotALetter('-')),
            ("ann_smith", UsernameError::NotALetter('_')),
            ("Zoë", UsernameError::NotALetter('ë')),
            ("ａnn", UsernameError::NotALetter('ａ')),
            ("ann.", UsernameError::NotALetter('.')),
        ];
        for (raw, expected) in cases {
            assert_eq!(Username::parse(raw).as_ref(), Err(expected), "{raw:?}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        for raw in ["", "a1", &"x".repeat(65)] {
            let message = Username::parse(raw).unwrap_err().to_string();
            assert!(message.starts_with("username "), "{message}");
        }
    }
}
