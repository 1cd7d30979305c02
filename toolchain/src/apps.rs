//! WebAssembly programs for the image: build the ones in `apps-wasm/`, add any from the
//! `EXTRA_APPS` folder, and precompile each with `keel-aot` (Cranelift, the kernel's settings).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::paths::Layout;
use crate::process::run_checked;

/// A precompiled program: the name it runs under in Keel and its `.cwasm` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct App {
    pub name: String,
    pub artifact: PathBuf,
}

/// Builds `apps-wasm/` (if it has a `build.sh`) into `target/apps-wasm` and returns the `.wasm`
/// files there and in `extra` (sorted, later names replacing earlier ones).
pub fn collect_wasm(layout: &Layout, extra: Option<&Path>) -> Result<Vec<PathBuf>> {
    let out = layout.root().join("target/apps-wasm");
    let script = layout.root().join("apps-wasm/build.sh");
    let mut dirs = Vec::new();
    if script.is_file() {
        run_checked(
            Command::new("bash")
                .arg(&script)
                .arg(&out)
                .current_dir(layout.root()),
        )?;
        dirs.push(out);
    }
    if let Some(extra) = extra {
        if !extra.is_dir() {
            bail!("EXTRA_APPS={} is not a directory", extra.display());
        }
        dirs.push(extra.to_path_buf());
    }
    let mut files = Vec::new();
    for dir in dirs {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "wasm") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The name a program runs under: its file stem.
pub fn app_name(wasm: &Path) -> Result<String> {
    let stem = wasm
        .file_stem()
        .and_then(|s| s.to_str())
        .with_context(|| format!("{} has no usable file name", wasm.display()))?;
    if stem.is_empty()
        || !stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!(
            "{}: program names may use letters, digits, - and _ only",
            wasm.display()
        );
    }
    Ok(stem.to_string())
}

/// Builds `keel-aot` and precompiles every module into `target/keel/apps`.
pub fn precompile(layout: &Layout, wasm_files: &[PathBuf]) -> Result<Vec<App>> {
    run_checked(
        Command::new("cargo")
            .current_dir(layout.root())
            .env("RUSTUP_TOOLCHAIN", layout.toolchain_channel()?)
            .args(["build", "--release", "-p", "keel-aot"]),
    )?;
    let aot = layout.root().join("target/release/keel-aot");
    let out = layout.keel_dir().join("apps");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut apps: Vec<App> = Vec::new();
    for wasm in wasm_files {
        let name = app_name(wasm)?;
        let artifact = out.join(format!("{name}.cwasm"));
        run_checked(Command::new(&aot).arg(wasm).arg(&artifact))?;
        apps.retain(|a| a.name != name);
        apps.push(App { name, artifact });
    }
    Ok(apps)
}

/// Artifacts the kernel must refuse, for the tests: `hello` truncated, garbage, compiled with
/// settings other than the kernel's, and compiled without the CPU features Keel requires.
/// Named `test-broken-*`.
pub fn broken_fixtures(layout: &Layout, apps: &[App], wasm_files: &[PathBuf]) -> Result<Vec<App>> {
    let Some(hello) = apps.iter().find(|a| a.name == "hello") else {
        return Ok(Vec::new());
    };
    let Some(hello_wasm) = wasm_files
        .iter()
        .find(|w| app_name(w).is_ok_and(|n| n == "hello"))
    else {
        return Ok(Vec::new());
    };
    let out = layout.keel_dir().join("apps");
    let bytes = fs::read(&hello.artifact)?;
    let truncated = out.join("test-broken-truncated.cwasm");
    fs::write(&truncated, &bytes[..bytes.len() / 2])?;
    let garbage = out.join("test-broken-garbage.cwasm");
    let noise: Vec<u8> = (0u32..4096)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(&garbage, noise)?;
    let settings = out.join("test-broken-settings.cwasm");
    let aot = layout.root().join("target/release/keel-aot");
    run_checked(
        Command::new(&aot)
            .arg("--other-settings")
            .arg(hello_wasm)
            .arg(&settings),
    )?;
    let baseline = out.join("test-broken-cpu.cwasm");
    run_checked(
        Command::new(&aot)
            .arg("--baseline-cpu")
            .arg(hello_wasm)
            .arg(&baseline),
    )?;
    Ok(vec![
        App {
            name: "test-broken-cpu".into(),
            artifact: baseline,
        },
        App {
            name: "test-broken-truncated".into(),
            artifact: truncated,
        },
        App {
            name: "test-broken-garbage".into(),
            artifact: garbage,
        },
        App {
            name: "test-broken-settings".into(),
            artifact: settings,
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_file_stems() {
        assert_eq!(app_name(Path::new("/x/hello.wasm")).unwrap(), "hello");
        assert_eq!(app_name(Path::new("sha256sum.wasm")).unwrap(), "sha256sum");
        assert!(app_name(Path::new("bad name.wasm")).is_err());
        assert!(app_name(Path::new("a;b.wasm")).is_err());
    }
}
