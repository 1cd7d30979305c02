//! The bootable ISO: GRUB (BIOS, from `grub-pc-bin`) loading the kernel with multiboot2.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::apps::App;
use crate::drivers::BootDriver;
use crate::paths::Layout;
use crate::process::run_captured;

/// Where the kernel sits inside the ISO.
pub const KERNEL_ISO_PATH: &str = "boot/keel-kernel";

/// Where the ISO keeps a boot driver's component as it was built (GRUB loads only the
/// precompiled module): the very bytes the Linux runner loads, to be compared with.
pub fn driver_component_iso_path(name: &str) -> String {
    format!("boot/drivers/{name}.wasm")
}

/// GRUB's configuration: boot Keel at once. GRUB itself writes only to the (absent) VGA console, so
/// the serial log starts with the kernel's own output.
pub const GRUB_CFG: &str = "\
set timeout=0
set default=0

menuentry \"Keel\" {
    multiboot2 /boot/keel-kernel
    boot
}
";

/// Lays out the ISO tree and runs `grub-mkrescue`. Returns the ISO's path. The ISO is written
/// under a temporary name and renamed, so a reader never sees a half-written image.
pub fn make_iso(
    layout: &Layout,
    kernel_elf: &Path,
    apps: &[App],
    drivers: &[BootDriver],
) -> Result<PathBuf> {
    let root = layout.iso_root();
    stage_iso_tree(&root, kernel_elf)?;
    let modules: Vec<Module> = apps
        .iter()
        .map(|app| Module {
            iso_path: format!("boot/apps/{}.cwasm.lz4", app.name),
            artifact: app.artifact.clone(),
            command_line: app.name.clone(),
        })
        .chain(drivers.iter().map(|driver| Module {
            iso_path: format!("boot/drivers/{}.cwasm.lz4", driver.name),
            artifact: driver.artifact.clone(),
            command_line: driver.command_line.clone(),
        }))
        .collect();
    stage_modules(&root, &modules)?;
    stage_driver_components(&root, drivers)?;
    let iso = layout.iso();
    let partial = iso.with_extension("iso.partial");
    run_captured(
        Command::new("grub-mkrescue")
            .arg("-o")
            .arg(&partial)
            .arg(&root),
    )?;
    fs::rename(&partial, &iso)
        .with_context(|| format!("renaming {} to {}", partial.display(), iso.display()))?;
    Ok(absolute(&iso))
}

/// Recreates `root` with the kernel and `grub.cfg`.
fn stage_iso_tree(root: &Path, kernel_elf: &Path) -> Result<()> {
    if root.exists() {
        fs::remove_dir_all(root).with_context(|| format!("clearing {}", root.display()))?;
    }
    let grub_dir = root.join("boot/grub");
    fs::create_dir_all(&grub_dir).with_context(|| format!("creating {}", grub_dir.display()))?;
    let kernel_dest = root.join(KERNEL_ISO_PATH);
    stage_kernel(kernel_elf, &kernel_dest)?;
    fs::write(grub_dir.join("grub.cfg"), GRUB_CFG).context("writing grub.cfg")?;
    Ok(())
}

/// A multiboot2 module: a precompiled program or driver and its command line.
struct Module {
    iso_path: String,
    artifact: PathBuf,
    command_line: String,
}

/// Copies the modules into the ISO tree, LZ4-compressed, and lists them in `grub.cfg`.
fn stage_modules(root: &Path, modules: &[Module]) -> Result<()> {
    if modules.is_empty() {
        return Ok(());
    }
    let mut lines = String::new();
    for module in modules {
        // LZ4-compressed: GRUB reads modules through the BIOS, slowly under TCG, and the kernel
        // decompresses a module only when it first uses it.
        let dest = root.join(&module.iso_path);
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let bytes = fs::read(&module.artifact)
            .with_context(|| format!("reading {}", module.artifact.display()))?;
        fs::write(&dest, lz4_flex::compress_prepend_size(&bytes))
            .with_context(|| format!("writing {}", dest.display()))?;
        lines.push_str(&format!(
            "    module2 /{} {}\n",
            module.iso_path, module.command_line
        ));
    }
    let cfg = GRUB_CFG.replace("    boot\n", &format!("{lines}    boot\n"));
    fs::write(root.join("boot/grub/grub.cfg"), cfg).context("writing grub.cfg")
}

/// Copies each driver's component to [`driver_component_iso_path`].
fn stage_driver_components(root: &Path, drivers: &[BootDriver]) -> Result<()> {
    for driver in drivers {
        let dest = root.join(driver_component_iso_path(&driver.name));
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        fs::copy(&driver.component, &dest).with_context(|| {
            format!(
                "copying {} to {}",
                driver.component.display(),
                dest.display()
            )
        })?;
    }
    Ok(())
}

/// Puts the kernel in the ISO without its debug sections: GRUB reads the whole file through the
/// BIOS, and the debug information (most of the ELF) made booting seconds slower under TCG.
/// The unwinder needs only `.eh_frame`, which stays. Falls back to a plain copy if `objcopy` is
/// missing, so tests that stage a fake ELF still work.
fn stage_kernel(kernel_elf: &Path, dest: &Path) -> Result<()> {
    let stripped = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(kernel_elf)
        .arg(dest)
        .output()
        .is_ok_and(|out| out.status.success());
    if !stripped {
        fs::copy(kernel_elf, dest)
            .with_context(|| format!("copying {} to {}", kernel_elf.display(), dest.display()))?;
    }
    Ok(())
}

/// `path` made absolute (paths from [`Layout`] already are; this guards `CARGO_TARGET_DIR`).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_config_boots_the_kernel_without_waiting() {
        assert!(GRUB_CFG.contains("set timeout=0"));
        assert!(GRUB_CFG.contains("set default=0"));
        assert!(GRUB_CFG.contains(&format!("multiboot2 /{KERNEL_ISO_PATH}")));
    }

    #[test]
    fn stages_kernel_and_config() {
        let dir = std::env::temp_dir().join(format!("keel-iso-test-{}", std::process::id()));
        let elf = dir.join("kernel.elf");
        fs::create_dir_all(&dir).unwrap();
        fs::write(&elf, b"\x7fELF").unwrap();
        let root = dir.join("iso");
        fs::create_dir_all(root.join("stale")).unwrap();

        stage_iso_tree(&root, &elf).unwrap();

        assert_eq!(fs::read(root.join(KERNEL_ISO_PATH)).unwrap(), b"\x7fELF");
        assert_eq!(
            fs::read_to_string(root.join("boot/grub/grub.cfg")).unwrap(),
            GRUB_CFG
        );
        assert!(!root.join("stale").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lists_programs_and_drivers_as_compressed_modules() {
        let dir = std::env::temp_dir().join(format!("keel-modules-test-{}", std::process::id()));
        let root = dir.join("iso");
        fs::create_dir_all(root.join("boot/grub")).unwrap();
        let artifact = dir.join("x.cwasm");
        fs::write(&artifact, b"precompiled").unwrap();
        let modules = [
            Module {
                iso_path: "boot/apps/hello.cwasm.lz4".into(),
                artifact: artifact.clone(),
                command_line: "hello".into(),
            },
            Module {
                iso_path: "boot/drivers/test-edu.cwasm.lz4".into(),
                artifact,
                command_line: "driver test-edu world=test-driver match=1234:11e8".into(),
            },
        ];
        stage_modules(&root, &modules).unwrap();
        let cfg = fs::read_to_string(root.join("boot/grub/grub.cfg")).unwrap();
        assert!(
            cfg.contains("    module2 /boot/apps/hello.cwasm.lz4 hello\n"),
            "{cfg}"
        );
        assert!(
            cfg.contains("    module2 /boot/drivers/test-edu.cwasm.lz4 driver test-edu world=test-driver match=1234:11e8\n    boot\n"),
            "{cfg}"
        );
        let packed = fs::read(root.join("boot/drivers/test-edu.cwasm.lz4")).unwrap();
        assert_eq!(
            lz4_flex::decompress_size_prepended(&packed).unwrap(),
            b"precompiled"
        );

        let component = dir.join("test-edu.wasm");
        fs::write(&component, b"\0asm component").unwrap();
        let driver = BootDriver {
            name: "test-edu".into(),
            component,
            artifact: dir.join("x.cwasm"),
            command_line: String::new(),
        };
        stage_driver_components(&root, &[driver]).unwrap();
        assert_eq!(
            fs::read(root.join(driver_component_iso_path("test-edu"))).unwrap(),
            b"\0asm component"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
