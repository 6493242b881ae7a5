//! Names: this machine's node name, and the resolver both ways (getaddrinfo,
//! getnameinfo).

use std::io;

use socket2::SockAddr;

/// The machine's node name (`uname -n`).
pub(crate) fn nodename() -> io::Result<String> {
    // SAFETY: all-zero bytes are a valid utsname, which uname fills in.
    let mut names: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `names` is a valid, exclusively borrowed utsname.
    if unsafe { libc::uname(&mut names) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let bytes: Vec<u8> = names.nodename.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The resolver's message for a getaddrinfo/getnameinfo error code.
fn gai_message(code: libc::c_int) -> String {
    if code == libc::EAI_SYSTEM {
        return io::Error::last_os_error().to_string();
    }
    // SAFETY: gai_strerror returns a pointer to a static, NUL-terminated string.
    let message = unsafe { std::ffi::CStr::from_ptr(libc::gai_strerror(code)) };
    message.to_string_lossy().into_owned()
}

/// getaddrinfo(3) for `name`, IPv4 and IPv6: the canonical name (if the
/// resolver gives one) and the addresses, in the resolver's order, once each.
pub(crate) fn resolve(name: &str) -> Result<(Option<String>, Vec<std::net::IpAddr>), String> {
    let c_name = std::ffi::CString::new(name).map_err(|_| "name contains a NUL byte".to_string())?;
    // SAFETY: all-zero bytes are a valid addrinfo hints struct.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = libc::SOCK_STREAM;
    hints.ai_flags = libc::AI_CANONNAME;
    let mut list: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: `c_name` and `hints` are valid for the call; on success `list`
    // receives a list that we free below with freeaddrinfo, exactly once.
    let code = unsafe { libc::getaddrinfo(c_name.as_ptr(), std::ptr::null(), &hints, &mut list) };
    if code != 0 {
        return Err(gai_message(code));
    }
    let mut canonical = None;
    let mut addresses = Vec::new();
    let mut node = list;
    while !node.is_null() {
        // SAFETY: `node` is a non-null element of the list getaddrinfo
        // returned, not yet freed; its fields are valid as documented.
        let info = unsafe { &*node };
        if canonical.is_none() && !info.ai_canonname.is_null() {
            // SAFETY: ai_canonname is a NUL-terminated string owned by the list.
            canonical = Some(unsafe { std::ffi::CStr::from_ptr(info.ai_canonname) }.to_string_lossy().into_owned());
        }
        if !info.ai_addr.is_null() {
            let mut storage = socket2::SockAddrStorage::zeroed();
            // SAFETY: ai_addr points at ai_addrlen valid bytes of a sockaddr,
            // which fit in a sockaddr_storage.
            let addr = unsafe {
                std::ptr::copy_nonoverlapping(
                    info.ai_addr.cast::<u8>(),
                    std::ptr::from_mut(storage.view_as::<libc::sockaddr_storage>()).cast::<u8>(),
                    info.ai_addrlen as usize,
                );
                SockAddr::new(storage, info.ai_addrlen)
            };
            if let Some(ip) = addr.as_socket().map(|a| a.ip()).filter(|ip| !addresses.contains(ip)) {
                addresses.push(ip);
            }
        }
        node = info.ai_next;
    }
    // SAFETY: `list` came from a successful getaddrinfo and is freed once.
    unsafe { libc::freeaddrinfo(list) };
    Ok((canonical, addresses))
}

/// getnameinfo(3): the host name for `ip`; an error if it has none.
pub(crate) fn reverse(ip: std::net::IpAddr) -> Result<String, String> {
    let addr = SockAddr::from(std::net::SocketAddr::new(ip, 0));
    let mut host = [0 as libc::c_char; libc::NI_MAXHOST as usize];
    // SAFETY: `addr` is a valid sockaddr of the given length; `host` is a
    // writable buffer of the given length; no service buffer is asked for.
    let code = unsafe {
        libc::getnameinfo(
            addr.as_ptr().cast(),
            addr.len(),
            host.as_mut_ptr(),
            host.len() as _,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        )
    };
    if code != 0 {
        return Err(gai_message(code));
    }
    // SAFETY: on success getnameinfo wrote a NUL-terminated string into `host`.
    Ok(unsafe { std::ffi::CStr::from_ptr(host.as_ptr()) }.to_string_lossy().into_owned())
}
