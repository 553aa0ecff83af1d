//! Credentials in configured URLs (`http://user:pass@host:30100`, a registry in `--sc-addr`),
//! kept out of every log line, error, status and gossiped value (DESIGN.md decision 10).
//!
//! The plugins send such credentials as `Authorization: Basic` and never put them in a request
//! URL (`syncer_plugin_http::client`); the daemon only shows and hashes addresses, through
//! this module:
//!
//! - [`redact`] shows a URL as `scheme://user:***@host...` (`***@host` when the user
//!   information has no `:`), for logs, errors and `Debug`;
//! - [`without_userinfo`] removes `user:pass@`, before the default cluster name is hashed
//!   ([`crate::config::default_cluster_name`]);
//! - [`Redacted`] shows a list of URLs, each redacted.

use std::borrow::Cow;
use std::fmt;

/// The byte range of `userinfo@` in `url` (the `@` included): after `scheme://` (or after
/// leading blanks when there is no scheme), before the authority ends (`/`, `?`, `#`). The
/// last `@` of the authority ends it, as in the plugins' HTTP client.
fn userinfo_range(url: &str) -> Option<(usize, usize)> {
    let start = match url.find("://") {
        Some(i) => i + 3,
        None => url.len() - url.trim_start().len(),
    };
    let rest = &url[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..end].rfind('@')?;
    Some((start, start + at + 1))
}

/// Whether `url` carries user information (`user:pass@` or `user@`).
pub fn has_userinfo(url: &str) -> bool {
    userinfo_range(url).is_some()
}

/// `url` with its password replaced by `***` (`user:***@host`), or its whole user information
/// when it has no `:` (`***@host`: a bare token is a secret too). Unchanged without user
/// information.
pub fn redact(url: &str) -> Cow<'_, str> {
    match userinfo_range(url) {
        None => Cow::Borrowed(url),
        Some((start, end)) => {
            let shown = match url[start..end - 1].split_once(':') {
                Some((user, _)) => format!("{user}:***@"),
                None => "***@".to_owned(),
            };
            Cow::Owned(format!("{}{shown}{}", &url[..start], &url[end..]))
        }
    }
}

/// `url` without `user:pass@`; the rest of the text is kept as written.
pub fn without_userinfo(url: &str) -> Cow<'_, str> {
    match userinfo_range(url) {
        None => Cow::Borrowed(url),
        Some((start, end)) => Cow::Owned(format!("{}{}", &url[..start], &url[end..])),
    }
}

/// A comma list of URLs as written (`--sc-addr`), each redacted; for error messages that quote
/// the setting.
pub fn redact_list(list: &str) -> String {
    list.split(',').map(redact).collect::<Vec<_>>().join(",")
}

/// A list of URLs shown redacted: `Debug` as a list, `Display` comma separated.
#[derive(Clone, Copy)]
pub struct Redacted<'a>(pub &'a [String]);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|u| redact(u)))
            .finish()
    }
}

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, url) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(&redact(url))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_shown_as_stars_and_the_user_stays() {
        assert_eq!(
            redact("http://scUser:s3cretPW2@host:30100"),
            "http://scUser:***@host:30100"
        );
        assert_eq!(
            redact("https://u:p%40ss@[::1]:8761/eureka?a=b"),
            "https://u:***@[::1]:8761/eureka?a=b"
        );
        // Without a scheme, and with an `@` in the password as written.
        assert_eq!(redact("u:p@ss@10.0.0.1:30100"), "u:***@10.0.0.1:30100");
        // A bare token has no user to show.
        assert_eq!(redact("http://t0ken@host"), "http://***@host");
    }

    #[test]
    fn urls_without_credentials_are_unchanged() {
        for url in [
            "http://127.0.0.1:30100",
            "10.0.0.1:30100",
            "http://h:8761/eureka?next=a@b",
            "http://h/path@x",
            "",
        ] {
            assert_eq!(redact(url), url);
            assert_eq!(without_userinfo(url), url);
            assert!(!has_userinfo(url), "{url}");
        }
    }

    #[test]
    fn userinfo_is_removed_and_the_rest_kept_as_written() {
        assert_eq!(
            without_userinfo("http://user:s3cretPW2@127.0.0.1:30100"),
            "http://127.0.0.1:30100"
        );
        assert_eq!(without_userinfo(" u:p@h:1"), " h:1");
        assert!(has_userinfo("http://u@h"));
    }

    #[test]
    fn lists_are_redacted_item_by_item() {
        assert_eq!(
            redact_list("http://a:pw1@h1,http://h2, b:pw2@h3"),
            "http://a:***@h1,http://h2, b:***@h3"
        );
        let urls = vec!["http://a:pw1@h1".to_owned(), "http://h2".to_owned()];
        assert_eq!(
            format!("{:?}", Redacted(&urls)),
            r#"["http://a:***@h1", "http://h2"]"#
        );
        assert_eq!(Redacted(&urls).to_string(), "http://a:***@h1,http://h2");
    }
}
