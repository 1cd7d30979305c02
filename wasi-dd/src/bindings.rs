//! Wasmtime bindings generated from `wit/dd`: the host interfaces (`host`, implemented by
//! [`crate::DriverHost`]) and one module per driver world for calling a driver's exports. The
//! driver worlds reuse the host module's types, so a handle made for one fits all.

pub mod host {
    wasmtime::component::bindgen!({
        path: "../wit/dd",
        world: "driver-host",
        additional_derives: [PartialEq, Eq],
    });
}

pub mod test_driver {
    wasmtime::component::bindgen!({
        path: "../wit/dd",
        world: "test-driver",
        with: { "wasi-dd:dd": super::host::wasi_dd::dd },
    });
}

pub mod nic_driver {
    wasmtime::component::bindgen!({
        path: "../wit/dd",
        world: "nic-driver",
        with: { "wasi-dd:dd": super::host::wasi_dd::dd },
    });
}

pub mod block_driver {
    wasmtime::component::bindgen!({
        path: "../wit/dd",
        world: "block-driver",
        with: { "wasi-dd:dd": super::host::wasi_dd::dd },
    });
}
