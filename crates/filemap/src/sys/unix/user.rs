//! User names, for messages and listings: `getpwuid_r`, so that users from LDAP or sssd
//! (through NSS) show by name, not only those in `/etc/passwd`.
#![allow(unsafe_code)]

/// The name of the user `uid`, if the system knows one.
pub(crate) fn name_of(uid: u32) -> Option<String> {
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
        // SAFETY: on success pw_name points at a NUL-terminated string inside `buf`, which
        // lives until the end of this function.
        let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
        return Some(name.to_string_lossy().into_owned());
    }
}

/// `uid 1000 (alice)`, or `uid 1000` for a uid without a name.
pub(crate) fn describe(uid: u32) -> String {
    match name_of(uid) {
        Some(name) => format!("uid {uid} ({})", crate::Name::printable(&name)),
        None => format!("uid {uid}"),
    }
}
