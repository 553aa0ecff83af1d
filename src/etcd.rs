//! How this process reaches etcd: endpoints, TLS (CA, client certificate and key) and etcd's
//! own authentication (user and password), shared by the built-in core's etcd store
//! ([`crate::servicecenter::store::etcd`]) and the leader election ([`crate::leadership`]).
//!
//! Settings come from `--etcd-user`, `--etcd-password-file` (or the environment variable
//! [`PASSWORD_ENV`]: a password is never a flag value, which `ps` would show),
//! `--etcd-ca-file`, `--etcd-cert-file`, `--etcd-key-file` and their YAML keys, and apply to
//! every etcd endpoint of the process. [`ClientConfig::resolve`] checks them before anything
//! is contacted:
//!
//! - user information in an endpoint URL (`http://root:pw@host:2379`) is refused with a
//!   message naming the setting and the endpoint redacted: use `--etcd-user` and a password
//!   file instead;
//! - TLS files need `https://` endpoints (an endpoint without a scheme gets `https://` then),
//!   and `https://` endpoints need `--etcd-ca-file` (there are no system roots in this build);
//! - a user needs a password and a password needs a user.
//!
//! [`ClientConfig::connect`] reads the PEM files, connects, authenticates and makes one
//! request, so a wrong password, a refused certificate or a missing permission stops the start
//! with a clear [`Error`] naming the endpoints (never the password).
//!
//! Main types: [`Access`] (the raw settings), [`ClientConfig`] (validated), [`Error`].

use std::fmt;
use std::path::{Path, PathBuf};

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};

use crate::credentials::{has_userinfo, redact, Redacted};

/// The environment variable holding the etcd password (when `--etcd-password-file` is not
/// given).
pub const PASSWORD_ENV: &str = "SYNCER_ETCD_PASSWORD";

/// Errors of the etcd settings and of connecting; none quotes a password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is wrong (nothing was contacted).
    #[error("invalid {setting} {value:?}: {reason}")]
    Invalid {
        /// The flag.
        setting: &'static str,
        /// The value, redacted.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A file (password, CA, certificate, key) cannot be read.
    #[error("cannot read {setting} {path}")]
    Read {
        /// The flag.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// etcd answered and refused this client: a wrong user or password, authentication
    /// enabled but no user given (or the other way round), or a user without permission.
    /// Retrying does not help.
    #[error(
        "etcd at {endpoints} refused {who}: check --etcd-user and the password \
         (--etcd-password-file or {PASSWORD_ENV}), and the user's permissions"
    )]
    Refused {
        /// The endpoints, redacted.
        endpoints: String,
        /// `user "name"` or `a client without a user`.
        who: String,
        /// etcd's answer.
        #[source]
        source: etcd_client::Error,
    },
    /// No endpoint answered (down, unreachable, or the TLS handshake failed); may be retried.
    #[error("cannot reach etcd at {endpoints}{hint}")]
    Unreachable {
        /// The endpoints, redacted.
        endpoints: String,
        /// With TLS, what to check (a refused handshake looks like a closed connection).
        hint: &'static str,
        /// The cause.
        #[source]
        source: etcd_client::Error,
    },
}

impl Error {
    /// Whether trying again later may succeed (etcd was not reached); the other errors need
    /// the operator.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }
}

/// Whether etcd answered with a refusal of this client (as opposed to not answering). etcd
/// answers a wrong password with `InvalidArgument` ("authentication failed"), a missing user
/// with `InvalidArgument` or `PermissionDenied`, an expired token with `Unauthenticated`, a
/// user while authentication is off with `FailedPrecondition`.
fn is_refusal(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    matches!(e, etcd_client::Error::GRpcStatus(s) if matches!(
        s.code(),
        Code::InvalidArgument | Code::PermissionDenied | Code::Unauthenticated | Code::FailedPrecondition
    ))
}

/// The etcd access settings as given, before validation (flag/env > file already applied by
/// the caller, except for the password's sources, see [`Access::password_source`]).
#[derive(Clone, Default)]
pub struct Access {
    /// `--etcd-user`.
    pub user: Option<String>,
    /// Where the password comes from.
    pub password: Option<Password>,
    /// `--etcd-ca-file`.
    pub ca_file: Option<PathBuf>,
    /// `--etcd-cert-file`.
    pub cert_file: Option<PathBuf>,
    /// `--etcd-key-file`.
    pub key_file: Option<PathBuf>,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("user", &self.user)
            .field("password", &self.password)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish()
    }
}

/// Where the etcd password comes from.
#[derive(Clone)]
pub enum Password {
    /// A file holding it (one line; a final line break is not part of it).
    File(PathBuf),
    /// The text, from [`PASSWORD_ENV`].
    Text(String),
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Password::File(path) => f.debug_tuple("File").field(path).finish(),
            Password::Text(_) => f.write_str("Text(<redacted>)"),
        }
    }
}

impl Access {
    /// The password's source by precedence: `--etcd-password-file` (flag or its env var),
    /// then [`PASSWORD_ENV`], then the YAML `etcd_password_file`.
    pub fn password_source(
        flag_file: Option<PathBuf>,
        env_text: Option<String>,
        yaml_file: Option<PathBuf>,
    ) -> Option<Password> {
        flag_file
            .map(Password::File)
            .or(env_text.filter(|t| !t.is_empty()).map(Password::Text))
            .or(yaml_file.map(Password::File))
    }

    /// The settings of the command line (flags and their `SYNCER_*` variables) and
    /// [`PASSWORD_ENV`].
    pub fn from_args(args: &crate::cli::EtcdArgs) -> Access {
        Access {
            user: args.etcd_user.clone(),
            password: Access::password_source(
                args.etcd_password_file.clone(),
                Access::password_from_env(),
                None,
            ),
            ca_file: args.etcd_ca_file.clone(),
            cert_file: args.etcd_cert_file.clone(),
            key_file: args.etcd_key_file.clone(),
        }
    }

    /// Whether nothing is set (no TLS file, no user, no password).
    pub fn is_empty(&self) -> bool {
        self.user.is_none()
            && self.password.is_none()
            && self.ca_file.is_none()
            && self.cert_file.is_none()
            && self.key_file.is_none()
    }

    /// The password from [`PASSWORD_ENV`] in this process's environment.
    pub fn password_from_env() -> Option<String> {
        std::env::var(PASSWORD_ENV).ok()
    }
}

/// TLS toward etcd: the CA that signs etcd's certificate, and this client's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM file of the CA certificate(s) (`--etcd-ca-file`).
    pub ca_file: PathBuf,
    /// PEM files of the client certificate and its key (`--etcd-cert-file`,
    /// `--etcd-key-file`), for etcd's `--client-cert-auth`.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// Validated settings of an etcd client. `Debug` shows the endpoints redacted and never the
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Client URLs (`http://host:2379` or `https://host:2379`), without user information.
    pub endpoints: Vec<String>,
    /// etcd user and password.
    auth: Option<(String, String)>,
    /// TLS; `Some` exactly when the endpoints are `https://`.
    pub tls: Option<TlsFiles>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoints", &Redacted(&self.endpoints))
            .field("user", &self.user())
            .field("tls", &self.tls)
            .finish()
    }
}

impl ClientConfig {
    /// Plaintext, no authentication (tests, and etcd on loopback).
    pub fn new(endpoints: Vec<String>) -> ClientConfig {
        ClientConfig {
            endpoints,
            auth: None,
            tls: None,
        }
    }

    /// The etcd user, if any.
    pub fn user(&self) -> Option<&str> {
        self.auth.as_ref().map(|(user, _)| user.as_str())
    }

    /// The endpoints of the comma list `list` (given as `setting`) with `access`; `None` when
    /// the list names no endpoint.
    ///
    /// # Errors
    /// [`Error::Invalid`] (see the module docs), [`Error::Read`] for the password file.
    pub fn resolve(
        setting: &'static str,
        list: Option<&str>,
        access: &Access,
    ) -> Result<Option<ClientConfig>, Error> {
        let given: Vec<&str> = list
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        if given.is_empty() {
            return Ok(None);
        }
        let tls = tls_files(access)?;
        let mut endpoints = Vec::with_capacity(given.len());
        for e in given {
            if has_userinfo(e) {
                return Err(invalid(
                    setting,
                    &redact(e),
                    format!(
                        "credentials in an etcd URL are not used: give the user with \
                         --etcd-user and the password with --etcd-password-file or \
                         {PASSWORD_ENV} (a URL shows in `ps` and in logs)"
                    ),
                ));
            }
            let url = if e.contains("://") {
                e.to_owned()
            } else if tls.is_some() {
                format!("https://{e}")
            } else {
                format!("http://{e}")
            };
            let https = url.starts_with("https://");
            if !https && !url.starts_with("http://") {
                return Err(invalid(setting, e, "an etcd URL is http:// or https://"));
            }
            match (https, &tls) {
                (true, None) => {
                    return Err(invalid(
                        setting,
                        e,
                        "an https:// etcd endpoint needs --etcd-ca-file (the CA of etcd's \
                         certificate; with --client-cert-auth also --etcd-cert-file and \
                         --etcd-key-file)",
                    ))
                }
                (false, Some(_)) => {
                    return Err(invalid(
                        setting,
                        e,
                        "--etcd-ca-file is given, so etcd is reached over TLS: write the \
                         endpoint as https://",
                    ))
                }
                _ => {}
            }
            endpoints.push(url);
        }
        let password = match &access.password {
            None => None,
            Some(Password::Text(text)) => Some(text.clone()),
            Some(Password::File(path)) => Some(read_password(path)?),
        };
        let auth = match (&access.user, password) {
            (None, None) => None,
            (Some(user), Some(password)) if !user.is_empty() => Some((user.clone(), password)),
            (Some(user), _) if user.is_empty() => {
                return Err(invalid("--etcd-user", "", "must not be empty"))
            }
            (Some(user), _) => {
                return Err(invalid(
                    "--etcd-user",
                    user,
                    format!("needs a password: --etcd-password-file or {PASSWORD_ENV}"),
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "--etcd-password-file",
                    "",
                    format!("an etcd password ({PASSWORD_ENV} or a file) needs --etcd-user"),
                ))
            }
        };
        Ok(Some(ClientConfig {
            endpoints,
            auth,
            tls,
        }))
    }

    /// `base` with this client's user and TLS; reads the PEM files.
    ///
    /// # Errors
    /// [`Error::Read`] when a PEM file cannot be read.
    pub fn options(&self, base: ConnectOptions) -> Result<ConnectOptions, Error> {
        let mut options = base;
        if let Some((user, password)) = &self.auth {
            // A token expires (etcd's --auth-token-ttl, 5 minutes by default): get a new one.
            options = options
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        if let Some(tls) = &self.tls {
            let ca = read_file("--etcd-ca-file", &tls.ca_file)?;
            let mut config = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
            if let Some((cert_file, key_file)) = &tls.identity {
                let cert = read_file("--etcd-cert-file", cert_file)?;
                let key = read_file("--etcd-key-file", key_file)?;
                config = config.identity(Identity::from_pem(cert, key));
            }
            options = options.with_tls(config);
        }
        Ok(options)
    }

    /// Connects with `base` options plus this client's user and TLS, then reads the number of
    /// keys under `probe_key` (a prefix this process uses), so a refusal shows now, not at
    /// the first write.
    ///
    /// # Errors
    /// [`Error::Read`], [`Error::Refused`], [`Error::Unreachable`].
    pub async fn connect(&self, base: ConnectOptions, probe_key: &str) -> Result<Client, Error> {
        let client = self.client(base).await?;
        client
            .kv_client()
            .get(probe_key, Some(GetOptions::new().with_count_only()))
            .await
            .map_err(|e| self.failed(e))?;
        Ok(client)
    }

    /// Connects (and authenticates, with a user) without a probe request.
    ///
    /// # Errors
    /// As [`ClientConfig::connect`].
    pub async fn client(&self, base: ConnectOptions) -> Result<Client, Error> {
        let options = self.options(base)?;
        Client::connect(&self.endpoints, Some(options))
            .await
            .map_err(|e| self.failed(e))
    }

    /// Classifies an etcd failure of this client.
    pub fn failed(&self, source: etcd_client::Error) -> Error {
        let endpoints = Redacted(&self.endpoints).to_string();
        if is_refusal(&source) {
            Error::Refused {
                endpoints,
                who: match self.user() {
                    Some(user) => format!("user {user:?}"),
                    None => "a client without a user".to_owned(),
                },
                source,
            }
        } else {
            let hint = if self.tls.is_some() {
                " (or the TLS handshake failed: check --etcd-ca-file, and --etcd-cert-file and \
                 --etcd-key-file when etcd requires client certificates)"
            } else {
                ""
            };
            Error::Unreachable {
                endpoints,
                hint,
                source,
            }
        }
    }
}

/// The TLS files of `access`, checked for completeness; `None` without `--etcd-ca-file`.
fn tls_files(access: &Access) -> Result<Option<TlsFiles>, Error> {
    let identity = match (&access.cert_file, &access.key_file) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (None, None) => None,
        (Some(cert), None) => {
            return Err(invalid(
                "--etcd-cert-file",
                &cert.display().to_string(),
                "needs --etcd-key-file",
            ))
        }
        (None, Some(key)) => {
            return Err(invalid(
                "--etcd-key-file",
                &key.display().to_string(),
                "needs --etcd-cert-file",
            ))
        }
    };
    match (&access.ca_file, identity) {
        (Some(ca_file), identity) => Ok(Some(TlsFiles {
            ca_file: ca_file.clone(),
            identity,
        })),
        (None, None) => Ok(None),
        (None, Some((cert, _))) => Err(invalid(
            "--etcd-cert-file",
            &cert.display().to_string(),
            "needs --etcd-ca-file (the CA of etcd's certificate)",
        )),
    }
}

fn read_file(setting: &'static str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        setting,
        path: path.to_owned(),
        source,
    })
}

/// The password in `path`: its text without the final line break; an empty one is refused.
fn read_password(path: &Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        setting: "--etcd-password-file",
        path: path.to_owned(),
        source,
    })?;
    let password = text.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(invalid(
            "--etcd-password-file",
            &path.display().to_string(),
            "the file is empty",
        ));
    }
    Ok(password.to_owned())
}

fn invalid(setting: &'static str, value: &str, reason: impl ToString) -> Error {
    Error::Invalid {
        setting,
        value: value.to_owned(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(list: &str, access: &Access) -> Result<Option<ClientConfig>, Error> {
        ClientConfig::resolve("--etcd-endpoints", Some(list), access)
    }

    #[test]
    fn plain_endpoints_get_http_and_no_list_is_no_etcd() {
        let c = resolve("127.0.0.1:2379, http://10.0.0.2:2379", &Access::default())
            .expect("valid")
            .expect("some");
        assert_eq!(
            c.endpoints,
            ["http://127.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(c, ClientConfig::new(c.endpoints.clone()));
        assert!(resolve(" , ", &Access::default()).expect("valid").is_none());
    }

    #[test]
    fn credentials_in_an_etcd_url_are_refused_without_quoting_the_password() {
        let err = resolve("http://root:pw0rd@127.0.0.1:2379", &Access::default())
            .expect_err("credentials in the URL");
        let text = err.to_string();
        assert!(text.contains("--etcd-endpoints"), "{text}");
        assert!(text.contains("root:***@127.0.0.1:2379"), "{text}");
        assert!(text.contains("--etcd-user"), "{text}");
        assert!(!text.contains("pw0rd"), "{text}");
    }

    #[test]
    fn the_password_comes_from_a_file_or_the_environment_and_is_never_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("etcd-password");
        std::fs::write(&file, "fr0mFile\n").expect("write");
        let access = Access {
            user: Some("root".into()),
            password: Access::password_source(Some(file.clone()), Some("fr0mEnv".into()), None),
            ..Default::default()
        };
        let c = resolve("127.0.0.1:2379", &access)
            .expect("valid")
            .expect("some");
        assert_eq!(c.auth, Some(("root".into(), "fr0mFile".into())));
        assert!(!format!("{c:?}").contains("fr0m"), "{c:?}");
        assert!(!format!("{access:?}").contains("fr0m"), "{access:?}");
        // Without the flag, the environment wins over the YAML file.
        let password = Access::password_source(None, Some("fr0mEnv".into()), Some(file.clone()));
        assert!(matches!(&password, Some(Password::Text(t)) if t == "fr0mEnv"));
        let password = Access::password_source(None, None, Some(file.clone()));
        assert!(matches!(&password, Some(Password::File(p)) if *p == file));

        // A user needs a password, a password a user; an empty file is refused.
        let err = resolve(
            "127.0.0.1:2379",
            &Access {
                user: Some("root".into()),
                ..Default::default()
            },
        )
        .expect_err("no password");
        assert!(err.to_string().contains(PASSWORD_ENV), "{err}");
        let err = resolve(
            "127.0.0.1:2379",
            &Access {
                password: Some(Password::Text("x".into())),
                ..Default::default()
            },
        )
        .expect_err("no user");
        assert!(err.to_string().contains("--etcd-user"), "{err}");
        std::fs::write(&file, "\n").expect("write");
        let err = resolve(
            "127.0.0.1:2379",
            &Access {
                user: Some("root".into()),
                password: Some(Password::File(file)),
                ..Default::default()
            },
        )
        .expect_err("empty file");
        assert!(err.to_string().contains("--etcd-password-file"), "{err}");
    }

    #[test]
    fn tls_files_need_https_endpoints_and_https_needs_a_ca() {
        let tls = Access {
            ca_file: Some("/x/ca.pem".into()),
            cert_file: Some("/x/cert.pem".into()),
            key_file: Some("/x/key.pem".into()),
            ..Default::default()
        };
        let c = resolve("127.0.0.1:2379,https://h:2379", &tls)
            .expect("valid")
            .expect("some");
        assert_eq!(c.endpoints, ["https://127.0.0.1:2379", "https://h:2379"]);
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                ca_file: "/x/ca.pem".into(),
                identity: Some(("/x/cert.pem".into(), "/x/key.pem".into())),
            })
        );
        let err = resolve("http://h:2379", &tls).expect_err("http with TLS files");
        assert!(err.to_string().contains("https://"), "{err}");
        let err = resolve("https://h:2379", &Access::default()).expect_err("https without a CA");
        assert!(err.to_string().contains("--etcd-ca-file"), "{err}");
        let err = resolve(
            "https://h:2379",
            &Access {
                ca_file: Some("/x/ca.pem".into()),
                cert_file: Some("/x/cert.pem".into()),
                ..Default::default()
            },
        )
        .expect_err("a certificate without its key");
        assert!(err.to_string().contains("--etcd-key-file"), "{err}");
    }

    #[test]
    fn a_missing_pem_file_is_named_when_the_options_are_built() {
        let c = resolve(
            "https://h:2379",
            &Access {
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..Default::default()
            },
        )
        .expect("valid")
        .expect("some");
        let err = c.options(ConnectOptions::new()).expect_err("no such file");
        assert!(err.to_string().contains("--etcd-ca-file"), "{err}");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
