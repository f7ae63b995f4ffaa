//! `local.file`: secrets from a JSON file, nested keys joined with `nestedSeparator` (`:`).

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::Metadata;

/// Secrets loaded once at startup from `secretsFile`.
#[derive(Debug)]
pub struct FileSecrets {
    secrets: BTreeMap<String, String>,
}

impl FileSecrets {
    /// Load `secretsFile`; errors name the file and the problem.
    pub fn new(metadata: &Metadata) -> Result<Self, String> {
        let path = metadata
            .get("secretsFile")
            .filter(|p| !p.is_empty())
            .ok_or("secretsFile is required")?;
        let sep = metadata
            .get("nestedSeparator")
            .cloned()
            .unwrap_or_else(|| ":".into());
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| format!("{path} is not JSON: {e}"))?;
        let mut secrets = BTreeMap::new();
        flatten("", &json, &sep, &mut secrets);
        Ok(FileSecrets { secrets })
    }

    /// `{key: value}`, or `None` when the file has no such key.
    pub fn get(&self, key: &str) -> Option<HashMap<String, String>> {
        let v = self.secrets.get(key)?;
        Some(HashMap::from([(key.to_string(), v.clone())]))
    }

    /// Every secret as `{key: {key: value}}`.
    pub fn bulk(&self) -> HashMap<String, HashMap<String, String>> {
        self.secrets
            .iter()
            .map(|(k, v)| (k.clone(), HashMap::from([(k.clone(), v.clone())])))
            .collect()
    }
}

fn flatten(prefix: &str, v: &Value, sep: &str, out: &mut BTreeMap<String, String>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}{sep}{k}")
        }
    };
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                flatten(&join(k), v, sep, out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                flatten(&join(&i.to_string()), v, sep, out);
            }
        }
        Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}
