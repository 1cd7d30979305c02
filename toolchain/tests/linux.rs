//! QEMU integration tests of the Linux yardstick: Debian's kernel and busybox (`keel
//! linux-image`) booted on exactly Keel's machine, with its own e1000 and AHCI drivers.
//!
//! Run after `keel linux-image` (`make linux-image`): `cargo test -p keel-toolchain --test linux`.
//! The image is `$KEEL_LINUX_DIR` or `target/linux`. Each test boots its own VM. Timeouts are hang
//! guards for QEMU under TCG.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use keel_toolchain::disk::{create_fat32_image, get_file};
use keel_toolchain::http;
use keel_toolchain::image::driver_component_iso_path;
use keel_toolchain::linux::{DRIVERS_GUEST_DIR, ERROR_PREFIX, READY_MARKER, RUNNER_GUEST_PATH};
use keel_toolchain::paths::Layout;
use keel_toolchain::qemu::OWN_AHCI_ADDRESS;
use keel_toolchain::vm::Vm;
use support::{Image, pseudo_random, sha256_hex};

mod support;

/// The address QEMU's user network gives the guest, and the host as the guest sees it.
const GUEST_ADDRESS: &str = "10.0.2.15";
const HOST_FROM_GUEST: &str = "10.0.2.2";
/// Hang guard for moving a file or waiting for QEMU to power off under TCG.
const LONG: Duration = Duration::from_secs(120);

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

/// [`with_linux`] on the machine with an IOMMU, `own_controller_disk` on an AHCI controller of
/// its own.
fn with_linux_iommu(own_controller_disk: Option<&Path>, test: impl FnOnce(&mut Vm) -> Result<()>) {
    let (mut vm, _) = Vm::boot_linux_with_iommu_to_prompt(own_controller_disk)
        .unwrap_or_else(|e| panic!("{e:#}"));
    if let Err(error) = test(&mut vm) {
        panic!("{:#}", vm.with_transcript(error));
    }
}

/// Runs `line` in the guest's shell and fails unless it exits with status 0; returns its output.
fn run_ok(vm: &mut Vm, line: &str) -> Result<String> {
    run_ok_with_timeout(vm, line, keel_toolchain::vm::COMMAND_TIMEOUT)
}

fn run_ok_with_timeout(vm: &mut Vm, line: &str, timeout: Duration) -> Result<String> {
    vm.linux_command_ok(line, timeout)
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
            "uio_pci_generic",
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
        fetch_from_host(vm, &server)?;
        ensure!(
            server.served.load(Ordering::Relaxed) == 1,
            "no request served"
        );
        let size = run_ok(vm, "wc -c < /tmp/data.bin")?;
        ensure!(size.trim() == data.len().to_string(), "size {size:?}");
        expect_sha256(vm, "/tmp/data.bin", &data)?;

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

#[test]
fn ahci_disk_shows_and_its_fat_volume_mounts_reads_and_writes() {
    let image = Image::new("linux");
    let data = pseudo_random(300_000, 7);
    create_fat32_image(
        image.path(),
        64 << 20,
        "YARDSTICK",
        &[
            ("HELLO.TXT", b"hello from the host\n"),
            ("docs/data.bin", &data),
        ],
    )
    .unwrap();
    with_linux(Some(image.path()), |vm, _| {
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
        expect_sha256(vm, "/mnt/docs/data.bin", &data)?;
        run_ok(
            vm,
            "echo 'written by Linux' > /mnt/LINUX.TXT && umount /mnt",
        )?;
        vm.send_line("poweroff -f")?;
        vm.wait_exit(LONG)?;
        Ok(())
    });
    let written = get_file(image.path(), "LINUX.TXT").unwrap();
    assert_eq!(written, b"written by Linux\n");
}

// The WASI-dd runner (`wasi-dd-run`, built into the image) on the machine with an IOMMU: the
// very driver components Keel's image carries, driving the devices under Linux through VFIO.

/// Fails unless the guest's file at `path` has `data`'s sha256.
fn expect_sha256(vm: &mut Vm, path: &str, data: &[u8]) -> Result<()> {
    let sum = run_ok(vm, &format!("sha256sum {path}"))?;
    ensure!(
        sum.split_whitespace().next() == Some(sha256_hex(data).as_str()),
        "guest sha256 of {path}: {sum:?}"
    );
    Ok(())
}

/// Downloads the host server's `/data.bin` to the guest's `/tmp/data.bin` with busybox wget.
fn fetch_from_host(vm: &mut Vm, server: &HostServer) -> Result<()> {
    let url = format!("http://{HOST_FROM_GUEST}:{}/data.bin", server.port);
    run_ok_with_timeout(vm, &format!("wget -q -O /tmp/data.bin {url}"), LONG)?;
    Ok(())
}

/// Fails unless Linux has bound the function at `address` to `driver`.
fn expect_bound_to(vm: &mut Vm, address: &str, driver: &str) -> Result<()> {
    let bound = run_ok(
        vm,
        &format!("basename $(readlink /sys/bus/pci/devices/{address}/driver)"),
    )?;
    ensure!(bound.trim() == driver, "{address} is bound to {bound:?}");
    Ok(())
}

/// Checks what the runner said of the e1000 component it served on `address`: the MAC is the
/// one QEMU gives the NIC (the driver read it from the device), and frames went through.
fn expect_e1000_served(output: &str, address: &str) -> Result<()> {
    ensure!(
        output.contains(&format!("wdd0: e1000 on {address}, MAC 52:54:00:12:34:56")),
        "{output}"
    );
    ensure!(output.contains("wdd0: received "), "{output}");
    Ok(())
}

/// The sha256 of boot driver `name`'s component in Keel's ISO (`keel image`), read with xorriso.
fn component_sha256_in_keels_image(name: &str) -> Result<String> {
    let layout = Layout::discover();
    let iso = layout.iso_for_tests();
    ensure!(
        iso.is_file(),
        "{} is missing: run `keel image` (make test does) first",
        iso.display()
    );
    let out = std::env::temp_dir().join(format!("keel-iso-{name}-{}.wasm", std::process::id()));
    let status = std::process::Command::new("osirrox")
        .arg("-indev")
        .arg(&iso)
        .arg("-extract")
        .arg(format!("/{}", driver_component_iso_path(name)))
        .arg(&out)
        .output()
        .context("running osirrox (xorriso)")?;
    ensure!(
        status.status.success(),
        "extracting {name}'s component from {}: {}",
        iso.display(),
        String::from_utf8_lossy(&status.stderr)
    );
    let bytes = std::fs::read(&out)?;
    let _ = std::fs::remove_file(&out);
    Ok(sha256_hex(&bytes))
}

/// Checks that the guest's copy of driver `name` is byte for byte the one in Keel's image;
/// returns its guest path.
fn same_component_as_keel(vm: &mut Vm, name: &str) -> Result<String> {
    let path = format!("{DRIVERS_GUEST_DIR}/{name}.wasm");
    let guest = run_ok(vm, &format!("sha256sum {path}"))?;
    let keel = component_sha256_in_keels_image(name)?;
    ensure!(
        guest.split_whitespace().next() == Some(keel.as_str()),
        "{path} in the Linux guest is not Keel's {name}: guest {guest:?}, Keel's image {keel}"
    );
    Ok(path)
}

#[test]
fn keels_e1000_component_runs_under_linux_gets_an_address_and_fetches_a_host_file() {
    let data = pseudo_random(2 << 20, 0x7761736d);
    let server = HostServer::start(vec![("/data.bin".into(), data.clone())]).unwrap();
    with_linux_iommu(None, |vm| {
        same_component_as_keel(vm, "e1000")?;
        let address = vm.linux_pci_address(0x8086, 0x100e)?;
        // The runner takes the function from Linux's e1000 driver, opens the TAP interface,
        // and udhcpc configures it.
        vm.linux_wasm_nic_up("", &address)?;
        expect_bound_to(vm, &address, "vfio-pci")?;
        let inet = run_ok(vm, "ip -4 addr show dev wdd0")?;
        ensure!(inet.contains(&format!("inet {GUEST_ADDRESS}/24")), "{inet}");

        fetch_from_host(vm, &server)?;
        expect_sha256(vm, "/tmp/data.bin", &data)?;
        expect_e1000_served(&vm.linux_stop_runner("e1000")?, &address)?;
        Ok(())
    });
}

#[test]
fn keels_ahci_component_serves_a_disk_that_linux_mounts_reads_and_writes() {
    let image = Image::new("linux-wdd");
    let data = pseudo_random(700_000, 11);
    create_fat32_image(
        image.path(),
        64 << 20,
        "WASIDD",
        &[
            ("HELLO.TXT", b"hello to the wasm driver\n"),
            ("docs/data.bin", &data),
        ],
    )
    .unwrap();
    with_linux_iommu(Some(image.path()), |vm| {
        same_component_as_keel(vm, "ahci")?;
        ensure!(
            vm.linux_pci_address(0x8086, 0x2922).is_err(),
            "two ICH9 AHCI controllers are one vendor:device; the test names its own"
        );
        let address = OWN_AHCI_ADDRESS;
        vm.linux_start_runner("", address, "ahci", "")?;
        vm.linux_command_until("ls /sys/block/nbd0/ 2>&1; true", |out| {
            out.contains("nbd0p1")
        })
        .context("nbd0p1 never appeared")?;
        expect_bound_to(vm, address, "vfio-pci")?;

        run_ok(vm, "mount -t vfat /dev/nbd0p1 /mnt")?;
        let hello = run_ok(vm, "cat /mnt/HELLO.TXT")?;
        ensure!(hello == "hello to the wasm driver\n", "{hello:?}");
        expect_sha256(vm, "/mnt/docs/data.bin", &data)?;
        run_ok(
            vm,
            "echo 'written through the wasm driver' > /mnt/WASM.TXT && cp /mnt/docs/data.bin /mnt/COPY.BIN \
             && umount /mnt",
        )?;
        let output = vm.linux_stop_runner("ahci")?;
        ensure!(output.contains("nbd0"), "{output}");
        vm.send_line("poweroff -f")?;
        vm.wait_exit(LONG)?;
        Ok(())
    });
    assert_eq!(
        get_file(image.path(), "WASM.TXT").unwrap(),
        b"written through the wasm driver\n"
    );
    assert!(get_file(image.path(), "COPY.BIN").unwrap() == data);
}

#[test]
fn a_hostile_drivers_dma_outside_its_buffers_is_stopped_by_the_iommu_and_reported() {
    with_linux_iommu(None, |vm| {
        let component = same_component_as_keel(vm, "test-edu")?;
        let address = vm.linux_pci_address(0x1234, 0x11e8)?;
        // First the honest scenario: DMA through granted buffers works under the IOMMU.
        let honest = run_ok_with_timeout(
            vm,
            &format!("{RUNNER_GUEST_PATH} run --bind {address} {component} scenario=edu"),
            LONG,
        )?;
        ensure!(honest.contains("DMA 256 B round trip ok"), "{honest}");
        run_ok(vm, "dmesg -c > /dev/null")?;

        let report = run_ok_with_timeout(
            vm,
            &format!("{RUNNER_GUEST_PATH} run {address} {component} scenario=dma-escape"),
            LONG,
        )?;
        let line = report
            .lines()
            .find(|l| l.starts_with("dma-escape: "))
            .ok_or_else(|| anyhow!("no report: {report}"))?;
        ensure!(!line.contains("LEAKED"), "{line}");
        ensure!(
            line.matches("blocked").count() == 2 && line.contains("write to freed"),
            "{line}"
        );
        // Linux's IOMMU driver logs each refused access: the read and the write of the freed
        // buffer and the read of address 0, by the edu function.
        let faults = run_ok(vm, "dmesg | grep -i 'DMAR.*fault'; true")?;
        let freed = line
            .split("read of freed ")
            .nth(1)
            .and_then(|rest| rest.split(':').next())
            .ok_or_else(|| anyhow!("no freed address in {line}"))?;
        let freed = u64::from_str_radix(freed.trim_start_matches("0x"), 16)?;
        eprintln!("linux: {line}\n{faults}");
        let device = &address["0000:".len()..];
        for (kind, at) in [("Read", freed), ("Write", freed), ("Read", 0)] {
            ensure!(
                faults.lines().any(|l| l.contains(&format!("DMA {kind}"))
                    && l.contains(&format!("[{device}]"))
                    && l.contains(&format!("fault addr {at:#x}"))),
                "no {kind} fault at {at:#x} in {faults}"
            );
        }
        Ok(())
    });
}

// Without an IOMMU (the yardstick's plain machine) the runner refuses, unless told
// `--unconfined`: then it drives the device through UIO, and nothing confines its DMA.

#[test]
fn without_an_iommu_the_runner_refuses_unless_unconfined_and_then_drives_the_devices() {
    let data = pseudo_random(1 << 20, 0x75696f);
    let server = HostServer::start(vec![("/data.bin".into(), data.clone())]).unwrap();
    with_linux(None, |vm, _| {
        let edu = vm.linux_pci_address(0x1234, 0x11e8)?;
        let component = same_component_as_keel(vm, "test-edu")?;
        let refused = vm.linux_command(&format!(
            "{RUNNER_GUEST_PATH} run --bind {edu} {component} scenario=edu; echo \"exit=$?\""
        ))?;
        ensure!(
            refused.contains("no IOMMU group")
                && refused.contains("--unconfined")
                && refused.contains("exit=1"),
            "{refused}"
        );

        let unconfined = format!("{RUNNER_GUEST_PATH} run --bind --unconfined {edu} {component}");
        let honest = run_ok_with_timeout(vm, &format!("{unconfined} scenario=edu 2>&1"), LONG)?;
        ensure!(
            honest.contains("DMA is not confined") && honest.contains("DMA 256 B round trip ok"),
            "{honest}"
        );
        expect_bound_to(vm, &edu, "uio_pci_generic")?;
        // What an IOMMU prevents: the device reads a buffer the driver gave back.
        let hostile = run_ok_with_timeout(vm, &format!("{unconfined} scenario=dma-escape"), LONG)?;
        let report = hostile
            .lines()
            .find(|l| l.starts_with("dma-escape: "))
            .ok_or_else(|| anyhow!("no report: {hostile}"))?;
        eprintln!("linux: unconfined {report}");
        ensure!(
            report.contains("read of freed 0x") && report.contains(": LEAKED"),
            "{report}"
        );

        // The e1000 component over UIO: its INTx, DMA in huge pages at physical addresses.
        let nic = vm.linux_pci_address(0x8086, 0x100e)?;
        vm.linux_wasm_nic_up("--unconfined", &nic)?;
        fetch_from_host(vm, &server)?;
        expect_sha256(vm, "/tmp/data.bin", &data)?;
        expect_e1000_served(&vm.linux_stop_runner("e1000")?, &nic)?;
        Ok(())
    });
}
