//! The account the servicecenter plugin logs in as, toward a service-center with RBAC on
//! (service-center 2.x: `POST /v4/token`, then `Authorization: Bearer` on every request; the
//! plugin keeps and renews the token, see `syncer_plugin_servicecenter`).
//!
//! Settings: `--sc-account` (`SYNCER_SC_ACCOUNT`) or the YAML `servicecenter.auth.account`;
//! the password from `--sc-password-file` (`SYNCER_SC_PASSWORD_FILE`), else the environment
//! variable [`PASSWORD_ENV`] holding the password itself, else the YAML
//! `servicecenter.auth.password_file`. A password is never a flag value (`ps` would show
//! it). [`resolve`] reads the password file at start, so a missing or empty file stops the
//! start with an error naming the setting and the file, never quoting the password.
//!
//! Main types: [`FileAuth`] (the YAML block), [`Error`].

use std::path::{Path, PathBuf};

use syncer_plugin_servicecenter::{Credentials, Password};

/// The environment variable holding the account's password itself (below
/// `--sc-password-file`, above the YAML `password_file`).
pub const PASSWORD_ENV: &str = "SYNCER_SC_PASSWORD";

/// The YAML block `servicecenter: {auth: {account, password_file}}`.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAuth {
    /// As `--sc-account`.
    pub account: Option<String>,
    /// As `--sc-password-file` (below `SYNCER_SC_PASSWORD`).
    pub password_file: Option<PathBuf>,
}

/// Why the account settings cannot be used. No variant quotes a password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The password file cannot be read.
    #[error("cannot read the registry account's password file {path} (--sc-password-file)")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A setting is missing or has a bad value.
    #[error("invalid {setting}: {reason}")]
    Invalid {
        /// The flag name.
        setting: &'static str,
        /// What is wrong, and what to do.
        reason: String,
    },
}

/// The password in [`PASSWORD_ENV`] of this process's environment, if set and not empty.
pub fn password_from_env() -> Option<String> {
    std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty())
}

/// The account and its password by precedence: the account from `flag_account`
/// (`--sc-account` or its variable), else the file's; the password from `flag_password_file`
/// (read now), else `env_password` ([`PASSWORD_ENV`]), else the file's `password_file` (read
/// now). `Ok(None)` when no account and no password is given.
///
/// # Errors
/// [`Error::Invalid`] when an account comes without a password or a password without an
/// account, or the account name is blank; [`Error::Read`] / [`Error::Invalid`] when the
/// password file cannot be read or is empty.
pub fn resolve(
    flag_account: Option<String>,
    flag_password_file: Option<PathBuf>,
    env_password: Option<String>,
    file: FileAuth,
) -> Result<Option<Credentials>, Error> {
    let account = flag_account.or(file.account);
    let password_file =
        flag_password_file.or(file.password_file.filter(|_| env_password.is_none()));
    let has_password = password_file.is_some() || env_password.is_some();
    let account = match account {
        None if !has_password => return Ok(None),
        None => {
            return Err(Error::Invalid {
                setting: "--sc-account",
                reason: "a registry password is given (--sc-password-file, SYNCER_SC_PASSWORD \
                         or servicecenter.auth.password_file) but no account: add --sc-account \
                         (or servicecenter.auth.account)"
                    .into(),
            })
        }
        Some(account) if account.trim().is_empty() => {
            return Err(Error::Invalid {
                setting: "--sc-account",
                reason: "the account name is empty".into(),
            })
        }
        Some(account) => account,
    };
    let password = match (password_file, env_password) {
        (Some(path), _) => read_password(&path)?,
        (None, Some(text)) => text,
        (None, None) => {
            return Err(Error::Invalid {
                setting: "--sc-password-file",
                reason: format!(
                    "the registry account {account:?} needs a password: give \
                     --sc-password-file FILE (or servicecenter.auth.password_file), or set \
                     {PASSWORD_ENV}"
                ),
            })
        }
    };
    Ok(Some(Credentials {
        account,
        password: Password::new(password),
    }))
}

/// The password in `path`: its text without the final line break; an empty one is refused.
fn read_password(path: &Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    let password = text.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(Error::Invalid {
            setting: "--sc-password-file",
            reason: format!("{} is empty", path.display()),
        });
    }
    Ok(password.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_comes_from_the_flag_file_then_the_environment_then_the_yaml_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flag_file = dir.path().join("flag-pw");
        let yaml_file = dir.path().join("yaml-pw");
        std::fs::write(&flag_file, "fromFlag1\r\n").expect("write");
        std::fs::write(&yaml_file, "fromYaml2\n").expect("write");
        let yaml = FileAuth {
            account: Some("yaml-account".into()),
            password_file: Some(yaml_file),
        };
        let c = resolve(
            Some("flag-account".into()),
            Some(flag_file),
            Some("fromEnv3".into()),
            yaml.clone(),
        )
        .expect("valid")
        .expect("set");
        assert_eq!(
            (c.account.as_str(), c.password.expose()),
            ("flag-account", "fromFlag1")
        );
        let c = resolve(None, None, Some("fromEnv3".into()), yaml.clone())
            .expect("valid")
            .expect("set");
        assert_eq!(
            (c.account.as_str(), c.password.expose()),
            ("yaml-account", "fromEnv3")
        );
        let c = resolve(None, None, None, yaml)
            .expect("valid")
            .expect("set");
        assert_eq!(c.password.expose(), "fromYaml2");
        assert!(resolve(None, None, None, FileAuth::default())
            .expect("valid")
            .is_none());
    }

    #[test]
    fn an_account_needs_a_password_and_a_password_an_account() {
        let err = resolve(Some("syncer".into()), None, None, FileAuth::default())
            .expect_err("no password");
        let text = err.to_string();
        assert!(
            text.contains("--sc-password-file") && text.contains(PASSWORD_ENV),
            "{text}"
        );
        let err = resolve(None, None, Some("pw0nly".into()), FileAuth::default())
            .expect_err("no account");
        let text = err.to_string();
        assert!(
            text.contains("--sc-account") && !text.contains("pw0nly"),
            "{text}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        let err = resolve(
            Some("syncer".into()),
            Some(empty),
            None,
            FileAuth::default(),
        )
        .expect_err("empty file");
        assert!(err.to_string().contains("is empty"), "{err}");
        let err = resolve(
            Some("syncer".into()),
            Some(dir.path().join("missing")),
            None,
            FileAuth::default(),
        )
        .expect_err("missing file");
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
