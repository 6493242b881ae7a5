//! Privileges: user and group names to ids, and dropping root for good.

use std::io;

/// The uid and primary gid of user `name` (getpwnam_r).
pub(crate) fn user_ids(name: &str) -> io::Result<(u32, u32)> {
    let name = c_name(name)?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: all-zero bytes are a valid passwd (null pointers, zero ids).
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `name` is NUL-terminated,
    // `entry` and `found` are exclusively borrowed, `buf` is as long as passed.
    let r = unsafe { libc::getpwnam_r(name.as_ptr(), &mut entry, buf.as_mut_ptr(), buf.len(), &mut found) };
    lookup_found(r, found.is_null(), "no such user").map(|()| (entry.pw_uid, entry.pw_gid))
}

/// The gid of group `name` (getgrnam_r).
pub(crate) fn group_id(name: &str) -> io::Result<u32> {
    let name = c_name(name)?;
    let mut buf = vec![0 as libc::c_char; 64 * 1024];
    // SAFETY: all-zero bytes are a valid group (null pointers, zero id).
    let mut entry: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as for getpwnam_r above.
    let r = unsafe { libc::getgrnam_r(name.as_ptr(), &mut entry, buf.as_mut_ptr(), buf.len(), &mut found) };
    lookup_found(r, found.is_null(), "no such group").map(|()| entry.gr_gid)
}

fn c_name(name: &str) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the name"))
}

/// What a get*nam_r call's return code and result pointer mean.
fn lookup_found(code: libc::c_int, missing: bool, none: &str) -> io::Result<()> {
    match (code, missing) {
        (0, false) => Ok(()),
        (0, true) => Err(io::Error::new(io::ErrorKind::NotFound, none.to_string())),
        (code, _) => Err(io::Error::from_raw_os_error(code)),
    }
}

/// Whether this process already runs as `uid`/`gid` and nothing more: real
/// and effective ids both, not root. (A restarted server's successor is
/// started by a process that already dropped to them.)
pub(crate) fn already_running_as(uid: u32, gid: u32) -> bool {
    // SAFETY: getters without preconditions.
    let ids = unsafe { (libc::getuid(), libc::geteuid(), libc::getgid(), libc::getegid()) };
    uid != 0 && ids == (uid, uid, gid, gid)
}

/// Becomes `uid`/`gid` for good: supplementary groups to `gid` alone, then
/// the group, then the user (the order that leaves nothing behind), and a
/// check that root cannot be regained. Any failure is returned; the caller
/// must not go on serving after one.
pub(crate) fn drop_privileges(uid: u32, gid: u32) -> io::Result<()> {
    let check = |r: libc::c_int| if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) };
    let groups = [gid as libc::gid_t];
    // SAFETY: `groups` is a valid array of the length passed.
    check(unsafe { libc::setgroups(1, groups.as_ptr()) })?;
    // SAFETY: setgid and setuid have no memory-safety preconditions.
    check(unsafe { libc::setgid(gid) })?;
    // SAFETY: as above.
    check(unsafe { libc::setuid(uid) })?;
    // SAFETY: getters without preconditions; setuid(0) must now fail.
    let (ruid, euid, egid) = unsafe { (libc::getuid(), libc::geteuid(), libc::getegid()) };
    // SAFETY: as above.
    if ruid != uid || euid != uid || egid != gid || (uid != 0 && unsafe { libc::setuid(0) } == 0) {
        return Err(io::Error::other("the ids did not change as asked"));
    }
    Ok(())
}
