//! Key checking for configs: every key of a user's TOML against the schema (the default
//! config's key tree), with the nearest valid key for typos, type and enum checks, and
//! `--set key.path=value` overrides.

use std::fmt;

use anyhow::Result;

use super::TrainConfig;

/// A config error: where it came from (file or `--set`), which key, and what was wrong.
#[derive(Debug)]
pub struct ConfigError {
    pub source: String,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.source, self.message)
        } else {
            write!(f, "{}: `{}`: {}", self.source, self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

pub(crate) fn err(source: &str, key: &str, message: impl Into<String>) -> anyhow::Error {
    ConfigError {
        source: source.to_string(),
        key: key.to_string(),
        message: message.into(),
    }
    .into()
}

/// Values a string key may take, for the keys that are enums.
fn allowed_values(key: &str) -> Option<&'static [&'static str]> {
    match key {
        "model.norm_wte" | "model.norm_lm_head" => Some(&["none", "rms_norm", "layer_norm"]),
        "coconut.mode" => Some(&["shifted", "same_position", "seed"]),
        "precision" => Some(&["auto", "bf16", "fp32"]),
        "data.shard_order" => Some(&["seed", "sorted"]),
        _ => None,
    }
}

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

fn short(v: &toml::Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}...", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

/// The key tree of a full config, used to check a user's keys and types.
pub(super) fn schema() -> toml::Table {
    toml::Table::try_from(TrainConfig::default()).expect("the default config serialises")
}

fn nearest<'a>(wanted: &str, candidates: impl Iterator<Item = &'a String>) -> Option<String> {
    candidates
        .map(|c| (strsim::damerau_levenshtein(wanted, c), c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

fn all_paths(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in table {
        let path = join(prefix, k);
        if let toml::Value::Table(t) = v {
            all_paths(t, &path, out);
        }
        out.push(path);
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Checks every key of `user` against the schema: unknown keys (with the nearest valid
/// key), wrong types, and enum values outside their list.
pub(super) fn check_keys(
    user: &toml::Table,
    schema: &toml::Table,
    prefix: &str,
    source: &str,
) -> Result<()> {
    for (k, v) in user {
        let path = join(prefix, k);
        let Some(expected) = schema.get(k) else {
            return Err(err(source, &path, unknown_key(k, &path, schema, prefix)));
        };
        check_value(expected, v, &path, source)?;
    }
    Ok(())
}

/// What to say of an unknown key: the nearest key beside it or anywhere in the schema, a
/// key of the same name in another table, or else the keys valid here.
fn unknown_key(k: &str, path: &str, schema: &toml::Table, prefix: &str) -> String {
    let mut paths = Vec::new();
    all_paths(&self::schema(), "", &mut paths);
    let siblings: Vec<String> = schema.keys().map(|s| join(prefix, s)).collect();
    let hint = nearest(path, siblings.iter())
        .or_else(|| nearest(path, paths.iter()))
        .or_else(|| nearest(k, paths.iter().filter(|p| p.ends_with(&format!(".{k}")))))
        .or_else(|| {
            paths
                .iter()
                .find(|p| p.ends_with(&format!(".{k}")))
                .cloned()
        });
    match hint {
        Some(h) => format!("unknown key; did you mean `{h}`?"),
        None => {
            let valid: Vec<&str> = schema.keys().map(|s| s.as_str()).collect();
            format!("unknown key; valid keys here: {}", valid.join(", "))
        }
    }
}

/// Checks `v` at `path` against the schema's `expected` value: a table's keys in turn, an
/// array's length and numbers, a scalar's type and an enum's allowed values.
fn check_value(expected: &toml::Value, v: &toml::Value, path: &str, source: &str) -> Result<()> {
    match (expected, v) {
        (toml::Value::Table(s), toml::Value::Table(u)) => check_keys(u, s, path, source),
        (toml::Value::Table(_), other) => Err(err(
            source,
            path,
            format!(
                "expected a table of keys, found {} {}",
                type_name(other),
                short(other)
            ),
        )),
        (toml::Value::Float(_), toml::Value::Integer(_)) => Ok(()),
        (toml::Value::Array(s), toml::Value::Array(u)) => check_numbers(s.len(), u, path, source),
        (e, u) if std::mem::discriminant(e) != std::mem::discriminant(u) => {
            let mut msg = format!(
                "expected {}, found {} {}",
                type_name(e),
                type_name(u),
                short(u)
            );
            if let Some(allowed) = allowed_values(path) {
                msg.push_str(&format!(" (allowed: {})", allowed.join(", ")));
            }
            Err(err(source, path, msg))
        }
        (_, toml::Value::String(s)) => match allowed_values(path) {
            Some(allowed) if !allowed.contains(&s.as_str()) => Err(err(
                source,
                path,
                format!(
                    "`{s}` is not allowed; expected one of: {}",
                    allowed.join(", ")
                ),
            )),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// An array must hold `len` numbers.
fn check_numbers(len: usize, u: &[toml::Value], path: &str, source: &str) -> Result<()> {
    if u.len() != len {
        return Err(err(
            source,
            path,
            format!(
                "expected an array of {len} numbers, found {} values",
                u.len()
            ),
        ));
    }
    if let Some(bad) = u
        .iter()
        .find(|x| !matches!(x, toml::Value::Float(_) | toml::Value::Integer(_)))
    {
        return Err(err(
            source,
            path,
            format!("expected numbers, found {} {}", type_name(bad), short(bad)),
        ));
    }
    Ok(())
}

/// Parses a `--set` value: a TOML value (`3`, `1e-3`, `true`, `[0.9, 0.95]`, `"x"`), or else
/// the bare text as a string (`rms_norm`).
fn parse_override_value(text: &str) -> toml::Value {
    let text = text.trim();
    match toml::from_str::<toml::Table>(&format!("v = {text}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(text.into())),
        Err(_) => toml::Value::String(text.to_string()),
    }
}

/// Applies `key.path=value` to a TOML table, creating intermediate tables.
pub fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let source = format!("--set {assignment}");
    let Some((key, value)) = assignment.split_once('=') else {
        return Err(err(&source, "", "expected key.path=value"));
    };
    let key = key.trim();
    if key.is_empty() || key.split('.').any(|p| p.trim().is_empty()) {
        return Err(err(
            &source,
            key,
            "expected a dotted key path like model.n_layer",
        ));
    }
    let parts: Vec<&str> = key.split('.').map(str::trim).collect();
    let mut cur = table;
    for p in &parts[..parts.len() - 1] {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(err(&source, key, format!("`{p}` is not a table"))),
        };
    }
    cur.insert(
        parts[parts.len() - 1].to_string(),
        parse_override_value(value),
    );
    // Check the override alone, so its error names --set rather than the file.
    let mut alone = toml::Table::new();
    let mut c = &mut alone;
    for p in &parts[..parts.len() - 1] {
        c = c
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("just inserted a table");
    }
    c.insert(
        parts[parts.len() - 1].to_string(),
        parse_override_value(value),
    );
    check_keys(&alone, &schema(), "", &source)
}

/// The key path of a `key.path=value` assignment (trimmed), if it has one.
pub(super) fn override_key(assignment: &str) -> Option<String> {
    let (key, _) = assignment.split_once('=')?;
    Some(key.split('.').map(str::trim).collect::<Vec<_>>().join("."))
}

/// Applies every `--set` override in order, then resolves the data source the user asked
/// for: `data.embedded=true` switches to the embedded corpus (the globs are blanked unless
/// also set), and a non-empty `data.train` / `data.val` glob switches it off.
pub(super) fn apply_overrides(table: &mut toml::Table, overrides: &[String]) -> Result<()> {
    let mut keys = Vec::new();
    for o in overrides {
        apply_override(table, o)?;
        keys.extend(override_key(o));
    }
    let set = |k: &str| keys.iter().any(|x| x == k);
    let Some(toml::Value::Table(data)) = table.get_mut("data") else {
        return Ok(());
    };
    if set("data.embedded") {
        if data.get("embedded") == Some(&toml::Value::Boolean(true)) {
            for g in ["train", "val"] {
                if !set(&format!("data.{g}")) {
                    data.insert(g.into(), toml::Value::String(String::new()));
                }
            }
        }
    } else if ["train", "val"].iter().any(|g| {
        set(&format!("data.{g}"))
            && data
                .get(*g)
                .and_then(|v| v.as_str())
                .is_some_and(|s| !s.is_empty())
    }) {
        data.insert("embedded".into(), toml::Value::Boolean(false));
    }
    Ok(())
}

/// Renames a config error's source to the `--set` flag that caused it: the one that set the
/// key named, or every override when the file alone was valid.
pub(super) fn blame_overrides(
    e: anyhow::Error,
    overrides: &[String],
    file_alone_valid: bool,
) -> anyhow::Error {
    let Some(ce) = e.downcast_ref::<ConfigError>() else {
        return e;
    };
    let by_key: Vec<&String> = overrides
        .iter()
        .filter(|o| {
            override_key(o).is_some_and(|k| {
                k == ce.key
                    || ce.key.starts_with(&format!("{k}."))
                    || k.starts_with(&format!("{}.", ce.key))
            })
        })
        .collect();
    let culprits: Vec<&String> = if !by_key.is_empty() {
        by_key
    } else if file_alone_valid {
        overrides.iter().collect()
    } else {
        return e;
    };
    let source = culprits
        .iter()
        .map(|o| format!("--set {o}"))
        .collect::<Vec<_>>()
        .join(" ");
    ConfigError {
        source,
        key: ce.key.clone(),
        message: ce.message.clone(),
    }
    .into()
}
