#!/usr/bin/env bash
# Idempotent set-up for building and running Keel: Debian packages (QEMU, GRUB, xorriso, mtools,
# dosfstools; clang/lld with wasi-libc, compiler-rt and libc++ for wasm32 and wabt, for
# apps-wasm/), the pinned
# Rust nightly with its components and the kernel target, and the Rust release pinned in
# apps-wasm/rust/rust-toolchain.toml with the wasm32-wasip1 target (guest apps) and the
# wasm32-unknown-unknown target (WASI-dd drivers, drivers-wasm/ pins the same release); the
# nightly has no rust-std for either. Cheap when everything is already present: it only looks, and installs what is missing.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

debian_packages=(qemu-system-x86 grub-pc-bin grub-common xorriso mtools dosfstools binutils
    gcc libc6-dev clang lld wasi-libc libclang-rt-dev-wasm32 libc++-dev-wasm32 libc++abi-14-dev-wasm32 wabt)
rust_components=(rust-src clippy rustfmt)
kernel_target=x86_64-unknown-none
apps_targets=(wasm32-wasip1 wasm32-unknown-unknown)

log() { echo "setup: $*" >&2; }

# Runs a command as root (directly, or through sudo when we are not root).
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        log "need root to run: $*"
        return 1
    fi
}

package_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

install_debian_packages() {
    local missing=()
    for package in "${debian_packages[@]}"; do
        package_installed "$package" || missing+=("$package")
    done
    if ((${#missing[@]} == 0)); then
        return
    fi
    log "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# The channel pinned in a rust-toolchain.toml (default: the repository's, the one source of truth).
pinned_channel() {
    sed -n 's/^[[:space:]]*channel[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' \
        "${1:-$repo_root/rust-toolchain.toml}" | head -n 1
}

toolchain_complete() {
    local channel="$1" installed
    rustup run "$channel" rustc -V >/dev/null 2>&1 || return 1
    installed="$(rustup component list --toolchain "$channel" --installed 2>/dev/null)" || return 1
    for component in "${rust_components[@]}"; do
        grep -Eq "^${component}(-x86_64-unknown-linux-gnu)?$" <<<"$installed" || return 1
    done
    grep -qx "rust-std-$kernel_target" <<<"$installed"
}

install_rust_toolchain() {
    local channel
    channel="$(pinned_channel)"
    if [[ -z "$channel" ]]; then
        log "no channel in $repo_root/rust-toolchain.toml"
        return 1
    fi
    if toolchain_complete "$channel"; then
        return
    fi
    if ! command -v rustup >/dev/null; then
        log "rustup is not installed; install it, then run 'make setup' again"
        return 1
    fi
    local components
    components="$(IFS=,; echo "${rust_components[*]}")"
    log "installing Rust $channel (components $components, target $kernel_target)"
    rustup toolchain install "$channel" --profile minimal \
        --component "$components" --target "$kernel_target"
}

# The toolchain for the Rust guests (apps-wasm/rust and drivers-wasm), with their wasm targets.
install_apps_rust_toolchain() {
    local channel toolchain_file="$repo_root/apps-wasm/rust/rust-toolchain.toml"
    [[ -f "$toolchain_file" ]] || return 0
    channel="$(pinned_channel "$toolchain_file")"
    if [[ -z "$channel" ]]; then
        log "no channel in $toolchain_file"
        return 1
    fi
    if ! command -v rustup >/dev/null; then
        log "rustup is not installed; install it, then run 'make setup' again"
        return 1
    fi
    if ! rustup run "$channel" rustc -V >/dev/null 2>&1; then
        log "installing Rust $channel with targets ${apps_targets[*]} (for apps-wasm, drivers-wasm)"
        rustup toolchain install "$channel" --profile minimal \
            --target "$(IFS=,; echo "${apps_targets[*]}")"
        return
    fi
    local installed
    installed="$(rustup target list --toolchain "$channel" --installed 2>/dev/null)"
    for target in "${apps_targets[@]}"; do
        if ! grep -qx "$target" <<<"$installed"; then
            log "adding target $target to Rust $channel"
            rustup target add --toolchain "$channel" "$target"
        fi
    done
}

install_debian_packages
install_rust_toolchain
install_apps_rust_toolchain
