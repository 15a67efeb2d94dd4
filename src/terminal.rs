//! Text from a server or a broker made safe to print on a terminal: no control character
//! it sent (C0 including ESC, DEL, C1 U+0080–U+009F) reaches the terminal as such, so an
//! answer cannot retitle the window, clear the screen or fake output; nor does a character
//! that changes how the text around it reads while staying invisible itself (bidi
//! overrides and isolates such as U+202E, the line and paragraph separators U+2028/U+2029,
//! zero-width characters), so an answer cannot show `deliver` as `reviled` or start a fake
//! line. Both kinds are escaped, never dropped, so what was sent stays readable.
//!
//! JSON is re-serialised by a small scanner rather than through `serde_json::Value`: the
//! value type would sort object keys (the crate is built without `preserve_order`) and
//! rewrite numbers, and `serde_json`'s writer leaves DEL and C1 characters unescaped
//! anyway. The scanner only runs on text `serde_json` has accepted, so all it has to know
//! is where strings begin and end.

use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as such: a control character, or an invisible
/// one that reorders, breaks or hides the text around it (the Unicode bidi controls
/// U+061C, U+200E–U+200F, U+202A–U+202E, U+2066–U+2069; the separators U+2028–U+2029; the
/// zero-width U+180E, U+200B–U+200D, U+2060–U+2064 and U+FEFF).
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// The JSON in `text` re-serialised compactly (whitespace between tokens dropped, keys and
/// numbers as sent) with every character [`is_unsafe`] inside a string written as a
/// `\uXXXX` escape. Text that is not JSON becomes a JSON string holding it, escaped the same way, so
/// the output is always JSON.
pub fn json(text: &str) -> String {
    if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
        escape_valid_json(text)
    } else {
        escape_valid_json(&serde_json::Value::from(text).to_string())
    }
}

/// `value` as compact JSON with every character [`is_unsafe`] written as a `\uXXXX` escape.
pub fn json_value(value: &serde_json::Value) -> String {
    escape_valid_json(&value.to_string())
}

/// `text` with every character [`is_unsafe`] written as Rust writes it in a debug string
/// (`\n`, `\u{1b}`, `\u{202e}`), for plain messages that quote what a server or broker said.
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_unsafe(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// Compacts `text`, which must be valid JSON, and escapes the [`is_unsafe`] characters
/// inside its strings (all of them are in the Basic Multilingual Plane: one `\uXXXX` each). Outside strings valid JSON has no characters but whitespace to drop.
fn escape_valid_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut after_backslash = false;
    for c in text.chars() {
        if !in_string {
            if c == '"' {
                in_string = true;
            }
            if !c.is_whitespace() {
                out.push(c);
            }
            continue;
        }
        if after_backslash {
            after_backslash = false;
        } else if c == '\\' {
            after_backslash = true;
        } else if c == '"' {
            in_string = false;
        }
        if is_unsafe(c) {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn has_control(text: &str) -> bool {
        text.chars().any(char::is_control)
    }

    #[test]
    fn json_keeps_keys_and_numbers_as_sent_and_only_drops_whitespace() {
        let text = "{ \"result\" : \"sent\",\n \"commandId\":\"x\", \"n\": 1.50, \"a\":[1, {\"z\":null}] }";
        assert_eq!(
            json(text),
            r#"{"result":"sent","commandId":"x","n":1.50,"a":[1,{"z":null}]}"#
        );
    }

    #[test]
    fn json_escapes_del_and_c1_and_keeps_the_value() {
        let text = "{\"m\":\"\\u001b]0;pwned\\u0007 a\u{7f}b\u{9b}2J \\\" \\\\\"}";
        let out = json(text);
        assert!(!has_control(&out), "{out:?}");
        assert!(out.contains(r"\u001b]0;pwned\u0007"), "{out}");
        assert!(out.contains(r"a\u007fb\u009b2J"), "{out}");
        let before: serde_json::Value = serde_json::from_str(text).unwrap();
        let after: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(before, after);
    }

    #[test]
    fn text_that_is_not_json_becomes_an_escaped_json_string() {
        let text = "<html>\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}</html>";
        let out = json(text);
        assert!(!has_control(&out), "{out:?}");
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), text);
        assert_eq!(json(""), r#""""#);
    }

    #[test]
    fn json_values_are_escaped_the_same_way() {
        let value = serde_json::json!({"topic": "t\u{9b}", "payload": "\u{1b}[2J\u{7f}"});
        let out = json_value(&value);
        assert!(!has_control(&out), "{out:?}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&out).unwrap(),
            value
        );
    }

    /// Reordering, line-breaking and zero-width characters, one of each kind.
    const INVISIBLE: &str = "a\u{202e}b\u{2066}c\u{200f}d\u{2028}e\u{2029}f\u{200b}g\u{feff}h";

    #[test]
    fn invisible_characters_that_change_the_text_around_them_are_escaped_too() {
        assert_eq!(
            plain(INVISIBLE),
            r"a\u{202e}b\u{2066}c\u{200f}d\u{2028}e\u{2029}f\u{200b}g\u{feff}h"
        );
        let out = json(&serde_json::Value::from(INVISIBLE).to_string());
        assert_eq!(
            out,
            r#""a\u202eb\u2066c\u200fd\u2028e\u2029f\u200bg\ufeffh""#
        );
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), INVISIBLE);
        let value = serde_json::json!({ "payload": INVISIBLE });
        assert!(!json_value(&value).chars().any(is_unsafe));
        // Visible text, accents and emoji included, is left alone.
        assert_eq!(plain("é ü 時計 ⏰ «x»"), "é ü 時計 ⏰ «x»");
    }

    #[test]
    fn plain_text_has_its_control_characters_escaped() {
        assert_eq!(
            plain("a\u{1b}[2J\u{7f}\u{9b}\nb é"),
            r"a\u{1b}[2J\u{7f}\u{9b}\nb é"
        );
    }
}
