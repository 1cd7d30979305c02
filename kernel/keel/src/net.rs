//! `ifconfig` and `ping`: the network interface that a NIC driver component serves.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::time::Duration;
use keel_console::println;
use keel_dd_host::nic::NETWORK;
use keel_net::Ipv4 as Ipv4Address;
use keel_net::dns::DnsError;

/// `ifconfig [-v]`: hardware address, IPv4 address and router, link, packet and error
/// counters; `-v` adds where the NIC loop's CPU time went, per packet.
pub fn ifconfig(args: &[String]) -> Result<(), String> {
    let verbose = match args {
        [] => false,
        [flag] if flag == "-v" => true,
        _ => return Err(String::from("usage: ifconfig [-v]")),
    };
    let network = NETWORK.lock();
    let Some(stack) = network.as_ref() else {
        return Err(String::from(
            "no network interface (is a NIC driver bound? see 'drivers')",
        ));
    };
    let m = stack.mac();
    println!(
        "eth0: link {}  ether {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        if stack.link_up() { "up" } else { "down" },
        m[0],
        m[1],
        m[2],
        m[3],
        m[4],
        m[5]
    );
    match stack.ipv4() {
        Some(config) => println!(
            "      inet {}  router {}",
            config.address,
            config
                .router
                .map_or(String::from("none"), |r| format!("{r}"))
        ),
        None => println!("      inet (waiting for DHCP)"),
    }
    let s = stack.statistics();
    println!(
        "      RX packets {} bytes {} errors {}",
        s.rx_packets, s.rx_bytes, s.rx_errors
    );
    println!(
        "      TX packets {} bytes {} errors {}",
        s.tx_packets, s.tx_bytes, s.tx_errors
    );
    drop(network);
    if verbose {
        let c = *keel_dd_host::nic::PACKET_COST.lock();
        let per = |ns: u64| ns as f64 / c.packets.max(1) as f64 / 1000.0;
        println!(
            "      cpu per packet ({} packets): driver {:.1} us, WASI-dd host calls {:.1} us \
             ({:.1} calls), frame copies {:.1} us, stack {:.1} us",
            c.packets,
            per(c.driver_ns),
            per(c.host_calls_ns),
            c.host_calls as f64 / c.packets.max(1) as f64,
            per(c.copy_ns),
            per(c.stack_ns)
        );
        println!(
            "      cpu totals: packets={} driver_ns={} host_calls_ns={} host_calls={} copy_ns={} stack_ns={}",
            c.packets, c.driver_ns, c.host_calls_ns, c.host_calls, c.copy_ns, c.stack_ns
        );
    }
    Ok(())
}

fn parse_ipv4(text: &str) -> Option<Ipv4Address> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        *octet = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then(|| Ipv4Address::from(octets))
}

/// `ping <a.b.c.d> [count]`: ICMP echo requests, one a second, each waited for up to a second.
pub fn ping(args: &[String]) -> Result<(), String> {
    const USAGE: &str = "usage: ping <a.b.c.d> [count]";
    let (target, count) = match args {
        [target] => (target, 4),
        [target, count] => (
            target,
            count
                .parse::<u16>()
                .ok()
                .filter(|&c| c > 0)
                .ok_or_else(|| format!("bad count '{count}' ({USAGE})"))?,
        ),
        _ => return Err(String::from(USAGE)),
    };
    let address =
        parse_ipv4(target).ok_or_else(|| format!("'{target}' is not an IPv4 address ({USAGE})"))?;
    let ident = 0x4b45;
    let handle = {
        let mut network = NETWORK.lock();
        let stack = network
            .as_mut()
            .ok_or_else(|| String::from("no network interface (see 'drivers')"))?;
        stack.open_ping(ident)
    };
    let mut received = 0;
    for sequence in 0..count {
        let sent_at = keel_time::now_ns();
        let sent = NETWORK
            .lock()
            .as_mut()
            .map(|stack| stack.send_ping(handle, ident, sequence, address, b"keel ping payload"));
        match sent {
            Some(Ok(())) => {}
            Some(Err(keel_net::PingError::NoAddress)) => {
                close(handle);
                return Err(String::from("the interface has no address yet (DHCP)"));
            }
            Some(Err(e)) => println!("icmp_seq={sequence}: not sent ({e:?})"),
            None => break,
        }
        let mut answered = false;
        while keel_time::now_ns() - sent_at < 1_000_000_000 {
            let reply = NETWORK
                .lock()
                .as_mut()
                .and_then(|stack| stack.ping_reply(handle, ident));
            if let Some((seq, from)) = reply
                && seq == sequence
            {
                let micros = (keel_time::now_ns() - sent_at) / 1000;
                println!(
                    "reply from {from}: icmp_seq={seq} time={}.{:03} ms",
                    micros / 1000,
                    micros % 1000
                );
                received += 1;
                answered = true;
                break;
            }
            keel_task::sleep(Duration::from_millis(2));
        }
        if !answered {
            println!("icmp_seq={sequence}: no reply within 1 s");
        }
        let elapsed = keel_time::now_ns() - sent_at;
        if sequence + 1 < count && elapsed < 1_000_000_000 {
            keel_task::sleep(Duration::from_nanos(1_000_000_000 - elapsed));
        }
    }
    close(handle);
    println!("{count} sent, {received} received");
    if received == 0 {
        return Err(format!("no reply from {address}"));
    }
    Ok(())
}

fn close(handle: keel_net::SocketHandle) {
    if let Some(stack) = NETWORK.lock().as_mut() {
        stack.close(handle);
    }
}

/// Runs `check` on the stack after each round of the NIC loop until it gives an answer or
/// `timeout` passes. Asks for one round first (the caller queued something); asking on every
/// look would make each round end the wait at once, a busy loop with the NIC task.
fn wait_for_network<T>(
    timeout: Duration,
    mut check: impl FnMut(&mut keel_net::Stack) -> Option<T>,
) -> Option<T> {
    let deadline = keel_time::now_ns() + timeout.as_nanos() as u64;
    keel_dd_host::nic::kick();
    loop {
        let seen = keel_dd_host::nic::ACTIVITY.count();
        if let Some(answer) = NETWORK.lock().as_mut().and_then(&mut check) {
            return Some(answer);
        }
        let now = keel_time::now_ns();
        if now >= deadline {
            return None;
        }
        keel_dd_host::nic::ACTIVITY.wait_past(seen, Duration::from_nanos(deadline - now));
    }
}

/// `A.B.C.D[:PORT]`.
fn parse_endpoint(text: &str, default_port: u16) -> Option<(Ipv4Address, u16)> {
    match text.split_once(':') {
        Some((host, port)) => Some((parse_ipv4(host)?, port.parse().ok().filter(|&p| p != 0)?)),
        None => Some((parse_ipv4(text)?, default_port)),
    }
}

/// Tries per DNS query and how long each waits for its answer.
const DNS_TRIES: u32 = 3;
const DNS_WAIT: Duration = Duration::from_secs(2);

/// The IPv4 addresses of `name`: a dotted quad is its own answer; anything else is looked up
/// by DNS at `server` (default: the server DHCP named, on port 53).
pub fn resolve(name: &str, server: Option<(Ipv4Address, u16)>) -> Result<Vec<Ipv4Address>, String> {
    if let Some(address) = parse_ipv4(name) {
        return Ok(alloc::vec![address]);
    }
    let query =
        keel_net::dns::query((keel_time::now_ns() as u16) | 1, name).map_err(|e| e.to_string())?;
    let id = u16::from_be_bytes([query[0], query[1]]);
    let (socket, server) = {
        let mut network = NETWORK.lock();
        let stack = network
            .as_mut()
            .ok_or_else(|| String::from("no network interface (see 'drivers')"))?;
        let server = server
            .or_else(|| stack.ipv4()?.dns_server.map(|s| (s, 53)))
            .ok_or_else(|| DnsError::NoServer.to_string())?;
        let (socket, _) = stack
            .udp_bind(0)
            .map_err(|e| format!("no UDP socket: {e:?}"))?;
        (socket, server)
    };
    let result = (|| {
        for _ in 0..DNS_TRIES {
            NETWORK
                .lock()
                .as_mut()
                .ok_or("the network went away")?
                .udp_send(socket, server.0, server.1, &query)
                .map_err(|e| format!("sending the query: {e:?}"))?;
            let answer = wait_for_network(DNS_WAIT, |stack| {
                let mut buf = [0u8; 512];
                while let Ok((n, from, port)) = stack.udp_recv(socket, &mut buf) {
                    if (from, port) != server {
                        continue;
                    }
                    match keel_net::dns::addresses(id, &buf[..n]) {
                        Ok(None) => continue,
                        Ok(Some(found)) => return Some(Ok(found)),
                        Err(e) => return Some(Err(e)),
                    }
                }
                None
            });
            if let Some(answer) = answer {
                return answer.map_err(|e| e.to_string());
            }
        }
        Err(DnsError::TimedOut.to_string())
    })();
    if let Some(stack) = NETWORK.lock().as_mut() {
        stack.close(socket);
    }
    result
}

/// `host NAME [SERVER[:PORT]]`: the IPv4 addresses of a name, by DNS.
pub fn host(args: &[String]) -> Result<(), String> {
    const USAGE: &str = "usage: host NAME [A.B.C.D[:PORT]] (the DNS server; default: DHCP's)";
    let (name, server) = match args {
        [name] => (name, None),
        [name, server] => (
            name,
            Some(
                parse_endpoint(server, 53)
                    .ok_or_else(|| format!("bad server '{server}' ({USAGE})"))?,
            ),
        ),
        _ => return Err(String::from(USAGE)),
    };
    for address in resolve(name, server).map_err(|e| format!("{name}: {e}"))? {
        println!("{name} has address {address}");
    }
    Ok(())
}

/// How long a connection for `run --connect` may take to set up.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// Opens a TCP connection to `HOST:PORT` (a name is looked up by DNS) for a program.
pub fn connect(target: &str) -> Result<keel_net::SocketHandle, String> {
    let (host, port) = target
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok().filter(|&p| p != 0)?)))
        .ok_or_else(|| format!("--connect needs HOST:PORT, not '{target}'"))?;
    let address = resolve(host, None)?[0];
    let handle = NETWORK
        .lock()
        .as_mut()
        .ok_or_else(|| String::from("no network interface (see 'drivers')"))?
        .tcp_connect(address, port)
        .map_err(|e| match e {
            keel_net::TcpError::NotConnected => {
                format!("{target}: the interface has no address yet (DHCP)")
            }
            _ => format!("{target} ({address}:{port}): cannot connect there"),
        })?;
    let outcome = wait_for_network(CONNECT_WAIT, |stack| match stack.tcp_connection(handle) {
        Ok(false) => None,
        Ok(true) => Some(Ok(())),
        Err(_) => Some(Err(format!(
            "{target} ({address}:{port}): connection refused"
        ))),
    })
    .unwrap_or_else(|| Err(format!("{target} ({address}:{port}): no answer")));
    match outcome {
        Ok(()) => Ok(handle),
        Err(why) => {
            if let Some(stack) = NETWORK.lock().as_mut() {
                stack.tcp_close(handle);
            }
            Err(why)
        }
    }
}
