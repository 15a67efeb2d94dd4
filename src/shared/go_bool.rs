//! Booleans as Go's `strconv.ParseBool` reads them: the syntax of every boolean variable
//! and flag value of the SPEC (the service this replaces was written in Go).

/// The accepted spellings, for error messages.
pub const ACCEPTED: &str = "1, t, T, TRUE, true, True, 0, f, F, FALSE, false or False";

/// `Some(true)` for `1 t T TRUE true True`, `Some(false)` for `0 f F FALSE false False`,
/// `None` for anything else (no trimming, no other case).
pub fn parse_go_bool(raw: &str) -> Option<bool> {
    match raw {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_follow_go_parse_bool() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(t), Some(true), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(f), Some(false), "{f}");
        }
        for bad in ["yes", "on", "tRUE", " true", ""] {
            assert_eq!(parse_go_bool(bad), None, "{bad}");
        }
    }
}
