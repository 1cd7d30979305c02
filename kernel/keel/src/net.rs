//! `ifconfig` and `ping`: the network interface that a NIC driver component serves.

use alloc::format;
use alloc::string::String;
use core::time::Duration;
use keel_console::println;
use keel_dd_host::nic::NETWORK;
use keel_net::Ipv4 as Ipv4Address;

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
