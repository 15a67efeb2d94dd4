//! Text from a server or a broker made safe to print on a terminal: no control character
//! it sent (C0 including ESC, DEL, C1 U+0080–U+009F) reaches the terminal as such, so an
//! answer cannot retitle the window, clear the screen or fake output.
//!
//! JSON is re-serialised by a small scanner rather than through `serde_json::Value`: the
//! value type would sort object keys (the crate is built without `preserve_order`) and
//! rewrite numbers, and `serde_json`'s writer leaves DEL and C1 characters unescaped
//! anyway. The scanner only runs on text `serde_json` has accepted, so all it has to know
//! is where strings begin and end.

use std::fmt::Write as _;

/// The JSON in `text` re-serialised compactly (whitespace between tokens dropped, keys and
/// numbers as sent) with every control character inside a string written as a `\uXXXX`
/// escape. Text that is not JSON becomes a JSON string holding it, escaped the same way, so
/// the output is always JSON.
pub fn json(text: &str) -> String {
    if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
        escape_valid_json(text)
    } else {
        escape_valid_json(&serde_json::Value::from(text).to_string())
    }
}

/// `value` as compact JSON with every control character written as a `\uXXXX` escape.
pub fn json_value(value: &serde_json::Value) -> String {
    escape_valid_json(&value.to_string())
}

/// `text` with every control character written as Rust writes it in a debug string
/// (`\n`, `\u{1b}`), for plain messages that quote what a server or broker said.
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// Compacts `text`, which must be valid JSON, and escapes the control characters inside
/// its strings. Outside strings valid JSON has no characters but whitespace to drop.
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
        if c.is_control() {
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

    #[test]
    fn plain_text_has_its_control_characters_escaped() {
        assert_eq!(
            plain("a\u{1b}[2J\u{7f}\u{9b}\nb é"),
            r"a\u{1b}[2J\u{7f}\u{9b}\nb é"
        );
    }
}
