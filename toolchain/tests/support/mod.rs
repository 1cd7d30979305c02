//! What several QEMU test binaries share: test data, its checksum, and disk images that clean
//! up after themselves. Each binary uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sha2::Digest;

/// The lowercase hex SHA-256 of `data` (as `sha256sum` prints it).
pub fn sha256_hex(data: &[u8]) -> String {
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `len` bytes of a fixed pseudo-random sequence.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A disk image in the temporary directory, removed when dropped.
pub struct Image(PathBuf);

impl Image {
    /// A fresh path for image `name` of this test process (nothing is there yet).
    pub fn new(name: &str) -> Image {
        let path =
            std::env::temp_dir().join(format!("keel-test-{}-{name}.img", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Image(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
