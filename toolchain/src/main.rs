//! `keel`: build, image, run and benchmark the Keel kernel. See `keel help`.

#![forbid(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use keel_toolchain::bench::{self, BenchOptions};
use keel_toolchain::cli::{Cli, LinuxRunArgs, RunArgs, USAGE};
use keel_toolchain::disk::ensure_run_image;
use keel_toolchain::drivers::{bench_dd, build_drivers};
use keel_toolchain::image::make_iso;
use keel_toolchain::kernel::{build_kernel, kernel_cargo};
use keel_toolchain::linux::{self, BuiltImage, LinuxImage};
use keel_toolchain::paths::{Layout, Profile};
use keel_toolchain::process::{describe, run_checked};
use keel_toolchain::qemu::{Boot, DISK_IMAGE_BYTES, QemuConfig};

fn main() -> ExitCode {
    let result = Cli::parse(std::env::args().skip(1)).and_then(|cli| execute(&cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keel: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn execute(cli: &Cli) -> Result<()> {
    let layout = Layout::discover();
    match cli {
        Cli::BuildKernel { profile } => {
            println!("{}", build_kernel(&layout, *profile)?.display());
        }
        Cli::Image { profile } => {
            println!("{}", image(&layout, *profile)?.display());
        }
        Cli::Run(args) => run(&layout, args)?,
        Cli::Bench(args) => {
            let iso = match &args.iso {
                Some(iso) => iso.clone(),
                None => image(&layout, Profile::Release)?,
            };
            let options = BenchOptions {
                iso,
                memory: args.memory.clone(),
                boots: args.boots,
            };
            println!("{}", bench::run(&layout, &options)?.display());
        }
        Cli::ClippyKernel => {
            let mut clippy = kernel_cargo(&layout, "clippy", Profile::Release)?;
            run_checked(clippy.args(["--", "-D", "warnings"]))?;
        }
        Cli::BuildDrivers => {
            for component in build_drivers(&layout)? {
                println!("{}", component.display());
            }
        }
        Cli::BenchDd => println!("{}", bench_dd(&layout)?.display()),
        Cli::LinuxImage { extra } => {
            let built = linux_image(&layout, extra.as_deref())?;
            println!("{}", built.image.kernel.display());
            println!("{}", built.image.initramfs.display());
        }
        Cli::LinuxRun(args) => linux_run(&layout, args)?,
        Cli::Help => println!("{USAGE}"),
    }
    Ok(())
}

/// Builds the kernel and the ISO; returns the ISO's absolute path.
fn image(layout: &Layout, profile: Profile) -> Result<PathBuf> {
    let kernel = build_kernel(layout, profile)?;
    let extra = std::env::var_os("EXTRA_APPS").map(std::path::PathBuf::from);
    let wasm = keel_toolchain::apps::collect_wasm(layout, extra.as_deref())?;
    let mut apps = keel_toolchain::apps::precompile(layout, &wasm)?;
    let broken = keel_toolchain::apps::broken_fixtures(layout, &apps, &wasm)?;
    apps.extend(broken);
    let components = build_drivers(layout)?;
    let drivers = keel_toolchain::drivers::boot_drivers(layout, &components)?;
    make_iso(layout, &kernel, &apps, &drivers)
}

/// The README on the disk `keel run` creates.
const DISK_README: &str = "This FAT32 volume is Keel's disk (target/keel/disk.img, an MBR partition from 1 MiB).\n\
Keel mounts it at /disk: `ls /disk`, `cp /README /disk/notes.txt`, `sync`. It survives reboots;\n\
on the host, `mdir -i target/keel/disk.img@@1M ::` lists it. Delete the file for a fresh one.\n";

/// Builds the image and replaces this process with an interactive QEMU.
fn run(layout: &Layout, args: &RunArgs) -> Result<()> {
    let iso = image(layout, args.profile)?;
    let disk = layout.disk_image();
    ensure_run_image(&disk, DISK_IMAGE_BYTES, DISK_README)?;
    let config = QemuConfig {
        boot: Boot::Iso(iso),
        memory: args.memory.clone(),
        host_port: args.port,
        disk: Some(disk),
        disk_errors: None,
        monitor: None,
        disk_on_own_controller: None,
        iommu: false,
    };
    let mut qemu = config.command();
    eprintln!(
        "keel: booting; serial console on this terminal, guest :80 on 127.0.0.1:{}. \
         Quit with `shutdown` or Ctrl-C.\n{}",
        args.port,
        describe(&qemu)
    );
    let error = qemu.exec();
    Err(error).with_context(|| format!("starting `{}`", describe(&qemu)))
}

/// Builds the Linux yardstick's kernel and initramfs, and says what they hold.
fn linux_image(layout: &Layout, extra: Option<&std::path::Path>) -> Result<BuiltImage> {
    let started = std::time::Instant::now();
    let built = linux::build_image(layout, extra)?;
    eprintln!(
        "keel: {} [{:.1} s]",
        linux::summary(&built),
        started.elapsed().as_secs_f64()
    );
    Ok(built)
}

/// Boots the Linux yardstick on Keel's machine (same disk image as `keel run`), replacing this
/// process with an interactive QEMU.
fn linux_run(layout: &Layout, args: &LinuxRunArgs) -> Result<()> {
    let image = LinuxImage::at(&layout.linux_dir());
    if args.extra.is_some() || !image.exists() {
        linux_image(layout, args.extra.as_deref())?;
    }
    let disk = layout.disk_image();
    ensure_run_image(&disk, DISK_IMAGE_BYTES, DISK_README)?;
    // With the IOMMU, and the disk on an AHCI controller of its own, so that `wasi-dd-run` can
    // take either device from Linux's drivers through VFIO.
    let mut config = image.qemu_config_with_iommu(args.port);
    config.memory = args.memory.clone();
    config.disk_on_own_controller = Some(disk);
    let mut qemu = config.command();
    eprintln!(
        "keel: booting Linux; serial console on this terminal, guest :80 on 127.0.0.1:{}. \
         Quit with `exit` (powers off) or Ctrl-C.\n\
         Keel's drivers under Linux: `wasi-dd-run run --bind 0000:00:01.0 /lib/wasi-dd/e1000.wasm &` \
         then `udhcpc -i wdd0`; `wasi-dd-run run --bind {} /lib/wasi-dd/ahci.wasm &` then \
         `mount /dev/nbd0p1 /mnt`.\n{}",
        args.port,
        keel_toolchain::qemu::OWN_AHCI_ADDRESS,
        describe(&qemu)
    );
    let error = qemu.exec();
    Err(error).with_context(|| format!("starting `{}`", describe(&qemu)))
}
