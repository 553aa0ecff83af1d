//! Error rendering shared by the modules that log or return transport and file errors.

/// Renders an error with its causes, `a: b: c` (transport errors hide the TLS reason in
/// their sources).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}
