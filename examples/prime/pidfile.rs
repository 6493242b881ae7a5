//! `--pid-file PATH`: the pid of the process serving, at every moment. The
//! first process writes it once its signal handlers are in place (a signal
//! sent to the pid it names is handled, never fatal); a restart's successor
//! rewrites it the same way; a restart that fails gives it back to the old
//! process. With `--user`, the file is made as root and given to the user,
//! so a successor that starts as that user can still write it: it is
//! rewritten in place, never replaced (the directory may be root's).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use socketserver::privileges::Ids;

#[derive(Debug, Clone)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// The pid file at `path`, not yet written.
    pub fn at(path: &Path) -> PidFile {
        PidFile { path: path.to_path_buf() }
    }

    /// Writes this process's pid, giving the file to `owner` when there is
    /// one (before this process drops to them).
    pub fn claim(&self, owner: Option<Ids>) -> Result<(), String> {
        let file = self.write(std::process::id())?;
        if let Some(ids) = owner
            && let Err(e) = std::os::unix::fs::fchown(&file, Some(ids.uid), Some(ids.gid))
        {
            return Err(format!("cannot give the pid file {} to uid {}: {e}", self.path.display(), ids.uid));
        }
        Ok(())
    }

    /// Rewrites the file in place with `pid`: a reader sees the old pid or
    /// the new one (followed, for an instant, by the old one's tail).
    pub fn write(&self, pid: u32) -> Result<File, String> {
        let line = format!("{pid}\n");
        let written = OpenOptions::new().write(true).create(true).truncate(false).open(&self.path).and_then(|mut f| {
            f.write_all_at(line.as_bytes(), 0)?;
            f.set_len(line.len() as u64)?;
            f.flush()?;
            Ok(f)
        });
        written.map_err(|e| format!("cannot write the pid file {}: {e}", self.path.display()))
    }
}
