//! `wasi-dd-run`: runs a WASI-dd driver component on a PCI function under Linux (VFIO; UIO
//! with `--unconfined` where there is no IOMMU).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use wasi_dd_linux::runner::{self, RunOptions};

const USAGE: &str = "\
usage:
  wasi-dd-run run [OPTIONS] <pci-address> <driver.wasm> [key=value...]
  wasi-dd-run info <pci-address>
  wasi-dd-run inspect <driver.wasm>

run: binds the driver component (target/drivers-wasm/NAME.wasm) to the PCI function
(SSSS:BB:DD.F, bound to vfio-pci, which confines its DMA with the IOMMU) and serves it by its
world:
  nic-driver    a TAP interface (ip link / udhcpc -i wdd0)
  block-driver  each disk as /dev/nbdN (mount /dev/nbd0p1 /mnt)
  test-driver   runs scenario=NAME and prints its report
key=value words go to the driver (its platform.parameters), except scenario=.
Ctrl-C stops cleanly (disks disconnected first); a second one interrupts the driver.

options:
  --bind        hand the function to vfio-pci first if another driver has it
  --unconfined  on a machine without an IOMMU, drive the function through uio_pci_generic:
                the device's DMA is NOT confined (it can reach all memory), INTx only
  --tap NAME    the TAP interface for a nic-driver (default wdd0)
  --nbd N       the first /dev/nbdN to use for disks (default 0)
  -v            driver debug logs too
";

/// Parses `run`'s arguments.
fn parse_run(arguments: &[String]) -> Result<RunOptions, String> {
    let mut positional = Vec::new();
    let (mut bind, mut tap, mut first_nbd, mut verbose) = (false, None, 0, false);
    let mut unconfined = false;
    let mut words = arguments.iter();
    while let Some(word) = words.next() {
        match word.as_str() {
            "--bind" => bind = true,
            "--unconfined" => unconfined = true,
            "-v" | "--verbose" => verbose = true,
            "--tap" => tap = Some(words.next().ok_or("--tap needs a name")?.clone()),
            "--nbd" => {
                let value = words.next().ok_or("--nbd needs a number")?;
                let value = value.trim_start_matches("/dev/nbd");
                first_nbd = value
                    .parse()
                    .map_err(|_| format!("--nbd {value}: want a number (or /dev/nbdN)"))?;
            }
            option if option.starts_with("--") => return Err(format!("unknown option {option}")),
            _ => positional.push(word.clone()),
        }
    }
    let mut positional = positional.into_iter();
    let address = positional
        .next()
        .ok_or("run needs a PCI address and a driver")?;
    let driver = positional
        .next()
        .ok_or("run needs a driver (.wasm) after the address")?;
    let mut options = RunOptions::new(&address, &PathBuf::from(driver));
    for word in positional {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| format!("'{word}' is not key=value"))?;
        options
            .parameters
            .push((key.to_string(), value.to_string()));
    }
    options.bind = bind;
    options.unconfined = unconfined;
    options.verbose = verbose;
    options.first_nbd = first_nbd;
    if let Some(tap) = tap {
        options.tap = tap;
    }
    Ok(options)
}

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let result = match arguments.first().map(String::as_str) {
        Some("run") => match parse_run(&arguments[1..]) {
            Ok(options) => runner::run(&options),
            Err(why) => {
                eprintln!("wasi-dd-run: {why}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        },
        Some("info") if arguments.len() == 2 => runner::info(&arguments[1]).map(|lines| {
            for line in lines {
                println!("{line}");
            }
        }),
        Some("inspect") if arguments.len() == 2 => {
            runner::inspect(&PathBuf::from(&arguments[1])).map(|line| println!("{line}"))
        }
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("wasi-dd-run: {why}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_options_anywhere_and_parameters_after_the_driver() {
        let options = parse_run(&words(
            "--bind 00:03.0 e1000.wasm --tap net0 fault-after-frames=5 -v --nbd /dev/nbd2",
        ))
        .unwrap();
        assert_eq!(options.address, "00:03.0");
        assert_eq!(options.driver, PathBuf::from("e1000.wasm"));
        assert!(options.bind && options.verbose && !options.unconfined);
        assert_eq!(options.tap, "net0");
        assert_eq!(options.first_nbd, 2);
        assert_eq!(
            options.parameters,
            vec![("fault-after-frames".to_string(), "5".to_string())]
        );
    }

    #[test]
    fn unconfined_is_asked_for_explicitly() {
        let options = parse_run(&words("--unconfined 00:03.0 e1000.wasm")).unwrap();
        assert!(options.unconfined && !options.bind);
    }

    #[test]
    fn says_what_is_missing_or_malformed() {
        assert!(parse_run(&[]).unwrap_err().contains("PCI address"));
        assert!(parse_run(&words("00:03.0")).unwrap_err().contains("driver"));
        assert!(
            parse_run(&words("00:03.0 d.wasm oops"))
                .unwrap_err()
                .contains("key=value")
        );
        assert!(
            parse_run(&words("--tap"))
                .unwrap_err()
                .contains("--tap needs")
        );
        assert!(
            parse_run(&words("--frobnicate"))
                .unwrap_err()
                .contains("unknown option")
        );
        assert!(
            parse_run(&words("--nbd x 00:03.0 d.wasm"))
                .unwrap_err()
                .contains("--nbd x")
        );
    }
}
