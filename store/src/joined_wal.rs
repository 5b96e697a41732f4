//! A SQLite VFS that writes each commit's WAL frames with one `pwrite` instead of two per
//! frame.
//!
//! SQLite writes a WAL frame as two calls, its 24-byte header and then its page, and a commit
//! at 10,000 msg/s writes ~20 frames: ~41 `pwrite`s a commit, 10.6 a message, a quarter of the
//! writer thread's system time (BENCHMARKS.md, "The split frame writes joined").
//! This VFS is the default one (`unix`) with a single change: writes to a WAL file that
//! continue where the previous one ended are collected in memory and reach the file as one
//! write, before anything could read them.
//!
//! When that must be: SQLite makes committed frames visible to other connections (the
//! checkpoint thread's) by updating the WAL index in shared memory, which no file method sees.
//! Under `synchronous = FULL` it first calls `xSync` on the WAL, for every commit; under
//! `NORMAL` it does not. So this VFS is only for connections that stay at `FULL`
//! (`Db::open` picks it only then), and it writes what it holds at `xSync`. It also does so
//! before every other call on the file (a read of a frame this connection spilled before
//! its commit, the file's size, a truncation, closing), so the file as SQLite sees it is
//! always what it wrote. Frames lost with the process before their `xSync` belong to a
//! transaction that had not committed, which SQLite discards on recovery anyway. A write that
//! fails is reported by the call that makes it (`xSync` at the commit): the commit fails, as
//! it would have with the first failed frame.

#![allow(unsafe_code)]

use rusqlite::ffi;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::mem::{align_of, size_of};
use std::ptr;
use std::sync::OnceLock;

/// The name connections open with (`Connection::open_with_flags_and_vfs`).
pub(crate) const NAME: &CStr = c"breeze-joined-wal";

/// The most one write may carry: the unix VFS masks a write's length to 17 bits
/// (`seekAndWriteFd`), so a longer one would be cut short and reported as a full disk.
/// ~31 frames of 4 KiB; a batch of thousands of messages (MBs of frames) is written in such
/// pieces, and never held in memory twice.
const MAX_WRITE: usize = 0x1ffff;

/// Registers the VFS once per process (it wraps whichever VFS is the default then) and says
/// whether it is there to open with.
pub(crate) fn available() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        // SAFETY: `sqlite3_vfs_find(NULL)` returns the default VFS, which lives as long as the
        // process; the VFS built from it is leaked so it does too, as SQLite requires of a
        // registered VFS.
        unsafe {
            if ffi::sqlite3_initialize() != ffi::SQLITE_OK {
                return false;
            }
            let inner = ffi::sqlite3_vfs_find(ptr::null());
            if inner.is_null() {
                return false;
            }
            let mut vfs = *inner;
            vfs.szOsFile = c_int::try_from(INNER_AT)
                .ok()
                .and_then(|at| at.checked_add((*inner).szOsFile))
                .unwrap_or(c_int::MAX);
            vfs.zName = NAME.as_ptr();
            vfs.pAppData = inner.cast();
            vfs.xOpen = Some(open);
            vfs.pNext = ptr::null_mut();
            let vfs: &'static mut ffi::sqlite3_vfs = Box::leak(Box::new(vfs));
            ffi::sqlite3_vfs_register(vfs, 0) == ffi::SQLITE_OK
        }
    })
}

/// A WAL file: the inner VFS's file follows this header in the same allocation.
#[repr(C)]
struct Joined {
    /// First, as SQLite requires: its `pMethods` points at `METHODS`.
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    /// Writes not yet made, contiguous, starting at file offset `held_at`.
    held: Vec<u8>,
    held_at: i64,
}

/// Where the inner file starts: after the header, aligned for anything SQLite's own file
/// structures hold.
const INNER_AT: usize = size_of::<Joined>().next_multiple_of(align_of::<u128>());

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite calls this with our VFS (whose `pAppData` is the inner VFS) and a
    // zeroed `szOsFile`-byte allocation for `file`, which has room for the inner file at
    // offset 0 (other files) or after our header (WAL files).
    unsafe {
        let inner_vfs: *mut ffi::sqlite3_vfs = (*vfs).pAppData.cast();
        let Some(inner_open) = (*inner_vfs).xOpen else {
            return ffi::SQLITE_ERROR;
        };
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            return inner_open(inner_vfs, name, file, flags, out_flags);
        }
        let inner: *mut ffi::sqlite3_file = file.cast::<u8>().add(INNER_AT).cast();
        let rc = inner_open(inner_vfs, name, inner, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            // SQLite closes a file whose open failed only if its `pMethods` is set.
            if let Some(close) = (*inner).pMethods.as_ref().and_then(|m| m.xClose) {
                close(inner);
            }
            (*file).pMethods = ptr::null();
            return rc;
        }
        ptr::write(
            file.cast::<Joined>(),
            Joined {
                base: ffi::sqlite3_file { pMethods: &METHODS },
                inner,
                held: Vec::new(),
                held_at: 0,
            },
        );
        ffi::SQLITE_OK
    }
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

/// The `Joined` SQLite passes back to every method of `METHODS`.
///
/// SAFETY (for every caller): SQLite calls a file's methods with the pointer `open` filled,
/// one call at a time per file.
unsafe fn joined<'a>(file: *mut ffi::sqlite3_file) -> &'a mut Joined {
    unsafe { &mut *file.cast::<Joined>() }
}

/// The inner file's methods (the unix VFS's are version 3, with every method set).
unsafe fn inner_methods<'a>(j: &Joined) -> &'a ffi::sqlite3_io_methods {
    unsafe { &*(*j.inner).pMethods }
}

/// Makes the held writes, as one write.
unsafe fn release(j: &mut Joined) -> c_int {
    if j.held.is_empty() {
        return ffi::SQLITE_OK;
    }
    let Ok(len) = c_int::try_from(j.held.len()) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    // SAFETY: see `joined`; the inner file is open until `close`.
    let rc = unsafe {
        match inner_methods(j).xWrite {
            Some(w) => w(j.inner, j.held.as_ptr().cast(), len, j.held_at),
            None => ffi::SQLITE_IOERR_WRITE,
        }
    };
    j.held.clear();
    counted::made();
    rc
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: see `joined`; after this call SQLite frees the allocation without touching it.
    unsafe {
        let j = joined(file);
        let released = release(j);
        let closed = match inner_methods(j).xClose {
            Some(c) => c(j.inner),
            None => ffi::SQLITE_OK,
        };
        ptr::drop_in_place(&mut j.held);
        if released != ffi::SQLITE_OK {
            released
        } else {
            closed
        }
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: see `joined`; SQLite passes `amount` readable bytes at `data`.
    unsafe {
        let j = joined(file);
        let Ok(len) = usize::try_from(amount) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        let follows = !j.held.is_empty()
            && j.held.len() + len <= MAX_WRITE
            && i64::try_from(j.held.len()).is_ok_and(|held| j.held_at + held == offset);
        if !follows {
            let rc = release(j);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            if len > MAX_WRITE {
                counted::asked();
                counted::made();
                return match inner_methods(j).xWrite {
                    Some(w) => w(j.inner, data, amount, offset),
                    None => ffi::SQLITE_IOERR_WRITE,
                };
            }
            j.held_at = offset;
        }
        j.held
            .extend_from_slice(std::slice::from_raw_parts(data.cast::<u8>(), len));
        counted::asked();
        ffi::SQLITE_OK
    }
}

/// The methods that read, size, sync or truncate the file: the held writes first.
macro_rules! released_then {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            // SAFETY: see `joined`.
            unsafe {
                let j = joined(file);
                let rc = release(j);
                if rc != ffi::SQLITE_OK {
                    return rc;
                }
                match inner_methods(j).$method {
                    Some(m) => m(j.inner $(, $arg)*),
                    None => ffi::SQLITE_IOERR,
                }
            }
        }
    };
}

/// The methods that neither read nor change the file's bytes.
macro_rules! passed_on {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*), $missing:expr) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            // SAFETY: see `joined`.
            unsafe {
                let j = joined(file);
                match inner_methods(j).$method {
                    Some(m) => m(j.inner $(, $arg)*),
                    None => $missing,
                }
            }
        }
    };
}

released_then!(read, xRead, (data: *mut c_void, amount: c_int, offset: i64));
released_then!(truncate, xTruncate, (size: i64));
released_then!(sync, xSync, (flags: c_int));
released_then!(file_size, xFileSize, (size: *mut i64));
released_then!(file_control, xFileControl, (op: c_int, arg: *mut c_void));
released_then!(fetch, xFetch, (offset: i64, amount: c_int, out: *mut *mut c_void));
released_then!(unfetch, xUnfetch, (offset: i64, p: *mut c_void));
passed_on!(lock, xLock, (level: c_int), ffi::SQLITE_IOERR_LOCK);
passed_on!(unlock, xUnlock, (level: c_int), ffi::SQLITE_IOERR_UNLOCK);
passed_on!(check_reserved_lock, xCheckReservedLock, (out: *mut c_int), ffi::SQLITE_IOERR);
passed_on!(sector_size, xSectorSize, (), 4096);
passed_on!(device_characteristics, xDeviceCharacteristics, (), 0);
passed_on!(shm_map, xShmMap, (page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void), ffi::SQLITE_IOERR_SHMMAP);
passed_on!(shm_lock, xShmLock, (offset: c_int, n: c_int, flags: c_int), ffi::SQLITE_IOERR_SHMLOCK);
passed_on!(shm_unmap, xShmUnmap, (delete: c_int), ffi::SQLITE_OK);

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: see `joined`.
    unsafe {
        let j = joined(file);
        if let Some(b) = inner_methods(j).xShmBarrier {
            b(j.inner);
        }
    }
}

/// Writes SQLite asked for and writes made, per thread (SQLite calls a connection's VFS on the
/// thread using it), so a test sees only its own connection's.
#[cfg(test)]
mod counted {
    use std::cell::Cell;

    thread_local! {
        static ASKED: Cell<u64> = const { Cell::new(0) };
        static MADE: Cell<u64> = const { Cell::new(0) };
    }

    pub(super) fn asked() {
        ASKED.with(|c| c.set(c.get() + 1));
    }

    pub(super) fn made() {
        MADE.with(|c| c.set(c.get() + 1));
    }

    /// (asked, made) since the last call.
    pub(crate) fn take() -> (u64, u64) {
        (ASKED.with(|c| c.replace(0)), MADE.with(|c| c.replace(0)))
    }
}

#[cfg(not(test))]
mod counted {
    pub(super) fn asked() {}
    pub(super) fn made() {}
}

#[cfg(test)]
pub(crate) use counted::take as take_counts;

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags, params};
    use std::path::Path;

    /// A connection as `Db::open` makes one at `FULL`.
    fn open_joined(path: &Path, cache_pages: i64) -> Connection {
        assert!(available(), "the VFS registers");
        let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), NAME)
            .expect("open through the VFS");
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        conn.pragma_update(None, "cache_size", cache_pages).unwrap();
        conn.execute_batch("CREATE TABLE IF NOT EXISTS t (i INTEGER PRIMARY KEY, b BLOB NOT NULL)")
            .unwrap();
        conn
    }

    fn insert(conn: &Connection, from: i64, rows: i64) {
        let mut stmt = conn
            .prepare("INSERT INTO t (i, b) VALUES (?1, ?2)")
            .unwrap();
        for i in from..from + rows {
            let fill = u8::try_from(i % 251).unwrap();
            stmt.execute(params![i, vec![fill; 3000]]).unwrap();
        }
    }

    /// Commits `rows` rows in one transaction: the writes SQLite asked for, and those made.
    fn commit_rows(conn: &Connection, from: i64, rows: i64) -> (u64, u64) {
        take_counts();
        conn.execute_batch("BEGIN").unwrap();
        insert(conn, from, rows);
        conn.execute_batch("COMMIT").unwrap();
        take_counts()
    }

    /// What another process (or the checkpoint thread) reads: rows, and their bytes checked.
    fn read_back(path: &Path) -> i64 {
        let plain = Connection::open(path).expect("open without the VFS");
        let mut stmt = plain.prepare("SELECT i, b FROM t ORDER BY i").unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .unwrap();
        let mut n = 0;
        for row in rows {
            let (i, b) = row.unwrap();
            let fill = u8::try_from(i % 251).unwrap();
            assert!(
                b.len() == 3000 && b.iter().all(|&x| x == fill),
                "row {i} intact"
            );
            n += 1;
        }
        let check: String = plain
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        n
    }

    #[test]
    fn a_commits_frames_are_one_write_and_visible_to_other_connections_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("joined.db");
        let conn = open_joined(&path, 2000);
        let (asked, made) = commit_rows(&conn, 0, 10);
        // Ten 3,000-byte rows fill ~10 pages: ≥ 20 writes asked (a header and a page each).
        assert!(asked >= 20, "SQLite asked for {asked} writes");
        assert_eq!(made, 1, "one write for the commit ({asked} asked)");
        // Still open: what the commit made visible is in the file already.
        assert_eq!(read_back(&path), 10);
    }

    #[test]
    fn a_large_commit_is_written_in_pieces_the_unix_vfs_takes_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("large.db");
        let conn = open_joined(&path, 2000);
        // ~600 KB of frames: more than four pieces of `MAX_WRITE`. Longer writes were cut
        // short by the unix VFS and failed the commit as SQLITE_FULL.
        let (asked, made) = commit_rows(&conn, 0, 200);
        assert!(
            made >= 5 && made * 20 < asked,
            "{made} writes made for {asked} asked"
        );
        drop(conn);
        assert_eq!(read_back(&path), 200);
    }

    #[test]
    fn frames_spilled_before_a_rollback_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spill.db");
        // A 10-page cache: a 200-row transaction spills frames to the WAL before its commit,
        // and reads some of them back (through `read`, which writes what is held first).
        let conn = open_joined(&path, 10);
        insert(&conn, 0, 5);
        conn.execute_batch("BEGIN").unwrap();
        insert(&conn, 100, 200);
        let seen: i64 = conn
            .query_row("SELECT sum(length(b)) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            seen,
            205 * 3000,
            "this transaction reads its own spilled frames"
        );
        conn.execute_batch("ROLLBACK").unwrap();
        insert(&conn, 5, 5);
        assert_eq!(read_back(&path), 10);
        drop(conn);
        assert_eq!(read_back(&path), 10);
    }
}
