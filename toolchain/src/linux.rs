//! The Linux yardstick: Debian's own kernel and busybox, booted on exactly Keel's QEMU machine, so
//! that Keel's drivers, network and disk figures have a mainstream OS to be compared with.
//!
//! `keel linux-image` fetches `linux-image-amd64`'s versioned kernel package and `busybox-static`
//! with `apt-get download` (no root needed; the `.deb` files stay in `target/linux/debs`), and
//! writes `target/linux/vmlinuz` and `target/linux/initramfs.cpio.gz`. The initramfs holds busybox
//! with its applets, only the kernel modules the machine needs (with their dependencies), and an
//! `/init` that loads them, takes an address by DHCP, prints [`READY_MARKER`] and runs a shell on
//! the serial console with the prompt [`PROMPT`], which the test harness drives as it drives
//! Keel's shell. The initramfs also holds the WASI-dd runner (`wasi-dd/linux`, built static) at
//! [`RUNNER_GUEST_PATH`] and the boot drivers' components, the same files Keel's image carries,
//! in [`DRIVERS_GUEST_DIR`]. A directory of extra files can be laid over the tree; executable
//! `*.sh` files in its `etc/init.d/` run before the marker.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::cpio::CpioWriter;
use crate::drivers::{boot_driver_components, build_drivers};
use crate::paths::Layout;
use crate::process::{run_captured, run_checked};
use crate::qemu::{Boot, QemuConfig};

/// Debian's metapackage that names the current kernel package.
pub const KERNEL_META_PACKAGE: &str = "linux-image-amd64";
/// A statically linked busybox: the whole user space.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// The line `/init` prints when the modules are loaded and the network is configured.
pub const READY_MARKER: &str = "linux: ready";
/// The shell's prompt (ash's `PS1`; no newline follows it).
pub const PROMPT: &str = "linux# ";
/// Lines `/init` prints for anything that went wrong on the way to the prompt.
pub const ERROR_PREFIX: &str = "linux: error: ";
/// The kernel command line: the serial console, and a panic ends QEMU (it runs with
/// `-no-reboot`) instead of hanging a test.
pub const KERNEL_APPEND: &str = "console=ttyS0 panic=-1";
/// Where `/init` finds udhcpc's event script (busybox's default path).
pub const DHCP_SCRIPT: &str = "usr/share/udhcpc/default.script";
/// The WASI-dd runner in the guest (`wasi-dd/linux`, built static).
pub const RUNNER_GUEST_PATH: &str = "/bin/wasi-dd-run";
/// The guest's driver components: the same files Keel's image carries (`NAME.wasm`).
pub const DRIVERS_GUEST_DIR: &str = "/lib/wasi-dd";

/// A module the guest needs, and the kernel configuration symbol that says whether Debian built it
/// into the kernel (`=y`, nothing to load) or as a module (`=m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestModule {
    pub name: &'static str,
    pub config: &'static str,
}

const fn module(name: &'static str, config: &'static str) -> GuestModule {
    GuestModule { name, config }
}

/// What the guest loads: the e1000 NIC, the AHCI controller and SCSI disks (`sd_mod` is not a
/// dependency of `ahci`: udev would load it, and there is no udev here), VFIO for the WASI-dd
/// runner (and UIO's generic PCI driver, its fallback without an IOMMU), tun and nbd, and FAT with the code pages a default `mount -t vfat` asks for
/// (437 and `ascii` in Debian's configuration; `utf8` for `-o iocharset=utf8`). Their
/// dependencies come from the kernel's module metadata.
pub const GUEST_MODULES: &[GuestModule] = &[
    module("e1000", "CONFIG_E1000"),
    module("ahci", "CONFIG_SATA_AHCI"),
    module("sd_mod", "CONFIG_BLK_DEV_SD"),
    module("vfio", "CONFIG_VFIO"),
    module("vfio_iommu_type1", "CONFIG_VFIO_IOMMU_TYPE1"),
    module("vfio_pci", "CONFIG_VFIO_PCI"),
    module("uio_pci_generic", "CONFIG_UIO_PCI_GENERIC"),
    module("tun", "CONFIG_TUN"),
    module("nbd", "CONFIG_BLK_DEV_NBD"),
    module("vfat", "CONFIG_VFAT_FS"),
    module("nls_cp437", "CONFIG_NLS_CODEPAGE_437"),
    module("nls_ascii", "CONFIG_NLS_ASCII"),
    module("nls_utf8", "CONFIG_NLS_UTF8"),
];

/// The two files QEMU boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxImage {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

impl LinuxImage {
    /// The image in `dir` (`target/linux`).
    pub fn at(dir: &Path) -> Self {
        Self {
            kernel: dir.join("vmlinuz"),
            initramfs: dir.join("initramfs.cpio.gz"),
        }
    }

    pub fn exists(&self) -> bool {
        self.kernel.is_file() && self.initramfs.is_file()
    }

    /// How QEMU boots it.
    pub fn boot(&self) -> Boot {
        Boot::Kernel {
            kernel: self.kernel.clone(),
            initrd: self.initramfs.clone(),
            append: KERNEL_APPEND.to_string(),
        }
    }

    /// Keel's machine booting this image, forwarding 127.0.0.1:`host_port` to the guest's :80.
    pub fn qemu_config(&self, host_port: u16) -> QemuConfig {
        QemuConfig::booting(self.boot(), host_port)
    }

    /// The same machine with an Intel IOMMU, which the kernel is told to use: what VFIO (and so
    /// the WASI-dd runner) needs to confine a device's DMA.
    pub fn qemu_config_with_iommu(&self, host_port: u16) -> QemuConfig {
        let mut boot = self.boot();
        if let Boot::Kernel { append, .. } = &mut boot {
            append.push_str(" intel_iommu=on");
        }
        let mut config = QemuConfig::booting(boot, host_port);
        config.iommu = true;
        config
    }
}

/// What `keel linux-image` made.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub image: LinuxImage,
    /// The kernel release (`uname -r`), e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// The modules in the initramfs, in load order.
    pub modules: Vec<String>,
    /// Guest modules the kernel has built in.
    pub built_in: Vec<String>,
    /// The driver components in [`DRIVERS_GUEST_DIR`].
    pub drivers: Vec<String>,
    pub initramfs_bytes: u64,
}

/// Fetches the packages (or reuses `target/linux/debs`) and writes the kernel and initramfs into
/// `layout.linux_dir()`. `extra` is a directory laid over the initramfs tree.
pub fn build_image(layout: &Layout, extra: Option<&Path>) -> Result<BuiltImage> {
    let dir = layout.linux_dir();
    let debs = dir.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let kernel_deb = fetch_kernel_package(&debs)?;
    let busybox_deb = fetch_package(&debs, BUSYBOX_PACKAGE)?;

    let mut native = build_native_programs(layout)?;
    native.push(("wasi-dd-run".to_string(), build_runner(layout)?));
    let components = build_drivers(layout)?;
    let drivers = boot_driver_components(layout, &components)?
        .into_iter()
        .map(|(name, _, component)| Ok((name, read(&component)?)))
        .collect::<Result<Vec<_>>>()?;
    let work = dir.join("extract");
    remove_dir_if_present(&work)?;
    let result = assemble(
        &dir,
        &work,
        &kernel_deb,
        &busybox_deb,
        &native,
        &drivers,
        extra,
    );
    // The unpacked kernel package is ~400 MB; only what the initramfs needs is kept.
    remove_dir_if_present(&work)?;
    result
}

/// Native programs for the guest's `/bin`, built static by the host's C compiler: the same C
/// sources that Keel runs as WebAssembly (`apps-wasm/c`), the OS microbenchmarks
/// (`toolchain/linux-guest/microbench.c`), and Keel's `blk bench` for a block device
/// (`toolchain/linux-guest/diskbench.c`). Linux's side of `make bench`.
const NATIVE_PROGRAMS: [(&str, &[&str]); 4] = [
    (
        "shabench",
        &["apps-wasm/c/shabench.c", "apps-wasm/c/sha256.c"],
    ),
    ("sortbench", &["apps-wasm/c/sortbench.c"]),
    ("microbench", &["toolchain/linux-guest/microbench.c"]),
    ("diskbench", &["toolchain/linux-guest/diskbench.c"]),
];

/// Compiles [`NATIVE_PROGRAMS`] into `target/linux/native`; returns (name, binary) pairs.
fn build_native_programs(layout: &Layout) -> Result<Vec<(String, Vec<u8>)>> {
    let out = layout.linux_dir().join("native");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut programs = Vec::new();
    for (name, sources) in NATIVE_PROGRAMS {
        let binary = out.join(name);
        let mut command = Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()));
        command
            .args([
                "-static",
                "-O2",
                "-std=gnu11",
                "-Wall",
                "-Wextra",
                "-pthread",
                "-o",
            ])
            .arg(&binary)
            .args(sources.iter().map(|s| layout.root().join(s)));
        run_captured(&mut command).with_context(|| {
            format!("compiling {name} statically for the Linux guest (needs gcc and libc6-dev)")
        })?;
        programs.push((name.to_string(), read(&binary)?));
    }
    Ok(programs)
}

/// The WASI-dd runner for the guest: `wasi-dd-linux`'s binary, linked statically against glibc
/// (`crt-static` for the final link only, so it shares the host build's Wasmtime with
/// `keel-aot` instead of compiling another for musl) and without symbols or debug information.
fn build_runner(layout: &Layout) -> Result<Vec<u8>> {
    run_checked(
        Command::new("cargo")
            .current_dir(layout.root())
            .env("RUSTUP_TOOLCHAIN", layout.toolchain_channel()?)
            .args([
                "rustc",
                "--release",
                "-p",
                "wasi-dd-linux",
                "--bin",
                "wasi-dd-run",
                "--",
                "-C",
                "target-feature=+crt-static",
                "-C",
                "strip=symbols",
            ]),
    )
    .context("building wasi-dd-run for the Linux guest")?;
    read(&layout.root().join("target/release/wasi-dd-run"))
}

fn assemble(
    dir: &Path,
    work: &Path,
    kernel_deb: &Path,
    busybox_deb: &Path,
    native: &[(String, Vec<u8>)],
    drivers: &[(String, Vec<u8>)],
    extra: Option<&Path>,
) -> Result<BuiltImage> {
    let kernel_tree = work.join("kernel");
    let busybox_tree = work.join("busybox");
    unpack_deb(kernel_deb, &kernel_tree)?;
    unpack_deb(busybox_deb, &busybox_tree)?;

    let release = kernel_release(&kernel_tree.join("boot"))?;
    let config_path = kernel_tree.join(format!("boot/config-{release}"));
    let config = parse_kernel_config(
        &fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?,
    );
    let (wanted, built_in) = split_built_in(&config, GUEST_MODULES)?;

    let module_root = kernel_tree.join("lib/modules").join(&release);
    let shipped_dep = module_root.join("modules.dep");
    let graph = if shipped_dep.is_file() {
        parse_modules_dep(&fs::read_to_string(&shipped_dep)?)?
    } else {
        // Debian ships no modules.dep (depmod writes it at install time): the same table is
        // made from each module's `depends=` entry, following dependencies from the wanted ones.
        graph_from_modinfo(&module_root, &wanted)?
    };
    let order = load_order(&graph, &wanted)?;

    let busybox = busybox_tree.join("bin/busybox");
    let applets = busybox_applets(&busybox)?;

    let mut tree = Tree::default();
    tree.dir("dev", 0o755);
    tree.char_device("dev/console", 0o600, 5, 1);
    for empty in ["proc", "sys", "mnt", "root", "run", "etc/init.d"] {
        tree.dir(empty, 0o755);
    }
    tree.dir("tmp", 0o1777);
    tree.file("bin/busybox", 0o755, read(&busybox)?);
    for (name, binary) in native {
        tree.file(&format!("bin/{name}"), 0o755, binary.clone());
    }
    for applet in &applets {
        tree.symlink(applet, "/bin/busybox");
    }
    for (name, component) in drivers {
        let path = format!("{}/{name}.wasm", DRIVERS_GUEST_DIR.trim_start_matches('/'));
        tree.file(&path, 0o644, component.clone());
    }
    let mut module_paths = Vec::new();
    for name in &order {
        let path = &graph[name].path;
        let data = read(&module_root.join(path))?;
        tree.file(&format!("lib/modules/{release}/{path}"), 0o644, data);
        module_paths.push(path.clone());
    }
    tree.file(
        &format!("lib/modules/{release}/modules.dep"),
        0o644,
        modules_dep_text(&graph, &order)?.into_bytes(),
    );
    tree.file(
        "init",
        0o755,
        init_script(&release, &module_paths).into_bytes(),
    );
    tree.file(DHCP_SCRIPT, 0o755, DHCP_EVENT_SCRIPT.as_bytes().to_vec());
    tree.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
    );
    tree.file("etc/group", 0o644, b"root:x:0:\n".to_vec());
    if let Some(extra) = extra {
        tree.add_host_dir(extra, "")
            .with_context(|| format!("adding the extra files of {}", extra.display()))?;
    }

    // Written under temporary names and renamed, so a VM never boots a half-written image.
    let image = LinuxImage::at(dir);
    let cpio = image.initramfs.with_extension("partial");
    fs::write(&cpio, tree.to_cpio()?).with_context(|| format!("writing {}", cpio.display()))?;
    let gzipped = image.initramfs.with_extension("gz.partial");
    let out =
        fs::File::create(&gzipped).with_context(|| format!("creating {}", gzipped.display()))?;
    run_captured(
        Command::new("gzip")
            .args(["-9", "-n", "-c"])
            .arg(&cpio)
            .stdout(out),
    )
    .context("compressing the initramfs with gzip")?;
    fs::remove_file(&cpio)?;
    fs::rename(&gzipped, &image.initramfs)?;
    let vmlinuz = kernel_tree.join(format!("boot/vmlinuz-{release}"));
    let kernel = image.kernel.with_extension("partial");
    fs::copy(&vmlinuz, &kernel)
        .with_context(|| format!("copying {} to {}", vmlinuz.display(), kernel.display()))?;
    fs::rename(&kernel, &image.kernel)?;
    let initramfs_bytes = fs::metadata(&image.initramfs)?.len();
    Ok(BuiltImage {
        image,
        release,
        modules: order,
        built_in,
        drivers: drivers.iter().map(|(name, _)| name.clone()).collect(),
        initramfs_bytes,
    })
}

/// The versioned kernel package `linux-image-amd64` depends on, fetched.
fn fetch_kernel_package(debs: &Path) -> Result<PathBuf> {
    match apt_show(KERNEL_META_PACKAGE) {
        Ok(show) => {
            let depends = control_field(&show, "Depends")
                .ok_or_else(|| anyhow!("{KERNEL_META_PACKAGE} has no Depends field"))?;
            let name = kernel_package_name(&depends).ok_or_else(|| {
                anyhow!("{KERNEL_META_PACKAGE} depends on no linux-image package: {depends}")
            })?;
            fetch_package(debs, &name)
        }
        Err(error) => cached_deb(debs, "linux-image-", "-amd64").ok_or(error),
    }
}

/// `package`'s candidate version from the package lists, downloaded into `debs` unless there.
/// Without package lists (offline, before `apt-get update`), a `.deb` already in `debs` is used.
fn fetch_package(debs: &Path, package: &str) -> Result<PathBuf> {
    let show = match apt_show(package) {
        Ok(show) => show,
        Err(error) => {
            return cached_deb(debs, &format!("{package}_"), "").ok_or(error);
        }
    };
    let version = control_field(&show, "Version")
        .ok_or_else(|| anyhow!("apt-cache shows no Version for {package}"))?;
    let arch = control_field(&show, "Architecture").unwrap_or_else(|| "amd64".to_string());
    let path = debs.join(deb_file_name(package, &version, &arch));
    if path.is_file() {
        return Ok(path);
    }
    let spec = format!("{package}={version}");
    eprintln!("keel: apt-get download {spec}");
    run_captured(
        Command::new("apt-get")
            .args(["download", "-q", &spec])
            .current_dir(debs),
    )
    .with_context(|| {
        format!(
            "apt-get download {spec} failed: is the network reachable? \
             (stale package lists: run `apt-get update` as root)"
        )
    })?;
    ensure!(
        path.is_file(),
        "apt-get download {spec} did not write {}",
        path.display()
    );
    prune_older(debs, &path);
    Ok(path)
}

/// Removes the cached `.deb` files that `fresh` replaces (same package, or another kernel ABI),
/// so that kernel updates do not pile up 70 MB each.
fn prune_older(debs: &Path, fresh: &Path) {
    let Some(fresh_name) = fresh.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let family = |name: &str| -> String {
        let package = name.split('_').next().unwrap_or("");
        if package.starts_with("linux-image-") {
            "linux-image-".to_string()
        } else {
            format!("{package}_")
        }
    };
    let Ok(entries) = fs::read_dir(debs) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != fresh_name && name.ends_with(".deb") && family(&name) == family(fresh_name) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// `apt-cache show` of the candidate version.
fn apt_show(package: &str) -> Result<String> {
    let output = run_captured(Command::new("apt-cache").args([
        "show",
        "--no-all-versions",
        package,
    ]))
    .with_context(|| {
        format!(
            "apt-cache knows no {package}: run `apt-get update` (as root) to fetch Debian's \
                 package lists"
        )
    })?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    ensure!(
        control_field(&text, "Package").is_some(),
        "apt-cache show {package} printed no package (run `apt-get update`)"
    );
    Ok(text)
}

/// The newest-looking `.deb` in `debs` whose name starts with `prefix` and whose package name ends
/// with `suffix` (the last in name order).
fn cached_deb(debs: &Path, prefix: &str, suffix: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(debs)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let package = name.split('_').next().unwrap_or("");
            name.starts_with(prefix)
                && name.ends_with(".deb")
                && package.ends_with(suffix)
                && package != KERNEL_META_PACKAGE
        })
        .collect();
    found.sort();
    let path = found.pop()?;
    eprintln!(
        "keel: package lists unavailable, using the cached {}",
        path.display()
    );
    Some(path)
}

/// The value of `field` in a Debian control stanza (the first stanza that has it).
pub fn control_field(stanza: &str, field: &str) -> Option<String> {
    stanza.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == field).then(|| value.trim().to_string())
    })
}

/// The `linux-image-*` package named in a `Depends` value such as
/// `linux-image-6.1.0-56-amd64 (= 6.1.192-2)`.
pub fn kernel_package_name(depends: &str) -> Option<String> {
    depends
        .split([',', '|'])
        .map(|alternative| alternative.split_whitespace().next().unwrap_or(""))
        .find(|name| name.starts_with("linux-image-"))
        .map(str::to_string)
}

/// The file name `apt-get download` gives a package (the epoch's `:` is escaped as `%3a`).
pub fn deb_file_name(package: &str, version: &str, arch: &str) -> String {
    format!("{package}_{}_{arch}.deb", version.replace(':', "%3a"))
}

/// Unpacks the files of `deb` into `dest` (no maintainer scripts run; no root needed).
fn unpack_deb(deb: &Path, dest: &Path) -> Result<()> {
    fs::create_dir_all(dest)?;
    run_captured(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dest)).with_context(|| {
        format!(
            "unpacking {} (if the file is damaged, delete it to download it again)",
            deb.display()
        )
    })?;
    Ok(())
}

/// The release of the one `vmlinuz-<release>` in `boot`.
fn kernel_release(boot: &Path) -> Result<String> {
    let mut releases: Vec<String> = fs::read_dir(boot)
        .with_context(|| format!("reading {}", boot.display()))?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("vmlinuz-").map(str::to_string)
        })
        .collect();
    ensure!(
        releases.len() == 1,
        "expected one vmlinuz in {}, found {releases:?}",
        boot.display()
    );
    Ok(releases.remove(0))
}

/// The `CONFIG_*` symbols set in a kernel `.config` (`=y`, `=m`, strings, numbers); unset ones
/// (`# CONFIG_X is not set`) are absent.
pub fn parse_kernel_config(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|line| line.starts_with("CONFIG_"))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// Splits `modules` into those to load (`=m`) and those built in (`=y`); a module the kernel lacks
/// altogether is an error.
pub fn split_built_in(
    config: &BTreeMap<String, String>,
    modules: &[GuestModule],
) -> Result<(Vec<String>, Vec<String>)> {
    let mut load = Vec::new();
    let mut built_in = Vec::new();
    for module in modules {
        match config.get(module.config).map(String::as_str) {
            Some("m") => load.push(module.name.to_string()),
            Some("y") => built_in.push(module.name.to_string()),
            other => bail!(
                "the kernel has no {} ({} is {})",
                module.name,
                module.config,
                other.unwrap_or("not set")
            ),
        }
    }
    Ok((load, built_in))
}

/// A module's file (relative to `lib/modules/<release>`) and the modules it needs loaded first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleInfo {
    pub path: String,
    pub depends: Vec<String>,
}

/// Modules by name (with `_` for `-`, as the kernel compares them).
pub type ModuleGraph = BTreeMap<String, ModuleInfo>;

/// The kernel's name of a module given as a name or a path: `kernel/x/vfio-pci.ko` is `vfio_pci`.
pub fn module_name(path_or_name: &str) -> String {
    let file = path_or_name.rsplit('/').next().unwrap_or(path_or_name);
    let stem = file
        .strip_suffix(".ko")
        .or_else(|| file.split_once(".ko.").map(|(stem, _)| stem))
        .unwrap_or(file);
    stem.replace('-', "_")
}

/// Parses depmod's `modules.dep`: `path: dep-path dep-path ...` per module.
pub fn parse_modules_dep(text: &str) -> Result<ModuleGraph> {
    let mut graph = ModuleGraph::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let (path, deps) = line
            .split_once(':')
            .ok_or_else(|| anyhow!("modules.dep line without ':': {line:?}"))?;
        graph.insert(
            module_name(path),
            ModuleInfo {
                path: path.trim().to_string(),
                depends: deps.split_whitespace().map(module_name).collect(),
            },
        );
    }
    Ok(graph)
}

/// `modules.dep` for `modules` (in load order): each module with all it depends on, listed in the
/// reverse of load order, as depmod writes it and modprobe reads it.
pub fn modules_dep_text(graph: &ModuleGraph, modules: &[String]) -> Result<String> {
    let mut text = String::new();
    for name in modules {
        let mut needs = load_order(graph, std::slice::from_ref(name))?;
        needs.pop(); // the module itself comes last
        text.push_str(&graph[name].path);
        text.push(':');
        for dep in needs.iter().rev() {
            text.push(' ');
            text.push_str(&graph[dep].path);
        }
        text.push('\n');
    }
    Ok(text)
}

/// The modules to `insmod`, dependencies before their users, for loading `wanted`; each module
/// appears once. Fails on a missing module or a dependency cycle.
pub fn load_order(graph: &ModuleGraph, wanted: &[String]) -> Result<Vec<String>> {
    fn visit(
        graph: &ModuleGraph,
        name: &str,
        order: &mut Vec<String>,
        visiting: &mut Vec<String>,
    ) -> Result<()> {
        if order.iter().any(|done| done == name) {
            return Ok(());
        }
        if visiting.iter().any(|v| v == name) {
            bail!(
                "module dependency cycle: {} -> {name}",
                visiting.join(" -> ")
            );
        }
        let info = graph.get(name).ok_or_else(|| match visiting.last() {
            Some(user) => anyhow!("module {name} (needed by {user}) is not in the kernel package"),
            None => anyhow!("module {name} is not in the kernel package"),
        })?;
        visiting.push(name.to_string());
        for dep in &info.depends {
            visit(graph, dep, order, visiting)?;
        }
        visiting.pop();
        order.push(name.to_string());
        Ok(())
    }
    let mut order = Vec::new();
    for name in wanted {
        visit(graph, &module_name(name), &mut order, &mut Vec::new())?;
    }
    Ok(order)
}

/// The dependency graph of `wanted` and everything they need, from each module's `.modinfo`.
fn graph_from_modinfo(module_root: &Path, wanted: &[String]) -> Result<ModuleGraph> {
    let mut files = BTreeMap::new();
    index_modules(module_root, &module_root.join("kernel"), &mut files)?;
    let mut graph = ModuleGraph::new();
    let mut pending: Vec<String> = wanted.iter().map(|n| module_name(n)).collect();
    while let Some(name) = pending.pop() {
        if graph.contains_key(&name) {
            continue;
        }
        let path: &String = files
            .get(&name)
            .ok_or_else(|| anyhow!("module {name} is not in {}", module_root.display()))?;
        let elf = read(&module_root.join(path))?;
        let info = modinfo(&elf).with_context(|| format!("reading the modinfo of {path}"))?;
        let depends: Vec<String> = info
            .iter()
            .filter(|(key, _)| key == "depends")
            .flat_map(|(_, value)| value.split(','))
            .filter(|dep| !dep.is_empty())
            .map(module_name)
            .collect();
        pending.extend(depends.iter().cloned());
        graph.insert(
            name,
            ModuleInfo {
                path: path.clone(),
                depends,
            },
        );
    }
    Ok(graph)
}

/// Every `.ko` file under `dir`, by module name, as paths relative to `root`.
fn index_modules(root: &Path, dir: &Path, files: &mut BTreeMap<String, String>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            index_modules(root, &path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "ko") {
            let relative = path.strip_prefix(root)?.to_string_lossy().into_owned();
            files.insert(module_name(&relative), relative);
        }
    }
    Ok(())
}

/// The `key=value` entries of an ELF64 little-endian module's `.modinfo` section.
pub fn modinfo(elf: &[u8]) -> Result<Vec<(String, String)>> {
    ensure!(
        elf.len() >= 64 && elf.starts_with(b"\x7fELF") && elf[4] == 2 && elf[5] == 1,
        "not a 64-bit little-endian ELF file"
    );
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let truncated = || anyhow!("truncated ELF file");
    let section_table = u64_at(0x28).ok_or_else(truncated)? as usize;
    let entry_size = u16_at(0x3a).ok_or_else(truncated)? as usize;
    let count = u16_at(0x3c).ok_or_else(truncated)? as usize;
    let names_index = u16_at(0x3e).ok_or_else(truncated)? as usize;
    ensure!(entry_size >= 0x28, "bad section header size {entry_size}");
    let section = |index: usize| -> Result<(u32, &[u8])> {
        let header = section_table + index * entry_size;
        let name = u32_at(header).ok_or_else(truncated)?;
        let offset = u64_at(header + 0x18).ok_or_else(truncated)? as usize;
        let size = u64_at(header + 0x20).ok_or_else(truncated)? as usize;
        let data = elf
            .get(offset..offset.checked_add(size).ok_or_else(truncated)?)
            .ok_or_else(truncated)?;
        Ok((name, data))
    };
    let (_, names) = section(names_index)?;
    for index in 0..count {
        let (name, data) = section(index)?;
        let name = names.get(name as usize..).ok_or_else(truncated)?;
        if name.starts_with(b".modinfo\0") {
            return Ok(data
                .split(|&b| b == 0)
                .filter_map(|entry| {
                    let entry = std::str::from_utf8(entry).ok()?;
                    let (key, value) = entry.split_once('=')?;
                    Some((key.to_string(), value.to_string()))
                })
                .collect());
        }
    }
    bail!("no .modinfo section")
}

/// The applets of `busybox` as paths (`bin/sh`, `usr/bin/wget`, ...), from its own
/// `--list-full` (it is a static x86_64 binary, so it runs on the host).
fn busybox_applets(busybox: &Path) -> Result<Vec<String>> {
    let output = run_captured(Command::new(busybox).arg("--list-full"))
        .context("listing busybox's applets")?;
    let applets: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.trim().trim_start_matches('/').to_string())
        .filter(|line| !line.is_empty() && line != "bin/busybox")
        .collect();
    ensure!(
        applets.iter().any(|a| a == "bin/sh"),
        "busybox has no sh applet"
    );
    Ok(applets)
}

/// udhcpc's event script: it gets the event in `$1` and the lease in the environment.
pub const DHCP_EVENT_SCRIPT: &str = r#"#!/bin/sh
# udhcpc event script (keel linux-image): $1 is the event, the lease is in $ip, $subnet,
# $router and $dns.
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound|renew)
    ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}"
    while route del default dev "$interface" 2>/dev/null; do :; done
    for gateway in $router; do
        route add default gw "$gateway" dev "$interface"
        break
    done
    : >/etc/resolv.conf
    for server in $dns; do
        echo "nameserver $server" >>/etc/resolv.conf
    done
    ;;
esac
exit 0
"#;

/// `/init`: mount the kernel file systems, load `modules` (paths under
/// `/lib/modules/<release>`, in load order), configure eth0 by DHCP, run the extra files'
/// start-up scripts, print [`READY_MARKER`], then a shell on the console; power off when it ends.
pub fn init_script(release: &str, modules: &[String]) -> String {
    let mut insmods = String::new();
    for module in modules {
        insmods.push_str(&format!(
            "insmod /lib/modules/{release}/{module} || echo \"{ERROR_PREFIX}insmod {module} failed\"\n"
        ));
    }
    format!(
        r#"#!/bin/sh
# /init of Keel's Linux yardstick (written by keel linux-image).
export PATH=/sbin:/usr/sbin:/bin:/usr/bin HOME=/root TERM=vt100
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
hostname linux
{insmods}ip link set lo up
if ip link set eth0 up 2>/dev/null; then
    # DHCP once the link is up: a discover sent before is lost, and retried a second later.
    tries=0
    while [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" != 1 ] && [ $tries -lt 100 ]; do
        usleep 50000
        tries=$((tries + 1))
    done
    udhcpc -i eth0 -s /{DHCP_SCRIPT} -f -q -n -t 20 -T 1 -A 1 >/dev/null 2>&1 \
        || echo "{ERROR_PREFIX}no DHCP lease on eth0"
else
    echo "{ERROR_PREFIX}no eth0"
fi
for script in /etc/init.d/*.sh; do
    [ -x "$script" ] && {{ "$script" || echo "{ERROR_PREFIX}$script failed"; }}
done
# Kernel messages from here on would interleave with the shell's output.
dmesg -n 1
echo "linux: eth0 $(ip -4 -o addr show dev eth0 2>/dev/null | sed -n 's/.* inet \([0-9./]*\).*/\1/p')"
echo "{READY_MARKER}"
# A wide terminal keeps busybox's line editor from wrapping long commands.
stty cols 1024 rows 48 2>/dev/null
PS1='{PROMPT}' setsid cttyhack sh
echo "linux: the shell ended; powering off"
poweroff -f
"#
    )
}

/// The initramfs tree, kept sorted so that every directory precedes its contents.
#[derive(Default)]
struct Tree {
    nodes: BTreeMap<String, Node>,
}

enum Node {
    Dir(u32),
    File(u32, Vec<u8>),
    Symlink(String),
    CharDevice(u32, u32, u32),
}

impl Tree {
    fn insert(&mut self, path: &str, node: Node) {
        let path = path.trim_matches('/').to_string();
        let mut parent = path.as_str();
        while let Some((up, _)) = parent.rsplit_once('/') {
            self.nodes.entry(up.to_string()).or_insert(Node::Dir(0o755));
            parent = up;
        }
        self.nodes.insert(path, node);
    }

    fn dir(&mut self, path: &str, mode: u32) {
        self.insert(path, Node::Dir(mode));
    }

    fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        self.insert(path, Node::File(mode, data));
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.insert(path, Node::Symlink(target.to_string()));
    }

    fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) {
        self.insert(path, Node::CharDevice(mode, major, minor));
    }

    /// Adds everything under the host directory `dir` at `prefix`, keeping file modes and
    /// symbolic links; it replaces generated entries of the same name.
    fn add_host_dir(&mut self, dir: &Path, prefix: &str) -> Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let name = entry
                .file_name()
                .into_string()
                .map_err(|name| anyhow!("file name {name:?} is not UTF-8"))?;
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let host = entry.path();
            let meta = fs::symlink_metadata(&host)?;
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&host)?;
                self.symlink(&path, &target.to_string_lossy());
            } else if meta.is_dir() {
                self.dir(&path, mode);
                self.add_host_dir(&host, &path)?;
            } else if meta.is_file() {
                self.file(&path, mode, read(&host)?);
            } else {
                bail!("{} is not a file, directory or link", host.display());
            }
        }
        Ok(())
    }

    fn to_cpio(&self) -> Result<Vec<u8>> {
        let mut writer = CpioWriter::new(Vec::new());
        for (path, node) in &self.nodes {
            match node {
                Node::Dir(mode) => writer.dir(path, *mode)?,
                Node::File(mode, data) => writer.file(path, *mode, data)?,
                Node::Symlink(target) => writer.symlink(path, target)?,
                Node::CharDevice(mode, major, minor) => {
                    writer.char_device(path, *mode, *major, *minor)?
                }
            }
        }
        writer.finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(error).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// One line saying what was built, for `keel linux-image`.
pub fn summary(built: &BuiltImage) -> String {
    format!(
        "kernel {} ({}), initramfs {} ({} KiB): modules {}{}; {RUNNER_GUEST_PATH} and drivers {}",
        built.release,
        built.image.kernel.display(),
        built.image.initramfs.display(),
        built.initramfs_bytes.div_ceil(1024),
        built.modules.join(" "),
        if built.built_in.is_empty() {
            String::new()
        } else {
            format!("; built in: {}", built.built_in.join(" "))
        },
        built.drivers.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(text: &str) -> ModuleGraph {
        parse_modules_dep(text).unwrap()
    }

    const DEP: &str = "\
kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko kernel/drivers/ata/libata.ko kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko
kernel/drivers/ata/libahci.ko: kernel/drivers/ata/libata.ko kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko
kernel/drivers/ata/libata.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/scsi_mod.ko: kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/scsi_common.ko:
kernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/pci/vfio-pci-core.ko kernel/drivers/vfio/vfio.ko
kernel/drivers/vfio/pci/vfio-pci-core.ko: kernel/drivers/vfio/vfio.ko
kernel/drivers/vfio/vfio.ko:
kernel/drivers/net/ethernet/intel/e1000/e1000.ko:
";

    #[test]
    fn module_names_use_underscores_and_drop_the_suffix() {
        assert_eq!(
            module_name("kernel/drivers/vfio/pci/vfio-pci.ko"),
            "vfio_pci"
        );
        assert_eq!(module_name("crc-t10dif"), "crc_t10dif");
        assert_eq!(module_name("kernel/fs/fat/vfat.ko.xz"), "vfat");
    }

    #[test]
    fn load_order_puts_dependencies_first_once() {
        let graph = graph(DEP);
        assert_eq!(
            graph["vfio_pci"].depends,
            ["vfio_pci_core", "vfio"].map(String::from)
        );
        let order = load_order(
            &graph,
            &["e1000", "ahci", "vfio-pci", "libata"].map(String::from),
        )
        .unwrap();
        assert_eq!(
            order,
            [
                "e1000",
                "scsi_common",
                "scsi_mod",
                "libata",
                "libahci",
                "ahci",
                "vfio",
                "vfio_pci_core",
                "vfio_pci"
            ]
        );
    }

    #[test]
    fn missing_modules_and_cycles_are_errors() {
        let error = load_order(&graph(DEP), &["nbd".into()]).unwrap_err();
        assert!(error.to_string().contains("nbd"), "{error}");
        let broken = graph("a.ko: b.ko\n");
        let error = load_order(&broken, &["a".into()]).unwrap_err();
        assert!(error.to_string().contains("b (needed by a)"), "{error}");
        let cycle = graph("a.ko: b.ko\nb.ko: a.ko\n");
        let error = load_order(&cycle, &["a".into()]).unwrap_err();
        assert!(error.to_string().contains("cycle"), "{error}");
        assert!(parse_modules_dep("no colon here\n").is_err());
    }

    #[test]
    fn modules_dep_is_written_as_depmod_does_and_reads_back() {
        let graph = graph(DEP);
        let order = load_order(&graph, &["ahci".into(), "e1000".into()]).unwrap();
        let text = modules_dep_text(&graph, &order).unwrap();
        assert_eq!(
            text,
            "kernel/drivers/scsi/scsi_common.ko:\n\
             kernel/drivers/scsi/scsi_mod.ko: kernel/drivers/scsi/scsi_common.ko\n\
             kernel/drivers/ata/libata.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko\n\
             kernel/drivers/ata/libahci.ko: kernel/drivers/ata/libata.ko kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko\n\
             kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko kernel/drivers/ata/libata.ko kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko\n\
             kernel/drivers/net/ethernet/intel/e1000/e1000.ko:\n"
        );
        let again = parse_modules_dep(&text).unwrap();
        assert_eq!(load_order(&again, &["ahci".into()]).unwrap(), order[..5]);
    }

    /// A minimal ELF64 file with a section-name table and a `.modinfo` section.
    fn fake_module(modinfo: &[u8]) -> Vec<u8> {
        let names = b"\0.shstrtab\0.modinfo\0";
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let names_at = elf.len();
        elf.extend_from_slice(names);
        let info_at = elf.len();
        elf.extend_from_slice(modinfo);
        while !elf.len().is_multiple_of(8) {
            elf.push(0);
        }
        let table = elf.len();
        let mut header = |name: u32, offset: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(offset as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        };
        header(0, 0, 0);
        header(1, names_at, names.len());
        header(11, info_at, modinfo.len());
        elf[0x28..0x30].copy_from_slice(&(table as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    #[test]
    fn modinfo_reads_the_section_entries() {
        let elf = fake_module(b"license=GPL\0depends=vfio-pci-core,vfio\0name=vfio_pci\0\0");
        let info = modinfo(&elf).unwrap();
        assert_eq!(
            info,
            [
                ("license", "GPL"),
                ("depends", "vfio-pci-core,vfio"),
                ("name", "vfio_pci")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert!(modinfo(b"\x7fELF").is_err());
        assert!(modinfo(&elf[..elf.len() - 40]).is_err());
        let no_section = fake_module(b"");
        let mut renamed = no_section.clone();
        renamed[64 + 11] = b'x'; // ".modinfo" -> "xmodinfo"
        assert!(modinfo(&renamed).is_err());
    }

    #[test]
    fn modules_are_read_from_a_kernel_tree_following_dependencies() {
        let root = std::env::temp_dir().join(format!("keel-linux-mods-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let files = [
            ("kernel/fs/fat/vfat.ko", "depends=fat\0name=vfat\0"),
            ("kernel/fs/fat/fat.ko", "depends=\0name=fat\0"),
            ("kernel/drivers/x/unrelated.ko", "depends=missing\0"),
        ];
        for (path, info) in files {
            let path = root.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, fake_module(info.as_bytes())).unwrap();
        }
        let graph = graph_from_modinfo(&root, &["vfat".into()]).unwrap();
        assert_eq!(graph.keys().collect::<Vec<_>>(), ["fat", "vfat"]);
        assert_eq!(graph["vfat"].path, "kernel/fs/fat/vfat.ko");
        assert_eq!(
            load_order(&graph, &["vfat".into()]).unwrap(),
            ["fat", "vfat"]
        );
        assert!(graph_from_modinfo(&root, &["unrelated".into()]).is_err());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn config_says_which_modules_are_built_in() {
        let config = parse_kernel_config(
            "# comment\nCONFIG_E1000=m\nCONFIG_SATA_AHCI=y\n# CONFIG_TUN is not set\n\
             CONFIG_FAT_DEFAULT_IOCHARSET=\"ascii\"\n",
        );
        assert_eq!(config["CONFIG_FAT_DEFAULT_IOCHARSET"], "\"ascii\"");
        let (load, built_in) = split_built_in(&config, &GUEST_MODULES[..2]).unwrap();
        assert_eq!(load, ["e1000"]);
        assert_eq!(built_in, ["ahci"]);
        let tun = [module("tun", "CONFIG_TUN")];
        let error = split_built_in(&config, &tun).unwrap_err();
        assert!(
            error.to_string().contains("CONFIG_TUN is not set"),
            "{error}"
        );
    }

    #[test]
    fn the_versioned_kernel_package_comes_from_the_metapackage() {
        let show = "Package: linux-image-amd64\nSource: linux-signed-amd64 (6.1.192+2)\n\
                    Version: 6.1.192-2\nArchitecture: amd64\n\
                    Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)\nDescription: Linux\n";
        let depends = control_field(show, "Depends").unwrap();
        assert_eq!(
            kernel_package_name(&depends).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(control_field(show, "Version").as_deref(), Some("6.1.192-2"));
        assert_eq!(control_field(show, "Missing"), None);
        assert_eq!(kernel_package_name("libc6 (>= 2), initramfs-tools"), None);
        assert_eq!(
            deb_file_name("busybox-static", "1:1.35.0-4+deb12u1+b1", "amd64"),
            "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb"
        );
    }

    #[test]
    fn a_fresh_download_replaces_older_debs_of_its_package() {
        let debs = std::env::temp_dir().join(format!("keel-linux-debs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&debs);
        fs::create_dir_all(&debs).unwrap();
        let names = [
            "linux-image-6.1.0-50-amd64_6.1.176-1_amd64.deb",
            "linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb",
            "busybox-static_1%3a1.35.0-3_amd64.deb",
            "busybox-static_1%3a1.35.0-4_amd64.deb",
            "notes.txt",
        ];
        for name in names {
            fs::write(debs.join(name), b"").unwrap();
        }
        let left = || {
            let mut names: Vec<String> = fs::read_dir(&debs)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        prune_older(&debs, &debs.join(names[1]));
        assert_eq!(left(), [names[2], names[3], names[1], names[4]]);
        prune_older(&debs, &debs.join(names[3]));
        assert_eq!(left(), [names[3], names[1], names[4]]);
        assert_eq!(
            cached_deb(&debs, "linux-image-", "-amd64"),
            Some(debs.join(names[1]))
        );
        assert_eq!(
            cached_deb(&debs, "busybox-static_", ""),
            Some(debs.join(names[3]))
        );
        fs::remove_dir_all(&debs).unwrap();
    }

    #[test]
    fn init_loads_modules_in_order_then_announces_and_prompts() {
        let script = init_script(
            "6.1.0-1-amd64",
            &["kernel/a/first.ko".into(), "kernel/b/second.ko".into()],
        );
        assert!(script.starts_with("#!/bin/sh\n"));
        let first = script
            .find("insmod /lib/modules/6.1.0-1-amd64/kernel/a/first.ko ||")
            .unwrap();
        let second = script.find("kernel/b/second.ko ||").unwrap();
        let dhcp = script.find("udhcpc -i eth0").unwrap();
        let ready = script.find(&format!("echo \"{READY_MARKER}\"")).unwrap();
        let shell = script.find(&format!("PS1='{PROMPT}'")).unwrap();
        assert!(first < second && second < dhcp && dhcp < ready && ready < shell);
        assert!(script.contains(&format!("-s /{DHCP_SCRIPT}")));
    }

    fn find(haystack: &[u8], needle: &[u8]) -> usize {
        haystack
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("present")
    }

    #[test]
    fn tree_adds_parents_first_and_extra_files_override() {
        let extra = std::env::temp_dir().join(format!("keel-linux-extra-{}", std::process::id()));
        let _ = fs::remove_dir_all(&extra);
        fs::create_dir_all(extra.join("opt/keel")).unwrap();
        fs::write(extra.join("opt/keel/run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(
            extra.join("opt/keel/run.sh"),
            fs::Permissions::from_mode(0o750),
        )
        .unwrap();
        fs::write(extra.join("init"), "#!/bin/sh\necho custom\n").unwrap();
        std::os::unix::fs::symlink("run.sh", extra.join("opt/keel/go")).unwrap();

        let mut tree = Tree::default();
        tree.file("init", 0o755, b"generated".to_vec());
        tree.symlink("usr/bin/wget", "/bin/busybox");
        tree.add_host_dir(&extra, "").unwrap();
        let paths: Vec<&str> = tree.nodes.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                "init",
                "opt",
                "opt/keel",
                "opt/keel/go",
                "opt/keel/run.sh",
                "usr",
                "usr/bin",
                "usr/bin/wget"
            ]
        );
        assert!(
            matches!(&tree.nodes["init"], Node::File(_, data) if data == b"#!/bin/sh\necho custom\n")
        );
        assert!(matches!(
            &tree.nodes["opt/keel/run.sh"],
            Node::File(0o750, _)
        ));
        assert!(matches!(&tree.nodes["opt/keel/go"], Node::Symlink(t) if t == "run.sh"));
        let archive = tree.to_cpio().unwrap();
        assert_eq!(archive.len() % 4, 0);
        assert!(find(&archive, b"opt/keel/run.sh\0") < find(&archive, b"usr/bin/wget\0"));
        fs::remove_dir_all(&extra).unwrap();
    }
}
