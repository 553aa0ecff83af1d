//! Eureka XML (XStream) documents as the equivalent Eureka JSON [`serde_json::Value`], and back.
//!
//! One shape for both encodings lets one lenient reader (`wire`) serve both. The mapping is the
//! one Netflix's two codecs agree on (eureka-notes §4): an attribute `a` is the key `@a`
//! (`<port enabled="true">8080</port>` is `{"@enabled": "true", "$": "8080"}`), the text of an
//! element with attributes or children is `$`, a leaf element is a string, and an element
//! name repeated under one parent (`application`, `instance`) is an array. Element names are
//! taken literally (`versions__delta` is also the JSON key), except below `metadata`
//! elements, where XStream's name escaping is undone (`zone__id` is the key `zone_id`, `_-`
//! is `$`) on reading and applied on writing, as the Java client does.

use quick_xml::events::{BytesStart, Event};
use serde_json::{Map, Value};

/// One parsed element.
#[derive(Debug, Default)]
struct Node {
    name: String,
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<Node>,
}

fn start(e: &BytesStart<'_>) -> Result<Node, String> {
    let mut n = Node {
        name: String::from_utf8_lossy(e.name().as_ref()).into_owned(),
        ..Node::default()
    };
    for a in e.attributes() {
        let a = a.map_err(|e| e.to_string())?;
        let v = a.unescape_value().map_err(|e| e.to_string())?;
        n.attrs.push((
            String::from_utf8_lossy(a.key.as_ref()).into_owned(),
            v.into_owned(),
        ));
    }
    Ok(n)
}

fn parse_tree(body: &[u8]) -> Result<Node, String> {
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut stack: Vec<Node> = Vec::new();
    loop {
        let finished = match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => {
                stack.push(start(&e)?);
                None
            }
            Event::Empty(e) => Some(start(&e)?),
            Event::End(_) => Some(stack.pop().ok_or("unbalanced end tag")?),
            Event::Text(t) => {
                if let Some(n) = stack.last_mut() {
                    n.text.push_str(&t.decode().map_err(|e| e.to_string())?);
                }
                None
            }
            Event::CData(t) => {
                if let Some(n) = stack.last_mut() {
                    n.text.push_str(&String::from_utf8_lossy(&t));
                }
                None
            }
            Event::GeneralRef(r) => {
                if let Some(n) = stack.last_mut() {
                    let c = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                        Some(c) => c,
                        None => match r.as_ref() {
                            b"amp" => '&',
                            b"lt" => '<',
                            b"gt" => '>',
                            b"quot" => '"',
                            b"apos" => '\'',
                            other => {
                                return Err(format!(
                                    "unknown entity &{};",
                                    String::from_utf8_lossy(other)
                                ))
                            }
                        },
                    };
                    n.text.push(c);
                }
                None
            }
            Event::Eof => return Err("no root element".into()),
            _ => None,
        };
        if let Some(n) = finished {
            match stack.last_mut() {
                Some(parent) => parent.children.push(n),
                None => return Ok(n),
            }
        }
    }
}

/// XStream element-name unescaping: `__` → `_`, `_-` → `$`.
pub fn unescape_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut it = name.chars().peekable();
    while let Some(c) = it.next() {
        if c == '_' {
            match it.peek() {
                Some('_') => {
                    it.next();
                    out.push('_');
                    continue;
                }
                Some('-') => {
                    it.next();
                    out.push('$');
                    continue;
                }
                _ => {}
            }
        }
        out.push(c);
    }
    out
}

/// XStream element-name escaping: `_` → `__`, `$` → `_-`.
pub fn escape_name(name: &str) -> String {
    name.replace('_', "__").replace('$', "_-")
}

/// Whether `name` (already escaped) can be an XML element name.
pub fn name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn to_value(n: &Node) -> Value {
    if n.children.is_empty() && n.attrs.is_empty() {
        return Value::String(n.text.trim().to_owned());
    }
    let mut m = Map::new();
    for (k, v) in &n.attrs {
        m.insert(format!("@{k}"), Value::String(v.clone()));
    }
    let children_are_metadata = n.name == "metadata";
    for c in &n.children {
        let key = if children_are_metadata {
            unescape_name(&c.name)
        } else {
            c.name.clone()
        };
        let v = to_value(c);
        match m.get_mut(&key) {
            Some(Value::Array(items)) => items.push(v),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, v]);
            }
            None => {
                m.insert(key, v);
            }
        }
    }
    let text = n.text.trim();
    if !text.is_empty() {
        m.insert("$".into(), Value::String(text.to_owned()));
    }
    Value::Object(m)
}

/// Parses an XML document into `{root name: value}`, the shape of the same document in JSON
/// (`<applications>..</applications>` becomes `{"applications": {...}}`).
///
/// # Errors
/// A message when the body is not well-formed XML or has no root element.
pub fn parse(body: &[u8]) -> Result<Value, String> {
    let root = parse_tree(body)?;
    let mut m = Map::new();
    let v = to_value(&root);
    m.insert(root.name, v);
    Ok(Value::Object(m))
}

fn escape_text(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

fn write_element(out: &mut String, indent: usize, name: &str, v: &Value, in_metadata: bool) {
    let tag = if in_metadata {
        let escaped = escape_name(name);
        if !name_ok(&escaped) {
            tracing::debug!(key = %name, "metadata key is not an xml name, left out");
            return;
        }
        escaped
    } else {
        name.to_owned()
    };
    match v {
        Value::Null => {}
        Value::Array(items) => {
            for item in items {
                write_element(out, indent, name, item, in_metadata);
            }
        }
        Value::Object(m) => {
            out.push_str(&format!("{:indent$}<{tag}", ""));
            for (k, a) in m {
                if let Some(attr) = k.strip_prefix('@') {
                    let a = scalar_text(a);
                    out.push_str(&format!(" {attr}=\"{}\"", escape_text(&a)));
                }
            }
            let children: Vec<(&String, &Value)> = m
                .iter()
                .filter(|(k, _)| !k.starts_with('@') && k.as_str() != "$")
                .collect();
            let text = m.get("$").map(scalar_text).unwrap_or_default();
            if children.is_empty() && text.is_empty() {
                out.push_str("/>\n");
            } else if children.is_empty() {
                out.push_str(&format!(">{}</{tag}>\n", escape_text(&text)));
            } else {
                out.push_str(">\n");
                let child_meta = name == "metadata";
                for (k, c) in children {
                    write_element(out, indent + 2, k, c, child_meta);
                }
                out.push_str(&format!("{:indent$}</{tag}>\n", ""));
            }
        }
        other => {
            out.push_str(&format!(
                "{:indent$}<{tag}>{}</{tag}>\n",
                "",
                escape_text(&scalar_text(other))
            ));
        }
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Writes a `{root: value}` document as XStream-style XML (two-space indent, no declaration);
/// the inverse of [`parse`]. Metadata keys that cannot be element names are left out (a
/// Netflix server could not carry them in XML either).
pub fn write(doc: &Value) -> String {
    let mut out = String::new();
    if let Value::Object(m) = doc {
        for (root, v) in m {
            write_element(&mut out, 0, root, v, false);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn attributes_text_repeats_and_metadata_names_map_to_json() {
        let doc = parse(
            br#" <applications><versions__delta>1</versions__delta><apps__hashcode/>
            <application><name>A</name><instance><port enabled="true">80</port>
            <metadata><zone__id>z</zone__id><a_-b>x &amp; y</a_-b></metadata></instance>
            <instance><metadata class="java.util.Collections$EmptyMap"/></instance>
            </application></applications>"#,
        )
        .expect("parses");
        let apps = &doc["applications"];
        assert_eq!(apps["versions__delta"], "1");
        assert_eq!(apps["apps__hashcode"], "");
        let instances = &apps["application"]["instance"];
        assert_eq!(instances[0]["port"], json!({"@enabled": "true", "$": "80"}));
        assert_eq!(
            instances[0]["metadata"],
            json!({"zone_id": "z", "a$b": "x & y"})
        );
        assert_eq!(
            instances[1]["metadata"]["@class"],
            "java.util.Collections$EmptyMap"
        );
    }

    #[test]
    fn writing_then_parsing_gives_the_document_back() {
        let doc = json!({"instance": {
            "instanceId": "a<b", "port": {"@enabled": "true", "$": "80"},
            "metadata": {"zone_id": "z", "bad key": "dropped"},
            "dataCenterInfo": {"@class": "x$y", "name": "Amazon",
                "metadata": {"instance-id": "i-1"}}
        }});
        let xml = write(&doc);
        assert!(xml.contains("<zone__id>z</zone__id>"), "{xml}");
        let back = parse(xml.as_bytes()).expect("parses");
        let mut expected = doc.clone();
        expected["instance"]["metadata"]
            .as_object_mut()
            .expect("object")
            .remove("bad key");
        assert_eq!(back, expected);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(b"").is_err());
        assert!(parse(b"<a><b></a>").is_err());
    }
}
