//! Building the kernel ELF with the pinned nightly (`-Zbuild-std` rebuilds core/alloc with unwind
//! tables; the rustflags for the target live in `.cargo/config.toml`).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, ensure};

use crate::paths::{KERNEL_PACKAGE, KERNEL_TARGET, Layout, Profile};
use crate::process::run_checked;

/// The `-Z` flags every cargo invocation for the kernel target needs.
pub const BUILD_STD_FLAGS: [&str; 2] = [
    "-Zbuild-std=core,alloc",
    "-Zbuild-std-features=compiler-builtins-mem",
];

/// A `cargo <verb>` command for the kernel package on the kernel target, run from the repository
/// root with the pinned toolchain (set explicitly, so an outer `cargo +other` cannot leak in).
pub fn kernel_cargo(layout: &Layout, verb: &str, profile: Profile) -> Result<Command> {
    let mut cargo = Command::new("cargo");
    cargo
        .current_dir(layout.root())
        .env("RUSTUP_TOOLCHAIN", layout.toolchain_channel()?)
        .args(kernel_cargo_args(verb, profile));
    Ok(cargo)
}

/// The arguments of [`kernel_cargo`] (after `cargo`).
pub fn kernel_cargo_args(verb: &str, profile: Profile) -> Vec<String> {
    let mut args = vec![verb.to_string(), "-p".into(), KERNEL_PACKAGE.into()];
    if profile == Profile::Release {
        args.push("--release".into());
    }
    args.extend(["--target".into(), KERNEL_TARGET.into()]);
    args.extend(BUILD_STD_FLAGS.map(String::from));
    args
}

/// Builds the kernel and returns the path of its ELF.
pub fn build_kernel(layout: &Layout, profile: Profile) -> Result<PathBuf> {
    run_checked(&mut kernel_cargo(layout, "build", profile)?)?;
    let elf = layout.kernel_elf(profile);
    ensure!(
        elf.is_file(),
        "cargo succeeded but {} does not exist",
        elf.display()
    );
    Ok(elf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_build_arguments() {
        assert_eq!(
            kernel_cargo_args("build", Profile::Release).join(" "),
            "build -p keel-kernel --release --target x86_64-unknown-none \
             -Zbuild-std=core,alloc -Zbuild-std-features=compiler-builtins-mem"
        );
    }

    #[test]
    fn debug_build_has_no_release_flag() {
        let args = kernel_cargo_args("clippy", Profile::Debug);
        assert_eq!(args[0], "clippy");
        assert!(!args.iter().any(|arg| arg == "--release"));
    }
}
