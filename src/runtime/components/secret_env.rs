//! `local.env`: secrets are the process environment.

use std::collections::HashMap;

use super::Metadata;

/// Reads secrets from environment variables, optionally only those starting with `prefix`.
#[derive(Debug, Default)]
pub struct EnvSecrets {
    prefix: String,
}

impl EnvSecrets {
    /// From component metadata (`prefix`, optional).
    pub fn new(metadata: &Metadata) -> Self {
        EnvSecrets {
            prefix: metadata.get("prefix").cloned().unwrap_or_default(),
        }
    }

    /// `{key: value}`; a missing variable is an empty value, as in Dapr.
    pub fn get(&self, key: &str) -> HashMap<String, String> {
        let v = std::env::var(format!("{}{key}", self.prefix)).unwrap_or_default();
        HashMap::from([(key.to_string(), v)])
    }

    /// Every variable (under the prefix) as `{name: {name: value}}`.
    pub fn bulk(&self) -> HashMap<String, HashMap<String, String>> {
        std::env::vars_os()
            .filter_map(|(k, v)| {
                // Variables that are not UTF-8 cannot be returned in a string map: skipped.
                let (k, v) = (k.into_string().ok()?, v.into_string().ok()?);
                let name = k.strip_prefix(&self.prefix)?.to_string();
                Some((name.clone(), HashMap::from([(name, v)])))
            })
            .collect()
    }
}
