//! The one QEMU command line shared by `keel run`, `keel linux-run`, the integration tests and
//! the benchmarks.
//!
//! q35 under TCG (never KVM: the `/dev/kvm` on our machines is a slow software substitute), no
//! default devices, the serial port on stdio, `isa-debug-exit` so the guest can end QEMU, and an
//! e1000 on user networking with one host port forwarded to the guest's port 80, and QEMU's `edu`
//! teaching device for the WASI-dd driver test. Keel boots from its GRUB ISO; the Linux yardstick
//! boots from a kernel and initramfs that QEMU loads itself, on exactly the same machine.

use std::env;
use std::ffi::OsString;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

/// Guest memory unless `--mem`/`MEM=` (or `KEEL_MEM` for tests) says otherwise.
pub const DEFAULT_MEMORY: &str = "128M";
/// Host port `keel run` forwards to the guest's port 80.
pub const DEFAULT_RUN_PORT: u16 = 8080;
/// Size of the disk image created for `keel run`.
pub const DISK_IMAGE_BYTES: u64 = 64 * 1024 * 1024;
/// The bus of port 0 of q35's built-in ICH9 AHCI controller (00:1f.2) in QEMU 7.2. The CD-ROM that
/// `-cdrom` adds sits on `ide.2`.
pub const AHCI_DISK_BUS: &str = "ide.0";
/// The PCI slot of the second AHCI controller ([`QemuConfig::disk_on_own_controller`]).
pub const OWN_AHCI_SLOT: u8 = 0x10;
/// Its PCI address as Linux names it.
pub const OWN_AHCI_ADDRESS: &str = "0000:00:10.0";
/// I/O port of the `isa-debug-exit` device: the guest writes `v` there and QEMU exits with `2v+1`.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// What the machine boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Boot {
    /// Keel's GRUB ISO, on the chipset's SATA CD-ROM.
    Iso(PathBuf),
    /// A Linux kernel and initramfs given to the firmware by QEMU (`-kernel`, `-initrd`,
    /// `-append`), so no boot medium joins the device list.
    Kernel {
        kernel: PathBuf,
        initrd: PathBuf,
        append: String,
    },
}

impl Boot {
    /// The files QEMU will read to boot.
    pub fn files(&self) -> Vec<&Path> {
        match self {
            Boot::Iso(iso) => vec![iso],
            Boot::Kernel { kernel, initrd, .. } => vec![kernel, initrd],
        }
    }
}

/// What varies between QEMU runs.
#[derive(Clone, Debug)]
pub struct QemuConfig {
    pub boot: Boot,
    pub memory: String,
    /// Host port on 127.0.0.1 forwarded to guest port 80.
    pub host_port: u16,
    /// A raw disk image attached to the AHCI controller.
    pub disk: Option<PathBuf>,
    /// A `blkdebug` configuration that injects I/O errors into the disk (tests of error paths).
    pub disk_errors: Option<PathBuf>,
    /// A Unix socket for QEMU's human monitor (tests pull the network cable through it).
    pub monitor: Option<PathBuf>,
    /// A raw disk image on a second AHCI controller in a PCI slot of its own
    /// ([`OWN_AHCI_ADDRESS`]), so that it is an IOMMU group by itself: what a user-space driver
    /// on Linux takes whole through VFIO (the chipset's controller shares its group with the LPC
    /// bridge and SMBus, which Linux keeps).
    pub disk_on_own_controller: Option<PathBuf>,
    /// An Intel IOMMU (VT-d with interrupt remapping) in front of the PCI devices, so that a
    /// guest can confine device DMA (Linux's VFIO needs it). Off for Keel.
    pub iommu: bool,
}

impl QemuConfig {
    /// Keel's ISO.
    pub fn new(iso: impl Into<PathBuf>, host_port: u16) -> Self {
        Self::booting(Boot::Iso(iso.into()), host_port)
    }

    /// The same machine booting `boot`.
    pub fn booting(boot: Boot, host_port: u16) -> Self {
        Self {
            boot,
            memory: DEFAULT_MEMORY.to_string(),
            host_port,
            disk: None,
            disk_errors: None,
            monitor: None,
            disk_on_own_controller: None,
            iommu: false,
        }
    }

    /// The full command: [`qemu_program`] with [`QemuConfig::args`].
    pub fn command(&self) -> Command {
        let mut command = Command::new(qemu_program());
        command.args(self.args());
        command
    }

    /// QEMU's arguments.
    pub fn args(&self) -> Vec<OsString> {
        let machine = if self.iommu {
            // Interrupt remapping needs the split irqchip (the IOAPIC in QEMU, not KVM).
            "q35,kernel-irqchip=split"
        } else {
            "q35"
        };
        let mut args: Vec<OsString> = [
            "-machine",
            machine,
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            &self.memory,
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
            "-serial",
            "stdio",
        ]
        .map(OsString::from)
        .into();
        if self.iommu {
            // Before the other devices, which it translates for.
            args.extend(["-device".into(), "intel-iommu,intremap=on".into()]);
        }
        match &self.boot {
            Boot::Iso(iso) => {
                args.extend([
                    "-cdrom".into(),
                    iso.clone().into(),
                    "-boot".into(),
                    "d".into(),
                ]);
            }
            Boot::Kernel {
                kernel,
                initrd,
                append,
            } => args.extend([
                "-kernel".into(),
                kernel.clone().into(),
                "-initrd".into(),
                initrd.clone().into(),
                "-append".into(),
                append.into(),
            ]),
        }
        args.extend(
            [
                "-device".to_string(),
                format!("isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04"),
                "-device".into(),
                "e1000,netdev=n0".into(),
                "-netdev".into(),
                format!("user,id=n0,hostfwd=tcp:127.0.0.1:{}-:80", self.host_port),
                // QEMU's teaching device: MMIO, interrupts and DMA that the `test-edu` WASI-dd
                // driver exercises at every boot.
                "-device".into(),
                "edu".into(),
            ]
            .map(OsString::from),
        );
        if let Some(disk) = &self.disk {
            args.extend(disk_args(disk, self.disk_errors.as_deref()));
        }
        if let Some(disk) = &self.disk_on_own_controller {
            let mut drive = OsString::from("if=none,id=d1,format=raw,file=");
            drive.push(disk);
            args.extend([
                "-device".into(),
                format!("ahci,id=ahci1,bus=pcie.0,addr={OWN_AHCI_SLOT:#x}").into(),
                "-drive".into(),
                drive,
                "-device".into(),
                "ide-hd,drive=d1,bus=ahci1.0".into(),
            ]);
        }
        if let Some(monitor) = &self.monitor {
            let mut spec = OsString::from("unix:");
            spec.push(monitor);
            spec.push(",server,nowait");
            args.extend(["-monitor".into(), spec]);
        }
        args
    }
}

/// The arguments attaching `disk` as a raw SATA disk on the chipset's AHCI controller, through
/// QEMU's `blkdebug` driver when `errors` names its configuration.
fn disk_args(disk: &Path, errors: Option<&Path>) -> Vec<OsString> {
    let mut drive = OsString::from("if=none,id=d0,format=raw,");
    if let Some(config) = errors {
        drive.push("file.driver=blkdebug,file.config=");
        drive.push(config);
        drive.push(",file.image.filename=");
    } else {
        drive.push("file=");
    }
    drive.push(disk);
    vec![
        "-drive".into(),
        drive,
        "-device".into(),
        format!("ide-hd,drive=d0,bus={AHCI_DISK_BUS}").into(),
    ]
}

/// The QEMU binary: `$KEEL_QEMU` if set (another build, or a stand-in speaking the same serial
/// protocol), else `qemu-system-x86_64` from `PATH`.
pub fn qemu_program() -> OsString {
    env::var_os("KEEL_QEMU").unwrap_or_else(|| "qemu-system-x86_64".into())
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it for a port-0 bind).
pub fn free_local_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(config: &QemuConfig) -> String {
        config
            .args()
            .iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn command_line_is_tcg_q35_with_serial_on_stdio() {
        let line = joined(&QemuConfig::new("/x/keel.iso", 4321));
        assert_eq!(
            line,
            "-machine q35 -accel tcg -cpu max -m 128M -nodefaults -no-reboot -display none \
             -serial stdio -cdrom /x/keel.iso -boot d \
             -device isa-debug-exit,iobase=0xf4,iosize=0x04 -device e1000,netdev=n0 \
             -netdev user,id=n0,hostfwd=tcp:127.0.0.1:4321-:80 -device edu"
        );
        assert!(!line.contains("kvm"));
    }

    #[test]
    fn an_iommu_comes_first_with_the_split_irqchip() {
        let mut config = QemuConfig::new("k.iso", 1);
        config.iommu = true;
        let line = joined(&config);
        assert!(line.starts_with("-machine q35,kernel-irqchip=split "));
        let iommu = line.find("-device intel-iommu,intremap=on").unwrap();
        assert!(iommu < line.find("-device e1000").unwrap());
    }

    #[test]
    fn a_disk_on_its_own_controller_gets_a_second_ahci_in_its_own_slot() {
        let mut config = QemuConfig::new("k.iso", 1);
        config.disk_on_own_controller = Some("/d/own.img".into());
        assert!(joined(&config).ends_with(
            "-device ahci,id=ahci1,bus=pcie.0,addr=0x10 \
             -drive if=none,id=d1,format=raw,file=/d/own.img -device ide-hd,drive=d1,bus=ahci1.0"
        ));
        assert_eq!(OWN_AHCI_ADDRESS, format!("0000:00:{OWN_AHCI_SLOT:02x}.0"));
    }

    #[test]
    fn the_monitor_listens_on_a_unix_socket_when_asked() {
        let mut config = QemuConfig::new("k.iso", 1);
        assert!(!joined(&config).contains("-monitor"));
        config.monitor = Some("/tmp/m.sock".into());
        assert!(joined(&config).ends_with("-monitor unix:/tmp/m.sock,server,nowait"));
    }

    #[test]
    fn disk_goes_on_the_chipset_ahci_port_0() {
        let mut config = QemuConfig::new("k.iso", 1);
        config.disk = Some("/d/disk.img".into());
        config.memory = "256M".into();
        let line = joined(&config);
        assert!(line.contains("-m 256M"));
        assert!(line.ends_with(
            "-drive if=none,id=d0,format=raw,file=/d/disk.img -device ide-hd,drive=d0,bus=ide.0"
        ));
        config.disk_errors = Some("/d/errors.cfg".into());
        assert!(joined(&config).contains(
            "format=raw,file.driver=blkdebug,file.config=/d/errors.cfg,\
             file.image.filename=/d/disk.img "
        ));
    }

    #[test]
    fn a_kernel_boots_on_the_same_machine_with_the_same_devices() {
        let mut keel = QemuConfig::new("/x/keel.iso", 4321);
        let mut linux = QemuConfig::booting(
            Boot::Kernel {
                kernel: "/l/vmlinuz".into(),
                initrd: "/l/initramfs.cpio.gz".into(),
                append: "console=ttyS0 panic=-1".into(),
            },
            4321,
        );
        for config in [&mut keel, &mut linux] {
            config.disk = Some("/d/disk.img".into());
        }
        let linux_line = joined(&linux);
        assert_eq!(
            linux_line,
            "-machine q35 -accel tcg -cpu max -m 128M -nodefaults -no-reboot -display none \
             -serial stdio -kernel /l/vmlinuz -initrd /l/initramfs.cpio.gz \
             -append console=ttyS0 panic=-1 \
             -device isa-debug-exit,iobase=0xf4,iosize=0x04 -device e1000,netdev=n0 \
             -netdev user,id=n0,hostfwd=tcp:127.0.0.1:4321-:80 -device edu \
             -drive if=none,id=d0,format=raw,file=/d/disk.img -device ide-hd,drive=d0,bus=ide.0"
        );
        // Apart from the boot medium, the argument lists are identical.
        let keel_line = joined(&keel).replace("-cdrom /x/keel.iso -boot d", "");
        let linux_line = linux_line.replace(
            "-kernel /l/vmlinuz -initrd /l/initramfs.cpio.gz -append console=ttyS0 panic=-1",
            "",
        );
        assert_eq!(keel_line, linux_line);
        assert_eq!(
            linux.boot.files(),
            [Path::new("/l/vmlinuz"), Path::new("/l/initramfs.cpio.gz")]
        );
    }
}
