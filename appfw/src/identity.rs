//! What a program *is*: the file the kernel executed, as (device, inode).
//!
//! Paths and argv are what a process or its mount namespace says; neither
//! names a program reliably (a bind mount, a swapped symlink, `exec -a`).
//! The exec hook reads `mm->exe_file`'s inode and its filesystem's device
//! in the kernel, and configuration entries are `stat`ed to the same pair,
//! so comparing them compares files. Paths are kept for display only.

use std::{fs, io, os::unix::fs::MetadataExt, path::Path};

use appfw_common::{owner::exe_source, KernelOffsets, ProcRecord};

use crate::btf::{Btf, BtfError};

/// A file: `st_dev` (userspace encoding) and `st_ino`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// The file `path` names, symlinks followed (`stat`, not `lstat`).
    pub fn of_path(path: &Path) -> io::Result<FileId> {
        fs::metadata(path).map(|m| FileId::of_metadata(&m))
    }

    pub fn of_metadata(m: &fs::Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }

    /// From the kernel's `sb->s_dev` and `i_ino`.
    pub fn from_kernel(s_dev: u32, ino: u64) -> FileId {
        FileId {
            dev: kernel_dev_to_user(s_dev),
            ino,
        }
    }

    /// The executable a kernel record names, if the hook read it.
    pub fn of_record(rec: &ProcRecord) -> Option<FileId> {
        (matches!(rec.exe_source, exe_source::EXEC | exe_source::FORK) && rec.ino != 0)
            .then(|| FileId::from_kernel(rec.dev, rec.ino))
    }
}

impl std::fmt::Display for FileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (major, minor) = (libc::major(self.dev), libc::minor(self.dev));
        write!(f, "device {major}:{minor} inode {}", self.ino)
    }
}

/// The kernel keeps a device as `major << 20 | minor` (`MINORBITS` 20);
/// `stat` reports glibc's `makedev` encoding. Only the latter is compared.
pub fn kernel_dev_to_user(s_dev: u32) -> u64 {
    libc::makedev(s_dev >> 20, s_dev & 0xf_ffff)
}

/// How a process's executable was established, strongest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strength {
    /// Read in the kernel at exec (or at fork from the parent).
    Kernel,
    /// `stat("/proc/PID/exe")`: the magic link leads to the real file in
    /// any mount namespace (processes older than appfw).
    Proc,
    /// No executable: only a thread name, or nothing. Such a process is
    /// unknown to the policy.
    None,
}

/// Text to show for an executable whose identity is `id` and whose path,
/// as the kernel or /proc gave it, is `path`: the path with symlinks
/// resolved if that is still the same file here, otherwise the path with
/// the identity (the path lies: a bind mount in another namespace, a
/// swapped symlink, a /proc/self/fd or memfd exec).
pub fn display_path(path: &str, id: FileId) -> String {
    if path.starts_with('/') {
        if let Ok(canonical) = fs::canonicalize(path) {
            if FileId::of_path(&canonical).ok() == Some(id) {
                if let Some(s) = canonical.to_str() {
                    return s.to_owned();
                }
            }
        }
    }
    let shown = if path.is_empty() { "?" } else { path };
    format!("{shown} ({id})")
}

/// The struct members the exec hook follows, from the kernel's BTF.
pub fn kernel_offsets(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    Ok(KernelOffsets {
        task_mm: btf.member_offset("task_struct", "mm")?,
        mm_exe_file: btf.member_offset("mm_struct", "exe_file")?,
        mm_arg_start: btf.member_offset("mm_struct", "arg_start")?,
        mm_arg_end: btf.member_offset("mm_struct", "arg_end")?,
        file_f_inode: btf.member_offset("file", "f_inode")?,
        inode_i_ino: btf.member_offset("inode", "i_ino")?,
        inode_i_sb: btf.member_offset("inode", "i_sb")?,
        sb_s_dev: btf.member_offset("super_block", "s_dev")?,
        bprm_interp: btf.member_offset("linux_binprm", "interp")?,
        exit_group_dead: 0,
    })
}

/// (name, value) of each BTF offset, for checks and debug output.
pub fn offset_values(o: &KernelOffsets) -> [(&'static str, u32); 9] {
    [
        ("task_struct.mm", o.task_mm),
        ("mm_struct.exe_file", o.mm_exe_file),
        ("mm_struct.arg_start", o.mm_arg_start),
        ("mm_struct.arg_end", o.mm_arg_end),
        ("file.f_inode", o.file_f_inode),
        ("inode.i_ino", o.inode_i_ino),
        ("inode.i_sb", o.inode_i_sb),
        ("super_block.s_dev", o.sb_s_dev),
        ("linux_binprm.interp", o.bprm_interp),
    ]
}

/// The offset of field `name` in a tracepoint format file's text, if the
/// record has it (`field:bool group_dead;\toffset:32;\tsize:1;...`).
pub fn tracepoint_field_offset(format: &str, name: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let line = line.trim();
        let decl = line.strip_prefix("field:")?.split(';').next()?;
        let field = decl.rsplit([' ', '*']).next()?;
        if field != name {
            return None;
        }
        line.split(';')
            .find_map(|part| part.trim().strip_prefix("offset:"))
            .and_then(|v| v.parse().ok())
    })
}

/// The words of a NUL-separated argv buffer, at most `max_words`, decoded
/// lossily (argv need not be UTF-8; the bytes that are not cannot equal
/// any configured word).
pub fn split_args(buf: &[u8], max_words: usize) -> Vec<String> {
    let buf = buf.strip_suffix(&[0]).unwrap_or(buf);
    if buf.is_empty() {
        return Vec::new();
    }
    buf.split(|&b| b == 0)
        .take(max_words)
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect()
}

/// A made-up identity for a path, for unit tests that must not depend on
/// the host's files: the same path always gives the same identity.
#[cfg(test)]
pub(crate) fn test_id(path: &str) -> FileId {
    // FNV-1a: deterministic, no host state.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    FileId { dev: 7, ino: h }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_device_encoding_is_converted() {
        // 254:0 is 0xfe00000 in the kernel and 0xfe00 from stat.
        assert_eq!(kernel_dev_to_user(0x0fe0_0000), 0xfe00);
        assert_eq!(kernel_dev_to_user((8 << 20) | 1), libc::makedev(8, 1));
        // Minors above 255 use glibc's split encoding.
        let d = kernel_dev_to_user((259 << 20) | 300);
        assert_eq!((libc::major(d), libc::minor(d)), (259, 300));
    }

    #[test]
    fn record_without_identity_has_none() {
        let mut rec: ProcRecord = unsafe_zeroed();
        assert_eq!(FileId::of_record(&rec), None);
        rec.exe_source = exe_source::EXEC;
        rec.dev = 0x0fe0_0000;
        rec.ino = 42;
        assert_eq!(
            FileId::of_record(&rec),
            Some(FileId {
                dev: 0xfe00,
                ino: 42
            })
        );
    }

    fn unsafe_zeroed() -> ProcRecord {
        // SAFETY: ProcRecord is plain integers and byte arrays; all-zero is
        // a valid value.
        unsafe { std::mem::zeroed() }
    }

    #[test]
    fn args_split_and_capped() {
        assert_eq!(split_args(b"a\0bb\0c\0", 16), vec!["a", "bb", "c"]);
        assert_eq!(split_args(b"a\0bb\0c\0", 2), vec!["a", "bb"]);
        // Truncated mid-word: the partial word is kept.
        assert_eq!(split_args(b"a\0b", 16), vec!["a", "b"]);
        assert_eq!(split_args(b"", 16), Vec::<String>::new());
        assert_eq!(split_args(b"\xff\0x\0", 16), vec!["\u{fffd}", "x"]);
        // An empty argument is a word.
        assert_eq!(split_args(b"a\0\0b\0", 16), vec!["a", "", "b"]);
    }

    #[test]
    fn format_file_offsets() {
        let format = "name: sched_process_exit\nformat:\n\
            \tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
            \tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n\
            \tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n";
        assert_eq!(tracepoint_field_offset(format, "group_dead"), Some(32));
        assert_eq!(tracepoint_field_offset(format, "pid"), Some(24));
        assert_eq!(tracepoint_field_offset(format, "prio"), None);
    }

    #[test]
    fn display_path_shows_identity_when_the_path_lies() {
        let dir = std::env::temp_dir().join(format!("appfw-unit-{}-display", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a");
        let b = dir.join("b");
        fs::write(&a, b"a").unwrap();
        fs::write(&b, b"b").unwrap();
        let id_a = FileId::of_path(&a).unwrap();
        let shown = display_path(a.to_str().unwrap(), id_a);
        let other = display_path(b.to_str().unwrap(), id_a);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            shown,
            fs::canonicalize(std::env::temp_dir())
                .unwrap()
                .join(format!("appfw-unit-{}-display/a", std::process::id()))
                .to_str()
                .unwrap()
        );
        assert!(other.ends_with(&format!("/b ({id_a})")), "{other}");
        assert_eq!(display_path("", id_a), format!("? ({id_a})"));
    }
}
