//! QEMU integration tests of the Linux yardstick: Debian's kernel and busybox (`keel
//! linux-image`) booted on exactly Keel's machine, with its own e1000 and AHCI drivers.
//!
//! Run after `keel linux-image` (`make linux-image`): `cargo test -p keel-toolchain --test linux`.
//! The image is `$KEEL_LINUX_DIR` or `target/linux`. Each test boots its own VM. Timeouts are hang
//! guards for QEMU under TCG.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use keel_toolchain::disk::{create_fat32_image, get_file};
use keel_toolchain::http;
use keel_toolchain::linux::{ERROR_PREFIX, READY_MARKER};
use keel_toolchain::vm::Vm;
use sha2::Digest;

/// The address QEMU's user network gives the guest, and the host as the guest sees it.
const GUEST_ADDRESS: &str = "10.0.2.15";
const HOST_FROM_GUEST: &str = "10.0.2.2";
/// Hang guard for moving a file or waiting for QEMU to power off under TCG.
const LONG: Duration = Duration::from_secs(120);

fn sha256_hex(data: &[u8]) -> String {
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `len` bytes of a fixed pseudo-random sequence.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Boots Linux (with `disk` if given) and runs `test`; a failure panics with the transcript.
fn with_linux(disk: Option<&Path>, test: impl FnOnce(&mut Vm, &str) -> Result<()>) {
    let (mut vm, boot_log) = Vm::boot_linux_to_prompt(disk).unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "linux: prompt {:.1} s after QEMU started",
        vm.started_at().elapsed().as_secs_f64()
    );
    if let Err(error) = test(&mut vm, &boot_log) {
        panic!("{:#}", vm.with_transcript(error));
    }
}

/// Runs `line` in the guest's shell and fails unless it exits with status 0; returns its output.
fn run_ok(vm: &mut Vm, line: &str) -> Result<String> {
    run_ok_with_timeout(vm, line, keel_toolchain::vm::COMMAND_TIMEOUT)
}

fn run_ok_with_timeout(vm: &mut Vm, line: &str, timeout: Duration) -> Result<String> {
    let output = vm.linux_command_with_timeout(&format!("{line}; echo \"exit=$?\""), timeout)?;
    let (body, status) = output
        .trim_end()
        .rsplit_once("exit=")
        .ok_or_else(|| anyhow!("no exit status in {output:?}"))?;
    ensure!(status == "0", "`{line}` exited with {status}: {body:?}");
    Ok(body.to_string())
}

#[test]
fn boots_loads_its_modules_and_gets_an_address_by_dhcp() {
    with_linux(None, |vm, boot_log| {
        ensure!(boot_log.contains(READY_MARKER), "{boot_log}");
        ensure!(
            !boot_log.contains(ERROR_PREFIX),
            "init reported errors: {boot_log}"
        );
        ensure!(
            boot_log.contains(&format!("linux: eth0 {GUEST_ADDRESS}/24")),
            "{boot_log}"
        );
        let release = run_ok(vm, "uname -r")?;
        ensure!(release.starts_with("6.1."), "{release:?}");

        // The network: e1000 bound by Linux's own driver, configured by udhcpc.
        let driver = run_ok(vm, "basename $(readlink /sys/class/net/eth0/device/driver)")?;
        ensure!(driver.trim() == "e1000", "eth0's driver is {driver:?}");
        let address = run_ok(vm, "ip -4 addr show dev eth0")?;
        ensure!(
            address.contains(&format!("inet {GUEST_ADDRESS}/24")),
            "{address}"
        );
        let routes = run_ok(vm, "ip route")?;
        ensure!(
            routes.contains(&format!("default via {HOST_FROM_GUEST} dev eth0")),
            "{routes}"
        );
        run_ok(vm, &format!("ping -c 1 -W 5 {HOST_FROM_GUEST}"))?;

        // The modules asked for are loaded, and their devices exist.
        let modules = run_ok(vm, "cut -d ' ' -f 1 /proc/modules")?;
        let loaded: Vec<&str> = modules.lines().collect();
        for module in [
            "e1000",
            "ahci",
            "libahci",
            "sd_mod",
            "vfio",
            "vfio_pci",
            "vfio_iommu_type1",
            "tun",
            "nbd",
            "vfat",
            "nls_cp437",
        ] {
            ensure!(loaded.contains(&module), "{module} not loaded: {loaded:?}");
        }
        run_ok(
            vm,
            "test -c /dev/net/tun && test -b /dev/nbd0 && test -c /dev/vfio/vfio",
        )?;
        Ok(())
    });
}

/// A small HTTP server on 127.0.0.1 (the guest reaches it as 10.0.2.2) serving fixed files,
/// until dropped or for at most two minutes.
struct HostServer {
    port: u16,
    served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HostServer {
    fn start(files: Vec<(String, Vec<u8>)>) -> Result<Self> {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let served = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (served_in, stop_in) = (Arc::clone(&served), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let deadline = Instant::now() + LONG;
            while !stop_in.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if answer(stream, &files).is_ok() {
                            served_in.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Self {
            port,
            served,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for HostServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request from `stream` and answers it with the file it names, or 404.
fn answer(mut stream: TcpStream, files: &[(String, Vec<u8>)]) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buffer)?;
        ensure!(n > 0, "the client closed before the end of its request");
        request.extend_from_slice(&buffer[..n]);
    }
    let request = String::from_utf8_lossy(&request);
    let path = request.split_whitespace().nth(1).unwrap_or("");
    match files.iter().find(|(name, _)| name == path) {
        Some((_, body)) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\
                 Connection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes())?;
            stream.write_all(body)?;
        }
        None => stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?,
    }
    stream.flush()?;
    Ok(())
}

#[test]
fn wget_fetches_a_host_file_and_the_host_reaches_the_guests_httpd() {
    let data = pseudo_random(1 << 20, 0x4c696e7578);
    let server = HostServer::start(vec![("/data.bin".into(), data.clone())]).unwrap();
    with_linux(None, |vm, _| {
        // Guest to host: busybox wget through the e1000 and QEMU's user network.
        let url = format!("http://{HOST_FROM_GUEST}:{}/data.bin", server.port);
        run_ok_with_timeout(vm, &format!("wget -q -O /tmp/data.bin {url}"), LONG)?;
        ensure!(
            server.served.load(Ordering::Relaxed) == 1,
            "no request served"
        );
        let size = run_ok(vm, "wc -c < /tmp/data.bin")?;
        ensure!(size.trim() == data.len().to_string(), "size {size:?}");
        let sum = run_ok(vm, "sha256sum /tmp/data.bin")?;
        ensure!(
            sum.split_whitespace().next() == Some(sha256_hex(&data).as_str()),
            "guest sha256 {sum:?}"
        );

        // Host to guest: busybox httpd on :80 through the forwarded port.
        run_ok(
            vm,
            "mkdir -p /www && echo 'served by Linux' > /www/index.html && httpd -p 80 -h /www",
        )?;
        http::wait_until_served(vm.host_port(), "/index.html")?;
        let response = http::get(vm.host_port(), "/index.html")?;
        ensure!(response.status.contains(" 200"), "{response:?}");
        ensure!(response.body == b"served by Linux\n", "{response:?}");
        Ok(())
    });
}

/// A disk image in the temporary directory, removed when dropped.
struct Image(PathBuf);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn ahci_disk_shows_and_its_fat_volume_mounts_reads_and_writes() {
    let image = Image(std::env::temp_dir().join(format!("keel-linux-{}.img", std::process::id())));
    let _ = std::fs::remove_file(&image.0);
    let data = pseudo_random(300_000, 7);
    create_fat32_image(
        &image.0,
        64 << 20,
        "YARDSTICK",
        &[
            ("HELLO.TXT", b"hello from the host\n"),
            ("docs/data.bin", &data),
        ],
    )
    .unwrap();
    with_linux(Some(&image.0), |vm, _| {
        // The SCSI scan of the AHCI ports finishes in the background: look a bounded number of times.
        run_ok(
            vm,
            "for i in $(seq 100); do [ -e /sys/block/sda/sda1 ] && break; usleep 100000; done; \
             test -e /sys/block/sda/sda1",
        )?;
        let partitions = run_ok(vm, "cat /proc/partitions")?;
        ensure!(
            partitions.contains(" sda\n") && partitions.contains(" sda1\n"),
            "{partitions}"
        );
        let model = run_ok(vm, "cat /sys/block/sda/device/model")?;
        ensure!(model.contains("QEMU HARDDISK"), "{model:?}");

        run_ok(vm, "mount -t vfat /dev/sda1 /mnt")?;
        let hello = run_ok(vm, "cat /mnt/HELLO.TXT")?;
        ensure!(hello == "hello from the host\n", "{hello:?}");
        let sum = run_ok(vm, "sha256sum /mnt/docs/data.bin")?;
        ensure!(
            sum.split_whitespace().next() == Some(sha256_hex(&data).as_str()),
            "guest sha256 {sum:?}"
        );
        run_ok(
            vm,
            "echo 'written by Linux' > /mnt/LINUX.TXT && umount /mnt",
        )?;
        vm.send_line("poweroff -f")?;
        vm.wait_exit(LONG)?;
        Ok(())
    });
    let written = get_file(&image.0, "LINUX.TXT").unwrap();
    assert_eq!(written, b"written by Linux\n");
}
