//! `keel-aot IN.wasm OUT.cwasm`: compiles a WebAssembly module or component (WASI-dd drivers)
//! ahead of time for Keel.
//! `--other-settings` deliberately uses a setting the kernel does not, and `--baseline-cpu`
//! leaves out the CPU features the kernel requires (test fixtures).
#![deny(unsafe_code)]

use anyhow::{Context, Result, anyhow, bail};
use wasmtime::{Config, Engine};

fn engine(other_settings: bool, baseline_cpu: bool) -> Result<Engine> {
    let mut config = Config::new();
    keel_wasm_config::configure(&mut config);
    if other_settings {
        // Only for the test fixture that shows the kernel refusing foreign settings.
        config.memory_guard_size(64 << 10);
    }
    config
        .target(keel_wasm_config::TARGET)
        .map_err(|e| anyhow!("target {}: {e:#}", keel_wasm_config::TARGET))?;
    let flags: &[&str] = if baseline_cpu {
        &[]
    } else {
        keel_wasm_config::REQUIRED_CPU_FEATURES
    };
    for flag in flags {
        #[allow(unsafe_code)]
        // SAFETY: the kernel checks at load time that the CPU has these features (Wasmtime asks
        // its feature detector for every flag in the artifact) and refuses the module otherwise.
        unsafe {
            config.cranelift_flag_enable(flag);
        }
    }
    Engine::new(&config).map_err(|e| anyhow!("creating the engine: {e:#}"))
}

/// A component's preamble: the wasm magic, then version 0x0d and layer 1 (a core module has
/// version 1, layer 0).
fn is_component(wasm: &[u8]) -> bool {
    wasm.starts_with(b"\0asm\x0d\0\x01\0")
}

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let other_settings = args.first().is_some_and(|a| a == "--other-settings");
    let baseline_cpu = args.first().is_some_and(|a| a == "--baseline-cpu");
    if other_settings || baseline_cpu {
        args.remove(0);
    }
    let [input, output] = args.as_slice() else {
        bail!("usage: keel-aot [--other-settings | --baseline-cpu] <in.wasm> <out.cwasm>");
    };
    let wasm = std::fs::read(input).with_context(|| format!("reading {input}"))?;
    let engine = engine(other_settings, baseline_cpu)?;
    let artifact = if is_component(&wasm) {
        engine.precompile_component(&wasm)
    } else {
        engine.precompile_module(&wasm)
    }
    .map_err(|e| anyhow!("compiling {input}: {e:#}"))?;
    std::fs::write(output, artifact).with_context(|| format!("writing {output}"))?;
    Ok(())
}
