//! A block-style YAML writer for JSON values: what rdf.yaml is written with. Strings are
//! double-quoted with JSON's escapes, which YAML's double-quoted scalars share, so every string
//! reads back as written; numbers, booleans and null are written as JSON writes them.

use serde_json::Value;

/// `value` as a YAML document (a mapping or sequence at the top; keys in the map's order:
/// sorted, or as inserted where a crate in the build turns on serde_json's `preserve_order`,
/// as zarrs does).
///
/// ```
/// let v = serde_json::json!({"e": [], "n": 1, "name": "U-Net", "tags": ["a", "b"]});
/// assert_eq!(
///     unet_export::yaml::to_yaml(&v),
///     "e: []\nn: 1\nname: \"U-Net\"\ntags:\n  - \"a\"\n  - \"b\"\n"
/// );
/// ```
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    write_block(&mut out, value, 0);
    out
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Object(m) if m.is_empty() => "{}".into(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        // Without an exponent: YAML 1.1 readers take `1e-6` for a string.
        Value::Number(n) if n.is_f64() => {
            let text = n.as_f64().unwrap_or_default().to_string();
            match text.contains('.') {
                true => text,
                false => format!("{text}.0"),
            }
        }
        // serde_json's string escapes (\" \\ \n \t \uXXXX) are YAML's too.
        other => other.to_string(),
    }
}

fn is_block(value: &Value) -> bool {
    match value {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

fn key(k: &str) -> String {
    // Plain keys for identifiers (all of rdf.yaml's), quoted otherwise.
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !k.starts_with('-')
    {
        k.to_string()
    } else {
        Value::String(k.into()).to_string()
    }
}

fn write_block(out: &mut String, value: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                if is_block(v) {
                    out.push_str(&format!("{pad}{}:\n", key(k)));
                    write_block(out, v, indent + 2);
                } else {
                    out.push_str(&format!("{pad}{}: {}\n", key(k), scalar(v)));
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                if is_block(item) {
                    // The item's first line follows the dash, the rest align under it.
                    let mut inner = String::new();
                    write_block(&mut inner, item, indent + 2);
                    let body = &inner[indent + 2..];
                    out.push_str(&format!("{pad}- {body}"));
                } else {
                    out.push_str(&format!("{pad}- {}\n", scalar(item)));
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}
