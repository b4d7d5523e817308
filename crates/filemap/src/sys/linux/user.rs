//! User names, for messages and listings: `getpwuid_r`, so that users from LDAP or sssd
//! (through NSS) show by name, not only those in `/etc/passwd`.
#![allow(unsafe_code)]

/// Runs `f` on the user database's entry for `uid` (`getpwuid_r`), if there is one.
fn with_passwd<R>(uid: u32, f: impl FnOnce(&libc::passwd) -> R) -> Option<R> {
    let mut buf = vec![0 as libc::c_char; 1024];
    loop {
        // SAFETY: an all-zero passwd is a valid buffer for getpwuid_r to fill.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call, and `buf.len()` is its length.
        let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 || found.is_null() || pw.pw_name.is_null() {
            return None;
        }
        // `pw`'s strings point into `buf`, which lives until we return.
        return Some(f(&pw));
    }
}

/// The name of the user `uid`, if the system knows one.
pub(crate) fn name_of(uid: u32) -> Option<String> {
    with_passwd(uid, |pw| {
        // SAFETY: pw_name is a NUL-terminated string inside the buffer, alive during `f`.
        let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
        name.to_string_lossy().into_owned()
    })
}

/// `uid 1000 (alice)`, or `uid 1000` for a uid without a name.
pub(crate) fn describe(uid: u32) -> String {
    match name_of(uid) {
        Some(name) => format!("uid {uid} ({})", crate::Name::printable(&name)),
        None => format!("uid {uid}"),
    }
}

/// The groups of the user `uid` (its primary group and the others it belongs to), as the
/// system's user database tells; empty for a uid without an entry.
pub(crate) fn groups_of(uid: u32) -> Vec<u32> {
    with_passwd(uid, |pw| {
        let mut groups: Vec<libc::gid_t> = vec![0; 64];
        loop {
            let mut n = groups.len() as libc::c_int;
            // SAFETY: pw_name is a NUL-terminated string, alive during this closure;
            // `groups` has room for `n` entries, and getgrouplist writes at most that many.
            let rc =
                unsafe { libc::getgrouplist(pw.pw_name, pw.pw_gid, groups.as_mut_ptr(), &mut n) };
            if rc >= 0 {
                groups.truncate(n.max(0) as usize);
                return groups;
            }
            // Too small: `n` now says how many there are.
            if n as usize <= groups.len() || groups.len() >= 1 << 16 {
                return vec![pw.pw_gid];
            }
            groups.resize(n as usize, 0);
        }
    })
    .unwrap_or_default()
}
