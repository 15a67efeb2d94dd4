//! MQTT broker URLs: the one place that knows the schemes, their default ports, and how the
//! host and user info are read (the server's `MQTT_BROKER_URL`, `clockctl watch --broker`).

use std::fmt;

use percent_encoding::percent_decode_str;
use reqwest::Url;

use super::Secret;

/// A parsed `mqtt://[user[:password]@]host[:port]` (TLS off, port 1883 by default) or
/// `mqtts://...` (TLS, port 8883 by default); `tcp://` and `ssl://` are their aliases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    /// Without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// Percent-decoded user info (`%40` is `@`).
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// Why a broker URL was refused; each caller words it for its own flag or variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerUrlError {
    #[error("not a URL ({0})")]
    Invalid(String),
    #[error("the scheme {0:?} is not mqtt or mqtts")]
    Scheme(String),
    #[error("the host is missing")]
    NoHost,
    #[error("a path or query is not allowed")]
    PathOrQuery,
}

impl BrokerUrl {
    /// Parses a broker URL with its scheme (surrounding spaces ignored).
    pub fn parse(raw: &str) -> Result<Self, BrokerUrlError> {
        let url = Url::parse(raw.trim()).map_err(|e| BrokerUrlError::Invalid(e.to_string()))?;
        let tls = match url.scheme() {
            "mqtts" | "ssl" => true,
            "mqtt" | "tcp" => false,
            other => return Err(BrokerUrlError::Scheme(other.to_owned())),
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or(BrokerUrlError::NoHost)?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if !matches!(url.path(), "" | "/") || url.query().is_some() {
            return Err(BrokerUrlError::PathOrQuery);
        }
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        Ok(Self {
            tls,
            host,
            port: url.port().unwrap_or(if tls { 8883 } else { 1883 }),
            username: Some(url.username()).filter(|u| !u.is_empty()).map(decode),
            password: url.password().map(|p| Secret::new(decode(p))),
        })
    }
}

/// `mqtt://host:port` or `mqtts://host:port` (IPv6 in brackets), without credentials:
/// safe to print, and the address form the `mqtt5` client connects to.
impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn schemes_decide_tls_and_the_default_port() {
        let u = BrokerUrl::parse(" mqtt://h ").unwrap();
        assert_eq!(
            (u.tls, u.port, u.to_string()),
            (false, 1883, "mqtt://h:1883".into())
        );
        let u = BrokerUrl::parse("ssl://[::1]").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (true, "::1", 8883));
        assert_eq!(u.to_string(), "mqtts://[::1]:8883");
    }

    #[test]
    fn user_info_is_percent_decoded() {
        let u = BrokerUrl::parse("mqtt://us%40r:p%3Ass@h:1").unwrap();
        assert_eq!(u.username.as_deref(), Some("us@r"));
        assert_eq!(u.password.unwrap().expose(), "p:ss");
    }

    #[test]
    fn each_kind_of_bad_url_has_its_variant() {
        assert!(matches!(
            BrokerUrl::parse("no url"),
            Err(BrokerUrlError::Invalid(_))
        ));
        assert!(matches!(
            BrokerUrl::parse("http://h"),
            Err(BrokerUrlError::Scheme(_))
        ));
        assert!(matches!(
            BrokerUrl::parse("mqtts://"),
            Err(BrokerUrlError::NoHost)
        ));
        assert!(matches!(
            BrokerUrl::parse("mqtt://h/x"),
            Err(BrokerUrlError::PathOrQuery)
        ));
        assert!(matches!(
            BrokerUrl::parse("mqtt://h?q"),
            Err(BrokerUrlError::PathOrQuery)
        ));
    }
}
