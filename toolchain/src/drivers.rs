//! WASI-dd drivers: build the cargo workspace `drivers-wasm/` as core wasm for
//! `wasm32-unknown-unknown` on the stable toolchain it pins, then turn each driver's core module
//! (which carries its WIT world in a `component-type` section from wit-bindgen) into a component,
//! `target/drivers-wasm/<name>.wasm`. A component newer than its core module is left alone.
//!
//! C drivers (`drivers-wasm/c/<name>/`, the world named in its `world` file) get their bindings
//! from the `wit-bindgen-c` crate, are compiled freestanding by clang against the small runtime
//! in `drivers-wasm/c/runtime/` and linked as a reactor with the bindings' `component-type`
//! object, then componentized the same way. A component newer than all its inputs (sources,
//! runtime, `wit/dd`) is left alone.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context, Result, anyhow, bail};
use wit_bindgen_core::wit_parser::Resolve;

use crate::paths::{Layout, parse_toolchain_channel};
use crate::process::run_checked;

/// The target drivers are compiled for.
pub const DRIVERS_TARGET: &str = "wasm32-unknown-unknown";

/// Builds every driver and returns the paths of their components, sorted by name.
pub fn build_drivers(layout: &Layout) -> Result<Vec<PathBuf>> {
    let project = layout.root().join("drivers-wasm");
    let toolchain_file = project.join("rust-toolchain.toml");
    let toolchain = fs::read_to_string(&toolchain_file)
        .with_context(|| format!("reading {}", toolchain_file.display()))?;
    let channel = parse_toolchain_channel(&toolchain)
        .with_context(|| format!("{} has no channel", toolchain_file.display()))?;
    let out = layout.drivers_dir();
    let cargo_target = out.join("cargo");
    let mut cargo = Command::new("rustup");
    cargo
        .args(["run", &channel, "cargo", "build", "--release"])
        .args(["--target", DRIVERS_TARGET, "--target-dir"])
        .arg(&cargo_target)
        .current_dir(&project);
    // A caller running under cargo or rustup may export variables meant for another build.
    for variable in [
        "RUSTUP_TOOLCHAIN",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
    ] {
        cargo.env_remove(variable);
    }
    run_checked(&mut cargo).with_context(|| {
        format!("building the drivers (is Rust {channel} with {DRIVERS_TARGET} installed? run toolchain/setup.sh)")
    })?;
    let built = cargo_target.join(DRIVERS_TARGET).join("release");
    let mut components = Vec::new();
    for name in driver_names(&project)? {
        let core = built.join(format!("{}.wasm", name.replace('-', "_")));
        let component = out.join(format!("{name}.wasm"));
        if !is_up_to_date(&component, &core)? {
            let module = fs::read(&core).with_context(|| format!("reading {}", core.display()))?;
            let encoded =
                componentize(&module).with_context(|| format!("componentizing {name}"))?;
            let partial = out.join(format!("{name}.wasm.partial"));
            fs::write(&partial, encoded)
                .with_context(|| format!("writing {}", partial.display()))?;
            fs::rename(&partial, &component)
                .with_context(|| format!("renaming to {}", component.display()))?;
            eprintln!("keel: componentized {}", component.display());
        }
        components.push(component);
    }
    for name in c_driver_names(&project)? {
        components.push(build_c_driver(layout, &project, &name)?);
    }
    components.sort();
    Ok(components)
}

/// The clang that compiles C drivers (`CLANG` overrides, as for `apps-wasm/build.sh`).
fn clang() -> String {
    std::env::var("CLANG").unwrap_or_else(|_| "clang".to_string())
}

/// Flags for every C driver translation unit: C11, freestanding (no libc; the runtime provides
/// what the bindings use), warnings as errors.
const C_FLAGS: &[&str] = &[
    "--target=wasm32-unknown-unknown",
    "-std=c11",
    "-O2",
    "-ffreestanding",
    "-Wall",
    "-Wextra",
    "-Werror",
];

/// The C drivers: directories of `drivers-wasm/c` that have a `world` file, sorted.
pub fn c_driver_names(project: &Path) -> Result<Vec<String>> {
    let dir = project.join("c");
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        if entry.path().join("world").is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Every driver `keel build-drivers` builds: the cargo members and the C drivers, sorted.
pub fn all_driver_names(project: &Path) -> Result<Vec<String>> {
    let mut names = driver_names(project)?;
    names.extend(c_driver_names(project)?);
    names.sort();
    Ok(names)
}

/// Builds the C driver `drivers-wasm/c/<name>` into `target/drivers-wasm/<name>.wasm`.
fn build_c_driver(layout: &Layout, project: &Path, name: &str) -> Result<PathBuf> {
    let source = project.join("c").join(name);
    let runtime = project.join("c/runtime");
    let wit = layout.root().join("wit/dd");
    let world_file = source.join("world");
    let world = fs::read_to_string(&world_file)
        .with_context(|| format!("reading {}", world_file.display()))?
        .trim()
        .to_string();
    let out = layout.drivers_dir();
    let component = out.join(format!("{name}.wasm"));
    let mut inputs = files_in(&source)?;
    inputs.extend(files_in(&runtime)?);
    inputs.extend(files_in(&wit)?);
    if is_up_to_date_with_all(&component, &inputs)? {
        return Ok(component);
    }

    let build = out.join("c").join(name);
    if build.exists() {
        fs::remove_dir_all(&build).with_context(|| format!("clearing {}", build.display()))?;
    }
    let bindings = build.join("bindings");
    fs::create_dir_all(&bindings).with_context(|| format!("creating {}", bindings.display()))?;
    let generated = generate_c_bindings(&wit, &world, &bindings)
        .with_context(|| format!("generating C bindings of world {world} for {name}"))?;

    let c_files = |dir: &Path| -> Result<Vec<PathBuf>> {
        Ok(files_in(dir)?
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "c"))
            .collect())
    };
    let mut sources = c_files(&source)?;
    sources.extend(c_files(&runtime)?);
    sources.extend(
        generated
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "c"))
            .cloned(),
    );
    let mut objects: Vec<PathBuf> = generated
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "o"))
        .cloned()
        .collect();
    for (index, file) in sources.iter().enumerate() {
        let stem = file.file_stem().unwrap_or_default().to_string_lossy();
        let object = build.join(format!("{index}-{stem}.o"));
        run_checked(
            Command::new(clang())
                .args(C_FLAGS)
                .arg("-I")
                .arg(runtime.join("include"))
                .arg("-I")
                .arg(&bindings)
                .arg("-I")
                .arg(&source)
                .arg("-c")
                .arg(file)
                .arg("-o")
                .arg(&object),
        )
        .with_context(|| format!("compiling {}", file.display()))?;
        objects.push(object);
    }
    let core = build.join(format!("{name}.core.wasm"));
    // A reactor: no entry point; the bindings export `run`, `cabi_realloc` and the post-return
    // functions by name. The stack goes first so that an overflow traps instead of overwriting
    // static data.
    run_checked(
        Command::new(clang())
            .args(["--target=wasm32-unknown-unknown", "-nostdlib"])
            .args(["-Wl,--no-entry", "-Wl,--stack-first", "-Wl,--strip-debug"])
            .args(&objects)
            .arg("-o")
            .arg(&core),
    )
    .with_context(|| format!("linking {name}"))?;
    let module = fs::read(&core).with_context(|| format!("reading {}", core.display()))?;
    let encoded = componentize(&module).with_context(|| format!("componentizing {name}"))?;
    let partial = out.join(format!("{name}.wasm.partial"));
    fs::write(&partial, encoded).with_context(|| format!("writing {}", partial.display()))?;
    fs::rename(&partial, &component)
        .with_context(|| format!("renaming to {}", component.display()))?;
    eprintln!("keel: built and componentized {}", component.display());
    Ok(component)
}

/// Writes the C bindings of `world` (a world of the WIT package in `wit_dir`) into `out`: the
/// header, the source and the `component-type` object to link with. Returns their paths.
pub fn generate_c_bindings(wit_dir: &Path, world: &str, out: &Path) -> Result<Vec<PathBuf>> {
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_dir(wit_dir)
        .map_err(|e| anyhow!("{e:#}"))
        .with_context(|| format!("parsing {}", wit_dir.display()))?;
    let world_id = resolve
        .select_world(&[package], Some(world))
        .map_err(|e| anyhow!("{e:#}"))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world_id, &mut files)
        .map_err(|e| anyhow!("{e:#}"))?;
    let mut written = Vec::new();
    for (name, contents) in files.iter() {
        let path = out.join(name);
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The files under `dir`, recursively, sorted.
fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in
            fs::read_dir(&current).with_context(|| format!("reading {}", current.display()))?
        {
            let path = entry
                .with_context(|| format!("reading {}", current.display()))?
                .path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// True if `output` exists and is at least as new as every one of `inputs`.
pub fn is_up_to_date_with_all(output: &Path, inputs: &[PathBuf]) -> Result<bool> {
    for input in inputs {
        if !is_up_to_date(output, input)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Builds the drivers, then runs `wasi-dd`'s host benchmark (a release build of its
/// `bench-host` example); returns the path of its markdown report.
pub fn bench_dd(layout: &Layout) -> Result<PathBuf> {
    build_drivers(layout)?;
    let report = layout.bench_dir().join("wasi-dd-host.md");
    run_checked(
        Command::new("cargo")
            .current_dir(layout.root())
            .env("RUSTUP_TOOLCHAIN", layout.toolchain_channel()?)
            .args([
                "run",
                "--release",
                "-p",
                "wasi-dd",
                "--example",
                "bench-host",
                "--",
            ])
            .arg(&report),
    )?;
    Ok(report)
}

/// The drivers: the members of the `drivers-wasm` workspace (its `Cargo.toml`), sorted.
pub fn driver_names(project: &Path) -> Result<Vec<String>> {
    let manifest = project.join("Cargo.toml");
    let text =
        fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let mut names = workspace_members(&text);
    if names.is_empty() {
        bail!("{} lists no workspace members", manifest.display());
    }
    names.sort();
    Ok(names)
}

/// The last path component of each entry of `members = [...]` in a cargo manifest.
pub fn workspace_members(manifest: &str) -> Vec<String> {
    let Some(start) = manifest
        .lines()
        .position(|line| line.trim_start().starts_with("members"))
    else {
        return Vec::new();
    };
    let rest: String = manifest
        .lines()
        .skip(start)
        .map(|line| line.split('#').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let Some(list) = rest
        .split_once('[')
        .and_then(|(_, after)| after.split_once(']'))
        .map(|(inside, _)| inside)
    else {
        return Vec::new();
    };
    list.split(',')
        .filter_map(|entry| {
            let path = entry.trim().strip_prefix('"')?.strip_suffix('"')?;
            path.rsplit('/').next().map(String::from)
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// A core module with wit-bindgen's `component-type` section, encoded as a validated component.
pub fn componentize(core_module: &[u8]) -> Result<Vec<u8>> {
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(core_module)
        .map_err(|e| anyhow!("{e:#}"))?
        .encode()
        .map_err(|e| anyhow!("{e:#}"))
}

/// True if `output` exists and is at least as new as `input`.
pub fn is_up_to_date(output: &Path, input: &Path) -> Result<bool> {
    let modified = |path: &Path| -> Result<Option<SystemTime>> {
        match fs::metadata(path) {
            Ok(meta) => Ok(Some(meta.modified()?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    };
    let input_time = modified(input)?.with_context(|| format!("{} is missing", input.display()))?;
    Ok(modified(output)?.is_some_and(|output_time| output_time >= input_time))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_the_repository_drivers() {
        let project = Layout::discover().root().join("drivers-wasm");
        let names = driver_names(&project).unwrap();
        assert!(names.contains(&"test-conformance".to_string()), "{names:?}");
        assert!(names.contains(&"test-hostile".to_string()), "{names:?}");
        let c_names = c_driver_names(&project).unwrap();
        assert_eq!(c_names, ["test-conformance-c"]);
        let all = all_driver_names(&project).unwrap();
        assert!(all.contains(&"test-conformance-c".to_string()), "{all:?}");
        assert!(all.contains(&"test-conformance".to_string()), "{all:?}");
    }

    #[test]
    fn reads_the_boot_driver_list() {
        let text = "# comment\n\n  test-edu   world=test-driver match=1234:11e8 scenario=edu\n";
        assert_eq!(
            parse_boot_list(text).unwrap(),
            vec![(
                "test-edu".to_string(),
                "test-edu world=test-driver match=1234:11e8 scenario=edu".to_string()
            )]
        );
        let error = parse_boot_list("e1000 match=8086:100e\n").unwrap_err();
        assert!(format!("{error}").contains("line 1"), "{error}");
        let error = parse_boot_list("e1000 world=nic-driver match=8086:100e extra\n").unwrap_err();
        assert!(
            format!("{error}").contains("'extra' is not key=value"),
            "{error}"
        );
        let repository = Layout::discover()
            .root()
            .join("drivers-wasm/boot-drivers.txt");
        let listed = parse_boot_list(&fs::read_to_string(repository).unwrap()).unwrap();
        let built = all_driver_names(&Layout::discover().root().join("drivers-wasm")).unwrap();
        for (name, _) in listed {
            assert!(
                built.contains(&name),
                "boot-drivers.txt names {name}, not built"
            );
        }
    }

    #[test]
    fn generates_c_bindings_of_the_test_driver_world() {
        let layout = Layout::discover();
        let out = std::env::temp_dir().join(format!("keel-c-bindings-{}", std::process::id()));
        fs::create_dir_all(&out).unwrap();
        let files =
            generate_c_bindings(&layout.root().join("wit/dd"), "test-driver", &out).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "test_driver.c",
                "test_driver.h",
                "test_driver_component_type.o"
            ]
        );
        let header = fs::read_to_string(out.join("test_driver.h")).unwrap();
        assert!(header.contains("exports_test_driver_run("), "{header}");
        let object = fs::read(out.join("test_driver_component_type.o")).unwrap();
        assert!(object.starts_with(b"\0asm"));
        assert!(generate_c_bindings(&layout.root().join("wit/dd"), "no-such-world", &out).is_err());
        fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn reads_workspace_members() {
        let manifest = "[workspace]\nresolver = \"2\"\nmembers = [\n    \"a\", # the first\n    \"sub/b\",\n]\n[workspace.package]\nversion = \"0.1.0\"\n";
        assert_eq!(workspace_members(manifest), vec!["a", "b"]);
        assert_eq!(workspace_members("[workspace]\n"), Vec::<String>::new());
        assert_eq!(
            workspace_members("members = [\"x\", \"y\"]"),
            vec!["x", "y"]
        );
    }

    #[test]
    fn componentizes_core_modules_and_refuses_garbage() {
        // The smallest core module (magic and version): a component of an empty world.
        let component = componentize(b"\0asm\x01\0\0\0").unwrap();
        assert!(component.starts_with(b"\0asm\x0d\0\x01\0"), "{component:?}");
        assert!(componentize(b"not wasm").is_err());
    }

    #[test]
    fn compares_modification_times() {
        let dir = std::env::temp_dir().join(format!("keel-drivers-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let input = dir.join("in.wasm");
        let output = dir.join("out.wasm");
        fs::write(&input, b"a").unwrap();
        assert!(!is_up_to_date(&output, &input).unwrap());
        fs::write(&output, b"b").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(60);
        fs::File::options()
            .write(true)
            .open(&output)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(is_up_to_date(&output, &input).unwrap());
        assert!(is_up_to_date(&output, &dir.join("missing")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}

/// A driver for the boot image: its component, that component precompiled, and the module
/// command line that tells the kernel what it binds to (`driver NAME world=... match=...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootDriver {
    pub name: String,
    pub component: PathBuf,
    pub artifact: PathBuf,
    pub command_line: String,
}

/// The lines of `drivers-wasm/boot-drivers.txt` that name a driver: (name, the whole line).
pub fn parse_boot_list(text: &str) -> Result<Vec<(String, String)>> {
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default();
        let rest: Vec<&str> = words.collect();
        let has = |key: &str| rest.iter().any(|w| w.starts_with(key));
        if !has("world=") || !has("match=") {
            bail!(
                "boot-drivers.txt line {}: '{line}' needs world= and match=",
                number + 1
            );
        }
        if let Some(bad) = rest.iter().find(|w| !w.contains('=')) {
            bail!(
                "boot-drivers.txt line {}: '{bad}' is not key=value",
                number + 1
            );
        }
        entries.push((
            name.to_string(),
            line.split_whitespace().collect::<Vec<_>>().join(" "),
        ));
    }
    Ok(entries)
}

/// The components of the drivers `drivers-wasm/boot-drivers.txt` lists, from `components` (the
/// output of [`build_drivers`]): (name, boot line, component). Keel's image precompiles them and
/// also carries the components themselves; the Linux image carries the same files.
pub fn boot_driver_components(
    layout: &Layout,
    components: &[PathBuf],
) -> Result<Vec<(String, String, PathBuf)>> {
    let list_file = layout.root().join("drivers-wasm/boot-drivers.txt");
    let text = fs::read_to_string(&list_file)
        .with_context(|| format!("reading {}", list_file.display()))?;
    parse_boot_list(&text)?
        .into_iter()
        .map(|(name, line)| {
            let component = components
                .iter()
                .find(|c| c.file_stem().is_some_and(|s| s == name.as_str()))
                .ok_or_else(|| {
                    anyhow!("boot-drivers.txt names '{name}', which drivers-wasm does not build")
                })?;
            Ok((name, line, component.clone()))
        })
        .collect()
}

/// Precompiles the drivers `drivers-wasm/boot-drivers.txt` lists (from `components`, the
/// output of [`build_drivers`]) with `keel-aot` into `target/keel/drivers`.
pub fn boot_drivers(layout: &Layout, components: &[PathBuf]) -> Result<Vec<BootDriver>> {
    let aot = layout.root().join("target/release/keel-aot");
    let out = layout.keel_dir().join("drivers");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut drivers = Vec::new();
    for (name, line, component) in boot_driver_components(layout, components)? {
        let artifact = out.join(format!("{name}.cwasm"));
        run_checked(Command::new(&aot).arg(&component).arg(&artifact))?;
        drivers.push(BootDriver {
            name,
            component,
            artifact,
            command_line: format!("driver {line}"),
        });
    }
    Ok(drivers)
}
