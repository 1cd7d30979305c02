//! Which WASI-dd world a driver file is for, read from the component itself (its exports), and
//! which world a PCI function's class calls for.

use std::fmt;

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

/// The three driver worlds of `wit/dd`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum World {
    Nic,
    Block,
    Test,
}

impl World {
    pub fn name(self) -> &'static str {
        match self {
            World::Nic => "nic-driver",
            World::Block => "block-driver",
            World::Test => "test-driver",
        }
    }

    /// The world that drives a function of PCI base class `class`: network controllers (02)
    /// take a nic-driver, mass storage controllers (01) a block-driver, anything else a
    /// test-driver.
    pub fn for_class(class: u8) -> World {
        match class {
            0x01 => World::Block,
            0x02 => World::Nic,
            _ => World::Test,
        }
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The package every WASI-dd interface belongs to, as it appears in component names.
const PACKAGE: &str = "wasi-dd:dd/";

/// What a file's first bytes say it is, before compiling anything.
pub fn check_binary(bytes: &[u8]) -> Result<(), String> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        if Engine::detect_precompiled(bytes).is_some() {
            return Err(String::from(
                "it is a precompiled Wasmtime artifact (keel-aot output for Keel), not a \
                 component: give the component (target/drivers-wasm/NAME.wasm)",
            ));
        }
        return Err(String::from("it is not WebAssembly (no \\0asm header)"));
    }
    match bytes[4..8] {
        [1, 0, 0, 0] => Err(String::from(
            "it is a core WebAssembly module, not a component: WASI-dd drivers are components \
             (keel build-drivers makes them with wit-component)",
        )),
        [_, _, 1, 0] => Ok(()),
        _ => Err(String::from(
            "it has an unknown WebAssembly version or layer",
        )),
    }
}

/// The world `component` implements, from its exports: `wasi-dd:dd/nic@...` is a nic-driver,
/// `wasi-dd:dd/block@...` a block-driver, a `run` function a test-driver. Imports outside
/// `wasi-dd:dd` are refused (no WASI-dd host provides them).
pub fn detect(engine: &Engine, component: &Component) -> Result<World, String> {
    let ty = component.component_type();
    // Types a world `use`s (the test-driver's `device`) are imported by name; everything
    // else must come from the package.
    let foreign: Vec<String> = ty
        .imports(engine)
        .filter(|(name, item)| {
            !name.starts_with(PACKAGE)
                && !matches!(item.ty, ComponentItem::Type(_) | ComponentItem::Resource(_))
        })
        .map(|(name, _)| String::from(name))
        .collect();
    if !foreign.is_empty() {
        return Err(format!(
            "it imports {}, which WASI-dd hosts do not provide (a driver imports only wasi-dd:dd \
             interfaces)",
            foreign.join(", ")
        ));
    }
    let mut worlds = Vec::new();
    let mut exports = Vec::new();
    for (name, item) in ty.exports(engine) {
        exports.push(name.to_string());
        let interface = name
            .strip_prefix(PACKAGE)
            .map(|rest| rest.split('@').next().unwrap_or(rest));
        match (interface, &item.ty) {
            (Some("nic"), ComponentItem::ComponentInstance(_)) => worlds.push(World::Nic),
            (Some("block"), ComponentItem::ComponentInstance(_)) => worlds.push(World::Block),
            (None, ComponentItem::ComponentFunc(_)) if name == "run" => worlds.push(World::Test),
            _ => {}
        }
    }
    match worlds.as_slice() {
        [world] => Ok(*world),
        [] => Err(format!(
            "it exports none of wasi-dd:dd/nic, wasi-dd:dd/block or run, so it is no WASI-dd \
             driver (its exports: {})",
            if exports.is_empty() {
                String::from("none")
            } else {
                exports.join(", ")
            }
        )),
        several => Err(format!(
            "it exports the interfaces of several driver worlds ({})",
            several
                .iter()
                .map(|w| w.name())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Refuses a driver whose world does not fit the function's class.
pub fn check_fits(world: World, class: u8, subclass: u8, function: &str) -> Result<(), String> {
    let wanted = World::for_class(class);
    if world == wanted {
        return Ok(());
    }
    Err(format!(
        "the driver is a {world}, but {function} is a {} (class {class:02x}{subclass:02x}), \
         which takes a {wanted}",
        crate::pci::class_name(class)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_choose_worlds() {
        assert_eq!(World::for_class(0x02), World::Nic);
        assert_eq!(World::for_class(0x01), World::Block);
        assert_eq!(World::for_class(0x00), World::Test);
        assert_eq!(World::for_class(0xff), World::Test);
        assert_eq!(check_fits(World::Nic, 0x02, 0x00, "0000:00:03.0"), Ok(()));
        assert_eq!(
            check_fits(World::Block, 0x02, 0x00, "0000:00:03.0"),
            Err(String::from(
                "the driver is a block-driver, but 0000:00:03.0 is a network controller \
                 (class 0200), which takes a nic-driver"
            ))
        );
        assert!(
            check_fits(World::Nic, 0x00, 0xff, "0000:00:05.0")
                .unwrap_err()
                .ends_with("(class 00ff), which takes a test-driver")
        );
    }

    #[test]
    fn tells_what_a_file_is_from_its_header() {
        assert_eq!(check_binary(b"\0asm\x0d\0\x01\0"), Ok(()));
        assert!(
            check_binary(b"\0asm\x01\0\0\0")
                .unwrap_err()
                .contains("core WebAssembly module")
        );
        assert!(
            check_binary(b"\x7fELF\x02\x01\x01\0")
                .unwrap_err()
                .contains("not WebAssembly")
        );
        assert!(
            check_binary(b"\0as")
                .unwrap_err()
                .contains("not WebAssembly")
        );
    }
}
