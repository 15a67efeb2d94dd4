//! `clockctl`'s environment: where the server is, the token, the timeout and the
//! insecure-HTTP override, each checked with an error that names the variable.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::Url;

use super::CliError;
use crate::shared::{Secret, parse_go_bool};

/// Used when neither `CLOCK_SERVER_BASE_URL` nor `CLOCK_SERVER_HOST` is set.
pub const DEFAULT_BASE_URL: &str = "http://localhost:8080";
/// `CLOCKCTL_TIMEOUT_MS` when unset.
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;

/// Everything `clockctl` reads from the environment, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The server's base URL, without a trailing `/`.
    pub base_url: Url,
    /// `CLOCK_SERVER_TOKEN`, when set and not blank.
    pub token: Option<Secret>,
    /// `CLOCKCTL_TIMEOUT_MS`: the whole request, connect to last body byte.
    pub timeout: Duration,
    /// `CLOCKCTL_ALLOW_INSECURE_HTTP`.
    pub allow_insecure_http: bool,
}

impl Settings {
    /// Reads the variables through `lookup` (tests pass a map). Empty values count as unset,
    /// as they did for the Go tool.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, CliError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let base = resolve_base_url(
            get("CLOCK_SERVER_BASE_URL").as_deref(),
            get("CLOCK_SERVER_HOST").as_deref(),
        )?;
        let base_url = parse_base_url(&base)?;
        let token = match get("CLOCK_SERVER_TOKEN") {
            None => None,
            Some(raw) => {
                let token = raw.trim();
                // A bearer token is visible ASCII; anything else cannot go in the header.
                if !token.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(CliError::Invalid(
                        "CLOCK_SERVER_TOKEN contains spaces, control or non-ASCII characters \
                         that cannot be sent in an Authorization header; set it to the bare token"
                            .into(),
                    ));
                }
                Some(Secret::new(token))
            }
        };
        let timeout = match get("CLOCKCTL_TIMEOUT_MS") {
            None => Duration::from_millis(DEFAULT_TIMEOUT_MS),
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    return Err(CliError::Invalid(format!(
                        "CLOCKCTL_TIMEOUT_MS={raw:?} is not valid: set a whole number of \
                         milliseconds greater than 0 (default {DEFAULT_TIMEOUT_MS})"
                    )));
                }
            },
        };
        let allow_insecure_http = match get("CLOCKCTL_ALLOW_INSECURE_HTTP") {
            None => false,
            Some(raw) => parse_go_bool(&raw).ok_or_else(|| {
                CliError::Invalid(format!(
                    "CLOCKCTL_ALLOW_INSECURE_HTTP={raw:?} is not valid: set one of \
                     1 t T TRUE true True 0 f F FALSE false False"
                ))
            })?,
        };
        Ok(Self {
            base_url,
            token,
            timeout,
            allow_insecure_http,
        })
    }

    /// `base_url` joined with an absolute API path such as `/commands/alarms`.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.base_url.as_str().trim_end_matches('/'))
    }
}

/// The base URL from `CLOCK_SERVER_BASE_URL` (wins) or the Docker-style `CLOCK_SERVER_HOST`,
/// else [`DEFAULT_BASE_URL`]; trailing `/` dropped. The result is not yet validated.
pub fn resolve_base_url(base_url: Option<&str>, host: Option<&str>) -> Result<String, CliError> {
    if let Some(base) = base_url.map(str::trim).filter(|b| !b.is_empty()) {
        return Ok(base.trim_end_matches('/').to_owned());
    }
    let Some(host) = host.map(str::trim).filter(|h| !h.is_empty()) else {
        return Ok(DEFAULT_BASE_URL.to_owned());
    };
    let lower = host.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok(host.trim_end_matches('/').to_owned());
    }
    let authority = if lower.starts_with("tcp://") {
        &host["tcp://".len()..]
    } else if host.contains("://") {
        return Err(CliError::Invalid(format!(
            "CLOCK_SERVER_HOST={host:?} has an unsupported scheme: use http://host:port, \
             https://host:port, tcp://host:port or host:port"
        )));
    } else {
        host
    };
    let authority = bracket_bare_ipv6(authority.trim_end_matches('/'));
    let scheme = match Url::parse(&format!("http://{authority}")) {
        Ok(url) if is_local(&url) => "http",
        _ => "https",
    };
    Ok(format!("{scheme}://{authority}"))
}

/// `::1` and `::1:8080` (a bare IPv6 host, as people type it) get the brackets URLs need.
fn bracket_bare_ipv6(authority: &str) -> String {
    if authority.parse::<std::net::Ipv6Addr>().is_ok() && authority != "::1" {
        // Ambiguous without brackets; only `::1[:port]` has a defined meaning (SPEC 5).
        if let Some(port) = authority.strip_prefix("::1:")
            && port.parse::<u16>().is_ok()
        {
            return format!("[::1]:{port}");
        }
        return format!("[{authority}]");
    }
    if authority == "::1" {
        return "[::1]".to_owned();
    }
    authority.to_owned()
}

/// Checks a resolved base URL: absolute, `http` or `https`, with a host.
pub fn parse_base_url(base: &str) -> Result<Url, CliError> {
    let fix =
        "set CLOCK_SERVER_BASE_URL to e.g. https://clock.example.com or http://localhost:8080";
    let url = Url::parse(base)
        .map_err(|e| CliError::Invalid(format!("server URL {base:?} is not valid ({e}): {fix}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(CliError::Invalid(format!(
            "server URL {base:?} must start with http:// or https://: {fix}"
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(CliError::Invalid(format!(
            "server URL {base:?} has no host: {fix}"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(CliError::Invalid(format!(
            "server URL {base:?} must not have a query or fragment: {fix}"
        )));
    }
    Ok(url)
}

/// Whether `url` points at this machine: `localhost`, `127.0.0.0/8` or `::1`.
pub fn is_local(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // `host_str` keeps IPv6 brackets; `url` is not a direct dependency, so parse here.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// The URL without user info, safe to print.
pub fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    // Both only fail for URLs that cannot have credentials, which then have none to hide.
    let _ = shown.set_password(None);
    let _ = shown.set_username("");
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn resolve(base: Option<&str>, host: Option<&str>) -> String {
        resolve_base_url(base, host).unwrap()
    }

    #[test]
    fn the_default_is_localhost_8080() {
        assert_eq!(resolve(None, None), "http://localhost:8080");
        assert_eq!(resolve(Some(" "), Some("")), "http://localhost:8080");
    }

    #[test]
    fn the_base_url_wins_over_the_host_and_loses_its_trailing_slash() {
        assert_eq!(
            resolve(Some("https://clock.example.com/"), Some("tcp://other:1")),
            "https://clock.example.com"
        );
        assert_eq!(
            resolve(Some("http://10.0.0.5:8080/api//"), None),
            "http://10.0.0.5:8080/api"
        );
    }

    #[test]
    fn a_host_with_a_scheme_is_used_as_is() {
        assert_eq!(
            resolve(None, Some("http://server:8080/")),
            "http://server:8080"
        );
        assert_eq!(resolve(None, Some("HTTPS://server")), "HTTPS://server");
    }

    #[test]
    fn local_docker_style_hosts_get_plain_http() {
        for (host, want) in [
            ("localhost:8080", "http://localhost:8080"),
            ("tcp://localhost:8080", "http://localhost:8080"),
            ("LocalHost:1", "http://LocalHost:1"),
            ("127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("tcp://127.1.2.3:9", "http://127.1.2.3:9"),
            ("[::1]:8080", "http://[::1]:8080"),
            ("tcp://[::1]:8080", "http://[::1]:8080"),
            ("::1", "http://[::1]"),
            ("::1:8080", "http://[::1]:8080"),
        ] {
            assert_eq!(resolve(None, Some(host)), want, "{host}");
        }
    }

    #[test]
    fn other_docker_style_hosts_get_https() {
        for (host, want) in [
            ("server:8080", "https://server:8080"),
            (
                "tcp://clock.example.com:443",
                "https://clock.example.com:443",
            ),
            ("10.0.0.5:8080", "https://10.0.0.5:8080"),
            ("128.0.0.1:80", "https://128.0.0.1:80"),
            (
                "localhost.example.com:80",
                "https://localhost.example.com:80",
            ),
            ("[2001:db8::1]:8080", "https://[2001:db8::1]:8080"),
        ] {
            assert_eq!(resolve(None, Some(host)), want, "{host}");
        }
    }

    #[test]
    fn an_unsupported_host_scheme_is_a_usage_error() {
        let err = resolve_base_url(None, Some("unix:///var/run/clock.sock")).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("CLOCK_SERVER_HOST"), "{err}");
    }

    #[test]
    fn base_urls_must_be_http_or_https_with_a_host() {
        for bad in [
            "ftp://x",
            "localhost:8080/x",
            "http://",
            "not a url",
            "http://h/?q=1",
        ] {
            let err = parse_base_url(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
        assert!(parse_base_url("https://clock.example.com").is_ok());
    }

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, CliError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn settings_have_defaults_and_reject_bad_values_with_the_variable_name() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.base_url.as_str(), "http://localhost:8080/");
        assert_eq!(s.endpoint("/ready"), "http://localhost:8080/ready");
        assert_eq!(s.timeout, Duration::from_millis(5000));
        assert!(s.token.is_none() && !s.allow_insecure_http);

        let s = settings(&[
            ("CLOCK_SERVER_TOKEN", " secret \n"),
            ("CLOCKCTL_TIMEOUT_MS", "250"),
            ("CLOCKCTL_ALLOW_INSECURE_HTTP", "T"),
            ("CLOCK_SERVER_BASE_URL", "https://h/prefix/"),
        ])
        .unwrap();
        assert_eq!(s.token.as_ref().unwrap().expose(), "secret");
        assert!(!format!("{s:?}").contains("secret"));
        assert_eq!(s.timeout, Duration::from_millis(250));
        assert!(s.allow_insecure_http);
        assert_eq!(s.endpoint("/ready"), "https://h/prefix/ready");

        for (var, value) in [
            ("CLOCKCTL_TIMEOUT_MS", "abc"),
            ("CLOCKCTL_TIMEOUT_MS", "0"),
            ("CLOCKCTL_TIMEOUT_MS", "-5"),
            ("CLOCKCTL_ALLOW_INSECURE_HTTP", "yes"),
            ("CLOCK_SERVER_TOKEN", "two words"),
            ("CLOCK_SERVER_BASE_URL", "ftp://h"),
        ] {
            let err = settings(&[(var, value)]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{var}={value}");
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn locality_covers_localhost_loopback_v4_and_v6_only() {
        for local in [
            "http://localhost",
            "http://LOCALHOST:1",
            "http://127.9.9.9",
            "http://[::1]:80",
        ] {
            assert!(is_local(&Url::parse(local).unwrap()), "{local}");
        }
        for remote in [
            "http://example.com",
            "http://10.0.0.1",
            "http://[2001:db8::1]",
            "http://localhost.evil",
        ] {
            assert!(!is_local(&Url::parse(remote).unwrap()), "{remote}");
        }
    }

    #[test]
    fn redacted_urls_drop_user_info() {
        let url = Url::parse("https://user:pw@h:1/p").unwrap();
        assert_eq!(redacted(&url), "https://h:1/p");
    }
}
