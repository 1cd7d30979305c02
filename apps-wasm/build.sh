#!/usr/bin/env bash
# Builds every Keel guest app into a WASI preview1 command module, OUT/<name>.wasm.
#
#   apps-wasm/build.sh [OUT]      OUT defaults to target/apps-wasm under the repository root
#
# C apps (c/<name>.c) and the C++ calculator build with clang --target=wasm32-wasi against Debian's
# wasi-libc and libc++; the Rust app (rust/) builds with cargo for wasm32-wasip1 on the toolchain
# pinned in rust/rust-toolchain.toml. An app is rebuilt only when one of its inputs (or this
# script) is newer than its .wasm; cargo does its own change tracking. Install what is needed with
# toolchain/setup.sh.
#
# Every module is then checked to import functions from wasi_snapshot_preview1 only (wasm-objdump,
# from wabt), and OUT/wasi-imports.txt lists what each one imports: the WASI calls a host must
# provide to run them.
set -euo pipefail

apps_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$apps_dir/.." && pwd)"
out="${1:-$repo_root/target/apps-wasm}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

CLANG="${CLANG:-clang}"
CLANGXX="${CLANGXX:-clang++}"
wasm_target=wasm32-wasi

# --stack-first puts the shadow stack below the data, so a stack overflow runs off the bottom of
# linear memory and traps instead of silently overwriting static data. Debug info from wasi-libc is
# stripped; the "name" section stays, so a host can name the functions in a trap's backtrace.
common_flags=(--target="$wasm_target" -O2 -Wall -Wextra)
cflags=(-std=c11)
cxxflags=(-std=c++17 -fno-exceptions)
ldflags=(-Wl,--stack-first -Wl,--strip-debug)

log() { echo "apps-wasm: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

check_tools() {
    local tool
    for tool in "$CLANG" "$CLANGXX" wasm-ld wasm-objdump; do
        command -v "$tool" >/dev/null || die "'$tool' not found; run toolchain/setup.sh"
    done
    echo 'int main(void) { return 0; }' | "$CLANG" --target="$wasm_target" -x c -o /dev/null - 2>/dev/null ||
        die "$CLANG cannot link for $wasm_target (wasi-libc, libclang-rt-dev-wasm32 missing?); run toolchain/setup.sh"
}

# True when $1 is missing or older than any of the remaining files.
stale() {
    local output="$1" input
    shift
    [[ -e "$output" ]] || return 0
    for input in "$@" "${BASH_SOURCE[0]}"; do
        [[ "$input" -nt "$output" ]] && return 0
    done
    return 1
}

built=0
# build_c NAME SOURCE... : compile and link C sources into $out/NAME.wasm.
build_c() {
    local name="$1"
    shift
    stale "$out/$name.wasm" "$@" "$apps_dir/c/sha256.h" || return 0
    log "cc   $name.wasm"
    "$CLANG" "${common_flags[@]}" "${cflags[@]}" "${ldflags[@]}" -o "$out/$name.wasm.tmp" "$@"
    mv "$out/$name.wasm.tmp" "$out/$name.wasm"
    built=$((built + 1))
}

build_cxx() {
    local name="$1"
    shift
    stale "$out/$name.wasm" "$@" || return 0
    log "c++  $name.wasm"
    "$CLANGXX" "${common_flags[@]}" "${cxxflags[@]}" "${ldflags[@]}" -o "$out/$name.wasm.tmp" "$@"
    mv "$out/$name.wasm.tmp" "$out/$name.wasm"
    built=$((built + 1))
}

build_rust() {
    local project="$apps_dir/rust" channel
    channel="$(sed -n 's/^[[:space:]]*channel[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' \
        "$project/rust-toolchain.toml" | head -n 1)"
    [[ -n "$channel" ]] || die "no channel in $project/rust-toolchain.toml"
    command -v rustup >/dev/null || die "rustup not found; run toolchain/setup.sh"
    rustup target list --installed --toolchain "$channel" 2>/dev/null | grep -qx wasm32-wasip1 ||
        die "Rust $channel with target wasm32-wasip1 is not installed; run toolchain/setup.sh"

    local before=""
    [[ -e "$out/rustinfo.wasm" ]] && before="$(cksum <"$out/rustinfo.wasm")"
    # A caller running under cargo or rustup may export variables that would redirect this build
    # (another toolchain, flags meant for the kernel, another target dir): drop them.
    (cd "$project" && env -u RUSTUP_TOOLCHAIN -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u RUSTC \
        -u RUSTC_WRAPPER -u RUSTC_WORKSPACE_WRAPPER -u CARGO_BUILD_TARGET -u CARGO_TARGET_DIR \
        rustup run "$channel" cargo build --quiet --release --locked --offline \
        --target wasm32-wasip1 --target-dir "$out/rust-target")
    cp "$out/rust-target/wasm32-wasip1/release/rustinfo.wasm" "$out/rustinfo.wasm.tmp"
    if [[ "$(cksum <"$out/rustinfo.wasm.tmp")" == "$before" ]]; then
        rm "$out/rustinfo.wasm.tmp"
    else
        log "rust rustinfo.wasm"
        mv "$out/rustinfo.wasm.tmp" "$out/rustinfo.wasm"
        built=$((built + 1))
    fi
}

# Writes OUT/wasi-imports.txt ("app: function..." per module, then the union) and fails if a
# module imports anything other than a wasi_snapshot_preview1 function.
check_imports() {
    local report="$out/wasi-imports.txt.tmp" module name imports bad=0
    : >"$report"
    for module in "$out"/*.wasm; do
        name="$(basename "$module" .wasm)"
        # Lines look like " - func[0] sig=2 <name> <- wasi_snapshot_preview1.args_get".
        imports="$(wasm-objdump -j Import -x "$module" | sed -n 's/^ - \([a-z]*\)\[.* <- \(.*\)$/\1 \2/p')"
        if grep -v '^func wasi_snapshot_preview1\.' <<<"$imports" | grep -q .; then
            log "$name.wasm has imports other than wasi_snapshot_preview1 functions:"
            grep -v '^func wasi_snapshot_preview1\.' <<<"$imports" | sed 's/^/    /' >&2
            bad=1
        fi
        echo "$name: $(sed 's/^func wasi_snapshot_preview1\.//' <<<"$imports" | sort | tr '\n' ' ' | sed 's/ $//')" >>"$report"
    done
    {
        echo
        echo "all: $(sed 's/^[^:]*: //' "$report" | tr ' ' '\n' | grep . | sort -u | tr '\n' ' ' | sed 's/ $//')"
    } >>"$report"
    mv "$report" "$out/wasi-imports.txt"
    ((bad == 0)) || die "modules with foreign imports (see above)"
}

check_tools

c="$apps_dir/c"
for app in hello echo cat ls wc cp rm mkdir sleep trap memtouch mkdata sortbench hostcall httpd fsbench fetch; do
    build_c "$app" "$c/$app.c"
done
for app in sha256sum shabench randio; do
    build_c "$app" "$c/$app.c" "$c/sha256.c"
done
build_cxx calc "$apps_dir/cpp/calc.cpp"
build_rust
check_imports

log "$built rebuilt; modules in $out (imports listed in $out/wasi-imports.txt)"
