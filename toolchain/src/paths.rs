//! Where things live: the repository, the pinned toolchain, and the build outputs under `target/`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The built-in Rust target the kernel is compiled for.
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";
/// The cargo package (and binary) name of the kernel image.
pub const KERNEL_PACKAGE: &str = "keel-kernel";

/// Debug or release build of the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    #[default]
    Release,
    Debug,
}

impl Profile {
    /// The directory cargo writes this profile's artifacts to.
    pub fn dir_name(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
        }
    }
}

/// The paths of the repository and of everything the tools produce.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
    target: PathBuf,
}

impl Layout {
    /// The layout of the repository this tool was built from. Honours `CARGO_TARGET_DIR`.
    pub fn discover() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the toolchain crate lives one level below the repository root")
            .to_path_buf();
        let target = match env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => root.join(dir),
            None => root.join("target"),
        };
        Self { root, target }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The kernel ELF cargo produces for `profile`.
    pub fn kernel_elf(&self, profile: Profile) -> PathBuf {
        self.target
            .join(KERNEL_TARGET)
            .join(profile.dir_name())
            .join(KERNEL_PACKAGE)
    }

    /// `target/keel`: the image, its staging tree and the disk image.
    pub fn keel_dir(&self) -> PathBuf {
        self.target.join("keel")
    }

    /// The bootable GRUB ISO.
    pub fn iso(&self) -> PathBuf {
        self.keel_dir().join("keel.iso")
    }

    /// The directory tree `grub-mkrescue` turns into the ISO.
    pub fn iso_root(&self) -> PathBuf {
        self.keel_dir().join("iso")
    }

    /// The raw disk image attached to the AHCI controller by `keel run`.
    pub fn disk_image(&self) -> PathBuf {
        self.keel_dir().join("disk.img")
    }

    /// `target/drivers-wasm`: the driver components (`<name>.wasm`) and the guest cargo build.
    pub fn drivers_dir(&self) -> PathBuf {
        self.target.join("drivers-wasm")
    }

    /// `target/bench`: the benchmark reports.
    pub fn bench_dir(&self) -> PathBuf {
        self.target.join("bench")
    }

    /// `target/linux`: the Linux yardstick's kernel and initramfs, and the Debian packages they
    /// are made from (`debs/`, kept between builds).
    pub fn linux_dir(&self) -> PathBuf {
        self.target.join("linux")
    }

    /// The Linux image the tests boot: in `$KEEL_LINUX_DIR` if set, else [`Layout::linux_dir`].
    pub fn linux_dir_for_tests(&self) -> PathBuf {
        env::var_os("KEEL_LINUX_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.linux_dir())
    }

    /// The ISO the tests boot: `$KEEL_ISO` if set, else [`Layout::iso`].
    pub fn iso_for_tests(&self) -> PathBuf {
        env::var_os("KEEL_ISO")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.iso())
    }

    /// The toolchain `channel` pinned in `rust-toolchain.toml`.
    pub fn toolchain_channel(&self) -> Result<String> {
        let path = self.root.join("rust-toolchain.toml");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        match parse_toolchain_channel(&text) {
            Some(channel) => Ok(channel),
            None => bail!("{} has no `channel = \"...\"` line", path.display()),
        }
    }
}

/// The value of the `channel = "..."` key in a `rust-toolchain.toml`.
pub fn parse_toolchain_channel(toml: &str) -> Option<String> {
    toml.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        if key.trim() != "channel" {
            return None;
        }
        let value = value.trim().strip_prefix('"')?;
        let end = value.find('"')?;
        Some(value[..end].to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pinned_channel() {
        let toml = "[toolchain]\n# comment\nchannel = \"nightly-2026-05-19\"\ncomponents = [\"rust-src\"]\n";
        assert_eq!(
            parse_toolchain_channel(toml).as_deref(),
            Some("nightly-2026-05-19")
        );
    }

    #[test]
    fn ignores_other_keys_and_missing_channel() {
        assert_eq!(
            parse_toolchain_channel("[toolchain]\nprofile = \"minimal\"\n"),
            None
        );
        assert_eq!(parse_toolchain_channel("channel_x = \"a\"\n"), None);
    }

    #[test]
    fn repository_pins_a_channel() {
        let channel = Layout::discover().toolchain_channel().unwrap();
        assert!(channel.starts_with("nightly-"), "{channel}");
    }

    #[test]
    fn kernel_paths_follow_cargo_layout() {
        let layout = Layout::discover();
        let elf = layout.kernel_elf(Profile::Release);
        assert!(
            elf.ends_with("x86_64-unknown-none/release/keel-kernel"),
            "{}",
            elf.display()
        );
        assert!(layout.iso().ends_with("keel/keel.iso"));
        assert!(layout.linux_dir().ends_with("linux"));
    }
}
