//! The kernel's file tree: an in-memory root file system (later disks mount under it), with a
//! short README so there is something to read on first boot.

use alloc::sync::Arc;
use keel_sync::Once;
use keel_vfs::{FdFlags, MemFs, OFlags, Rights, Vfs};

/// How much the in-memory root may hold (file bytes plus a little per entry).
const ROOT_LIMIT: u64 = 16 << 20;

const README: &str = "\
Welcome to Keel, a WASM-native operating system.

Everything above the kernel is WebAssembly. Try `apps`, `ls -l /`, `wc /README`,
`mkdir -p /tmp/notes`, `cp /README /tmp/notes/`, `sha256sum /tmp/notes/README`.
This file system lives in memory; /tmp is yours. `run --dir=/tmp ls /tmp` gives a
program /tmp and nothing else.
";

static VFS: Once<Arc<Vfs>> = Once::new();

pub fn vfs() -> Arc<Vfs> {
    VFS.call_once(|| {
        let vfs = Arc::new(Vfs::new(
            Arc::new(MemFs::new(ROOT_LIMIT)),
            keel_time::wall_clock_ns,
        ));
        populate(&vfs);
        vfs
    })
    .clone()
}

fn populate(vfs: &Vfs) {
    let Ok(root) = vfs.preopen("/") else { return };
    let _ = vfs.create_dir(&root, "tmp");
    let rights = Rights {
        read: true,
        write: true,
    };
    let create = OFlags::CREAT | OFlags::TRUNC;
    if let Ok(mut file) = vfs.open(&root, "README", create, FdFlags::default(), rights) {
        let _ = vfs.write(&mut file, README.as_bytes());
    }
}
