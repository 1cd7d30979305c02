//! QEMU integration tests of storage: the AHCI driver component on q35's chipset controller,
//! partitions, and FAT32 volumes mounted at `/disk`, checked against what the host's mtools
//! read and write in the same image.
//!
//! Run by `make test` after `keel image`. Each test makes its own disk image in the temporary
//! directory and boots its own VM. Timeouts are hang guards for QEMU under TCG.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use keel_toolchain::disk::{create_fat32_image, get_file, list, put_file};
use keel_toolchain::vm::Vm;
use support::{Image, pseudo_random, sha256_hex};

mod support;

/// Hang guard for programs that move tens of MiB under TCG.
const LONG_COMMAND: Duration = Duration::from_secs(300);
const IMAGE_BYTES: u64 = 128 << 20;

/// Boots with `disk` and runs `test`; a failure panics with the serial transcript.
fn with_disk(disk: &Path, test: impl FnOnce(&mut Vm) -> Result<()>) {
    let (mut vm, _) = Vm::boot_to_prompt_with_disk(disk).unwrap_or_else(|e| panic!("{e:#}"));
    if let Err(error) = test(&mut vm) {
        panic!("{:#}", vm.with_transcript(error));
    }
}

/// Waits until the volume mounted at `/disk` shows in `mount`.
fn wait_for_mount(vm: &mut Vm) -> Result<String> {
    vm.command_until("mount", |o| o.contains(" on /disk "))
}

/// The hex digest `sha256sum` printed for `path`.
fn guest_sha256(vm: &mut Vm, path: &str) -> Result<String> {
    let output = vm.command_with_timeout(&format!("sha256sum {path}"), LONG_COMMAND)?;
    let line = output
        .lines()
        .find(|l| l.ends_with(path))
        .with_context(|| format!("no digest of {path} in {output:?}"))?;
    Ok(line
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// The digest `randio` says its file must have, after checking it wrote and read it back.
fn run_randio(vm: &mut Vm, path: &str, mib: u32, seed: u32) -> Result<String> {
    let output = vm.command_with_timeout(&format!("randio {path} {mib} {seed}"), LONG_COMMAND)?;
    ensure!(
        output.contains(" 0 mismatches"),
        "randio did not verify: {output:?}"
    );
    let digest = output
        .lines()
        .find_map(|l| l.strip_prefix("sha256 "))
        .with_context(|| format!("no digest from randio: {output:?}"))?;
    Ok(digest.trim().to_string())
}

#[test]
fn keel_reads_the_files_the_host_wrote() {
    let image = Image::new("read");
    let data = pseudo_random(3 << 20, 11);
    let readme = b"Written on the host by mtools.\n";
    create_fat32_image(
        image.path(),
        IMAGE_BYTES,
        "KEELTEST",
        &[("README.TXT", readme), ("docs/a-long-file-name.bin", &data)],
    )
    .unwrap();
    with_disk(image.path(), |vm| {
        let mounts = wait_for_mount(vm)?;
        ensure!(
            mounts.contains("sd0p1 on /disk type vfat"),
            "mount: {mounts:?}"
        );
        let lsblk = vm.command("lsblk")?;
        for want in ["sd0 ", "sd0p1", "vfat", "/disk", "QEMU HARDDISK"] {
            ensure!(lsblk.contains(want), "lsblk lacks {want:?}: {lsblk:?}");
        }
        ensure!(
            !lsblk.contains("sd1"),
            "the CD-ROM (ATAPI) must not be listed as a disk: {lsblk:?}"
        );
        let listing = vm.command("ls /disk")?;
        ensure!(
            listing.contains("README.TXT") && listing.contains("docs"),
            "ls /disk: {listing:?}"
        );
        let text = vm.command("cat /disk/README.TXT")?;
        ensure!(
            text.contains("Written on the host by mtools."),
            "cat: {text:?}"
        );
        let digest = guest_sha256(vm, "/disk/docs/a-long-file-name.bin")?;
        ensure!(
            digest == sha256_hex(&data),
            "checksum differs from the host's"
        );
        let df = vm.command("df")?;
        let line = df
            .lines()
            .find(|l| l.ends_with(" /disk"))
            .with_context(|| format!("df lacks /disk: {df:?}"))?;
        ensure!(line.starts_with("sd0p1"), "df: {line:?}");
        Ok(())
    });
}

#[test]
fn files_keel_writes_reach_the_host_after_shutdown() {
    let image = Image::new("write");
    create_fat32_image(image.path(), IMAGE_BYTES, "KEELTEST", &[]).unwrap();
    let (mut vm, _) =
        Vm::boot_to_prompt_with_disk(image.path()).unwrap_or_else(|e| panic!("{e:#}"));
    let result = (|| -> Result<(String, String)> {
        wait_for_mount(&mut vm)?;
        let made = vm.command("mkdir /disk/results-from-keel")?;
        ensure!(!made.contains("error"), "mkdir: {made:?}");
        vm.command("cp /README /disk/results-from-keel/readme-copy.txt")?;
        let readme = guest_sha256(&mut vm, "/disk/results-from-keel/readme-copy.txt")?;
        // 64 MiB written and read back in random order, verified block by block.
        let random = run_randio(&mut vm, "/disk/results-from-keel/random.bin", 64, 5)?;
        vm.send_line("shutdown")?;
        vm.wait_for("powering off", Duration::from_secs(60))?;
        vm.wait_exit(Duration::from_secs(30))?;
        Ok((readme, random))
    })();
    let (readme, random) = result.unwrap_or_else(|e| panic!("{:#}", vm.with_transcript(e)));
    let names = list(image.path(), "results-from-keel").unwrap();
    assert!(
        names.contains(&"readme-copy.txt".to_string()) && names.contains(&"random.bin".to_string()),
        "the host sees {names:?}"
    );
    let copy = get_file(image.path(), "results-from-keel/readme-copy.txt").unwrap();
    assert_eq!(
        sha256_hex(&copy),
        readme,
        "the README copy differs on the host"
    );
    let big = get_file(image.path(), "results-from-keel/random.bin").unwrap();
    assert_eq!(big.len(), 64 << 20);
    assert_eq!(
        sha256_hex(&big),
        random,
        "the random-order file differs on the host"
    );
}

#[test]
fn data_persists_across_a_reboot() {
    let image = Image::new("reboot");
    create_fat32_image(image.path(), IMAGE_BYTES, "KEELTEST", &[]).unwrap();
    let mut digest = String::new();
    {
        let (mut vm, _) =
            Vm::boot_to_prompt_with_disk(image.path()).unwrap_or_else(|e| panic!("{e:#}"));
        let result = (|| -> Result<()> {
            wait_for_mount(&mut vm)?;
            digest = run_randio(&mut vm, "/disk/kept.bin", 4, 9)?;
            vm.send_line("reboot")?;
            // QEMU runs with -no-reboot: the reset ends it, and the next boot is a new VM.
            vm.wait_for("rebooting", Duration::from_secs(60))?;
            vm.wait_exit(Duration::from_secs(30))?;
            Ok(())
        })();
        result.unwrap_or_else(|e| panic!("{:#}", vm.with_transcript(e)));
    }
    with_disk(image.path(), |vm| {
        wait_for_mount(vm)?;
        let again = guest_sha256(vm, "/disk/kept.bin")?;
        ensure!(
            again == digest,
            "after the reboot the file's checksum changed"
        );
        Ok(())
    });
}

#[test]
fn bad_requests_and_io_errors_are_errors() {
    let image = Image::new("errors");
    create_fat32_image(image.path(), IMAGE_BYTES, "KEELTEST", &[]).unwrap();
    put_file(image.path(), "ok.txt", b"still readable\n").unwrap();
    // Reads of sector 200000 fail in QEMU's block layer, as a failing medium would.
    let config = image.path().with_extension("blkdebug");
    std::fs::write(
        &config,
        "[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\nsector = \"200000\"\n",
    )
    .unwrap();
    let (mut vm, _) = Vm::boot_to_prompt_with_faulty_disk(image.path(), &config)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let result = (|| -> Result<()> {
        wait_for_mount(&mut vm)?;
        let sectors = IMAGE_BYTES / 512;
        let past_end = vm.command(&format!("blk read sd0 {sectors} 1"))?;
        ensure!(
            past_end.contains("out of range"),
            "a read past the end: {past_end:?}"
        );
        let failing = vm.command("blk read sd0 200000 8")?;
        ensure!(
            failing.contains("device error"),
            "a read of a failing sector: {failing:?}"
        );
        let good = vm.command("blk read sd0 0 1")?;
        ensure!(
            good.contains("read 1 sector"),
            "the disk after the error: {good:?}"
        );
        let text = vm.command("cat /disk/ok.txt")?;
        ensure!(
            text.contains("still readable"),
            "cat after the error: {text:?}"
        );
        let drivers = vm.command("drivers")?;
        ensure!(
            drivers
                .lines()
                .any(|l| l.contains("ahci") && l.contains("running")),
            "the AHCI driver stopped: {drivers:?}"
        );
        Ok(())
    })();
    let _ = std::fs::remove_file(&config);
    result.unwrap_or_else(|e| panic!("{:#}", vm.with_transcript(e)));
}

#[test]
fn a_blank_disk_or_no_disk_is_handled() {
    let image = Image::new("blank");
    std::fs::File::create(image.path())
        .and_then(|f| f.set_len(16 << 20))
        .unwrap();
    with_disk(image.path(), |vm| {
        // Until the storage task has looked at the disk, lsblk says "(scanning)".
        let lsblk =
            vm.command_until("lsblk", |o| o.contains("sd0") && !o.contains("(scanning)"))?;
        ensure!(lsblk.contains("sd0 "), "lsblk: {lsblk:?}");
        ensure!(
            !lsblk.contains("/disk"),
            "a blank disk was mounted: {lsblk:?}"
        );
        let mounted = vm.command("mount sd0 /blank")?;
        ensure!(
            mounted.contains("no FAT file system"),
            "mounting a blank disk: {mounted:?}"
        );
        let listing = vm.command("ls /disk")?;
        ensure!(
            listing.contains("No such file or directory"),
            "ls /disk: {listing:?}"
        );
        Ok(())
    });
    let (mut vm, _) = Vm::boot_to_prompt().unwrap_or_else(|e| panic!("{e:#}"));
    let result = (|| -> Result<()> {
        // The AHCI driver is up (it found only the CD-ROM), so "no disks" is its answer.
        let drivers = vm.command("drivers")?;
        ensure!(
            drivers
                .lines()
                .any(|l| l.contains(" ahci ") && l.contains(" running ")),
            "the AHCI driver: {drivers:?}"
        );
        let lsblk = vm.command("lsblk")?;
        ensure!(
            lsblk.contains("no disks"),
            "lsblk without a disk: {lsblk:?}"
        );
        let df = vm.command("df")?;
        ensure!(df.contains(" /"), "df: {df:?}");
        Ok(())
    })();
    result.unwrap_or_else(|e| panic!("{:#}", vm.with_transcript(e)));
}

/// The row of `drivers` for the AHCI driver once it shows `want`.
fn ahci_row(vm: &mut Vm, want: &str) -> Result<String> {
    vm.driver_row("ahci", want)
}

/// A block driver that dies takes its disk's I/O down and nothing else: reads fail with an
/// error, the shell goes on, `df` answers while a program writes; `drivers restart ahci`
/// serves the same disk again and the mounted volume works without remounting.
#[test]
fn a_block_driver_that_dies_is_contained_and_restarts() {
    let image = Image::new("restart");
    create_fat32_image(
        image.path(),
        IMAGE_BYTES,
        "KEELTEST",
        &[("README.TXT", b"still here\n")],
    )
    .unwrap();
    with_disk(image.path(), |vm| {
        wait_for_mount(vm)?;
        let out = vm.command("run randio /disk/busy.bin 16 3 &")?;
        ensure!(out.contains("] randio"), "randio did not start: {out:?}");
        let df = vm.command("df")?;
        ensure!(df.contains(" /disk"), "df while writing: {df:?}");
        let task = vm.running_driver_task("ahci")?;
        vm.kill_task(task)?;
        let row = ahci_row(vm, " failed ")?;
        ensure!(row.contains("killed"), "why it stopped: {row:?}");
        let read = vm.command("blk read sd0 0 1")?;
        ensure!(
            read.contains("device gone"),
            "a read without a driver: {read:?}"
        );
        // randio's exit report may come before the command's echo: look for the answer's line.
        let up = vm.command("uptime")?;
        ensure!(up.lines().any(|l| l.starts_with("up ")), "shell: {up:?}");

        let out = vm.command("drivers restart ahci")?;
        ensure!(out.contains("1 instance(s) restarted"), "restart: {out:?}");
        ahci_row(vm, " running ")?;
        let text = vm.command("cat /disk/README.TXT")?;
        ensure!(
            text.contains("still here"),
            "/disk after the restart: {text:?}"
        );
        let lsblk = vm.command("lsblk")?;
        ensure!(
            !lsblk.contains("sd1"),
            "the restarted driver serves the same disk: {lsblk:?}"
        );
        let digest = vm.command_with_timeout("randio /disk/after.bin 4 8", LONG_COMMAND)?;
        ensure!(digest.contains(" 0 mismatches"), "randio after: {digest:?}");
        Ok(())
    });
}
