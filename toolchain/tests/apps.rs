//! QEMU integration tests for WebAssembly programs in Keel: real WASI programs (C, C++, Rust)
//! AOT-compiled on the host run in the kernel; their traps are contained; broken artifacts are
//! refused; repeated runs give back their memory. Timeouts are hang guards only.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use keel_toolchain::http;
use keel_toolchain::vm::{PROMPT, Vm};
use support::sha256_hex;

mod support;

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn with_vm(test: impl FnOnce(&mut Vm) -> Result<()>) {
    let (mut vm, _) = Vm::boot_to_prompt().unwrap_or_else(|error| panic!("{error:#}"));
    if let Err(error) = test(&mut vm) {
        panic!("{:#}", vm.with_transcript(error));
    }
}

fn run(vm: &mut Vm, line: &str) -> Result<String> {
    vm.command_with_timeout(line, RUN_TIMEOUT)
}

fn field(line: &str, key: &str) -> Result<u64> {
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&prefix))
        .with_context(|| format!("no {key}= in {line:?}"))?
        .parse()
        .with_context(|| format!("{key}= in {line:?} is not a number"))
}

/// (free frames, heap bytes used) from `mem`.
fn memory(vm: &mut Vm) -> Result<(u64, u64)> {
    let out = vm.command("mem")?;
    let frames = out
        .lines()
        .find(|l| l.starts_with("frames:"))
        .context("no frames line")?;
    let heap = out
        .lines()
        .find(|l| l.starts_with("heap:"))
        .context("no heap line")?;
    Ok((field(frames, "free")?, field(heap, "used")?))
}

#[test]
fn c_cpp_and_rust_programs_run_with_their_arguments() {
    with_vm(|vm| {
        let out = run(vm, "run hello one 'two words'")?;
        ensure!(
            out.contains(r#"Hello from WebAssembly on Keel! argv[3]: "hello" "one" "two words""#),
            "hello: {out:?}"
        );
        let out = run(vm, "hello")?;
        ensure!(
            out.contains("argv[1]: \"hello\""),
            "bare name runs the program: {out:?}"
        );
        let out = run(vm, "echo hello   world")?;
        ensure!(out.trim_end() == "hello world", "echo: {out:?}");
        let out = run(vm, "calc \"2*(3+4)^2 - sqrt(16)\"")?;
        ensure!(out.trim_end() == "94", "calc: {out:?}");
        let out = run(vm, "calc 1/0")?;
        ensure!(
            out.contains("division by zero") && out.contains("calc: exited with status 1"),
            "calc error and exit status: {out:?}"
        );
        let out = run(vm, "rustinfo 1000")?;
        ensure!(out.contains("primes below 1000: 168"), "rustinfo: {out:?}");
        let out = run(vm, "run nosuchprogram")?;
        ensure!(
            out.contains("no program named 'nosuchprogram'"),
            "missing program: {out:?}"
        );
        Ok(())
    });
}

#[test]
fn file_programs_work_on_the_file_system() {
    with_vm(|vm| {
        let out = run(vm, "ls -l /")?;
        ensure!(
            out.contains("README") && out.contains("tmp"),
            "ls -l /: {out:?}"
        );
        let out = run(vm, "cat /README")?;
        ensure!(out.starts_with("Welcome to Keel"), "cat: {out:?}");
        let wc = run(vm, "wc /README")?;
        let sum = run(vm, "sha256sum /README")?;
        run(vm, "mkdir -p /tmp/a/b")?;
        run(vm, "cp /README /tmp/a/b/copy")?;
        let copy_sum = run(vm, "sha256sum /tmp/a/b/copy")?;
        ensure!(
            sum.split_whitespace().next() == copy_sum.split_whitespace().next(),
            "copy has another checksum: {sum:?} vs {copy_sum:?}"
        );
        let copy_wc = run(vm, "wc /tmp/a/b/copy")?;
        ensure!(
            wc.split_whitespace()
                .take(3)
                .eq(copy_wc.split_whitespace().take(3)),
            "wc differs: {wc:?} vs {copy_wc:?}"
        );
        run(vm, "rm /tmp/a/b/copy")?;
        let out = run(vm, "ls /tmp/a/b")?;
        ensure!(out.trim().is_empty(), "rm left something: {out:?}");
        let out = run(vm, "cat /tmp/a/b/copy")?;
        ensure!(
            out.contains("No such file or directory"),
            "cat of a removed file: {out:?}"
        );
        Ok(())
    });
}

#[test]
fn a_program_sees_only_the_directories_it_was_given() {
    with_vm(|vm| {
        run(vm, "mkdir /tmp/box")?;
        run(vm, "cp /README /tmp/box/inside")?;
        let out = run(vm, "run --dir=/tmp/box ls /tmp/box")?;
        ensure!(out.trim() == "inside", "ls inside its directory: {out:?}");
        let out = run(vm, "run --dir=/tmp/box cat /README")?;
        ensure!(
            out.contains("Capabilities insufficient") && out.contains("exited with status 1"),
            "reading outside was allowed: {out:?}"
        );
        let out = run(vm, "run --dir=/tmp/box cat /tmp/box/../../README")?;
        ensure!(
            out.contains("exited with status 1"),
            "escaping with .. was allowed: {out:?}"
        );
        Ok(())
    });
}

/// Seconds from `uptime`.
fn uptime(vm: &mut Vm) -> Result<f64> {
    let out = vm.command("uptime")?;
    out.trim()
        .strip_prefix("up ")
        .and_then(|r| r.strip_suffix(" s"))
        .with_context(|| format!("uptime: {out:?}"))?
        .parse()
        .context("uptime is not a number")
}

#[test]
fn sleeping_programs_wait_through_poll_oneoff() {
    with_vm(|vm| {
        let before = uptime(vm)?;
        let out = run(vm, "sleep 1")?;
        ensure!(out.trim().is_empty(), "sleep printed {out:?}");
        let after = uptime(vm)?;
        // Correctness, not speed: a sleep of one second cannot end sooner.
        ensure!(after - before >= 1.0, "slept only {:.3} s", after - before);
        let out = run(vm, "sleep soon")?;
        ensure!(
            out.contains("invalid time interval"),
            "bad argument: {out:?}"
        );
        Ok(())
    });
}

#[test]
fn programs_read_standard_input_from_the_console() {
    with_vm(|vm| {
        vm.send_line("sha256sum")?;
        vm.send_line("abc")?;
        vm.send_bytes(b"\x04")?;
        let out = vm.wait_for(PROMPT, RUN_TIMEOUT)?;
        // SHA-256 of "abc\n".
        ensure!(
            out.contains("edeaaff3f1774ad2888673770c6d64097e391bc362d7d6fb34982ddf0efd18cb  -"),
            "sha256sum of stdin: {out:?}"
        );
        Ok(())
    });
}

#[test]
fn traps_are_reported_and_contained() {
    with_vm(|vm| {
        let cases = [
            ("oob", "out of bounds memory access"),
            ("unreachable", "wasm `unreachable` instruction executed"),
            ("div0", "integer divide by zero"),
            ("stack", "call stack exhausted"),
        ];
        for (kind, message) in cases {
            let out = run(vm, &format!("trap {kind}"))?;
            ensure!(
                out.contains(&format!("trap: trapped: wasm trap: {message}")),
                "{kind}: {out:?}"
            );
            ensure!(out.contains("    at "), "{kind}: no backtrace: {out:?}");
            let up = vm.command("uptime")?;
            ensure!(up.starts_with("up "), "shell after {kind}: {up:?}");
        }
        vm.send_line("trap loop")?;
        vm.wait_for("looping forever", RUN_TIMEOUT)?;
        vm.send_bytes(b"\x03")?;
        let out = vm.wait_for(PROMPT, RUN_TIMEOUT)?;
        ensure!(
            out.contains("trap: killed"),
            "Ctrl-C ends a runaway program: {out:?}"
        );
        let ps = vm.command("ps")?;
        ensure!(
            !ps.lines().any(|l| l.ends_with(" trap")),
            "the killed program is gone: {ps:?}"
        );
        Ok(())
    });
}

#[test]
fn background_programs_show_memory_in_ps_and_can_be_killed() {
    with_vm(|vm| {
        // `loop` counts in memory; `spin` runs in registers alone (no memory access, no call),
        // which only the tick's stop of Wasm code can end.
        for (mode, announced) in [
            ("loop", "looping forever"),
            ("spin", "spinning in registers"),
        ] {
            kill_a_background_program(vm, mode, announced)?;
        }
        Ok(())
    });
}

fn kill_a_background_program(vm: &mut Vm, mode: &str, announced: &str) -> Result<()> {
    let out = run(vm, &format!("trap {mode} &"))?;
    let id: u64 = out
        .lines()
        .find_map(|l| {
            l.strip_prefix('[')?
                .split_once("] trap")
                .map(|(id, _)| id.to_string())
        })
        .with_context(|| format!("no job line in {out:?}"))?
        .parse()?;
    vm.wait_for(announced, RUN_TIMEOUT)?;
    let ps = vm.command("ps")?;
    let row = ps
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{id} ")))
        .with_context(|| format!("task {id} not in ps: {ps:?}"))?;
    ensure!(
        row.contains(" trap  (") && row.ends_with(" KiB)"),
        "memory column: {row:?}"
    );
    let out = vm.command(&format!("kill {id}"))?;
    ensure!(
        out.contains(&format!("killed task {id} (trap)")),
        "kill: {out:?}"
    );
    let ps = vm.command("ps")?;
    ensure!(!ps.contains(" trap"), "killed program still listed: {ps:?}");
    Ok(())
}

/// (free frames, KiB committed to Wasm memory and code) from `mem`.
fn committed(vm: &mut Vm) -> Result<(u64, u64)> {
    let out = vm.command("mem")?;
    let line = |prefix: &str| {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .with_context(|| format!("no {prefix} line in {out:?}"))
    };
    Ok((
        field(line("frames:")?, "free")?,
        field(line("wasm:")?, "committed")?,
    ))
}

#[test]
fn linear_memory_takes_ram_only_where_it_is_touched() {
    with_vm(|vm| {
        // Load (and cache) the program first, so its code is not part of the difference.
        let out = run(vm, "memtouch 1 1")?;
        ensure!(out.contains("memtouch: touched 1 of 1 MiB"), "{out:?}");
        let (free_before, committed_before) = committed(vm)?;
        let out = run(vm, "memtouch 48 2 600 &")?;
        let id: u64 = out
            .lines()
            .find_map(|l| {
                l.strip_prefix('[')?
                    .split_once("] memtouch")
                    .map(|(id, _)| id.to_string())
            })
            .with_context(|| format!("no job line in {out:?}"))?
            .parse()?;
        vm.wait_for("touched 2 of 48 MiB", RUN_TIMEOUT)?;
        let (free_during, committed_during) = committed(vm)?;
        let grown_kib = committed_during.saturating_sub(committed_before);
        let frames_used = free_before.saturating_sub(free_during);
        // 2 MiB touched, plus the stack, data and page tables: far below the 48 MiB it has.
        ensure!(
            (2048..8192).contains(&grown_kib),
            "48 MiB allocated, 2 MiB touched, {grown_kib} KiB committed"
        );
        ensure!(
            frames_used < 8192 / 4,
            "48 MiB allocated, 2 MiB touched, {frames_used} frames in use"
        );
        let out = vm.command(&format!("kill {id}"))?;
        ensure!(out.contains(&format!("killed task {id}")), "kill: {out:?}");
        let (free_after, committed_after) = committed(vm)?;
        ensure!(
            committed_after == committed_before && free_after == free_before,
            "after the program: free frames {free_after} (before {free_before}), committed {committed_after} KiB (before {committed_before})"
        );
        Ok(())
    });
}

#[test]
fn broken_artifacts_are_refused_with_a_clear_message() {
    with_vm(|vm| {
        for name in [
            "test-broken-truncated",
            "test-broken-garbage",
            "test-broken-settings",
            "test-broken-cpu",
        ] {
            let out = run(vm, name)?;
            ensure!(
                out.contains(&format!("{name}: not a usable Keel program:")),
                "{name}: {out:?}"
            );
            ensure!(
                out.lines().count() == 1,
                "{name}: one line, not a crash: {out:?}"
            );
        }
        let out = run(vm, "test-broken-settings")?;
        ensure!(
            out.to_lowercase().contains("guard"),
            "names the mismatched setting: {out:?}"
        );
        let out = run(vm, "test-broken-cpu")?;
        ensure!(
            out.contains("compiled without has_sse"),
            "names the missing feature: {out:?}"
        );
        let up = vm.command("uptime")?;
        ensure!(up.starts_with("up "), "shell still answers: {up:?}");
        Ok(())
    });
}

#[test]
fn two_hundred_runs_return_memory_to_its_baseline() {
    with_vm(|vm| {
        // Warm-up: the first runs load and cache the programs, start the epoch task and let the
        // kernel's tables (task ids, scheduler queues) reach their working size.
        for i in 0..100 {
            run(vm, if i % 2 == 0 { "hello" } else { "trap div0" })?;
        }
        let before = memory(vm)?;
        for i in 0..200 {
            run(vm, if i % 2 == 0 { "hello" } else { "trap div0" })?;
        }
        let after = memory(vm)?;
        // Frames must come back exactly. The heap also serves the network stack, which works in
        // the background (DHCP, ARP): a leak of even 8 bytes per run would add 1600 bytes over
        // 200 runs, so anything under 1 KiB of drift is that background, not the programs.
        ensure!(
            before.0 == after.0 && before.1.abs_diff(after.1) < 1024,
            "free frames / heap used before {before:?} and after 200 runs {after:?}"
        );
        Ok(())
    });
}

/// `httpd` (C, WASI sockets) serves files from Keel's file system to the host through QEMU's
/// forwarded port: a 10 MiB file arrives intact, HEAD and 404 and 400 are right, and 10
/// clients making 50 requests each at once are all served.
#[test]
fn httpd_serves_files_to_the_host() {
    with_vm(|vm| {
        let ifconfig = vm.command_until("ifconfig", |o| o.contains("inet 10.0.2.15"))?;
        ensure!(
            ifconfig.contains("inet 10.0.2.15"),
            "no address: {ifconfig:?}"
        );
        run(vm, "mkdir -p /tmp/www")?;
        run(vm, "cp /README /tmp/www/index.html")?;
        let out = run(vm, "mkdata 10 /tmp/www/big.bin")?;
        ensure!(out.trim().is_empty(), "mkdata: {out:?}");
        let digest = run(vm, "sha256sum /tmp/www/big.bin")?;
        let digest = digest
            .split_whitespace()
            .next()
            .context("no digest")?
            .to_string();
        let out = run(vm, "run --dir=/tmp/www --listen=80 httpd /tmp/www &")?;
        ensure!(out.contains("] httpd"), "httpd did not start: {out:?}");
        let port = vm.host_port();
        http::wait_until_served(port, "/index.html")?;

        let big = http::get(port, "/big.bin")?;
        ensure!(
            big.status.starts_with("HTTP/1.1 200"),
            "status {:?}",
            big.status
        );
        ensure!(
            big.header("content-length") == Some("10485760"),
            "headers {:?}",
            big.headers
        );
        ensure!(big.body.len() == 10 << 20, "got {} bytes", big.body.len());
        ensure!(
            sha256_hex(&big.body) == digest,
            "the 10 MiB file arrived changed"
        );

        let head = http::exchange(
            port,
            "HEAD /index.html HTTP/1.1\r\nHost: keel\r\nConnection: close\r\n\r\n",
        )?;
        ensure!(
            head.status.starts_with("HTTP/1.1 200") && head.body.is_empty(),
            "HEAD: {:?}",
            head.status
        );
        ensure!(
            head.header("content-length").is_some(),
            "HEAD headers {:?}",
            head.headers
        );
        let missing = http::get(port, "/nothing")?;
        ensure!(
            missing.status.starts_with("HTTP/1.1 404"),
            "missing file: {:?}",
            missing.status
        );
        let bad = http::exchange(port, "NONSENSE\r\n\r\n")?;
        ensure!(bad.status.contains(" 400"), "bad request: {:?}", bad.status);

        let clients: Vec<_> = (0..10)
            .map(|_| {
                std::thread::spawn(move || -> Result<usize> {
                    let mut served = 0;
                    for _ in 0..50 {
                        let page = http::get(port, "/index.html")?;
                        ensure!(page.status.starts_with("HTTP/1.1 200") && !page.body.is_empty());
                        served += 1;
                    }
                    Ok(served)
                })
            })
            .collect();
        let mut served = 0;
        for client in clients {
            served += client
                .join()
                .map_err(|_| anyhow::anyhow!("client panicked"))??;
        }
        ensure!(served == 500, "{served} of 500 requests served");
        // httpd, in the background, logs each request to the console between our commands.
        let up = vm.command("uptime")?;
        ensure!(up.lines().any(|l| l.starts_with("up ")), "shell: {up:?}");
        Ok(())
    });
}

/// A host HTTP server on 127.0.0.1 (the guest reaches it as 10.0.2.2) that answers every
/// request on one connection with `body`; returns its port.
fn serve_once_on_the_host(body: &'static [u8]) -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            use std::io::{Read, Write};
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let ok = request.starts_with(b"GET /greeting HTTP/1.0\r\n");
            let head = if ok {
                format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
            } else {
                "HTTP/1.0 404 Not Found\r\n\r\n".to_string()
            };
            let _ = stream.write_all(head.as_bytes());
            if ok {
                let _ = stream.write_all(body);
            }
        }
    });
    Ok(port)
}

/// A host DNS server on 127.0.0.1 (10.0.2.2 to the guest) that knows one name; returns its
/// port.
fn name_server_on_the_host(name: &'static str, address: [u8; 4]) -> Result<u16> {
    let socket = std::net::UdpSocket::bind(("127.0.0.1", 0))?;
    let port = socket.local_addr()?.port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let known = keel_net::dns::query(u16::from_be_bytes([buf[0], buf[1]]), name)
                .is_ok_and(|q| q.get(12..) == buf.get(12..n));
            let addresses: &[keel_net::Ipv4] = if known {
                &[keel_net::Ipv4::from(address)]
            } else {
                &[]
            };
            if let Ok(answer) = keel_net::dns::answer(&buf[..n], addresses) {
                let _ = socket.send_to(&answer, from);
            }
        }
    });
    Ok(port)
}

/// Programs reach out: `run --connect` gives a program a TCP connection to a server on the
/// host (through QEMU's user network), and `host` looks names up by DNS at a name server the
/// test runs. Refused connections and unknown names are clear errors.
#[test]
fn programs_connect_out_and_names_resolve_by_dns() {
    with_vm(|vm| {
        vm.command_until("ifconfig", |o| o.contains("inet 10.0.2.15"))?;
        let port = serve_once_on_the_host(b"hello from the host\n")?;
        let out = run(
            vm,
            &format!("run --connect=10.0.2.2:{port} fetch /greeting"),
        )?;
        ensure!(
            out.contains("HTTP/1.0 200 OK") && out.contains("hello from the host"),
            "fetch: {out:?}"
        );
        let closed = std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port();
        let out = run(
            vm,
            &format!("run --connect=10.0.2.2:{closed} fetch /greeting"),
        )?;
        ensure!(out.contains("connection refused"), "a closed port: {out:?}");
        let dns = name_server_on_the_host("keel.test", [10, 0, 2, 77])?;
        let out = run(vm, &format!("host keel.test 10.0.2.2:{dns}"))?;
        ensure!(
            out.contains("keel.test has address 10.0.2.77"),
            "host: {out:?}"
        );
        let out = run(vm, &format!("host nowhere.test 10.0.2.2:{dns}"))?;
        ensure!(out.contains("no such host"), "an unknown name: {out:?}");
        let out = run(vm, "host bad..name")?;
        ensure!(out.contains("not a valid host name"), "a bad name: {out:?}");
        Ok(())
    });
}
