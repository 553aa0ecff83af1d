//! Filters: which services and instances this cluster offers its peers (`export`) and which
//! of theirs it accepts (`import`) (issue 15, DESIGN.md decision 13).
//!
//! A [`Filter`] has `include` and `exclude` lists of entries. An entry is either
//!
//! * a glob over a service's `domain/project/appId/serviceName` (e.g.
//!   `default/default/*/orders-*`), where `*` and `?` stay within one part (they never match
//!   `/`), `**` spans parts, `[ab]` and `{a,b}` are classes and alternatives (globset's
//!   syntax, case-sensitive); a glob without `**` must have the four parts, since one with
//!   fewer could never match; or
//! * `meta:KEY=VALUE`, which matches an instance whose metadata (service-center instance
//!   `properties`, Eureka `metadata`) holds `KEY` with a value matching the glob `VALUE`
//!   (`meta:env=prod`, `meta:zone=eu-*`; `*` matches anything here, `/` included).
//!
//! An instance passes when (`include` is empty or one include entry matches it) and no
//! exclude entry matches it. Empty lists pass everything (the default). A service passes
//! while one of its instances does: the exporter exports a service only with an exported
//! instance.
//!
//! Pure: compiled once from [`FilterSpec`] ([`Filter::new`]), evaluated per service
//! ([`Filter::service`], cached by the callers per service) and then per instance
//! ([`Filter::passes`]), reading an instance's metadata only when the verdict depends on it
//! ([`Filter::needs_metadata`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use globset::{Glob, GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

/// Most entries in one `include` or `exclude` list.
pub const MAX_ENTRIES: usize = 1000;

/// Longest entry, in bytes.
pub const MAX_ENTRY_BYTES: usize = 1024;

/// The prefix of a metadata entry.
pub const META_PREFIX: &str = "meta:";

/// An entry that cannot be used; each names the entry as given.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a valid glob.
    #[error("invalid glob {pattern:?}: {source}")]
    Glob {
        /// The entry as given.
        pattern: String,
        /// What globset says.
        #[source]
        source: globset::Error,
    },
    /// A valid glob that can never match a service, or a malformed metadata entry.
    #[error("invalid filter entry {pattern:?}: {reason}")]
    Entry {
        /// The entry as given.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Too many entries, or one too long.
    #[error("filter list too long: {count} entries (at most {MAX_ENTRIES}, each at most {MAX_ENTRY_BYTES} bytes)")]
    TooMany {
        /// Entries given.
        count: usize,
    },
}

/// One direction's filter as written (flags, environment, YAML): the entries of each list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// Entries one of which must match (empty: everything matches).
    #[serde(default)]
    pub include: Vec<String>,
    /// Entries none of which may match.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// Both directions as written: YAML `filters: {export: {...}, import: {...}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiltersSpec {
    /// What this cluster offers its peers.
    #[serde(default)]
    pub export: FilterSpec,
    /// What this cluster accepts from its peers.
    #[serde(default)]
    pub import: FilterSpec,
}

/// Both directions, compiled. What the exporter and the importer hold (behind a
/// `watch::Receiver<Arc<Filters>>`, so that a reload can swap them).
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// What this cluster offers its peers.
    pub export: Arc<Filter>,
    /// What this cluster accepts from its peers.
    pub import: Arc<Filter>,
}

impl Filters {
    /// Compiles both directions.
    ///
    /// # Errors
    /// The first bad entry, and the direction (`export` or `import`) it is in.
    pub fn new(spec: &FiltersSpec) -> Result<Filters, (&'static str, Error)> {
        Ok(Filters {
            export: Arc::new(Filter::new(&spec.export).map_err(|e| ("export", e))?),
            import: Arc::new(Filter::new(&spec.import).map_err(|e| ("import", e))?),
        })
    }

    /// The entries as written.
    pub fn spec(&self) -> FiltersSpec {
        FiltersSpec {
            export: self.export.spec().clone(),
            import: self.import.spec().clone(),
        }
    }
}

/// One list compiled: its service globs as one set, and its metadata entries.
#[derive(Debug, Clone, Default)]
struct Entries {
    /// `None` when the list has no service glob.
    services: Option<GlobSet>,
    metadata: Vec<MetaEntry>,
}

#[derive(Debug, Clone)]
struct MetaEntry {
    key: String,
    value: GlobMatcher,
}

impl Entries {
    fn new(list: &[String]) -> Result<Entries, Error> {
        if list.len() > MAX_ENTRIES || list.iter().any(|e| e.len() > MAX_ENTRY_BYTES) {
            return Err(Error::TooMany { count: list.len() });
        }
        let mut services = GlobSetBuilder::new();
        let mut any_service = false;
        let mut metadata = Vec::new();
        for entry in list {
            if let Some(meta) = entry.strip_prefix(META_PREFIX) {
                let Some((key, value)) = meta.split_once('=') else {
                    return Err(Error::Entry {
                        pattern: entry.clone(),
                        reason: "a metadata entry is meta:KEY=VALUE",
                    });
                };
                if key.is_empty() {
                    return Err(Error::Entry {
                        pattern: entry.clone(),
                        reason: "a metadata entry names its key: meta:KEY=VALUE",
                    });
                }
                let value = Glob::new(value).map_err(|source| Error::Glob {
                    pattern: entry.clone(),
                    source,
                })?;
                metadata.push(MetaEntry {
                    key: key.to_owned(),
                    value: value.compile_matcher(),
                });
                continue;
            }
            if !entry.contains("**") && entry.matches('/').count() != 3 {
                return Err(Error::Entry {
                    pattern: entry.clone(),
                    reason: "a service glob has four parts, domain/project/appId/serviceName \
                             (e.g. default/default/*/orders-*), or spans parts with **",
                });
            }
            let glob = GlobBuilder::new(entry)
                .literal_separator(true)
                .build()
                .map_err(|source| Error::Glob {
                    pattern: entry.clone(),
                    source,
                })?;
            services.add(glob);
            any_service = true;
        }
        let services = if any_service {
            Some(services.build().map_err(|source| Error::Glob {
                pattern: list.join(","),
                source,
            })?)
        } else {
            None
        };
        Ok(Entries { services, metadata })
    }

    fn is_empty(&self) -> bool {
        self.services.is_none() && self.metadata.is_empty()
    }

    fn matches_service(&self, path: &str) -> bool {
        self.services.as_ref().is_some_and(|s| s.is_match(path))
    }

    fn matches_metadata(&self, properties: &BTreeMap<String, String>) -> bool {
        self.metadata.iter().any(|m| {
            properties
                .get(&m.key)
                .is_some_and(|value| m.value.is_match(value))
        })
    }
}

/// One direction's filter, compiled ([`Filter::new`]). The default passes everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    spec: FilterSpec,
    include: Entries,
    exclude: Entries,
}

/// What a filter's service globs say of one service ([`Filter::service`]); the instance's
/// metadata may still decide ([`Filter::passes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceMatch {
    included: bool,
    excluded: bool,
}

impl Filter {
    /// Compiles `spec`; empty entries (e.g. from a trailing comma) are skipped.
    ///
    /// # Errors
    /// [`Error`] naming the first entry that is not a valid glob, a glob with other than
    /// four parts (without `**`), a metadata entry without `KEY=`, or a list over
    /// [`MAX_ENTRIES`] entries or an entry over [`MAX_ENTRY_BYTES`].
    pub fn new(spec: &FilterSpec) -> Result<Filter, Error> {
        let clean = |list: &[String]| -> Vec<String> {
            list.iter()
                .map(|e| e.trim().to_owned())
                .filter(|e| !e.is_empty())
                .collect()
        };
        let spec = FilterSpec {
            include: clean(&spec.include),
            exclude: clean(&spec.exclude),
        };
        Ok(Filter {
            include: Entries::new(&spec.include)?,
            exclude: Entries::new(&spec.exclude)?,
            spec,
        })
    }

    /// The entries as compiled (trimmed, empty ones dropped).
    pub fn spec(&self) -> &FilterSpec {
        &self.spec
    }

    /// Whether everything passes (both lists empty): callers skip the work.
    pub fn is_everything(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// What the service globs say of the service `domain_project/app_id/service_name`.
    pub fn service(&self, domain_project: &str, app_id: &str, service_name: &str) -> ServiceMatch {
        if self.is_everything() {
            return ServiceMatch {
                included: true,
                excluded: false,
            };
        }
        let path = format!("{domain_project}/{app_id}/{service_name}");
        ServiceMatch {
            included: self.include.matches_service(&path),
            excluded: self.exclude.matches_service(&path),
        }
    }

    /// Whether the verdict on an instance of a service matched as `m` depends on the
    /// instance's metadata (else [`Filter::passes`] may be given an empty map).
    pub fn needs_metadata(&self, m: ServiceMatch) -> bool {
        if m.excluded {
            return false;
        }
        !self.exclude.metadata.is_empty()
            || (!self.include.is_empty() && !m.included && !self.include.metadata.is_empty())
    }

    /// Whether an instance with metadata `properties` of a service matched as `m` passes.
    pub fn passes(&self, m: ServiceMatch, properties: &BTreeMap<String, String>) -> bool {
        if m.excluded || self.exclude.matches_metadata(properties) {
            return false;
        }
        self.include.is_empty() || m.included || self.include.matches_metadata(properties)
    }

    /// [`Filter::passes`], reading the metadata (`properties`, called at most once) only
    /// when the verdict depends on it.
    pub fn passes_with(
        &self,
        m: ServiceMatch,
        properties: impl FnOnce() -> BTreeMap<String, String>,
    ) -> bool {
        if self.needs_metadata(m) {
            self.passes(m, &properties())
        } else {
            self.passes(m, &BTreeMap::new())
        }
    }

    /// Whether `instance` of `service` passes.
    pub fn passes_instance(
        &self,
        service: &syncer_plugin_api::Service,
        instance: &syncer_plugin_api::Instance,
    ) -> bool {
        let m = self.service(
            &service.domain_project,
            &service.app_id,
            &service.service_name,
        );
        self.passes(m, &instance.properties)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncer_plugin_api::{Instance, Service};

    fn filter(include: &[&str], exclude: &[&str]) -> Filter {
        Filter::new(&FilterSpec {
            include: include.iter().map(|s| (*s).to_owned()).collect(),
            exclude: exclude.iter().map(|s| (*s).to_owned()).collect(),
        })
        .expect("valid filter")
    }

    fn passes(f: &Filter, path: &str, meta: &[(&str, &str)]) -> bool {
        let parts: Vec<&str> = path.split('/').collect();
        let service = Service {
            domain_project: format!("{}/{}", parts[0], parts[1]),
            app_id: parts[2].into(),
            service_name: parts[3].into(),
            ..Default::default()
        };
        let instance = Instance {
            properties: meta
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        };
        let direct = f.passes_instance(&service, &instance);
        let m = f.service(
            &service.domain_project,
            &service.app_id,
            &service.service_name,
        );
        let lazy = f.passes_with(m, || instance.properties.clone());
        assert_eq!(direct, lazy, "lazy and direct verdicts differ for {path}");
        direct
    }

    #[test]
    fn the_default_filter_passes_everything() {
        let f = Filter::default();
        assert!(f.is_everything());
        assert!(passes(&f, "a/b/c/d", &[]));
        assert!(passes(&filter(&[" ", ""], &[]), "a/b/c/d", &[]));
    }

    #[test]
    fn a_star_stays_within_one_part_and_a_double_star_spans_parts() {
        let f = filter(&["default/default/*/orders-*"], &[]);
        assert!(passes(&f, "default/default/shop/orders-eu", &[]));
        assert!(!passes(&f, "default/default/shop/payments", &[]));
        assert!(!passes(&f, "default/other/shop/orders-eu", &[]));
        // `*` never crosses `/`.
        let f = filter(&["default/*/*/orders"], &[]);
        assert!(passes(&f, "default/x/shop/orders", &[]));
        let f = filter(&["default/default/*/orders"], &[]);
        let m = f.service("default/default", "shop/x", "orders");
        assert!(!f.passes(m, &BTreeMap::new()), "* crossed a /");
        let f = filter(&["default/default/**"], &[]);
        assert!(passes(&f, "default/default/any/thing", &[]));
        assert!(!passes(&f, "other/default/any/thing", &[]));
        let f = filter(&["**/orders"], &[]);
        assert!(passes(&f, "a/b/c/orders", &[]));
        assert!(!passes(&f, "a/b/c/orders-2", &[]));
    }

    #[test]
    fn a_glob_with_other_than_four_parts_is_refused_unless_it_spans_with_a_double_star() {
        for bad in ["orders-*", "default/*/orders", "a/b/c/d/e"] {
            let e = Filter::new(&FilterSpec {
                include: vec![bad.into()],
                ..Default::default()
            })
            .expect_err(bad);
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn exclude_wins_over_include() {
        let f = filter(&["default/default/shop/*"], &["*/*/*/orders-internal"]);
        assert!(passes(&f, "default/default/shop/orders", &[]));
        assert!(!passes(&f, "default/default/shop/orders-internal", &[]));
        assert!(!passes(&f, "default/default/other/orders", &[]));
        let only_exclude = filter(&[], &["default/default/*/secret-*"]);
        assert!(passes(&only_exclude, "default/default/a/b", &[]));
        assert!(!passes(&only_exclude, "default/default/a/secret-x", &[]));
    }

    #[test]
    fn metadata_entries_match_instances_by_key_and_value_glob() {
        let f = filter(&["meta:env=prod"], &[]);
        assert!(passes(&f, "a/b/c/d", &[("env", "prod")]));
        assert!(!passes(&f, "a/b/c/d", &[("env", "dev")]));
        assert!(!passes(&f, "a/b/c/d", &[]));
        // Either kind of include entry lets an instance in.
        let f = filter(&["meta:env=prod", "a/b/c/always"], &["meta:zone=eu-*"]);
        assert!(passes(&f, "a/b/c/always", &[("env", "dev")]));
        assert!(passes(&f, "a/b/c/d", &[("env", "prod"), ("zone", "us-1")]));
        assert!(!passes(
            &f,
            "a/b/c/d",
            &[("env", "prod"), ("zone", "eu-1/x")]
        ));
        assert!(!passes(&f, "a/b/c/always", &[("zone", "eu-2")]));
        let m = f.service("a/b", "c", "d");
        assert!(f.needs_metadata(m));
        let plain = filter(&["a/b/c/*"], &["a/b/c/x"]);
        assert!(!plain.needs_metadata(plain.service("a/b", "c", "d")));
    }

    #[test]
    fn bad_entries_are_errors_naming_the_entry() {
        for bad in ["default/default/[/x", "meta:env", "meta:=x", "meta:env=[z"] {
            let e = Filter::new(&FilterSpec {
                exclude: vec![bad.into()],
                ..Default::default()
            })
            .expect_err(bad);
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
        let many = FilterSpec {
            include: vec!["a/b/c/d".into(); MAX_ENTRIES + 1],
            ..Default::default()
        };
        assert!(matches!(Filter::new(&many), Err(Error::TooMany { .. })));
        let spec = FiltersSpec {
            import: FilterSpec {
                include: vec!["nope".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            Filters::new(&spec).map(|_| ()).map_err(|e| e.0),
            Err("import")
        );
    }

    #[test]
    fn the_yaml_shape_refuses_unknown_keys() {
        let spec: FiltersSpec = serde_yaml::from_str(
            "export: {include: ['default/default/*/orders-*'], exclude: ['meta:env=dev']}\n",
        )
        .expect("yaml");
        assert_eq!(spec.export.include.len(), 1);
        assert!(spec.import.include.is_empty());
        assert!(serde_yaml::from_str::<FiltersSpec>("export: {includes: []}").is_err());
    }
}
