//! Keel's network stack: smoltcp over a queue of Ethernet frames. The NIC's driver instance
//! (a WebAssembly component, see `keel-dd-host`) moves frames between the device and the queues;
//! [`Stack::poll`] runs smoltcp between them. DHCP configures the interface.
//!
//! This crate holds no lock and knows no task: the kernel keeps the one [`Stack`] behind a
//! mutex and decides who polls it. That keeps it testable on the host, frame by frame.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod dns;

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::{dhcpv4, icmp, tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, Ipv4Address,
    Ipv4Cidr,
};

pub use smoltcp::iface::SocketHandle;
pub use smoltcp::wire::Ipv4Address as Ipv4;

/// Largest Ethernet frame the stack sends (without the FCS, which the NIC adds).
pub const MAX_FRAME: usize = 1514;
/// Frames queued towards the driver before the stack stops producing more.
const TX_QUEUE: usize = 64;

/// Counters for `ifconfig`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Statistics {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames the driver refused or could not take (ring full, device error).
    pub tx_errors: u64,
    /// Frames dropped on receive (too large, or the queue was full).
    pub rx_errors: u64,
}

/// The two frame queues smoltcp reads and writes.
struct Queues {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
    statistics: Statistics,
}

struct Received(Vec<u8>);
struct Sending<'a>(&'a mut Queues);

impl RxToken for Received {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Sending<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        self.0.tx.push_back(frame);
        result
    }
}

impl Device for Queues {
    type RxToken<'a> = Received;
    type TxToken<'a> = Sending<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Received, Sending<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((Received(frame), Sending(self)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Sending<'_>> {
        (self.tx.len() < TX_QUEUE).then_some(Sending(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        caps.max_burst_size = Some(32);
        caps
    }
}

/// The interface's IPv4 configuration, once DHCP gave one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Config {
    pub address: Ipv4Cidr,
    pub router: Option<Ipv4Address>,
    /// The first DNS server DHCP named.
    pub dns_server: Option<Ipv4Address>,
}

/// One network interface with its sockets.
pub struct Stack {
    mac: [u8; 6],
    link_up: bool,
    queues: Queues,
    iface: Interface,
    sockets: SocketSet<'static>,
    dhcp: SocketHandle,
    dhcp_enabled: bool,
    ipv4: Option<Ipv4Config>,
    listeners: Vec<Option<Listener>>,
    /// Connections the program closed: kept until their FIN exchange is over.
    closing: Vec<SocketHandle>,
    /// The last local port handed out for outgoing connections and UDP sockets.
    next_port: u16,
}

/// A listening TCP port: a pool of sockets in LISTEN state, one of which becomes each incoming
/// connection (smoltcp has no accept queue; the pool is the backlog).
struct Listener {
    port: u16,
    pool: Vec<SocketHandle>,
}

/// Identifies a listening port of a [`Stack`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListenerId(usize);

/// Why a TCP call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpError {
    /// Nothing to do now (no connection to accept, no data, no room to send).
    WouldBlock,
    /// The port is in use, or 0.
    AddressInUse,
    /// The connection is closed or reset.
    NotConnected,
    /// The handle names nothing.
    BadHandle,
    /// The peer refused the connection, or it could not be made.
    Refused,
}

/// Receive and send buffer sizes of every TCP connection.
const TCP_RX_BUFFER: usize = 32 * 1024;
const TCP_TX_BUFFER: usize = 64 * 1024;

/// Why `ping` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PingError {
    NoAddress,
    SendFailed,
}

fn instant(now_ns: u64) -> Instant {
    Instant::from_micros((now_ns / 1000) as i64)
}

impl Stack {
    /// An interface with hardware address `mac`, asking DHCP for its address.
    pub fn new(mac: [u8; 6], now_ns: u64) -> Self {
        let mut queues = Queues {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            statistics: Statistics::default(),
        };
        let config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        let iface = Interface::new(config, &mut queues, instant(now_ns));
        let mut sockets = SocketSet::new(Vec::new());
        let dhcp = sockets.add(dhcpv4::Socket::new());
        Self {
            mac,
            link_up: true,
            queues,
            iface,
            sockets,
            dhcp,
            dhcp_enabled: true,
            ipv4: None,
            listeners: Vec::new(),
            closing: Vec::new(),
            next_port: 49152 + (now_ns % 16384) as u16,
        }
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// A new hardware address (a restarted or replaced NIC driver reports it).
    pub fn set_mac(&mut self, mac: [u8; 6]) {
        if mac != self.mac {
            self.mac = mac;
            self.iface
                .set_hardware_addr(HardwareAddress::Ethernet(EthernetAddress(mac)));
        }
    }

    pub fn set_link(&mut self, up: bool) {
        if self.link_up != up && up && self.dhcp_enabled {
            // A new link may be a new network: ask for an address again.
            self.sockets.get_mut::<dhcpv4::Socket>(self.dhcp).reset();
        }
        self.link_up = up;
    }

    pub fn ipv4(&self) -> Option<Ipv4Config> {
        self.ipv4
    }

    pub fn statistics(&self) -> Statistics {
        self.queues.statistics
    }

    /// A frame the NIC received.
    pub fn receive_frame(&mut self, frame: Vec<u8>) {
        if frame.len() > MAX_FRAME + 4 || self.queues.rx.len() >= 256 {
            self.queues.statistics.rx_errors += 1;
            return;
        }
        self.queues.statistics.rx_packets += 1;
        self.queues.statistics.rx_bytes += frame.len() as u64;
        self.queues.rx.push_back(frame);
    }

    /// Frames to hand to the NIC, oldest first.
    pub fn take_frames(&mut self, max: usize) -> Vec<Vec<u8>> {
        let count = max.min(self.queues.tx.len());
        self.queues.tx.drain(..count).collect()
    }

    /// The NIC sent `frames` frames of `bytes` bytes, and could not take `failed` more.
    pub fn count_sent(&mut self, frames: u64, bytes: u64, failed: u64) {
        let statistics = &mut self.queues.statistics;
        statistics.tx_packets += frames;
        statistics.tx_bytes += bytes;
        statistics.tx_errors += failed;
    }

    fn listening_socket(&mut self, port: u16) -> Result<SocketHandle, TcpError> {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; TCP_RX_BUFFER]),
            tcp::SocketBuffer::new(vec![0; TCP_TX_BUFFER]),
        );
        socket.listen(port).map_err(|_| TcpError::AddressInUse)?;
        Ok(self.sockets.add(socket))
    }

    /// Listens on TCP `port` with room for `backlog` connections not yet accepted.
    pub fn listen(&mut self, port: u16, backlog: usize) -> Result<ListenerId, TcpError> {
        let taken = self.listeners.iter().flatten().any(|l| l.port == port);
        if port == 0 || taken {
            return Err(TcpError::AddressInUse);
        }
        let mut pool = Vec::new();
        for _ in 0..backlog.max(1) {
            pool.push(self.listening_socket(port)?);
        }
        self.listeners.push(Some(Listener { port, pool }));
        Ok(ListenerId(self.listeners.len() - 1))
    }

    /// A connection that arrived on `listener`, if any; its pool gets a fresh listening socket.
    pub fn accept(&mut self, listener: ListenerId) -> Result<SocketHandle, TcpError> {
        let port = self.listener(listener)?.port;
        let sockets = &self.sockets;
        let pool = &self.listener(listener)?.pool;
        let ready = pool.iter().position(|&handle| {
            let socket = sockets.get::<tcp::Socket>(handle);
            !matches!(
                socket.state(),
                tcp::State::Listen | tcp::State::SynReceived | tcp::State::Closed
            )
        });
        let Some(index) = ready else {
            return Err(TcpError::WouldBlock);
        };
        let fresh = self.listening_socket(port)?;
        let pool = &mut self.listener_mut(listener)?.pool;
        let connection = pool.swap_remove(index);
        pool.push(fresh);
        Ok(connection)
    }

    /// Whether `accept` would return a connection now.
    pub fn can_accept(&self, listener: ListenerId) -> bool {
        self.listener(listener).is_ok_and(|l| {
            l.pool.iter().any(|&handle| {
                !matches!(
                    self.sockets.get::<tcp::Socket>(handle).state(),
                    tcp::State::Listen | tcp::State::SynReceived | tcp::State::Closed
                )
            })
        })
    }

    /// Stops listening: connections not yet accepted are reset.
    pub fn unlisten(&mut self, listener: ListenerId) {
        if let Some(slot) = self.listeners.get_mut(listener.0)
            && let Some(l) = slot.take()
        {
            for handle in l.pool {
                self.sockets.remove(handle);
            }
        }
    }

    fn listener(&self, id: ListenerId) -> Result<&Listener, TcpError> {
        self.listeners
            .get(id.0)
            .and_then(Option::as_ref)
            .ok_or(TcpError::BadHandle)
    }

    fn listener_mut(&mut self, id: ListenerId) -> Result<&mut Listener, TcpError> {
        self.listeners
            .get_mut(id.0)
            .and_then(Option::as_mut)
            .ok_or(TcpError::BadHandle)
    }

    /// A local port for an outgoing connection or UDP socket (49152-65535, not in use).
    fn ephemeral_port(&mut self) -> u16 {
        loop {
            self.next_port = if self.next_port == u16::MAX {
                49152
            } else {
                self.next_port + 1
            };
            let port = self.next_port;
            let taken = self.sockets.iter().any(|(_, socket)| match socket {
                smoltcp::socket::Socket::Tcp(t) => {
                    t.local_endpoint().is_some_and(|e| e.port == port)
                }
                smoltcp::socket::Socket::Udp(u) => u.endpoint().port == port,
                _ => false,
            });
            if !taken {
                return port;
            }
        }
    }

    /// Starts a connection to `remote`:`port`; it is usable once [`Stack::tcp_connection`]
    /// says so. Close it with [`Stack::tcp_close`].
    pub fn tcp_connect(
        &mut self,
        remote: Ipv4Address,
        port: u16,
    ) -> Result<SocketHandle, TcpError> {
        if self.ipv4.is_none() || port == 0 {
            return Err(TcpError::NotConnected);
        }
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; TCP_RX_BUFFER]),
            tcp::SocketBuffer::new(vec![0; TCP_TX_BUFFER]),
        );
        let local = self.ephemeral_port();
        socket
            .connect(self.iface.context(), (IpAddress::Ipv4(remote), port), local)
            .map_err(|_| TcpError::Refused)?;
        Ok(self.sockets.add(socket))
    }

    /// Where an outgoing connection stands: `Ok(true)` established, `Ok(false)` still
    /// connecting, `Err(Refused)` if it failed (reset, or timed out).
    pub fn tcp_connection(&self, handle: SocketHandle) -> Result<bool, TcpError> {
        match self.sockets.get::<tcp::Socket>(handle).state() {
            tcp::State::SynSent | tcp::State::SynReceived => Ok(false),
            tcp::State::Closed => Err(TcpError::Refused),
            _ => Ok(true),
        }
    }

    /// A UDP socket on `port` (0: any free port); returns it and the port.
    pub fn udp_bind(&mut self, port: u16) -> Result<(SocketHandle, u16), TcpError> {
        let taken = self.sockets.iter().any(|(_, socket)| match socket {
            smoltcp::socket::Socket::Udp(u) => u.endpoint().port == port,
            _ => false,
        });
        if taken || port == 67 || port == 68 {
            return Err(TcpError::AddressInUse);
        }
        let port = if port == 0 {
            self.ephemeral_port()
        } else {
            port
        };
        let buffer =
            || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 16 * 1024]);
        let mut socket = udp::Socket::new(buffer(), buffer());
        socket.bind(port).map_err(|_| TcpError::AddressInUse)?;
        Ok((self.sockets.add(socket), port))
    }

    /// Queues one datagram to `to`:`port`.
    pub fn udp_send(
        &mut self,
        handle: SocketHandle,
        to: Ipv4Address,
        port: u16,
        data: &[u8],
    ) -> Result<(), TcpError> {
        if self.ipv4.is_none() {
            return Err(TcpError::NotConnected);
        }
        self.sockets
            .get_mut::<udp::Socket>(handle)
            .send_slice(data, (IpAddress::Ipv4(to), port))
            .map_err(|e| match e {
                udp::SendError::BufferFull => TcpError::WouldBlock,
                udp::SendError::Unaddressable => TcpError::NotConnected,
            })
    }

    /// The next datagram that arrived: its length (cut to `out`) and sender.
    pub fn udp_recv(
        &mut self,
        handle: SocketHandle,
        out: &mut [u8],
    ) -> Result<(usize, Ipv4Address, u16), TcpError> {
        let socket = self.sockets.get_mut::<udp::Socket>(handle);
        let (payload, meta) = socket.recv().map_err(|_| TcpError::WouldBlock)?;
        let n = payload.len().min(out.len());
        out[..n].copy_from_slice(&payload[..n]);
        match meta.endpoint.addr {
            IpAddress::Ipv4(from) => Ok((n, from, meta.endpoint.port)),
        }
    }

    /// Reads what arrived on a connection: `Ok(0)` at the end of the stream.
    pub fn tcp_recv(&mut self, handle: SocketHandle, out: &mut [u8]) -> Result<usize, TcpError> {
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        match socket.recv_slice(out) {
            Ok(0) if out.is_empty() => Ok(0),
            Ok(0) if socket.may_recv() => Err(TcpError::WouldBlock),
            Ok(0) => Ok(0),
            Ok(n) => Ok(n),
            Err(tcp::RecvError::Finished) => Ok(0),
            Err(tcp::RecvError::InvalidState) => Err(TcpError::NotConnected),
        }
    }

    /// Queues bytes to send on a connection; how many fit.
    pub fn tcp_send(&mut self, handle: SocketHandle, data: &[u8]) -> Result<usize, TcpError> {
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        if !socket.may_send() {
            return Err(TcpError::NotConnected);
        }
        match socket.send_slice(data) {
            Ok(0) if !data.is_empty() => Err(TcpError::WouldBlock),
            Ok(n) => Ok(n),
            Err(_) => Err(TcpError::NotConnected),
        }
    }

    /// Whether a read would not block: data, or the end of the stream, or an error.
    pub fn tcp_readable(&self, handle: SocketHandle) -> bool {
        let socket = self.sockets.get::<tcp::Socket>(handle);
        socket.can_recv() || !socket.may_recv()
    }

    /// Whether a send would not block: room in the buffer, or the connection is gone.
    pub fn tcp_writable(&self, handle: SocketHandle) -> bool {
        let socket = self.sockets.get::<tcp::Socket>(handle);
        socket.can_send() || !socket.may_send()
    }

    /// Ends the sending direction (FIN after the queued data).
    pub fn tcp_shutdown_write(&mut self, handle: SocketHandle) {
        self.sockets.get_mut::<tcp::Socket>(handle).close();
    }

    /// Closes a connection: queued data is still sent, then FIN; the socket goes away once
    /// the exchange is over (or at once if the peer reset it).
    pub fn tcp_close(&mut self, handle: SocketHandle) {
        self.sockets.get_mut::<tcp::Socket>(handle).close();
        self.closing.push(handle);
    }

    fn reap_closed(&mut self) {
        let sockets = &mut self.sockets;
        self.closing.retain(|&handle| {
            let done = matches!(
                sockets.get::<tcp::Socket>(handle).state(),
                tcp::State::Closed | tcp::State::TimeWait
            );
            if done {
                sockets.remove(handle);
            }
            !done
        });
    }

    /// Runs the stack: received frames in, timers, frames to send out. Returns how long it may
    /// sleep before it must run again (without new frames).
    pub fn poll(&mut self, now_ns: u64) -> Option<u64> {
        let now = instant(now_ns);
        self.iface.poll(now, &mut self.queues, &mut self.sockets);
        self.handle_dhcp();
        self.reap_closed();
        self.iface
            .poll_delay(now, &self.sockets)
            .map(|delay| delay.total_micros() * 1000)
    }

    fn handle_dhcp(&mut self) {
        if !self.dhcp_enabled {
            return;
        }
        match self.sockets.get_mut::<dhcpv4::Socket>(self.dhcp).poll() {
            Some(dhcpv4::Event::Configured(config)) => {
                let address = config.address;
                self.iface.update_ip_addrs(|addrs| {
                    addrs.clear();
                    let _ = addrs.push(IpCidr::Ipv4(address));
                });
                match config.router {
                    Some(router) => {
                        let _ = self.iface.routes_mut().add_default_ipv4_route(router);
                    }
                    None => {
                        self.iface.routes_mut().remove_default_ipv4_route();
                    }
                }
                self.ipv4 = Some(Ipv4Config {
                    address,
                    router: config.router,
                    dns_server: config.dns_servers.first().copied(),
                });
            }
            Some(dhcpv4::Event::Deconfigured) => {
                self.iface.update_ip_addrs(|addrs| addrs.clear());
                self.iface.routes_mut().remove_default_ipv4_route();
                self.ipv4 = None;
            }
            None => {}
        }
    }

    /// Sets a fixed address instead of DHCP's (DHCP stops asking).
    pub fn configure_static(&mut self, address: Ipv4Cidr, router: Option<Ipv4Address>) {
        if self.dhcp_enabled {
            self.sockets.remove(self.dhcp);
            self.dhcp_enabled = false;
        }
        self.iface.update_ip_addrs(|addrs| {
            addrs.clear();
            let _ = addrs.push(IpCidr::Ipv4(address));
        });
        if let Some(router) = router {
            let _ = self.iface.routes_mut().add_default_ipv4_route(router);
        }
        self.ipv4 = Some(Ipv4Config {
            address,
            router,
            dns_server: None,
        });
    }

    /// Opens an ICMP echo endpoint with identifier `ident`; returns its handle.
    pub fn open_ping(&mut self, ident: u16) -> SocketHandle {
        let buffer =
            || icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; 2048]);
        let mut socket = icmp::Socket::new(buffer(), buffer());
        let _ = socket.bind(icmp::Endpoint::Ident(ident));
        self.sockets.add(socket)
    }

    pub fn close(&mut self, handle: SocketHandle) {
        self.sockets.remove(handle);
    }

    /// Queues an echo request with `sequence` to `target` on the ping endpoint `handle`.
    pub fn send_ping(
        &mut self,
        handle: SocketHandle,
        ident: u16,
        sequence: u16,
        target: Ipv4Address,
        payload: &[u8],
    ) -> Result<(), PingError> {
        if self.ipv4.is_none() {
            return Err(PingError::NoAddress);
        }
        let repr = Icmpv4Repr::EchoRequest {
            ident,
            seq_no: sequence,
            data: payload,
        };
        let socket = self.sockets.get_mut::<icmp::Socket>(handle);
        let buffer = socket
            .send(repr.buffer_len(), IpAddress::Ipv4(target))
            .map_err(|_| PingError::SendFailed)?;
        let mut packet = Icmpv4Packet::new_unchecked(buffer);
        repr.emit(&mut packet, &smoltcp::phy::ChecksumCapabilities::default());
        Ok(())
    }

    /// The sequence number of an echo reply that arrived on `handle`, if any.
    pub fn ping_reply(&mut self, handle: SocketHandle, ident: u16) -> Option<(u16, Ipv4Address)> {
        let socket = self.sockets.get_mut::<icmp::Socket>(handle);
        while socket.can_recv() {
            let (payload, from) = socket.recv().ok()?;
            let IpAddress::Ipv4(from) = from;
            let packet = Icmpv4Packet::new_checked(payload).ok()?;
            let repr =
                Icmpv4Repr::parse(&packet, &smoltcp::phy::ChecksumCapabilities::default()).ok()?;
            if let Icmpv4Repr::EchoReply {
                ident: reply_ident,
                seq_no,
                ..
            } = repr
                && reply_ident == ident
            {
                return Some((seq_no, from));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC_A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xa];
    const MAC_B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xb];

    /// Moves every queued frame from one stack to the other, both ways, and polls both.
    fn exchange(a: &mut Stack, b: &mut Stack, now_ns: u64) {
        for _ in 0..8 {
            a.poll(now_ns);
            b.poll(now_ns);
            for frame in a.take_frames(64) {
                b.receive_frame(frame);
            }
            for frame in b.take_frames(64) {
                a.receive_frame(frame);
            }
        }
    }

    #[test]
    fn a_new_interface_asks_dhcp_for_an_address() {
        let mut stack = Stack::new(MAC_A, 0);
        stack.poll(0);
        let frames = stack.take_frames(8);
        assert_eq!(frames.len(), 1, "one DHCPDISCOVER");
        let frame = &frames[0];
        assert_eq!(&frame[0..6], &[0xff; 6], "broadcast");
        assert_eq!(&frame[6..12], &MAC_A);
        assert_eq!(&frame[12..14], &[0x08, 0x00], "IPv4");
        assert_eq!(frame[23], 17, "UDP");
        assert_eq!(&frame[34..38], &[0, 68, 0, 67], "port 68 to 67");
        assert!(stack.ipv4().is_none());
    }

    #[test]
    fn ping_between_two_stacks_and_statistics() {
        let mut a = Stack::new(MAC_A, 0);
        let mut b = Stack::new(MAC_B, 0);
        let net = |last| Ipv4Cidr::new(Ipv4Address::new(10, 0, 0, last), 24);
        a.configure_static(net(1), None);
        b.configure_static(net(2), None);
        let ping = a.open_ping(0x4b45);
        assert_eq!(a.ping_reply(ping, 0x4b45), None);
        a.send_ping(ping, 0x4b45, 7, Ipv4Address::new(10, 0, 0, 2), b"keel")
            .unwrap();
        exchange(&mut a, &mut b, 1_000_000);
        assert_eq!(
            a.ping_reply(ping, 0x4b45),
            Some((7, Ipv4Address::new(10, 0, 0, 2)))
        );
        // ARP request and reply, echo request and reply.
        let sa = a.statistics();
        assert_eq!((sa.rx_packets, sa.rx_errors), (2, 0));
        assert!(sa.rx_bytes >= 2 * 42);
        a.count_sent(2, 140, 1);
        let sa = a.statistics();
        assert_eq!((sa.tx_packets, sa.tx_bytes, sa.tx_errors), (2, 140, 1));
    }

    #[test]
    fn tcp_listen_accept_exchange_and_close() {
        let mut server = Stack::new(MAC_A, 0);
        let mut client = Stack::new(MAC_B, 0);
        let net = |last| Ipv4Cidr::new(Ipv4Address::new(10, 0, 0, last), 24);
        server.configure_static(net(1), None);
        client.configure_static(net(2), None);
        let listener = server.listen(80, 2).unwrap();
        assert_eq!(server.listen(80, 1), Err(TcpError::AddressInUse));
        assert_eq!(server.accept(listener), Err(TcpError::WouldBlock));
        assert!(!server.can_accept(listener));

        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 4096]),
            tcp::SocketBuffer::new(vec![0; 4096]),
        );
        let context = client.iface.context();
        socket
            .connect(context, (Ipv4Address::new(10, 0, 0, 1), 80), 49152)
            .unwrap();
        let outgoing = client.sockets.add(socket);
        exchange(&mut server, &mut client, 1_000_000);
        assert!(server.can_accept(listener));
        let connection = server.accept(listener).unwrap();
        assert_eq!(
            server.tcp_recv(connection, &mut [0; 16]),
            Err(TcpError::WouldBlock)
        );

        assert_eq!(client.tcp_send(outgoing, b"GET / HTTP/1.1\r\n\r\n"), Ok(18));
        exchange(&mut server, &mut client, 2_000_000);
        assert!(server.tcp_readable(connection));
        let mut request = [0; 64];
        let n = server.tcp_recv(connection, &mut request).unwrap();
        assert_eq!(&request[..n], b"GET / HTTP/1.1\r\n\r\n");

        assert!(server.tcp_writable(connection));
        assert_eq!(server.tcp_send(connection, b"hello"), Ok(5));
        server.tcp_close(connection);
        exchange(&mut server, &mut client, 3_000_000);
        let mut reply = [0; 16];
        let n = client.tcp_recv(outgoing, &mut reply).unwrap();
        assert_eq!(&reply[..n], b"hello");
        assert_eq!(
            client.tcp_recv(outgoing, &mut reply),
            Ok(0),
            "end of stream"
        );
        client.tcp_close(outgoing);
        exchange(&mut server, &mut client, 4_000_000);
        assert!(
            server.closing.is_empty(),
            "the closed connection was reaped"
        );
        // The pool still listens: a second connection is accepted too.
        assert_eq!(server.accept(listener), Err(TcpError::WouldBlock));
        server.unlisten(listener);
        assert_eq!(server.accept(listener), Err(TcpError::BadHandle));
    }

    #[test]
    fn outgoing_connections_connect_and_refusals_are_reported() {
        let mut server = Stack::new(MAC_A, 0);
        let mut client = Stack::new(MAC_B, 0);
        let net = |last| Ipv4Cidr::new(Ipv4Address::new(10, 0, 0, last), 24);
        server.configure_static(net(1), None);
        client.configure_static(net(2), None);
        let listener = server.listen(8080, 1).unwrap();
        let target = Ipv4Address::new(10, 0, 0, 1);
        let outgoing = client.tcp_connect(target, 8080).unwrap();
        assert_eq!(client.tcp_connection(outgoing), Ok(false));
        exchange(&mut server, &mut client, 1_000_000);
        assert_eq!(client.tcp_connection(outgoing), Ok(true));
        let accepted = server.accept(listener).unwrap();
        assert_eq!(client.tcp_send(outgoing, b"ping"), Ok(4));
        exchange(&mut server, &mut client, 2_000_000);
        let mut got = [0; 8];
        assert_eq!(server.tcp_recv(accepted, &mut got), Ok(4));
        assert_eq!(&got[..4], b"ping");

        // Nothing listens on 81: the server's reset fails the connection.
        let refused = client.tcp_connect(target, 81).unwrap();
        exchange(&mut server, &mut client, 3_000_000);
        assert_eq!(client.tcp_connection(refused), Err(TcpError::Refused));
        let again = client.tcp_connect(target, 8080).unwrap();
        assert_ne!(again, outgoing, "a new connection gets its own socket");
    }

    #[test]
    fn udp_carries_a_dns_lookup_between_two_stacks() {
        let mut server = Stack::new(MAC_A, 0);
        let mut client = Stack::new(MAC_B, 0);
        let net = |last| Ipv4Cidr::new(Ipv4Address::new(10, 0, 0, last), 24);
        server.configure_static(net(1), None);
        client.configure_static(net(2), None);
        let (service, port) = server.udp_bind(5353).unwrap();
        assert_eq!(port, 5353);
        assert_eq!(server.udp_bind(5353).err(), Some(TcpError::AddressInUse));
        let (asker, local) = client.udp_bind(0).unwrap();
        assert!(local >= 49152);
        let query = dns::query(0x4b45, "keel.test").unwrap();
        client
            .udp_send(asker, Ipv4Address::new(10, 0, 0, 1), 5353, &query)
            .unwrap();
        exchange(&mut server, &mut client, 1_000_000);
        let mut buf = [0; 512];
        let (n, from, from_port) = server.udp_recv(service, &mut buf).unwrap();
        assert_eq!((from, from_port), (Ipv4Address::new(10, 0, 0, 2), local));
        let address = Ipv4Address::new(10, 0, 0, 42);
        let answer = dns::answer(&buf[..n], &[address]).unwrap();
        server.udp_send(service, from, from_port, &answer).unwrap();
        exchange(&mut server, &mut client, 2_000_000);
        let (n, _, _) = client.udp_recv(asker, &mut buf).unwrap();
        assert_eq!(dns::addresses(0x4b45, &buf[..n]), Ok(Some(vec![address])));
        assert_eq!(client.udp_recv(asker, &mut buf), Err(TcpError::WouldBlock));
    }

    #[test]
    fn no_ping_without_an_address_and_oversized_frames_are_errors() {
        let mut stack = Stack::new(MAC_A, 0);
        let ping = stack.open_ping(1);
        assert_eq!(
            stack.send_ping(ping, 1, 1, Ipv4Address::new(10, 0, 2, 2), b""),
            Err(PingError::NoAddress)
        );
        stack.receive_frame(vec![0; 4000]);
        assert_eq!(stack.statistics().rx_errors, 1);
        assert_eq!(stack.statistics().rx_packets, 0);
    }
}
