//! WASI preview1 sockets: `sock_accept`, `sock_recv`, `sock_send`, `sock_shutdown`, and
//! `fd_read`/`fd_write`/`fd_close`/`fd_fdstat_*`/`poll_oneoff` on socket descriptors. Preview1
//! cannot create sockets: a program is given listening TCP sockets (`run --listen=PORT`, named
//! in `LISTEN_FD`) and connections the kernel opened for it (`run --connect=HOST:PORT`, named in
//! `CONNECT_FD`) when it starts, numbered from [`SOCKET_FD_BASE`].

use crate::wasi::{Ctx, HostFunctions, errno, read_bytes, write_bytes, write_u32};
use crate::wasi_fs::iovecs;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::time::Duration;
use keel_net::{ListenerId, SocketHandle, Stack, TcpError};
use keel_task::{EventCount, Mutex};
use wasmtime::Caller;

/// Socket descriptors start here, far from the file descriptors (3 upwards) and outside
/// wasi-libc's scan for preopened directories.
pub const SOCKET_FD_BASE: u32 = 1024;

mod code {
    pub const AGAIN: i32 = 6;
    pub const CONNREFUSED: i32 = 14;
    pub const NOTCONN: i32 = 53;
    pub const NOTSOCK: i32 = 57;
    pub const PIPE: i32 = 64;
    pub const ADDRINUSE: i32 = 3;
}

/// `fdflags::nonblock`.
const NONBLOCK: u16 = 1 << 2;

/// How programs reach the network stack (the kernel owns it; its NIC loop polls it).
#[derive(Clone, Copy)]
pub struct NetworkAccess {
    pub stack: &'static Mutex<Option<Stack>>,
    /// Counts the NIC loop's rounds (and wakes waiters after each).
    pub activity: &'static EventCount,
    /// Asks the NIC loop for a round now (after a program queued data).
    pub kick: fn(),
}

#[derive(Clone, Copy)]
enum Endpoint {
    Listener(ListenerId),
    Stream(SocketHandle),
}

struct SocketFd {
    endpoint: Endpoint,
    nonblocking: bool,
}

/// A program's sockets.
#[derive(Default)]
pub(crate) struct Sockets {
    network: Option<NetworkAccess>,
    table: BTreeMap<u32, SocketFd>,
}

fn tcp_errno(e: TcpError) -> i32 {
    match e {
        TcpError::WouldBlock => code::AGAIN,
        TcpError::AddressInUse => code::ADDRINUSE,
        TcpError::NotConnected => code::NOTCONN,
        TcpError::BadHandle => errno::BADF,
        TcpError::Refused => code::CONNREFUSED,
    }
}

impl Sockets {
    /// Gives the program listening sockets on `ports` and the established connections
    /// `connected` (which it owns from now on); returns the descriptors of each.
    pub(crate) fn open(
        network: Option<NetworkAccess>,
        ports: &[u16],
        connected: &[SocketHandle],
    ) -> Result<(Self, Vec<u32>, Vec<u32>), alloc::string::String> {
        let mut sockets = Sockets {
            network,
            table: BTreeMap::new(),
        };
        let mut streams = Vec::new();
        for &handle in connected {
            let fd = sockets.next_fd();
            sockets.table.insert(
                fd,
                SocketFd {
                    endpoint: Endpoint::Stream(handle),
                    nonblocking: false,
                },
            );
            streams.push(fd);
        }
        let mut fds = Vec::new();
        if ports.is_empty() {
            return Ok((sockets, fds, streams));
        }
        let access = network.ok_or("no network (is a NIC driver running? see 'drivers')")?;
        let mut guard = access.stack.lock();
        let stack = guard
            .as_mut()
            .ok_or("no network (is a NIC driver running? see 'drivers')")?;
        for &port in ports {
            let listener = stack
                .listen(port, 16)
                .map_err(|_| alloc::format!("port {port} is in use"))?;
            let fd = sockets.next_fd();
            sockets.table.insert(
                fd,
                SocketFd {
                    endpoint: Endpoint::Listener(listener),
                    nonblocking: false,
                },
            );
            fds.push(fd);
        }
        Ok((sockets, fds, streams))
    }

    pub(crate) fn is_socket(&self, fd: i32) -> bool {
        u32::try_from(fd).is_ok_and(|fd| self.table.contains_key(&fd))
    }

    fn next_fd(&self) -> u32 {
        (SOCKET_FD_BASE..)
            .find(|fd| !self.table.contains_key(fd))
            .unwrap_or(u32::MAX)
    }

    /// Closes every socket (the program ended).
    fn close_all(&mut self) {
        let Some(access) = self.network else {
            return;
        };
        let mut guard = access.stack.lock();
        if let Some(stack) = guard.as_mut() {
            for socket in core::mem::take(&mut self.table).into_values() {
                match socket.endpoint {
                    Endpoint::Listener(id) => stack.unlisten(id),
                    Endpoint::Stream(handle) => stack.tcp_close(handle),
                }
            }
        }
        drop(guard);
        (access.kick)();
    }

    /// Whether a read (or accept) on `fd` would not block.
    pub(crate) fn readable(&self, fd: i32) -> bool {
        self.ready(fd, true)
    }

    pub(crate) fn writable(&self, fd: i32) -> bool {
        self.ready(fd, false)
    }

    fn ready(&self, fd: i32, read: bool) -> bool {
        let (Some(access), Some(socket)) = (self.network, self.table.get(&(fd as u32))) else {
            return true;
        };
        let guard = access.stack.lock();
        let Some(stack) = guard.as_ref() else {
            return true;
        };
        match (socket.endpoint, read) {
            (Endpoint::Listener(id), true) => stack.can_accept(id),
            (Endpoint::Listener(_), false) => false,
            (Endpoint::Stream(h), true) => stack.tcp_readable(h),
            (Endpoint::Stream(h), false) => stack.tcp_writable(h),
        }
    }

    /// How far the network has moved: read it before looking at sockets, and give it to
    /// [`Sockets::wait_activity`].
    pub(crate) fn activity(&self) -> u64 {
        self.network.map_or(0, |access| access.activity.count())
    }

    /// Waits until the network moved past `seen` (a round of the NIC loop), at most `timeout`.
    pub(crate) fn wait_activity(&self, seen: u64, timeout: Duration) {
        match self.network {
            Some(access) => {
                access.activity.wait_past(seen, timeout);
            }
            None => keel_task::sleep(timeout),
        }
    }
}

impl Drop for Sockets {
    /// However the program ended (exit, trap, kill), its sockets close with it.
    fn drop(&mut self) {
        self.close_all();
    }
}

/// Runs `op` on the stack, retrying after network activity while it would block (unless the
/// socket is non-blocking).
fn with_stack<T>(
    c: &mut Caller<'_, Ctx>,
    fd: i32,
    mut op: impl FnMut(&mut Stack, Endpoint) -> Result<T, TcpError>,
) -> Result<T, i32> {
    let sockets = &c.data().sockets;
    let access = sockets.network.ok_or(errno::BADF)?;
    let socket = sockets.table.get(&(fd as u32)).ok_or(code::NOTSOCK)?;
    let (endpoint, nonblocking) = (socket.endpoint, socket.nonblocking);
    loop {
        let seen = access.activity.count();
        let result = {
            let mut guard = access.stack.lock();
            let stack = guard.as_mut().ok_or(code::NOTCONN)?;
            op(stack, endpoint)
        };
        match result {
            Err(TcpError::WouldBlock) if !nonblocking => {
                if keel_task::kill_requested() {
                    return Err(errno::INTR);
                }
                // No kick here: nothing new was queued, and a kicked round would end this
                // wait at once (a busy loop with the NIC task). The next round comes with
                // the next frame or timer of the stack.
                access.activity.wait_past(seen, Duration::from_millis(10));
            }
            other => {
                (access.kick)();
                return other.map_err(tcp_errno);
            }
        }
    }
}

/// Reads from a stream socket into the program's iovecs.
pub(crate) fn read(c: &mut Caller<'_, Ctx>, fd: i32, iovs: i32, iovs_len: i32) -> Result<u32, i32> {
    let vecs = iovecs(c, iovs, iovs_len)?;
    let total = vecs
        .iter()
        .map(|&(_, len)| len as usize)
        .sum::<usize>()
        .min(64 * 1024);
    let mut data = alloc::vec![0u8; total];
    let n = with_stack(c, fd, |stack, endpoint| match endpoint {
        Endpoint::Stream(h) => stack.tcp_recv(h, &mut data),
        Endpoint::Listener(_) => Err(TcpError::NotConnected),
    })?;
    let mut written = 0;
    for (buf, len) in vecs {
        if written == n {
            break;
        }
        let len = (len as usize).min(n - written);
        if !write_bytes(c, buf, &data[written..written + len]) {
            return Err(errno::FAULT);
        }
        written += len;
    }
    Ok(n as u32)
}

/// Sends the program's iovecs on a stream socket; returns how much was queued.
pub(crate) fn write(
    c: &mut Caller<'_, Ctx>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
) -> Result<u32, i32> {
    let mut data = Vec::new();
    for (buf, len) in iovecs(c, iovs, iovs_len)? {
        let len = len.min(256 * 1024);
        data.extend(read_bytes(c, buf, len).ok_or(errno::FAULT)?);
        if data.len() >= 256 * 1024 {
            break;
        }
    }
    let n = with_stack(c, fd, |stack, endpoint| match endpoint {
        Endpoint::Stream(h) => stack.tcp_send(h, &data),
        Endpoint::Listener(_) => Err(TcpError::NotConnected),
    })
    .map_err(|e| if e == code::NOTCONN { code::PIPE } else { e })?;
    Ok(n as u32)
}

pub(crate) fn close(c: &mut Caller<'_, Ctx>, fd: i32) -> i32 {
    let sockets = &mut c.data_mut().sockets;
    let Some(socket) = sockets.table.remove(&(fd as u32)) else {
        return errno::BADF;
    };
    if let Some(access) = sockets.network {
        if let Some(stack) = access.stack.lock().as_mut() {
            match socket.endpoint {
                Endpoint::Listener(id) => stack.unlisten(id),
                Endpoint::Stream(h) => stack.tcp_close(h),
            }
        }
        (access.kick)();
    }
    errno::SUCCESS
}

/// `fdstat` of a socket: stream socket, its flags, all socket rights.
pub(crate) fn fdstat(c: &mut Caller<'_, Ctx>, fd: i32, out: i32) -> i32 {
    let Some(socket) = c.data().sockets.table.get(&(fd as u32)) else {
        return errno::BADF;
    };
    let mut stat = [0u8; 24];
    stat[0] = 6; // socket_stream
    let flags = if socket.nonblocking { NONBLOCK } else { 0 };
    stat[2..4].copy_from_slice(&flags.to_le_bytes());
    stat[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    stat[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    if write_bytes(c, out as u32, &stat) {
        errno::SUCCESS
    } else {
        errno::FAULT
    }
}

pub(crate) fn set_flags(c: &mut Caller<'_, Ctx>, fd: i32, flags: i32) -> i32 {
    match c.data_mut().sockets.table.get_mut(&(fd as u32)) {
        Some(socket) => {
            socket.nonblocking = flags as u16 & NONBLOCK != 0;
            errno::SUCCESS
        }
        None => errno::BADF,
    }
}

pub(crate) fn add(host: &mut HostFunctions) -> wasmtime::Result<()> {
    host.wrap(
        "sock_accept",
        |mut c: Caller<'_, Ctx>, fd: i32, flags: i32, out: i32| {
            let result = with_stack(&mut c, fd, |stack, endpoint| match endpoint {
                Endpoint::Listener(id) => stack.accept(id),
                Endpoint::Stream(_) => Err(TcpError::BadHandle),
            });
            let handle = match result {
                Ok(handle) => handle,
                Err(e) => return e,
            };
            let sockets = &mut c.data_mut().sockets;
            let new_fd = sockets.next_fd();
            sockets.table.insert(
                new_fd,
                SocketFd {
                    endpoint: Endpoint::Stream(handle),
                    nonblocking: flags as u16 & NONBLOCK != 0,
                },
            );
            if write_u32(&mut c, out as u32, new_fd) {
                errno::SUCCESS
            } else {
                errno::FAULT
            }
        },
    )?;
    host.wrap(
        "sock_recv",
        |mut c: Caller<'_, Ctx>,
         fd: i32,
         iovs: i32,
         len: i32,
         _flags: i32,
         out: i32,
         roflags: i32| {
            if !c.data().sockets.is_socket(fd) {
                return code::NOTSOCK;
            }
            match read(&mut c, fd, iovs, len) {
                Ok(n) => {
                    if write_u32(&mut c, out as u32, n)
                        && write_bytes(&mut c, roflags as u32, &[0, 0])
                    {
                        errno::SUCCESS
                    } else {
                        errno::FAULT
                    }
                }
                Err(e) => e,
            }
        },
    )?;
    host.wrap(
        "sock_send",
        |mut c: Caller<'_, Ctx>, fd: i32, iovs: i32, len: i32, _flags: i32, out: i32| {
            if !c.data().sockets.is_socket(fd) {
                return code::NOTSOCK;
            }
            match write(&mut c, fd, iovs, len) {
                Ok(n) => {
                    if write_u32(&mut c, out as u32, n) {
                        errno::SUCCESS
                    } else {
                        errno::FAULT
                    }
                }
                Err(e) => e,
            }
        },
    )?;
    host.wrap(
        "sock_shutdown",
        |mut c: Caller<'_, Ctx>, fd: i32, how: i32| {
            if !c.data().sockets.is_socket(fd) {
                return code::NOTSOCK;
            }
            if how & 2 == 0 {
                // Shutting down only the reading side changes nothing Keel tracks.
                return errno::SUCCESS;
            }
            match with_stack(&mut c, fd, |stack, endpoint| match endpoint {
                Endpoint::Stream(h) => {
                    stack.tcp_shutdown_write(h);
                    Ok(())
                }
                Endpoint::Listener(_) => Err(TcpError::NotConnected),
            }) {
                Ok(()) => errno::SUCCESS,
                Err(e) => e,
            }
        },
    )?;
    Ok(())
}
