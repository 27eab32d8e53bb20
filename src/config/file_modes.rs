//! A warning at start for each file holding a secret (or the config file, which may
//! hold some) that users other than the owner can read: the daemon still starts, since
//! the operator may have reasons (a group of admins), but it says which file and mode.

use super::Config;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why `path` is worth a warning: readable (or writable) by group or others.
pub fn open_to_others(path: &Path) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} has mode {:o}: users other than its owner can read it; chmod 600 it",
            path.display(),
            mode & 0o7777
        )
    })
}

impl Config {
    /// The config file and the files the secrets were read from.
    pub fn secret_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = Vec::new();
        files.extend(self.config_file.iter().cloned());
        files.extend(self.secret_files.iter().cloned());
        files.extend(self.tls.options.files.key.iter().cloned());
        files
    }

    /// Logs a warning for each of [`Config::secret_files`] others can read.
    pub fn warn_open_secret_files(&self) {
        for path in self.secret_files() {
            if let Some(why) = open_to_others(&path) {
                log::warn!("{why}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_others_can_read_is_named_with_its_mode() {
        let dir = std::env::temp_dir().join(format!("file-modes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let why = open_to_others(&file).unwrap();
        assert!(why.contains("secret") && why.contains("644"), "{why}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(open_to_others(&file), None);
        assert_eq!(open_to_others(&dir.join("missing")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
