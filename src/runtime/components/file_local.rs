//! `local` file store: files under a root directory (metadata `root`; default a fresh directory
//! under the system temp dir). Names are relative paths that may not leave the root.

use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use serde_json::Value;

use super::{ComponentError, Result};

/// A file's listing entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the listed directory.
    pub name: String,
    /// Size in bytes.
    pub size: i64,
    /// Last modification, RFC 3339.
    pub last_modified: String,
}

/// A local-directory file store.
#[derive(Debug)]
pub struct LocalFiles {
    root: PathBuf,
}

impl LocalFiles {
    /// Open (and create) the root. `component` names the default temp directory.
    pub fn new(component: &str, metadata: &Value) -> std::result::Result<Self, String> {
        let root = match metadata.get("root").and_then(Value::as_str) {
            Some(r) if !r.is_empty() => PathBuf::from(r),
            _ => std::env::temp_dir().join(format!("layer8-{component}-{}", std::process::id())),
        };
        std::fs::create_dir_all(&root)
            .map_err(|e| format!("cannot create root {}: {e}", root.display()))?;
        Ok(LocalFiles { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of `name` under the root; rejects absolute names and `..`.
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        let rel = Path::new(name);
        if name.is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(ComponentError::InvalidArgument(format!(
                "invalid file name '{name}': must be a relative path without '..'"
            )));
        }
        Ok(self.root.join(rel))
    }

    /// Open `name` for reading.
    pub async fn open(&self, name: &str) -> Result<tokio::fs::File> {
        tokio::fs::File::open(self.path(name)?)
            .await
            .map_err(|e| io_err(name, e))
    }

    /// Create `name` (and its directories) for writing; the caller writes then calls
    /// [`LocalFiles::commit`] so readers never see a half-written file.
    pub async fn create(&self, name: &str) -> Result<(tokio::fs::File, PathBuf, PathBuf)> {
        let path = self.path(name)?;
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| io_err(name, e))?;
        }
        let tmp = path.with_file_name(format!(
            ".{}.{}.part",
            path.file_name().and_then(|f| f.to_str()).unwrap_or("file"),
            uuid::Uuid::new_v4()
        ));
        let f = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| io_err(name, e))?;
        Ok((f, tmp, path))
    }

    /// Move a finished upload into place.
    pub async fn commit(&self, tmp: &Path, path: &Path) -> Result<()> {
        tokio::fs::rename(tmp, path)
            .await
            .map_err(|e| ComponentError::Internal(format!("{}: {e}", path.display())))
    }

    /// Delete `name`.
    pub async fn delete(&self, name: &str) -> Result<()> {
        tokio::fs::remove_file(self.path(name)?)
            .await
            .map_err(|e| io_err(name, e))
    }

    /// Size and modification time of `name`.
    pub async fn meta(&self, name: &str) -> Result<FileEntry> {
        let m = tokio::fs::metadata(self.path(name)?)
            .await
            .map_err(|e| io_err(name, e))?;
        if !m.is_file() {
            return Err(ComponentError::NotFound(format!("{name} is not a file")));
        }
        Ok(FileEntry {
            name: name.to_string(),
            size: i64::try_from(m.len()).unwrap_or(i64::MAX),
            last_modified: rfc3339(m.modified().unwrap_or(SystemTime::UNIX_EPOCH)),
        })
    }

    /// Files under directory `dir` (recursively, sorted by name), at most `page_size` after
    /// `marker`. Returns the page, the next marker and whether more remain.
    pub async fn list(
        &self,
        dir: &str,
        page_size: usize,
        marker: &str,
    ) -> Result<(Vec<FileEntry>, String, bool)> {
        let base = if dir.is_empty() {
            self.root.clone()
        } else {
            self.path(dir)?
        };
        let root = self.root.clone();
        let entries = tokio::task::spawn_blocking(move || walk(&base, &root))
            .await
            .map_err(|e| ComponentError::Internal(e.to_string()))?
            .map_err(|e| io_err(dir, e))?;
        let page_size = if page_size == 0 { 1000 } else { page_size };
        let mut rest = entries
            .into_iter()
            .filter(|e| marker.is_empty() || e.name.as_str() > marker)
            .peekable();
        let page: Vec<FileEntry> = rest.by_ref().take(page_size).collect();
        let truncated = rest.peek().is_some();
        let next = if truncated {
            page.last().map(|e| e.name.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok((page, next, truncated))
    }
}

fn walk(base: &Path, root: &Path) -> std::io::Result<Vec<FileEntry>> {
    let mut out = Vec::new();
    let mut stack = vec![base.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let ft = entry.file_type()?;
            let path = entry.path();
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                let fname = entry.file_name();
                if fname.to_string_lossy().ends_with(".part") {
                    continue;
                }
                let m = entry.metadata()?;
                let rel = path.strip_prefix(root).unwrap_or(&path);
                out.push(FileEntry {
                    name: rel.to_string_lossy().into_owned(),
                    size: i64::try_from(m.len()).unwrap_or(i64::MAX),
                    last_modified: rfc3339(m.modified().unwrap_or(SystemTime::UNIX_EPOCH)),
                });
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn io_err(name: &str, e: std::io::Error) -> ComponentError {
    match e.kind() {
        std::io::ErrorKind::NotFound => ComponentError::NotFound(format!("file {name} not found")),
        _ => ComponentError::Internal(format!("file {name}: {e}")),
    }
}

/// RFC 3339 (UTC, seconds) for a system time.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_names() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40Z");
        let f = LocalFiles {
            root: PathBuf::from("/r"),
        };
        assert!(f.path("../x").is_err());
        assert!(f.path("/etc/passwd").is_err());
        assert_eq!(f.path("a/b.txt").unwrap(), PathBuf::from("/r/a/b.txt"));
    }
}
