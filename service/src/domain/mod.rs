//! The domain: valid values only. The HTTP boundary parses raw input into these types, so the
//! handlers and the store never see a bad username or date.

mod birthday;
mod date_of_birth;
mod username;

pub use birthday::{Greeting, days_until_birthday};
pub use date_of_birth::{DateOfBirth, DateOfBirthError};
pub use username::{Username, UsernameError};
