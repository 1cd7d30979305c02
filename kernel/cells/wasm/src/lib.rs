//! WebAssembly programs on Keel. Modules arrive precompiled by `keel-aot` (Cranelift on the host,
//! with the settings of `keel-wasm-config`); the kernel checks and loads them, and runs each
//! program in its own task and Wasmtime store with a WASI preview1 host.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

mod engine;
mod wasi;
mod wasi_fs;
mod wasi_sock;

pub use engine::{LoadError, Program, engine, load};
pub use wasi::{Directories, ExitStatus, RunError, StdinReader, StdinReady, run};
pub use wasi_sock::{NetworkAccess, SOCKET_FD_BASE};
