//! `SO_ORIGINAL_DST`: the destination a connection had before iptables REDIRECT/DNAT.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use tokio::net::TcpStream;

const SO_ORIGINAL_DST: libc::c_int = 80;
const IP6T_SO_ORIGINAL_DST: libc::c_int = 80;

/// The original destination of `stream`, or `None` if the kernel has none (no NAT happened).
pub fn get(stream: &TcpStream, local: SocketAddr) -> Option<SocketAddr> {
    let fd = stream.as_raw_fd();
    if local.is_ipv4() {
        // SAFETY: fd is a valid socket for the lifetime of `stream`; the out-buffer is a
        // correctly sized sockaddr_in and `len` reflects its size.
        unsafe {
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let rc = libc::getsockopt(
                fd,
                libc::SOL_IP,
                SO_ORIGINAL_DST,
                (&mut addr as *mut libc::sockaddr_in).cast(),
                &mut len,
            );
            if rc != 0 {
                return None;
            }
            let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(addr.sin_port),
            )))
        }
    } else {
        // SAFETY: as above, with sockaddr_in6.
        unsafe {
            let mut addr: libc::sockaddr_in6 = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            let rc = libc::getsockopt(
                fd,
                libc::SOL_IPV6,
                IP6T_SO_ORIGINAL_DST,
                (&mut addr as *mut libc::sockaddr_in6).cast(),
                &mut len,
            );
            if rc != 0 {
                return None;
            }
            let ip = Ipv6Addr::from(addr.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(addr.sin6_port),
                0,
                0,
            )))
        }
    }
}
