//! The JSON line of an answered request, written by hand: the same object, byte for byte apart
//! from the time, that tracing-subscriber's JSON formatter writes for the `tracing::info!` of
//! [`super::log_answered`] (the tests compare the two). Through tracing, the line was about a
//! fifth of the service's instructions per GET (docs/service.md): the formatter serialises each
//! field through serde and checks every fragment it writes for valid UTF-8, and formats the time
//! field by field; here the fields are written straight into a buffer kept per thread, with the
//! time's date and second formatted once per second.

use std::{
    cell::RefCell,
    io::Write as _,
    time::{SystemTime, UNIX_EPOCH},
};

use chrono::DateTime;

/// What the line says about one answered request.
pub(super) struct Answered<'a> {
    pub method: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub latency_us: u64,
    pub request_id: &'a str,
}

/// The `target` tracing gives the line: the module that logs it.
const TARGET: &str = "hello::telemetry";

struct Scratch {
    line: Vec<u8>,
    /// The second [`Scratch::second_text`] shows, in seconds since the epoch.
    second: u64,
    /// `YYYY-MM-DDTHH:MM:SS`, the part of the timestamp before the fraction.
    second_text: String,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch { line: Vec::new(), second: u64::MAX, second_text: String::new() })
    };
}

/// Writes the line to stdout in one write, as tracing-subscriber's `fmt` layer does with its
/// lines (so the two never interleave within a line).
pub(super) fn write(answered: &Answered<'_>) {
    SCRATCH.with(|scratch| {
        let Ok(mut scratch) = scratch.try_borrow_mut() else {
            return;
        };
        let Scratch {
            line,
            second,
            second_text,
        } = &mut *scratch;
        line.clear();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        if now.as_secs() != *second {
            *second = now.as_secs();
            *second_text = format_second(now.as_secs());
        }
        format(line, second_text, now.subsec_micros(), answered);
        // Like tracing-subscriber, a line that cannot be written is dropped.
        let _ = std::io::stdout().lock().write_all(line);
    });
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of `seconds` since the epoch.
fn format_second(seconds: u64) -> String {
    i64::try_from(seconds)
        .ok()
        .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// The whole line, newline included: `second` is [`format_second`]'s text, `micros` the
/// microseconds within that second.
fn format(line: &mut Vec<u8>, second: &str, micros: u32, answered: &Answered<'_>) {
    line.extend_from_slice(b"{\"timestamp\":\"");
    line.extend_from_slice(second.as_bytes());
    line.push(b'.');
    let micros = micros.min(999_999);
    let mut digits = [b'0'; 6];
    let mut rest = micros;
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    line.extend_from_slice(&digits);
    line.extend_from_slice(
        b"Z\",\"level\":\"INFO\",\"fields\":{\"message\":\"request\",\"method\":",
    );
    string(line, answered.method);
    line.extend_from_slice(b",\"route\":");
    string(line, answered.route);
    line.extend_from_slice(b",\"status\":");
    number(line, u64::from(answered.status));
    line.extend_from_slice(b",\"latency_us\":");
    number(line, answered.latency_us);
    line.extend_from_slice(b",\"request_id\":");
    string(line, answered.request_id);
    line.extend_from_slice(b"},\"target\":");
    string(line, TARGET);
    line.extend_from_slice(b"}\n");
}

/// A JSON string, escaped as serde_json escapes it (which tracing-subscriber uses).
fn string(line: &mut Vec<u8>, text: &str) {
    // The line's text rarely needs escaping (control characters, `"` and `\`): one pass
    // without early exit, which the compiler vectorises, tells; serde_json goes byte by byte.
    let escaped = text.bytes().fold(false, |escaped, byte| {
        escaped | (byte < 0x20) | (byte == b'"') | (byte == b'\\')
    });
    if escaped {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *line, text);
    } else {
        line.push(b'"');
        line.extend_from_slice(text.as_bytes());
        line.push(b'"');
    }
}

fn number(line: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    line.extend_from_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use tracing_subscriber::{fmt, layer::SubscriberExt};

    use super::*;

    /// A writer for tracing-subscriber that keeps what it is given.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What tracing-subscriber's JSON layer, set up as `telemetry::init` sets it up, writes for
    /// the `tracing::info!` that logs an answered request.
    fn through_tracing(answered: &Answered<'_>) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry().with(
            fmt::layer()
                .json()
                .with_current_span(false)
                .with_span_list(true)
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            super::super::log_through_tracing(answered)
        });
        let written = captured.0.lock().unwrap().clone();
        String::from_utf8(written).unwrap()
    }

    fn by_hand(answered: &Answered<'_>) -> String {
        let mut line = Vec::new();
        format(&mut line, "2026-11-30T12:00:00", 42, answered);
        String::from_utf8(line).unwrap()
    }

    /// The two lines with their timestamps' values left out.
    fn without_time(line: &str) -> String {
        let (before, after) = line.split_once("\"timestamp\":\"").unwrap();
        let (_, after) = after.split_once('"').unwrap();
        format!("{before}\"timestamp\":\"\"{after}")
    }

    #[test]
    fn the_line_is_the_one_tracing_writes() {
        let cases = [
            Answered {
                method: "GET",
                route: "/hello/{username}",
                status: 200,
                latency_us: 910,
                request_id: "0e56a63c-f65f-4e7a-8083-2a8b88ec909c",
            },
            Answered {
                method: "PROPFIND",
                route: "unmatched",
                status: 405,
                latency_us: 0,
                request_id: "",
            },
            // Escaping, for text the service never puts there.
            Answered {
                method: "A\"B\\C",
                route: "/\u{1}\n\t\u{7f}é",
                status: 65535,
                latency_us: u64::MAX,
                request_id: "x.y:z_1",
            },
        ];
        for answered in &cases {
            let hand = by_hand(answered);
            assert!(hand.ends_with('\n'), "{hand}");
            assert_eq!(
                without_time(&hand),
                without_time(&through_tracing(answered))
            );
            let parsed: serde_json::Value = serde_json::from_str(&hand).unwrap();
            assert_eq!(parsed["fields"]["route"], answered.route);
        }
    }

    /// tracing-subscriber's `SystemTime` timer: UTC, microseconds, `Z`.
    #[test]
    fn the_timestamp_is_written_as_tracing_writes_it() {
        let answered = Answered {
            method: "GET",
            route: "/",
            status: 200,
            latency_us: 1,
            request_id: "a",
        };
        for (seconds, micros, expected) in [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 123_456, "2000-02-29T00:00:00.123456Z"),
            (1_795_953_599, 999_999, "2026-11-29T11:59:59.999999Z"),
        ] {
            let mut line = Vec::new();
            format(&mut line, &format_second(seconds), micros, &answered);
            let parsed: serde_json::Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(parsed["timestamp"], expected);
        }
    }
}
