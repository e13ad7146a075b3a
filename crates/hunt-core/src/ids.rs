//! Identifiers, checked in one place.
//!
//! A customer id (an event's user, or the `{user}` of a path) and an event's `id` are
//! the sender's own text: 1 to [`ID_BYTES_MAX`] bytes, without control characters.
//! They are shown in logs, dashboards and terminals, where control characters (C0,
//! DEL, C1) could forge lines or escape sequences. The ids of pools, sinks, hunts and
//! steps are the hunts file's: [`is_valid_id`], narrower because they appear in URLs.

/// Longest event `id` and customer id, in bytes.
pub const ID_BYTES_MAX: usize = 128;

/// Why a customer id (or an event's `id`) is refused. Its message is the API's about a
/// customer id in a path; [`IdError::in_field`] says it of an event's field instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("a customer id is 1-{ID_BYTES_MAX} bytes, got 0")]
    Empty,
    /// Its length in bytes.
    #[error("a customer id is 1-{ID_BYTES_MAX} bytes, got {0}")]
    TooLong(usize),
    /// The first control character and its byte offset.
    #[error("a customer id has no control characters")]
    Control { at: usize, found: char },
}

impl IdError {
    /// The refusal as ingest words it for the event's field `name`.
    pub fn in_field(&self, name: &str) -> String {
        match self {
            IdError::Empty => format!("`{name}` must not be empty"),
            IdError::TooLong(len) => {
                format!("`{name}` is {len} bytes, over the limit of {ID_BYTES_MAX}")
            }
            IdError::Control { at, found } => format!(
                "`{name}` must not contain control characters; found U+{:04X} at byte {at}",
                *found as u32
            ),
        }
    }
}

/// A customer id: 1 to [`ID_BYTES_MAX`] bytes, no control characters.
pub fn check_customer(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > ID_BYTES_MAX {
        return Err(IdError::TooLong(s.len()));
    }
    match s.char_indices().find(|(_, c)| c.is_control()) {
        Some((at, found)) => Err(IdError::Control { at, found }),
        None => Ok(()),
    }
}

/// An event's `id`: the same rule as a customer id.
pub fn check_event_id(s: &str) -> Result<(), IdError> {
    check_customer(s)
}

/// Ids of pools, sinks, hunts and steps: `[A-Za-z0-9_.-]{1,64}` (they appear in URLs).
pub fn is_valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_ids() {
        assert_eq!(check_customer("u"), Ok(()));
        assert_eq!(check_customer(&"u".repeat(128)), Ok(()));
        // Bytes, not characters: 42 three-byte characters fit, 43 do not.
        assert_eq!(check_customer(&"顧".repeat(42)), Ok(()));
        assert_eq!(check_customer(&"顧".repeat(43)), Err(IdError::TooLong(129)));
        // Hostile but harmless text is an id like any other.
        assert_eq!(check_customer("'; DROP TABLE users; --"), Ok(()));
        assert_eq!(check_customer("../../etc/passwd"), Ok(()));
        assert_eq!(check_customer(""), Err(IdError::Empty));
        assert_eq!(check_customer(&"u".repeat(129)), Err(IdError::TooLong(129)));
        // The length is judged before the characters.
        assert_eq!(
            check_customer(&"\n".repeat(129)),
            Err(IdError::TooLong(129))
        );
        for (s, at, found) in [
            ("a\nb", 1, '\n'),
            ("\u{0}", 0, '\u{0}'),
            ("ab\u{7f}", 2, '\u{7f}'),
            // C1, after a two-byte character: the offset is in bytes.
            ("é\u{85}\t", 2, '\u{85}'),
        ] {
            assert_eq!(
                check_customer(s),
                Err(IdError::Control { at, found }),
                "{s:?}"
            );
        }
        assert_eq!(check_event_id("a\u{1b}[2J"), check_customer("a\u{1b}[2J"));
    }

    #[test]
    fn messages() {
        assert_eq!(
            IdError::Empty.to_string(),
            "a customer id is 1-128 bytes, got 0"
        );
        assert_eq!(
            IdError::TooLong(129).to_string(),
            "a customer id is 1-128 bytes, got 129"
        );
        let control = IdError::Control {
            at: 3,
            found: '\u{1b}',
        };
        assert_eq!(
            control.to_string(),
            "a customer id has no control characters"
        );
        assert_eq!(IdError::Empty.in_field("user"), "`user` must not be empty");
        assert_eq!(
            IdError::TooLong(129).in_field("subject"),
            "`subject` is 129 bytes, over the limit of 128"
        );
        assert_eq!(
            control.in_field("id"),
            "`id` must not contain control characters; found U+001B at byte 3"
        );
    }

    #[test]
    fn hunt_step_pool_and_sink_ids() {
        assert!(is_valid_id("spring-sale_2.0"));
        assert!(is_valid_id(&"a".repeat(64)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id(&"a".repeat(65)));
        for bad in ["a b", "a/b", "é", "a\n", "a%20"] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }
}
