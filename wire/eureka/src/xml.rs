//! Eureka XML (XStream) documents as the equivalent Eureka JSON [`serde_json::Value`], and back.
//!
//! One shape for both encodings lets one set of lenient readers ([`crate::field`]) serve
//! both. The mapping is the one Netflix's two codecs agree on (eureka-notes §4): an attribute
//! `a` is the key `@a` (`<port enabled="true">8080</port>` is `{"@enabled": "true", "$":
//! "8080"}`), the text of an element with attributes or children is `$`, a leaf element is a
//! string, and an element name repeated under one parent (`application`, `instance`) is an
//! array. Element names are taken literally (`versions__delta` is also the JSON key), except
//! below `metadata` elements, where XStream's name escaping is undone (`zone__id` is the key
//! `zone_id`, `_-` is `$`) on reading and applied on writing, as the Java client does, and
//! an instance's `overriddenStatus`, which XML spells `overriddenstatus` (read as is: the
//! readers take both spellings).
//!
//! [`parse`] reads with quick-xml's pull reader; [`write()`] and the streaming [`Writer`] write
//! with quick-xml's writer, in Netflix's element order and layout (two-space indent, no
//! declaration), so that the core's documents look like a Netflix server's.
//!
//! Both directions work without recursion, and reading refuses a document nested deeper than
//! [`MAX_DEPTH`] elements: a 70 KB body nested 10,000 deep used to overflow the stack and abort
//! the whole daemon (issue 10).

use std::borrow::Cow;
use std::fmt;

use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use serde_json::{Map, Value};

use crate::INSTANCE_FIELDS;

/// How deep elements may nest in a document [`parse`] accepts; the root element is at depth 1.
///
/// Eureka's own documents nest six deep (`applications`, `application`, `instance`,
/// `dataCenterInfo`, `metadata`, a key), so this is no format rule but the bound (DESIGN.md
/// decision 11) that keeps a hostile document from costing more than a small, fixed amount of
/// state: a document nested deeper is refused with [`ParseError::TooDeep`] as soon as the
/// reader gets there. The [`Value`] of an accepted document is at most `2 * MAX_DEPTH`
/// containers deep (an object per element, plus an array where a name repeats): about what
/// serde_json lets a JSON body nest (127 levels), so serializing, comparing or dropping it
/// (all recursive in serde_json) stays as shallow as for any JSON body.
pub const MAX_DEPTH: usize = 64;

/// Why [`parse`] refused a document. Retrying the same document cannot help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// An element is nested deeper than [`MAX_DEPTH`]; the rest of the document was not read.
    TooDeep,
    /// Not well-formed XML, or no root element: the reader's reason.
    Malformed(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::TooDeep => write!(f, "XML nested deeper than {MAX_DEPTH} elements"),
            ParseError::Malformed(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for ParseError {}

fn malformed(e: impl fmt::Display) -> ParseError {
    ParseError::Malformed(e.to_string())
}

/// An element whose end tag has not been read yet.
#[derive(Debug)]
struct Open {
    name: String,
    /// Its attributes (`@name`) and its finished children, as they will be in its value.
    fields: Map<String, Value>,
    text: String,
}

fn open(e: &BytesStart<'_>) -> Result<Open, ParseError> {
    let mut fields = Map::new();
    for a in e.attributes() {
        let a = a.map_err(malformed)?;
        let v = a.unescape_value().map_err(malformed)?;
        fields.insert(
            format!("@{}", String::from_utf8_lossy(a.key.as_ref())),
            Value::String(v.into_owned()),
        );
    }
    Ok(Open {
        name: String::from_utf8_lossy(e.name().as_ref()).into_owned(),
        fields,
        text: String::new(),
    })
}

/// The name and value of a finished element: a string for a leaf without attributes, else
/// an object of its attributes and children, with its text as `$`.
fn close(element: Open) -> (String, Value) {
    let text = element.text.trim();
    if element.fields.is_empty() {
        return (element.name, Value::String(text.to_owned()));
    }
    let mut fields = element.fields;
    if !text.is_empty() {
        fields.insert("$".into(), Value::String(text.to_owned()));
    }
    (element.name, Value::Object(fields))
}

/// Adds a finished child to its parent: a second child of the same name makes an array.
fn adopt(parent: &mut Open, name: String, v: Value) {
    let key = if parent.name == "metadata" {
        unescape_name(&name)
    } else {
        name
    };
    match parent.fields.get_mut(&key) {
        Some(Value::Array(items)) => items.push(v),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, v]);
        }
        None => {
            parent.fields.insert(key, v);
        }
    }
}

/// The text of a general reference (`&amp;`, `&#38;`).
fn reference(r: &quick_xml::events::BytesRef<'_>) -> Result<char, ParseError> {
    if let Some(c) = r.resolve_char_ref().map_err(malformed)? {
        return Ok(c);
    }
    match r.as_ref() {
        b"amp" => Ok('&'),
        b"lt" => Ok('<'),
        b"gt" => Ok('>'),
        b"quot" => Ok('"'),
        b"apos" => Ok('\''),
        other => Err(ParseError::Malformed(format!(
            "unknown entity &{};",
            String::from_utf8_lossy(other)
        ))),
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

/// Parses an XML document into `{root name: value}`, the shape of the same document in JSON
/// (`<applications>..</applications>` becomes `{"applications": {...}}`). Reading stops at
/// the end of the root element.
///
/// Without recursion: open elements are an explicit stack, at most [`MAX_DEPTH`] long, and
/// each element's value is built when its end tag is read.
///
/// # Errors
/// [`ParseError::TooDeep`] when elements nest deeper than [`MAX_DEPTH`];
/// [`ParseError::Malformed`] when the body is not well-formed XML or has no root element.
pub fn parse(body: &[u8]) -> Result<Value, ParseError> {
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut stack: Vec<Open> = Vec::new();
    loop {
        let finished = match reader.read_event().map_err(malformed)? {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(ParseError::TooDeep);
                }
                stack.push(open(&e)?);
                None
            }
            Event::Empty(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(ParseError::TooDeep);
                }
                Some(close(open(&e)?))
            }
            Event::End(_) => Some(close(
                stack.pop().ok_or_else(|| malformed("unbalanced end tag"))?,
            )),
            Event::Text(t) => {
                if let Some(n) = stack.last_mut() {
                    n.text.push_str(&t.decode().map_err(malformed)?);
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
                    n.text.push(reference(&r)?);
                }
                None
            }
            Event::Eof => return Err(malformed("no root element")),
            _ => None,
        };
        if let Some((name, v)) = finished {
            match stack.last_mut() {
                Some(parent) => adopt(parent, name, v),
                None => {
                    let mut doc = Map::new();
                    doc.insert(name, v);
                    return Ok(Value::Object(doc));
                }
            }
        }
    }
}

/// Where an element's children go in Netflix's documents, by the element's name: XStream
/// writes them in this order (eureka-notes §4.1, §4.3; `Converters.InstanceInfoConverter`
/// and friends); clients do not depend on it, but it keeps our documents comparable with a
/// real server's. A child not named here follows the named ones, in map order.
fn child_order(element: &str) -> &'static [&'static str] {
    match element {
        "applications" => &["versions__delta", "apps__hashcode", "application"],
        "application" => &["name", "instance"],
        "instance" => INSTANCE_FIELDS,
        "dataCenterInfo" => &["name", "metadata"],
        "leaseInfo" => &[
            "renewalIntervalInSecs",
            "durationInSecs",
            "registrationTimestamp",
            "lastRenewalTimestamp",
            "evictionTimestamp",
            "serviceUpTimestamp",
        ],
        _ => &[],
    }
}

/// The XML name of the child `key` of element `parent`, or `None` when it cannot be one.
///
/// Below `metadata`, the key is XStream-escaped ([`escape_name`]) and left out when it is no
/// XML name even then (a Netflix server could not carry it in XML either; eureka-notes §4.3:
/// skip and warn). In an `instance`, JSON's `overriddenStatus` is XStream's
/// `overriddenstatus` (`Converters.ELEM_OVERRIDDEN_STATUS`). Any other key is taken
/// literally.
fn tag<'a>(parent: &str, key: &'a str) -> Option<Cow<'a, str>> {
    match (parent, key) {
        ("metadata", _) => {
            let escaped = escape_name(key);
            if name_ok(&escaped) {
                Some(Cow::Owned(escaped))
            } else {
                tracing::warn!(key = %key, "metadata key is not an xml name, left out");
                None
            }
        }
        ("instance", "overriddenStatus") => Some(Cow::Borrowed("overriddenstatus")),
        _ => Some(Cow::Borrowed(key)),
    }
}

/// One step of a [`Writer::element`] walk: an element to write, or the end tag of one whose
/// children are being written.
enum Step<'a> {
    Element {
        /// The element's name: its key in the parent's object.
        name: &'a str,
        value: &'a Value,
        /// The parent's name (its key; empty for a root), which decides the element's tag.
        parent: &'a str,
        depth: usize,
    },
    End {
        tag: Cow<'a, str>,
        depth: usize,
    },
}

/// Streams an XStream-style XML document (two-space indent, an element a line, no
/// declaration) into memory, from [`Value`]s in the shape [`parse`] reads: the writing half
/// of the codec, on quick-xml's [`quick_xml::Writer`], which builds and escapes the tags,
/// attributes and text (`<`, `>`, `&`, `'`, `"`).
///
/// [`Writer::open`] and [`Writer::close`] frame a large document, so that its parts can be
/// written one at a time and the whole never exists as one [`Value`] (the core writes
/// `/apps` one instance at a time); [`Writer::element`] writes one part:
///
/// ```
/// # use serde_json::json;
/// let mut w = syncer_wire_eureka::xml::Writer::new();
/// w.open("applications");
/// w.element("apps__hashcode", &json!("UP_1_"));
/// w.element("application", &json!({"name": "A", "instance": [{"instanceId": "i"}]}));
/// w.close();
/// assert_eq!(
///     String::from_utf8(w.finish()).unwrap(),
///     "<applications>\n  <apps__hashcode>UP_1_</apps__hashcode>\n  <application>\n    \
///      <name>A</name>\n    <instance>\n      <instanceId>i</instanceId>\n    </instance>\n  \
///      </application>\n</applications>\n"
/// );
/// ```
///
/// The mapping is [`parse`]'s, reversed: a key `@a` is the attribute `a`, `$` the text, an
/// array repeats its element, `null` writes nothing; an object with neither children nor
/// text is an empty element (`<metadata class="..."/>`), a scalar is text (numbers and
/// booleans written out), and an array or object in text or attribute position its JSON, or
/// nothing when nested deeper than `2 * MAX_DEPTH` (which no parsed document is). A
/// `metadata` element has `@class` as its only attribute and every other key as an entry,
/// its name XStream-escaped ([`escape_name`]; a key that is no XML name even then is left
/// out, with a warning, as Netflix could not write it either), and an `instance`'s
/// `overriddenStatus` is written `overriddenstatus`. Children come in Netflix's order
/// (`instanceId`, `hostName`, `app`, ... `actionType`, `asgName`; eureka-notes §4.1).
///
/// Without recursion (an explicit stack of elements to write), so a value of any depth is
/// written with a bounded stack, and in linear size: indentation stops growing at
/// [`MAX_DEPTH`] levels.
pub struct Writer {
    xml: quick_xml::Writer<Vec<u8>>,
    /// The names of the elements [`Writer::open`] opened and [`Writer::close`] has not
    /// closed, outermost first: the depth and the parent of the next element.
    open: Vec<String>,
}

impl Default for Writer {
    fn default() -> Self {
        Writer::new()
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("bytes", &self.xml.get_ref().len())
            .field("open", &self.open)
            .finish()
    }
}

impl Writer {
    /// An empty document.
    pub fn new() -> Self {
        Writer {
            xml: quick_xml::Writer::new(Vec::new()),
            open: Vec::new(),
        }
    }

    /// Writes the start tag of `name` on a line of its own; the elements written next are its
    /// children, up to the matching [`Writer::close`].
    pub fn open(&mut self, name: &str) {
        self.indent(self.open.len());
        self.event(Event::Start(BytesStart::new(name)));
        self.newline();
        self.open.push(name.to_owned());
    }

    /// Writes the end tag of the element [`Writer::open`] opened last; nothing when none is
    /// open.
    pub fn close(&mut self) {
        if let Some(name) = self.open.pop() {
            self.indent(self.open.len());
            self.event(Event::End(BytesEnd::new(name)));
            self.newline();
        }
    }

    /// Writes `value` as the element (or, for an array, the elements) `name`, a child of the
    /// element open last (see the type's docs for the mapping).
    pub fn element(&mut self, name: &str, value: &Value) {
        let parent = self.open.last().map_or("", String::as_str);
        let mut todo = vec![Step::Element {
            name,
            value,
            parent,
            depth: self.open.len(),
        }];
        while let Some(step) = todo.pop() {
            match step {
                Step::Element {
                    name,
                    value,
                    parent,
                    depth,
                } => write_element(&mut self.xml, &mut todo, name, value, parent, depth),
                Step::End { tag, depth } => {
                    indent(&mut self.xml, depth);
                    event(&mut self.xml, Event::End(BytesEnd::new(tag)));
                    newline(&mut self.xml);
                }
            }
        }
    }

    /// Closes every element still open and returns the document.
    pub fn finish(mut self) -> Vec<u8> {
        while !self.open.is_empty() {
            self.close();
        }
        self.xml.into_inner()
    }

    fn indent(&mut self, depth: usize) {
        indent(&mut self.xml, depth);
    }

    fn newline(&mut self) {
        newline(&mut self.xml);
    }

    fn event(&mut self, e: Event<'_>) {
        event(&mut self.xml, e);
    }
}

/// Writes one event into memory.
fn event(xml: &mut quick_xml::Writer<Vec<u8>>, e: Event<'_>) {
    // The sink is a `Vec<u8>`, whose `io::Write` never fails (only allocation can, and that
    // aborts): quick-xml's error here could only come from the sink.
    xml.write_event(e)
        .expect("writing xml into memory cannot fail");
}

/// Two spaces per level, up to [`MAX_DEPTH`] levels: a deeper element (only a hand-built
/// value has one) is written at that indentation, so the output stays linear in the input.
fn indent(xml: &mut quick_xml::Writer<Vec<u8>>, depth: usize) {
    let out = xml.get_mut();
    out.resize(out.len() + 2 * depth.min(MAX_DEPTH), b' ');
}

fn newline(xml: &mut quick_xml::Writer<Vec<u8>>) {
    xml.get_mut().push(b'\n');
}

/// Writes the start of one element (or all of it, when it has no children) and queues its
/// children, first child last, and its end tag on `todo`.
fn write_element<'a>(
    xml: &mut quick_xml::Writer<Vec<u8>>,
    todo: &mut Vec<Step<'a>>,
    name: &'a str,
    v: &'a Value,
    parent: &'a str,
    depth: usize,
) {
    if let Value::Array(items) = v {
        todo.extend(items.iter().rev().map(|item| Step::Element {
            name,
            value: item,
            parent,
            depth,
        }));
        return;
    }
    if v.is_null() {
        return;
    }
    let Some(tag) = tag(parent, name) else {
        return;
    };
    indent(xml, depth);
    let Value::Object(m) = v else {
        let text = scalar_text(v);
        event(xml, Event::Start(BytesStart::new(tag.as_ref())));
        event(xml, Event::Text(BytesText::new(&text)));
        event(xml, Event::End(BytesEnd::new(tag.as_ref())));
        newline(xml);
        return;
    };
    // A metadata map's keys are its entries; its only attribute is XStream's class marker.
    let is_attribute = |k: &str| {
        if name == "metadata" {
            k == "@class"
        } else {
            k.starts_with('@')
        }
    };
    let mut start = BytesStart::new(tag.as_ref());
    for (k, a) in m {
        if is_attribute(k) {
            start.push_attribute((&k[1..], scalar_text(a).as_ref()));
        }
    }
    // Each child with its place in Netflix's order (XML's spelling of an instance's
    // `overriddenStatus` takes the place of JSON's); the sort is stable, so children not in
    // the order keep their map order, after the others.
    let order = child_order(name);
    let rank = |k: &str| {
        let k = if k == "overriddenstatus" {
            "overriddenStatus"
        } else {
            k
        };
        order.iter().position(|o| *o == k).unwrap_or(order.len())
    };
    let mut children: Vec<(usize, &'a String, &'a Value)> = m
        .iter()
        .filter(|(k, _)| !is_attribute(k) && (name == "metadata" || k.as_str() != "$"))
        .map(|(k, c)| (if order.is_empty() { 0 } else { rank(k) }, k, c))
        .collect();
    children.sort_by_key(|(rank, _, _)| *rank);
    let text = match m.get("$") {
        Some(t) if name != "metadata" => scalar_text(t),
        _ => Cow::Borrowed(""),
    };
    if children.is_empty() && text.is_empty() {
        event(xml, Event::Empty(start));
        newline(xml);
    } else if children.is_empty() {
        event(xml, Event::Start(start));
        event(xml, Event::Text(BytesText::new(&text)));
        event(xml, Event::End(BytesEnd::new(tag.as_ref())));
        newline(xml);
    } else {
        event(xml, Event::Start(start));
        newline(xml);
        todo.push(Step::End { tag, depth });
        todo.extend(children.into_iter().rev().map(|(_, k, c)| Step::Element {
            name: k,
            value: c,
            parent: name,
            depth: depth + 1,
        }));
    }
}

/// The text of a value in text or attribute position: a string as is, null as nothing, any
/// other value as its JSON. An array or object nested deeper than `2 * MAX_DEPTH` (which no
/// parsed document has) is left out rather than serialized, serde_json's writer being
/// recursive.
fn scalar_text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed(""),
        Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Value::Number(n) => Cow::Owned(n.to_string()),
        other if nested_deeper_than(other, 2 * MAX_DEPTH) => {
            tracing::debug!("xml text is a value nested too deep, left out");
            Cow::Borrowed("")
        }
        other => Cow::Owned(other.to_string()),
    }
}

/// Whether `v` has more than `limit` levels of arrays and objects, found without recursion.
fn nested_deeper_than(v: &Value, limit: usize) -> bool {
    let mut todo = vec![(v, 1)];
    while let Some((v, depth)) = todo.pop() {
        match v {
            Value::Array(_) | Value::Object(_) if depth > limit => return true,
            Value::Array(items) => todo.extend(items.iter().map(|c| (c, depth + 1))),
            Value::Object(m) => todo.extend(m.values().map(|c| (c, depth + 1))),
            _ => {}
        }
    }
    false
}

/// Writes a `{root: value}` document as XStream-style XML (see [`Writer`]); the inverse of
/// [`parse`]. Metadata keys that cannot be element names are left out (a Netflix server
/// could not carry them in XML either).
pub fn write(doc: &Value) -> Vec<u8> {
    let mut w = Writer::new();
    if let Value::Object(m) = doc {
        for (root, v) in m {
            w.element(root, v);
        }
    }
    w.finish()
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

    /// [`write`] as text.
    fn write_text(doc: &Value) -> String {
        String::from_utf8(write(doc)).expect("utf-8")
    }

    #[test]
    fn writing_then_parsing_gives_the_document_back() {
        let doc = json!({"instance": {
            "instanceId": "a<b", "port": {"@enabled": "true", "$": "80"},
            "metadata": {"zone_id": "z", "bad key": "dropped"},
            "dataCenterInfo": {"@class": "x$y", "name": "Amazon",
                "metadata": {"instance-id": "i-1"}}
        }});
        let xml = write_text(&doc);
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

    /// `depth` nested `<a>` elements around `inner`.
    fn nested(depth: usize, inner: &str) -> String {
        format!("{}{inner}{}", "<a>".repeat(depth), "</a>".repeat(depth))
    }

    /// How many arrays and objects deep `v` is, counted without recursion.
    fn depth_of(v: &Value) -> usize {
        let mut deepest = 0;
        let mut todo = vec![(v, 1)];
        while let Some((v, depth)) = todo.pop() {
            match v {
                Value::Array(items) => todo.extend(items.iter().map(|c| (c, depth + 1))),
                Value::Object(m) => todo.extend(m.values().map(|c| (c, depth + 1))),
                _ => continue,
            }
            deepest = deepest.max(depth);
        }
        deepest
    }

    /// `{key: v}`, without serializing `v` as `json!` would.
    fn object(key: &str, v: Value) -> Value {
        let mut m = Map::new();
        m.insert(key.into(), v);
        Value::Object(m)
    }

    /// Drops `v` one container at a time: serde_json's own drop recurses.
    fn drop_flat(v: Value) {
        let mut todo = vec![v];
        while let Some(v) = todo.pop() {
            match v {
                Value::Array(items) => todo.extend(items),
                Value::Object(m) => todo.extend(m.into_iter().map(|(_, v)| v)),
                _ => {}
            }
        }
    }

    #[test]
    fn issue_10_a_document_nested_ten_thousand_deep_is_refused_without_overflowing() {
        for depth in [10_000, 100_000] {
            let body = nested(depth, "x");
            let err = parse(body.as_bytes()).expect_err("too deep");
            assert_eq!(err, ParseError::TooDeep, "{depth}");
            assert_eq!(err.to_string(), "XML nested deeper than 64 elements");
        }
        // Unclosed, or closed by empty elements, it is refused all the same.
        assert_eq!(
            parse("<a>".repeat(100_000).as_bytes()),
            Err(ParseError::TooDeep)
        );
        assert_eq!(
            parse(nested(MAX_DEPTH, "<b/>").as_bytes()),
            Err(ParseError::TooDeep)
        );
    }

    #[test]
    fn a_document_exactly_at_the_depth_limit_parses() {
        let doc = parse(nested(MAX_DEPTH, "deepest").as_bytes()).expect("at the limit");
        let mut v = &doc;
        for _ in 0..MAX_DEPTH {
            v = &v["a"];
        }
        assert_eq!(v, "deepest");
        assert_eq!(
            parse(nested(MAX_DEPTH + 1, "x").as_bytes()),
            Err(ParseError::TooDeep)
        );
        let doc = parse(nested(MAX_DEPTH - 1, "<b/>").as_bytes()).expect("empty at the limit");
        assert_eq!(depth_of(&doc), MAX_DEPTH);
    }

    #[test]
    fn a_parsed_value_is_at_most_twice_the_depth_limit_deep() {
        // The deepest value: every element has attributes and a namesake sibling, so each
        // level is an array of objects.
        let body = format!(
            "{}<a x=\"1\"/>{}",
            "<a x=\"1\">".repeat(MAX_DEPTH - 1),
            "<a x=\"1\"/></a>".repeat(MAX_DEPTH - 1)
        );
        let doc = parse(body.as_bytes()).expect("at the limit");
        assert_eq!(depth_of(&doc), 2 * MAX_DEPTH);
        serde_json::to_string(&doc).expect("serializes");
        assert_eq!(parse(&write(&doc)).expect("written back"), doc);
    }

    #[test]
    fn writing_a_value_nested_a_hundred_thousand_deep_does_not_overflow() {
        let depth = 100_000;
        // Built by hand: `json!` serializes an interpolated value, recursively.
        let mut v = json!("deepest");
        for _ in 0..depth {
            let mut m = Map::new();
            m.insert("a".into(), v);
            m.insert("@n".into(), json!("1"));
            v = Value::Object(m);
        }
        let doc = object("root", v);
        let xml = write_text(&doc);
        drop_flat(doc);
        // `<root n="1">`, then an `<a n="1">` per level below it, then `<a>deepest</a>`.
        assert!(xml.starts_with("<root n=\"1\">\n"));
        assert_eq!(xml.matches("<a n=\"1\">").count(), depth - 1);
        assert_eq!(xml.matches("</a>").count(), depth);
        assert!(xml.contains("<a>deepest</a>"));
        // Indentation stops growing at the limit, so the output stays linear.
        assert!(
            xml.len() < depth * (2 * (2 * MAX_DEPTH) + 30),
            "{}",
            xml.len()
        );
        assert_eq!(parse(xml.as_bytes()), Err(ParseError::TooDeep));
        // A deep value in text or attribute position is left out, not serialized.
        let mut deep = json!(1);
        for _ in 0..depth {
            deep = Value::Array(vec![deep]);
        }
        let mut r = object("$", deep);
        r["@x"] = json!("y");
        let doc = object("r", r);
        assert_eq!(write_text(&doc), "<r x=\"y\"/>\n");
        drop_flat(doc);
    }

    #[test]
    fn an_instance_is_written_in_netflix_order_with_xstream_names() {
        // serde_json's map is sorted by key: the order is the writer's.
        let doc = json!({"instance": {
            "actionType": "ADDED", "app": "A", "asgName": "g", "instanceId": "i",
            "overriddenStatus": "UNKNOWN", "vipAddress": "a", "metadata": {"a_b": "1"},
            "leaseInfo": {"durationInSecs": 90, "renewalIntervalInSecs": 30},
            "port": {"$": 80, "@enabled": "true"}, "custom": "c"
        }});
        assert_eq!(
            write_text(&doc),
            "<instance>\n  <instanceId>i</instanceId>\n  <app>A</app>\n  \
             <overriddenstatus>UNKNOWN</overriddenstatus>\n  <port enabled=\"true\">80</port>\n  \
             <leaseInfo>\n    <renewalIntervalInSecs>30</renewalIntervalInSecs>\n    \
             <durationInSecs>90</durationInSecs>\n  </leaseInfo>\n  <metadata>\n    \
             <a__b>1</a__b>\n  </metadata>\n  <vipAddress>a</vipAddress>\n  \
             <actionType>ADDED</actionType>\n  <asgName>g</asgName>\n  <custom>c</custom>\n\
             </instance>\n"
        );
    }

    #[test]
    fn metadata_keys_are_entries_and_only_the_class_marker_an_attribute() {
        let empty = json!({"metadata": {"@class": "java.util.Collections$EmptyMap"}});
        assert_eq!(
            write_text(&empty),
            "<metadata class=\"java.util.Collections$EmptyMap\"/>\n"
        );
        let odd = json!({"metadata": {"$": "d", "@x": "at", "bad key": "v", "k": "<&>"}});
        let xml = write_text(&odd);
        assert_eq!(
            xml,
            "<metadata>\n  <_->d</_->\n  <k>&lt;&amp;&gt;</k>\n</metadata>\n"
        );
        assert_eq!(
            parse(xml.as_bytes()).expect("parses"),
            json!({"metadata": {"$": "d", "k": "<&>"}})
        );
    }

    #[test]
    fn the_streaming_writer_writes_what_write_writes() {
        let app = json!({"name": "A", "instance": [{"instanceId": "i1"}, {"instanceId": "i2"}]});
        let doc = json!({"applications": {
            "apps__hashcode": "", "versions__delta": "1", "application": [app.clone()]
        }});
        let mut w = Writer::new();
        w.open("applications");
        w.element("versions__delta", &json!("1"));
        w.element("apps__hashcode", &json!(""));
        w.open("application");
        w.element("name", &json!("A"));
        for i in app["instance"].as_array().expect("array") {
            w.element("instance", i);
        }
        // `finish` closes what is still open.
        assert_eq!(
            String::from_utf8(w.finish()).expect("utf-8"),
            write_text(&doc)
        );
        assert!(write_text(&doc).contains("<apps__hashcode></apps__hashcode>"));
    }
}
