//! Helpers every mapper needs: event `data` written as valid JSON ([`JsonObject`]), the time
//! unit of `<field>_per_<unit>` companions ([`Unit`]), and an item's labels, annotations and
//! subject ([`Item::label`], [`Item::annotation`], [`subject_or`], [`data_annotations`]).
//! All plain Rust: they work natively too (tests of a mapper's logic need no wasm).

use crate::Item;

/// Appends `s` to `buf` as a JSON string literal (quotes, escapes, control characters as
/// `\uXXXX`).
///
/// ```
/// let mut buf = String::new();
/// edgemeter_guest::push_json_str(&mut buf, "a \"b\"\n");
/// assert_eq!(buf, r#""a \"b\"\n""#);
/// ```
pub fn push_json_str(buf: &mut String, s: &str) {
    use std::fmt::Write;
    buf.push('"');
    for c in s.chars() {
        match c {
            '"' => buf.push_str("\\\""),
            '\\' => buf.push_str("\\\\"),
            '\n' => buf.push_str("\\n"),
            '\r' => buf.push_str("\\r"),
            '\t' => buf.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(buf, "\\u{:04x}", u32::from(c));
            }
            c => buf.push(c),
        }
    }
    buf.push('"');
}

/// The length of `s` as a JSON string literal: what [`push_json_str`] appends (to budget an
/// event's size before writing it).
///
/// ```
/// assert_eq!(edgemeter_guest::json_str_len("a\n"), 5); // "a\n" with its quotes
/// ```
pub fn json_str_len(s: &str) -> usize {
    2 + s
        .chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' => 2,
            c if u32::from(c) < 0x20 => 6,
            c => c.len_utf8(),
        })
        .sum::<usize>()
}

/// A JSON object written field by field straight into one string (no intermediate map: one
/// allocation per event, which matters in WASM, where allocation-heavy code costs most),
/// always valid JSON: keys and strings escaped, numbers that JSON cannot hold (NaN,
/// infinities) written as `null`. Keys are not checked for duplicates: write each once. The
/// event's `data` is [`JsonObject::finish`]'s text.
///
/// ```
/// use edgemeter_guest::JsonObject;
/// let mut data = JsonObject::new();
/// data.str("pod_name", "web-1");
/// data.uint("cpu_request_millicores", 250);
/// data.int("delta", -3);
/// data.float("gpu_fraction", 0.5);
/// data.bool("estimated", false);
/// data.raw("tags", r#"["a","b"]"#);
/// assert_eq!(
///     data.finish(),
///     r#"{"pod_name":"web-1","cpu_request_millicores":250,"delta":-3,"gpu_fraction":0.5,"estimated":false,"tags":["a","b"]}"#
/// );
/// ```
#[derive(Debug, Clone)]
pub struct JsonObject {
    buf: String,
    empty: bool,
}

impl Default for JsonObject {
    fn default() -> Self {
        JsonObject::new()
    }
}

impl JsonObject {
    /// An empty object (`{}` if nothing is added).
    ///
    /// ```
    /// assert_eq!(edgemeter_guest::JsonObject::new().finish(), "{}");
    /// ```
    pub fn new() -> Self {
        let mut buf = String::with_capacity(1024);
        buf.push('{');
        JsonObject { buf, empty: true }
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.buf.push(',');
        }
        self.empty = false;
        push_json_str(&mut self.buf, key);
        self.buf.push(':');
    }

    /// Adds a string field.
    ///
    /// ```
    /// let mut o = edgemeter_guest::JsonObject::new();
    /// o.str("k", "tab\there");
    /// assert_eq!(o.finish(), r#"{"k":"tab\there"}"#);
    /// ```
    pub fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        push_json_str(&mut self.buf, value);
    }

    /// Adds an unsigned integer field (exact: not through a float).
    ///
    /// ```
    /// let mut o = edgemeter_guest::JsonObject::new();
    /// o.uint("bytes", u64::MAX);
    /// assert_eq!(o.finish(), r#"{"bytes":18446744073709551615}"#);
    /// ```
    pub fn uint(&mut self, key: &str, value: u64) {
        use std::fmt::Write;
        self.key(key);
        let _ = write!(self.buf, "{value}");
    }

    /// Adds a signed integer field.
    ///
    /// ```
    /// let mut o = edgemeter_guest::JsonObject::new();
    /// o.int("delta", i64::MIN);
    /// assert_eq!(o.finish(), r#"{"delta":-9223372036854775808}"#);
    /// ```
    pub fn int(&mut self, key: &str, value: i64) {
        use std::fmt::Write;
        self.key(key);
        let _ = write!(self.buf, "{value}");
    }

    /// Adds a number field; NaN and infinities (no JSON number) become `null`.
    ///
    /// ```
    /// let mut o = edgemeter_guest::JsonObject::new();
    /// o.float("a", 1.25);
    /// o.float("b", f64::NAN);
    /// assert_eq!(o.finish(), r#"{"a":1.25,"b":null}"#);
    /// ```
    pub fn float(&mut self, key: &str, value: f64) {
        use std::fmt::Write;
        self.key(key);
        if value.is_finite() {
            let _ = write!(self.buf, "{value}");
        } else {
            self.buf.push_str("null");
        }
    }

    /// Adds a boolean field.
    ///
    /// ```
    /// let mut o = edgemeter_guest::JsonObject::new();
    /// o.bool("estimated", true);
    /// assert_eq!(o.finish(), r#"{"estimated":true}"#);
    /// ```
    pub fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.buf.push_str(if value { "true" } else { "false" });
    }

    /// Adds a field whose value is already JSON text (e.g. `serde_json::Value`'s `Display`);
    /// the caller vouches for it (the host validates every event's `data` anyway).
    ///
    /// ```
    /// let mut o = edgemeter_guest::JsonObject::new();
    /// o.raw("nested", r#"{"x":1}"#);
    /// assert_eq!(o.finish(), r#"{"nested":{"x":1}}"#);
    /// ```
    pub fn raw(&mut self, key: &str, json: &str) {
        self.key(key);
        self.buf.push_str(json);
    }

    /// [`JsonObject::raw`] from a value whose `Display` is JSON (`serde_json::Value`),
    /// written without an intermediate string.
    ///
    /// ```
    /// struct Three;
    /// impl std::fmt::Display for Three {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    ///         f.write_str("[1,2,3]")
    ///     }
    /// }
    /// let mut o = edgemeter_guest::JsonObject::new();
    /// o.raw_display("xs", Three);
    /// assert_eq!(o.finish(), r#"{"xs":[1,2,3]}"#);
    /// ```
    pub fn raw_display(&mut self, key: &str, json: impl std::fmt::Display) {
        use std::fmt::Write;
        self.key(key);
        let _ = write!(self.buf, "{json}");
    }

    /// The object's text.
    ///
    /// ```
    /// let mut o = edgemeter_guest::JsonObject::new();
    /// o.uint("n", 1);
    /// assert_eq!(o.finish(), r#"{"n":1}"#);
    /// ```
    pub fn finish(mut self) -> String {
        self.buf.push('}');
        self.buf
    }
}

/// The time unit of `<field>_per_<unit>` companions: a quantity held for `seconds` is worth
/// `quantity × seconds / unit` unit-quantities (`cpu_request_millicores_per_minute`).
///
/// ```
/// use edgemeter_guest::Unit;
/// let unit: Unit = "minute".parse().expect("a unit");
/// assert_eq!(unit.suffix(), "_per_minute");
/// assert_eq!(unit.seconds(), 60);
/// assert_eq!(unit.per_unit(250, 120), 500.0); // 250 m for 2 minutes
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Unit {
    #[default]
    Second,
    Minute,
    Hour,
}

impl Unit {
    /// `_per_second`, `_per_minute` or `_per_hour`.
    ///
    /// ```
    /// assert_eq!(edgemeter_guest::Unit::Hour.suffix(), "_per_hour");
    /// ```
    pub fn suffix(self) -> &'static str {
        match self {
            Unit::Second => "_per_second",
            Unit::Minute => "_per_minute",
            Unit::Hour => "_per_hour",
        }
    }

    /// Seconds in one unit.
    ///
    /// ```
    /// assert_eq!(edgemeter_guest::Unit::Hour.seconds(), 3600);
    /// ```
    pub fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3600,
        }
    }

    /// `quantity` held for `seconds`, in quantity × this unit (a float: a minute's share of 90
    /// seconds is 1.5).
    ///
    /// ```
    /// assert_eq!(edgemeter_guest::Unit::Minute.per_unit(2, 90), 3.0);
    /// ```
    pub fn per_unit(self, quantity: u64, seconds: u64) -> f64 {
        quantity as f64 * seconds as f64 / self.seconds() as f64
    }
}

impl std::str::FromStr for Unit {
    type Err = String;

    /// `second`, `minute` or `hour`; anything else is an error naming the choices.
    ///
    /// ```
    /// use edgemeter_guest::Unit;
    /// assert_eq!("hour".parse::<Unit>(), Ok(Unit::Hour));
    /// assert!("day".parse::<Unit>().unwrap_err().contains("second, minute or hour"));
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "second" => Ok(Unit::Second),
            "minute" => Ok(Unit::Minute),
            "hour" => Ok(Unit::Hour),
            other => Err(format!("unit {other:?}: expected second, minute or hour")),
        }
    }
}

impl Item {
    /// The value of label `key`, if the item has it.
    ///
    /// ```
    /// # let mut item = edgemeter_guest::example_item();
    /// item.labels.push(("billing.example.com/customer".into(), "acme".into()));
    /// assert_eq!(item.label("billing.example.com/customer"), Some("acme"));
    /// assert_eq!(item.label("team"), None);
    /// ```
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of annotation `key`, if the item has it.
    ///
    /// ```
    /// # let mut item = edgemeter_guest::example_item();
    /// item.annotations.push(("openmeter.io/subject".into(), "acme".into()));
    /// assert_eq!(item.annotation("openmeter.io/subject"), Some("acme"));
    /// ```
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A subject: `value` trimmed, or `fallback` when it is missing or blank (an event's subject
/// must not be empty).
///
/// ```
/// use edgemeter_guest::subject_or;
/// assert_eq!(subject_or(Some("  acme "), "team-a"), "acme");
/// assert_eq!(subject_or(Some(" "), "team-a"), "team-a");
/// assert_eq!(subject_or(None, "team-a"), "team-a");
/// ```
pub fn subject_or(value: Option<&str>, fallback: &str) -> String {
    value
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(fallback)
        .to_owned()
}

/// The item's annotations under `prefix` (e.g. `data.openmeter.io/`), the prefix cut off:
/// `data.openmeter.io/team: blue` gives `("team", "blue")`; an annotation that is only the
/// prefix is left out.
///
/// ```
/// # let mut item = edgemeter_guest::example_item();
/// item.annotations.push(("data.openmeter.io/team".into(), "blue".into()));
/// item.annotations.push(("other/x".into(), "1".into()));
/// let data: Vec<_> = edgemeter_guest::data_annotations(&item, "data.openmeter.io/").collect();
/// assert_eq!(data, [("team", "blue")]);
/// ```
pub fn data_annotations<'a>(
    item: &'a Item,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    item.annotations.iter().filter_map(move |(k, v)| {
        k.strip_prefix(prefix)
            .filter(|k| !k.is_empty())
            .map(|k| (k, v.as_str()))
    })
}

/// An empty pod item, for examples and tests of mapping logic (natively, no host).
///
/// ```
/// let item = edgemeter_guest::example_item();
/// assert_eq!(item.name, "web-1");
/// assert_eq!(item.allocation.seconds, 60);
/// ```
pub fn example_item() -> Item {
    use crate::{Allocation, ItemKind};
    Item {
        kind: ItemKind::Pod,
        namespace: "default".into(),
        name: "web-1".into(),
        uid: "uid-web-1".into(),
        labels: Vec::new(),
        annotations: Vec::new(),
        object: String::new(),
        allocation: Allocation {
            seconds: 60,
            allocated_from: None,
            allocated_until: None,
            estimated: false,
            cpu_request_millicores: 250,
            cpu_limit_millicores: None,
            memory_request_bytes: 64 << 20,
            memory_limit_bytes: None,
            gpu: None,
            storage_bytes: None,
            storage_class: None,
            node_name: None,
            phase: Some("Running".into()),
        },
        usage: Vec::new(),
    }
}
