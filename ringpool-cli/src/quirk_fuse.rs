//! The FUSE short-read trial of `ringpool probe`: a tiny FUSE file system
//! whose one file answers a read at offset 0 with 4 KiB only, and an
//! io_uring read of 8 KiB from it (ringpool::quirks judges what came back).
//! Mounting changes the machine: it holds the machine-state lock, and the
//! mount and its directory go away when the trial ends, also on failure.

use std::ffi::OsStr;
use std::time::{Duration, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, LockOwner, OpenFlags, ReplyAttr,
    ReplyData, ReplyEntry, ReplyOpen, Request,
};

const FILE: INodeNo = INodeNo(2);
const LEN: usize = 16 << 10;

fn byte(i: usize) -> u8 {
    ((i / 4096) as u8).wrapping_mul(61) ^ (i % 251) as u8
}

struct ShortFs;

fn attr(ino: INodeNo) -> FileAttr {
    let t = SystemTime::UNIX_EPOCH;
    let dir = ino == INodeNo::ROOT;
    FileAttr {
        ino,
        size: if dir { 0 } else { LEN as u64 },
        blocks: (LEN as u64).div_ceil(512),
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind: if dir { FileType::Directory } else { FileType::RegularFile },
        perm: if dir { 0o755 } else { 0o444 },
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for ShortFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == INodeNo::ROOT && name == "data" {
            reply.entry(&Duration::ZERO, &attr(FILE), fuser::Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.attr(&Duration::ZERO, &attr(ino));
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // Every read reaches the server (no page cache).
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let start = (offset as usize).min(LEN);
        let mut end = (start + size as usize).min(LEN);
        if offset == 0 {
            // The short answer.
            end = end.min(4096);
        }
        let data: Vec<u8> = (start..end).map(byte).collect();
        reply.data(&data);
    }
}

/// Mounts the file system, lets the FUSE guard read through io_uring,
/// unmounts; the guard's verdict (untested, with why, when no mount).
pub fn trial() -> ringpool::quirks::Quirk {
    mounted().unwrap_or_else(|why| ringpool::quirks::fuse_quirk(Err(why)))
}

fn mounted() -> Result<ringpool::quirks::Quirk, String> {
    if !std::path::Path::new("/dev/fuse").exists() {
        return Err("no /dev/fuse".into());
    }
    // SAFETY-free check of root: mounting FUSE without fusermount needs it.
    if std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:")).map(|v| v.split_whitespace().next() != Some("0")))
        .unwrap_or(true)
    {
        return Err("mounting FUSE needs root".into());
    }
    let _lock = ringpool_testkit::machine::MachineLock::acquire().map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("ringpool-fuse-trial-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = (|| {
        let mut cfg = Config::default();
        cfg.mount_options = vec![fuser::MountOption::FSName("ringpool-quirk".into()), fuser::MountOption::RO];
        let session = fuser::spawn_mount(ShortFs, &dir, &cfg).map_err(|e| format!("cannot mount FUSE: {e}"))?;
        let expected: Vec<u8> = (0..8192).map(byte).collect();
        let q = ringpool::quirks::fuse_quirk(Ok((&dir.join("data"), &expected)));
        drop(session);
        Ok(q)
    })();
    let _ = std::fs::remove_dir(&dir);
    result
}
