//! The kernel's one Wasmtime engine and the loading of precompiled programs.

use alloc::string::{String, ToString};
use core::fmt;
use raw_cpuid::CpuId;
use spin::Once;
use wasmtime::{Config, Engine, Module};

static ENGINE: Once<Result<Engine, String>> = Once::new();

/// Answers Wasmtime's questions about this CPU. Only features the kernel has enabled count: AVX
/// and friends need OSXSAVE and XCR0 set up, which Keel does not do, so they are reported absent.
fn cpu_has(feature: &str) -> Option<bool> {
    let cpuid = CpuId::new();
    let info = cpuid.get_feature_info()?;
    let extended = cpuid.get_extended_processor_and_feature_identifiers();
    let ext_features = cpuid.get_extended_feature_info();
    Some(match feature {
        "sse3" => info.has_sse3(),
        "ssse3" => info.has_ssse3(),
        "sse4.1" => info.has_sse41(),
        "sse4.2" => info.has_sse42(),
        "popcnt" => info.has_popcnt(),
        "lzcnt" => extended.is_some_and(|e| e.has_lzcnt()),
        "bmi1" => ext_features.as_ref().is_some_and(|e| e.has_bmi1()),
        "bmi2" => ext_features.as_ref().is_some_and(|e| e.has_bmi2()),
        "avx" | "avx2" | "fma" | "avx512f" | "avx512vl" | "avx512dq" | "avx512bitalg"
        | "avx512vbmi" | "cmpxchg16b" | "f16c" => false,
        _ => return None,
    })
}

/// The engine, created on first use. An error says why Wasm cannot run on this machine.
pub fn engine() -> Result<&'static Engine, &'static str> {
    ENGINE
        .call_once(|| {
            let mut config = Config::new();
            keel_wasm_config::configure(&mut config);
            // SAFETY-free API use: `cpu_has` reports only what this CPU and kernel support.
            #[allow(unsafe_code)]
            let config = {
                // SAFETY: `cpu_has` answers from CPUID and reports only features the kernel
                // has enabled, which is what Wasmtime requires of the detector.
                unsafe { config.detect_host_feature(cpu_has) };
                config
            };
            Engine::new(&config).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| e.as_str())
}

/// A loaded, ready-to-instantiate program.
#[derive(Clone)]
pub struct Program {
    pub name: String,
    pub module: Module,
    /// The module's code, registered so that a kill stops the task even inside a loop.
    _killable: alloc::sync::Arc<keel_wasm_platform::KillableCode>,
    /// The module with its imports resolved against the WASI host, ready for a new store.
    pub(crate) instance_pre: wasmtime::InstancePre<crate::wasi::Ctx>,
}

/// Why a program could not be loaded.
#[derive(Debug, Clone)]
pub enum LoadError {
    NoEngine(String),
    /// The artifact is not one this kernel accepts (corrupt, truncated, another Wasmtime version
    /// or other settings, or CPU features this machine lacks); Wasmtime's reason.
    Rejected(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NoEngine(why) => write!(f, "WebAssembly is unavailable: {why}"),
            LoadError::Rejected(why) => write!(f, "not a usable Keel program: {why}"),
        }
    }
}

/// Checks and loads a precompiled module.
pub fn load(name: &str, artifact: &[u8]) -> Result<Program, LoadError> {
    let engine = engine().map_err(|e| LoadError::NoEngine(e.to_string()))?;
    if Engine::detect_precompiled(artifact).is_none() {
        return Err(LoadError::Rejected(String::from(
            "not a precompiled Wasmtime module",
        )));
    }
    require_cpu_features(artifact).map_err(LoadError::Rejected)?;
    #[allow(unsafe_code)]
    // SAFETY: Wasmtime validates the artifact's header, version, settings and CPU features
    // before using it; the bytes themselves come from the boot image, which the kernel trusts
    // to hold what `keel-aot` wrote (as it trusts its own code).
    let module = unsafe { Module::deserialize(engine, artifact) }
        .map_err(|e| LoadError::Rejected(alloc::format!("{e:#}")))?;
    let instance_pre =
        crate::wasi::prepare(&module).map_err(|e| LoadError::Rejected(alloc::format!("{e:#}")))?;
    let killable = keel_wasm_platform::KillableCode::register(
        artifact,
        module.text(),
        module.functions().map(|f| (f.offset, f.len)),
    )
    .map_err(|why| LoadError::Rejected(alloc::format!("its code cannot be stopped: {why}")))?;
    Ok(Program {
        name: name.to_string(),
        module,
        _killable: alloc::sync::Arc::new(killable),
        instance_pre,
    })
}

/// Refuses an artifact compiled without the CPU features Keel requires of every module.
/// Wasmtime itself only checks that the features an artifact *uses* exist; a module compiled for
/// baseline x86_64 would turn float rounding into libcalls with a float ABI that does not match
/// the soft-float kernel (see `keel_wasm_config::REQUIRED_CPU_FEATURES`).
fn require_cpu_features(artifact: &[u8]) -> Result<(), String> {
    use object::{Object, ObjectSection};
    let file =
        object::File::parse(artifact).map_err(|e| alloc::format!("not an ELF artifact: {e}"))?;
    let section = file
        .section_by_name(".wasmtime.engine")
        .ok_or_else(|| String::from("no .wasmtime.engine section"))?;
    let metadata = section
        .data()
        .map_err(|e| alloc::format!("unreadable engine section: {e}"))?;
    for flag in keel_wasm_config::REQUIRED_CPU_FEATURES {
        // The metadata lists ISA flags as (name, FlagValue) pairs, postcard-encoded: a
        // length-prefixed name, then variant 2 (`Bool`) and the value.
        let mut enabled = alloc::vec::Vec::with_capacity(flag.len() + 3);
        enabled.push(flag.len() as u8);
        enabled.extend_from_slice(flag.as_bytes());
        enabled.extend_from_slice(&[2, 1]);
        if !metadata
            .windows(enabled.len())
            .any(|w| w == enabled.as_slice())
        {
            return Err(alloc::format!(
                "compiled without {flag}, which Keel requires of every module (use keel-aot)"
            ));
        }
    }
    Ok(())
}
