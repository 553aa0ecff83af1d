//! `GET /`: the core's status page, in the place and shape of Eureka's server home page
//! (Spring users open it by habit): general information (version, uptime, store, lease
//! expiry, self-preservation, "Renews threshold" and "Renews (last min)"), then "Instances
//! currently registered", one row per microservice with its instances grouped by status
//! (Eureka shows `UP (2) - id1 , id2`).
//!
//! Plain HTML rendered here: no JavaScript, no stylesheet or font from elsewhere, so it
//! works offline. Every value a client chose (names, ids, statuses, tenants) is
//! HTML-escaped. The page is bounded: at most [`MAX_ROWS`] microservices and
//! [`MAX_LISTED_INSTANCES`] instance ids are listed, and the page says how many more there
//! are. With RBAC on it needs what any read needs (a token, or basic auth, which a browser
//! asks for).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::servicecenter::core::Core;
use crate::servicecenter::registry::{ServiceEntry, DEFAULT_TENANT};

/// Microservices listed on the page at most.
pub const MAX_ROWS: usize = 1_000;
/// Instance ids listed on the page at most (the rows still count every instance).
pub const MAX_LISTED_INSTANCES: usize = 1_000;

/// Text escaped for HTML text and attribute values (`&`, `<`, `>`, `"`, `'`).
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `GET /`: the status page (see the module docs).
pub(crate) async fn page(State(core): State<Core>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        render(&core),
    )
        .into_response()
}

/// What the page reads from the registry, under its lock.
struct Reading {
    services: Vec<Arc<ServiceEntry>>,
    instances: usize,
    self_preservation: bool,
    threshold: u64,
}

/// The page's HTML.
pub fn render(core: &Core) -> String {
    let reading = {
        let reg = core.lock();
        Reading {
            services: reg.snapshot(None),
            instances: reg.instance_count(),
            self_preservation: reg.eureka.self_preservation(),
            threshold: reg.eureka.renewal_threshold(),
        }
    };
    let metrics = core.metrics();
    let mut services = reading.services;
    // Eureka lists applications by name.
    services.sort_by_cached_key(|e| {
        (
            e.service.service_name.to_ascii_uppercase(),
            e.domain.clone(),
            e.project.clone(),
            e.service.app_id.clone(),
            e.service.version.clone(),
        )
    });
    let uptime = metrics.uptime().as_secs();
    let general: [(&str, String); 10] = [
        ("Version", env!("CARGO_PKG_VERSION").to_string()),
        (
            "Listening on",
            metrics.instance().unwrap_or("-").to_string(),
        ),
        (
            "Uptime",
            format!(
                "{:02}:{:02}:{:02}",
                uptime / 3600,
                uptime / 60 % 60,
                uptime % 60
            ),
        ),
        ("Store", core.store_kind().to_string()),
        (
            "Lease expiry",
            if core.expires_leases_locally() {
                "by this core".to_string()
            } else {
                "by etcd (leases)".to_string()
            },
        ),
        (
            "Self-preservation mode",
            if reading.self_preservation {
                "on"
            } else {
                "off"
            }
            .to_string(),
        ),
        ("Renews threshold", reading.threshold.to_string()),
        (
            "Renews (last min)",
            metrics.renewals_last_minute().to_string(),
        ),
        (
            "RBAC",
            if core.rbac_enabled() { "on" } else { "off" }.to_string(),
        ),
        (
            "Registered",
            format!(
                "{} microservices, {} instances",
                services.len(),
                reading.instances
            ),
        ),
    ];

    let mut out = String::with_capacity(8192 + services.len().min(MAX_ROWS) * 200);
    out.push_str(HEAD);
    out.push_str("<h2>System Status</h2>\n<table class=\"info\">\n");
    for (name, value) in &general {
        let _ = writeln!(
            out,
            "<tr><th>{name}</th><td>{}</td></tr>",
            escape_html(value)
        );
    }
    out.push_str("</table>\n<h2>Instances currently registered</h2>\n");
    if services.is_empty() {
        out.push_str("<p>No instances available</p>\n");
    } else {
        out.push_str(
            "<table class=\"apps\">\n<tr><th>Application</th><th>Tenant</th><th>appId</th>\
             <th>Version</th><th>Instances</th><th>Status</th></tr>\n",
        );
        let mut listed = 0usize;
        for e in services.iter().take(MAX_ROWS) {
            listed += write_row(&mut out, e, MAX_LISTED_INSTANCES.saturating_sub(listed));
        }
        out.push_str("</table>\n");
        let rows_left = services.len().saturating_sub(MAX_ROWS);
        let ids_left = reading.instances.saturating_sub(listed);
        if rows_left > 0 || ids_left > 0 {
            let _ = writeln!(
                out,
                "<p class=\"more\">Not listed: {rows_left} more microservices, \
                 {ids_left} more instance ids (at most {MAX_ROWS} microservices and \
                 {MAX_LISTED_INSTANCES} instance ids are shown; <code>GET \
                 /v4/{{project}}/registry/microservices</code> lists them all).</p>"
            );
        }
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// One microservice's row, listing at most `budget` instance ids; returns how many it
/// listed.
fn write_row(out: &mut String, e: &ServiceEntry, budget: usize) -> usize {
    let tenant = if e.domain == DEFAULT_TENANT && e.project == DEFAULT_TENANT {
        String::from("default")
    } else {
        format!("{}/{}", e.domain, e.project)
    };
    // status → instance ids, in instanceId order.
    let mut by_status: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, rec) in e.instances.iter() {
        let status = rec
            .eureka
            .as_ref()
            .map_or(rec.body.status.as_str(), |side| side.status.as_str());
        by_status.entry(status).or_default().push(id.as_str());
    }
    let mut listed = 0;
    let mut statuses = String::new();
    for (status, ids) in &by_status {
        let shown: Vec<String> = ids
            .iter()
            .take(budget.saturating_sub(listed))
            .map(|id| escape_html(id))
            .collect();
        listed += shown.len();
        let rest = ids.len() - shown.len();
        let _ = write!(
            statuses,
            "<div><b>{}</b> ({}) - {}{}</div>",
            escape_html(status),
            ids.len(),
            shown.join(" , "),
            if rest > 0 {
                format!(" … and {rest} more")
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(
        out,
        "<tr><td><b>{}</b></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        escape_html(&e.service.service_name.to_ascii_uppercase()),
        escape_html(&tenant),
        escape_html(&e.service.app_id),
        escape_html(&e.service.version),
        e.instances.len(),
        statuses
    );
    listed
}

/// The page's head: a title and a small inline style.
const HEAD: &str = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<title>syncer: service-center core</title>\n<style>\n\
body{font-family:sans-serif;margin:1.5em;color:#222}\n\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em;border-bottom:1px solid #ccc}\n\
table{border-collapse:collapse}th,td{text-align:left;padding:.25em .75em;vertical-align:top;\
border-bottom:1px solid #eee}\n\
.info th{font-weight:normal;color:#555}.more{color:#555}\n\
</style>\n</head>\n<body>\n<h1>syncer &middot; built-in service-center core</h1>\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html(r#"<script>alert("x&y")</script>'"#),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;"
        );
    }
}
