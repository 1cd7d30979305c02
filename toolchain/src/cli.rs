//! The `keel` command line.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::bench::DEFAULT_BOOTS;
use crate::paths::Profile;
use crate::qemu::{DEFAULT_MEMORY, DEFAULT_RUN_PORT};

pub const USAGE: &str = "\
usage: keel <command> [options]

commands:
  build-kernel [--debug]                    build the kernel ELF (release unless --debug)
  image [--debug]                           build the kernel and target/keel/keel.iso; prints its path
  run [--debug] [--mem SIZE] [--port PORT]  boot Keel in QEMU on this terminal (serial console)
                                            with an AHCI disk and host 127.0.0.1:PORT -> guest :80
  bench [--mem SIZE] [--boots N] [--iso PATH]
                                            boot N times, run the shell's `bench`, write
                                            target/bench/report.md and report.json (builds the
                                            image unless --iso names one)
  clippy-kernel                             run clippy on the kernel for its target
  build-drivers                             build drivers-wasm/ (Rust and C) and componentize each into
                                            target/drivers-wasm/<name>.wasm
  bench-dd                                  cost of a WASI-dd MMIO access from a driver vs native,
                                            on the host; writes target/bench/wasi-dd-host.md
  linux-image [--extra DIR]                 the Linux yardstick from Debian packages (kernel, busybox;
                                            .debs cached in target/linux/debs) with wasi-dd-run and
                                            Keel's driver components: writes target/linux/vmlinuz and
                                            initramfs.cpio.gz, with the files of DIR laid over it
  linux-run [--mem SIZE] [--port PORT] [--extra DIR]
                                            boot it on Keel's QEMU machine with an IOMMU, the disk on
                                            an AHCI controller of its own, on this terminal (builds
                                            it first if missing or given --extra)
  help                                      show this text

defaults: --mem 128M, --port 8080, --boots 5. Environment: KEEL_QEMU overrides the QEMU binary.";

/// A parsed `keel` invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cli {
    BuildKernel { profile: Profile },
    Image { profile: Profile },
    Run(RunArgs),
    Bench(BenchArgs),
    ClippyKernel,
    BuildDrivers,
    BenchDd,
    LinuxImage { extra: Option<PathBuf> },
    LinuxRun(LinuxRunArgs),
    Help,
}

/// Options of `keel linux-run`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxRunArgs {
    pub memory: String,
    pub port: u16,
    /// Files to lay over the initramfs (rebuilds it).
    pub extra: Option<PathBuf>,
}

/// Options of `keel bench`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchArgs {
    pub memory: String,
    pub boots: usize,
    /// An existing image to benchmark instead of building one.
    pub iso: Option<PathBuf>,
}

/// Options of `keel run`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunArgs {
    pub profile: Profile,
    pub memory: String,
    pub port: u16,
}

impl Cli {
    /// Parses the arguments after the program name.
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Self> {
        let mut args = args.into_iter();
        let Some(command) = args.next() else {
            return Ok(Cli::Help);
        };
        let mut options = Options::parse(args)?;
        let cli = match command.as_str() {
            "build-kernel" => Cli::BuildKernel {
                profile: options.profile(),
            },
            "image" => Cli::Image {
                profile: options.profile(),
            },
            "run" => Cli::Run(RunArgs {
                profile: options.profile(),
                memory: options.memory(),
                port: options.number("--port", DEFAULT_RUN_PORT)?,
            }),
            "bench" => Cli::Bench(BenchArgs {
                memory: options.memory(),
                boots: options.number("--boots", DEFAULT_BOOTS)?,
                iso: options.take("--iso").map(PathBuf::from),
            }),
            "clippy-kernel" => Cli::ClippyKernel,
            "build-drivers" => Cli::BuildDrivers,
            "bench-dd" => Cli::BenchDd,
            "linux-image" => Cli::LinuxImage {
                extra: options.take("--extra").map(PathBuf::from),
            },
            "linux-run" => Cli::LinuxRun(LinuxRunArgs {
                memory: options.memory(),
                port: options.number("--port", DEFAULT_RUN_PORT)?,
                extra: options.take("--extra").map(PathBuf::from),
            }),
            "help" | "-h" | "--help" => Cli::Help,
            other => bail!("unknown command {other:?}\n\n{USAGE}"),
        };
        options.finish(&command)?;
        Ok(cli)
    }
}

/// `--flag` and `--key VALUE` options, consumed as the command asks for them.
struct Options {
    debug: bool,
    values: Vec<(String, String)>,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self> {
        let mut options = Options {
            debug: false,
            values: Vec::new(),
        };
        while let Some(arg) = args.next() {
            if arg == "--debug" {
                options.debug = true;
            } else if let Some((key, value)) = arg.split_once('=') {
                options.values.push((key.to_string(), value.to_string()));
            } else if arg.starts_with("--") {
                let value = args
                    .next()
                    .with_context(|| format!("{arg} needs a value"))?;
                options.values.push((arg, value));
            } else {
                bail!("unexpected argument {arg:?}\n\n{USAGE}");
            }
        }
        Ok(options)
    }

    fn profile(&mut self) -> Profile {
        if std::mem::take(&mut self.debug) {
            Profile::Debug
        } else {
            Profile::Release
        }
    }

    fn take(&mut self, key: &str) -> Option<String> {
        let index = self.values.iter().position(|(k, _)| k == key)?;
        Some(self.values.remove(index).1)
    }

    fn memory(&mut self) -> String {
        self.take("--mem")
            .unwrap_or_else(|| DEFAULT_MEMORY.to_string())
    }

    fn number<T: std::str::FromStr>(&mut self, key: &str, default: T) -> Result<T> {
        match self.take(key) {
            None => Ok(default),
            Some(value) => value
                .parse()
                .map_err(|_| anyhow::anyhow!("{key} {value:?} is not a valid number")),
        }
    }

    /// Fails if the command did not use every option given.
    fn finish(self, command: &str) -> Result<()> {
        if self.debug {
            bail!("`{command}` takes no --debug");
        }
        if let Some((key, _)) = self.values.first() {
            bail!("`{command}` takes no {key}\n\n{USAGE}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Cli> {
        Cli::parse(line.split_whitespace().map(String::from))
    }

    #[test]
    fn parses_each_command() {
        assert_eq!(parse("").unwrap(), Cli::Help);
        assert_eq!(
            parse("build-kernel --debug").unwrap(),
            Cli::BuildKernel {
                profile: Profile::Debug
            }
        );
        assert_eq!(
            parse("image").unwrap(),
            Cli::Image {
                profile: Profile::Release
            }
        );
        assert_eq!(
            parse("run --mem 256M --port 9000").unwrap(),
            Cli::Run(RunArgs {
                profile: Profile::Release,
                memory: "256M".into(),
                port: 9000
            })
        );
        assert_eq!(
            parse("bench --boots=3").unwrap(),
            Cli::Bench(BenchArgs {
                memory: "128M".into(),
                boots: 3,
                iso: None
            })
        );
        assert_eq!(
            parse("bench --iso /x.iso").unwrap(),
            Cli::Bench(BenchArgs {
                memory: "128M".into(),
                boots: 5,
                iso: Some("/x.iso".into())
            })
        );
        assert_eq!(parse("clippy-kernel").unwrap(), Cli::ClippyKernel);
        assert_eq!(parse("build-drivers").unwrap(), Cli::BuildDrivers);
        assert_eq!(parse("bench-dd").unwrap(), Cli::BenchDd);
        assert_eq!(
            parse("linux-image").unwrap(),
            Cli::LinuxImage { extra: None }
        );
        assert_eq!(
            parse("linux-image --extra /e").unwrap(),
            Cli::LinuxImage {
                extra: Some("/e".into())
            }
        );
        assert_eq!(
            parse("linux-run --port 9000").unwrap(),
            Cli::LinuxRun(LinuxRunArgs {
                memory: "128M".into(),
                port: 9000,
                extra: None
            })
        );
    }

    #[test]
    fn rejects_unknown_and_misplaced_options() {
        assert!(parse("frobnicate").is_err());
        assert!(parse("image --mem 1G").is_err());
        assert!(parse("bench --debug").is_err());
        assert!(parse("run --port").is_err());
        assert!(parse("run --port eighty").is_err());
        assert!(parse("image stray").is_err());
        assert!(parse("build-drivers --debug").is_err());
        assert!(parse("linux-image --debug").is_err());
        assert!(parse("linux-image --mem 1G").is_err());
        assert!(parse("linux-run --extra").is_err());
    }
}
