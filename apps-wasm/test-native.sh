#!/usr/bin/env bash
# Builds the C and C++ apps natively with the host compilers and checks their behaviour, mostly
# against coreutils: the same portable sources become the WASI modules (apps-wasm/build.sh).
#
#   apps-wasm/test-native.sh              native builds (CC and CXX choose the compilers)
#   apps-wasm/test-native.sh --wasm [DIR] the same checks on the modules that build.sh put in DIR
#                                         (default target/apps-wasm), run by Node.js's WASI
#                                         preview1 (node:wasi), plus rustinfo: a stand-in host
#
# Prints one line per failed check and a summary; exits 1 if any check failed. Every app runs in
# one working directory and is given relative paths only (in --wasm mode "." is the only preopen).
set -euo pipefail

apps_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export LC_ALL=C

mode=native
if [[ "${1:-}" == --wasm ]]; then
    mode=wasm
    wasm_dir="${2:-$apps_dir/../target/apps-wasm}"
    if [[ ! -d "$wasm_dir" ]]; then
        echo "test-native: no directory $wasm_dir (run apps-wasm/build.sh)" >&2
        exit 2
    fi
    wasm_dir="$(cd "$wasm_dir" && pwd)"
    if ! node -e 'require("node:wasi")' 2>/dev/null; then
        echo "test-native: --wasm needs Node.js (20 or later) with node:wasi" >&2
        exit 2
    fi
elif (($# > 0)); then
    echo "usage: apps-wasm/test-native.sh [--wasm [DIR]]" >&2
    exit 2
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/keel-apps-test.XXXXXX")"
trap 'rm -rf "$work"' EXIT
bin="$work/bin"
mkdir -p "$bin" "$work/data"
cd "$work"
data=data

# ---- build -----------------------------------------------------------------------------------

if [[ "$mode" == native ]]; then
    CC="${CC:-cc}"
    CXX="${CXX:-c++}"
    cflags=(-std=c11 -O2 -Wall -Wextra)
    c="$apps_dir/c"
    for app in hello echo cat ls wc cp rm mkdir trap sortbench httpd; do
        "$CC" "${cflags[@]}" -o "$bin/$app" "$c/$app.c"
    done
    for app in sha256sum shabench randio; do
        "$CC" "${cflags[@]}" -o "$bin/$app" "$c/$app.c" "$c/sha256.c"
    done
    "$CXX" -std=c++17 -O2 -Wall -Wextra -fno-exceptions -o "$bin/calc" "$apps_dir/cpp/calc.cpp"
else
    # bin/APP runs APP.wasm with argv[0] = its own path, "." preopened as the current directory,
    # and exit status 134 for a trap.
    cat >"$work/run.mjs" <<'EOF'
import { readFileSync } from 'node:fs';
import { WASI } from 'node:wasi';
const [module, argv0, ...args] = process.argv.slice(2);
const wasi = new WASI({
    version: 'preview1', args: [argv0, ...args], env: process.env,
    preopens: { '.': process.cwd() }, returnOnExit: true,
});
const instance = new WebAssembly.Instance(new WebAssembly.Module(readFileSync(module)),
    wasi.getImportObject());
try {
    process.exitCode = wasi.start(instance);
} catch (error) {
    process.stderr.write(`wasm trap: ${error.message}\n`);
    process.exitCode = 134;
}
EOF
    for app in hello echo cat ls wc cp rm mkdir trap sortbench sha256sum shabench randio calc rustinfo httpd; do
        if [[ ! -f "$wasm_dir/$app.wasm" ]]; then
            echo "test-native: missing $wasm_dir/$app.wasm (run apps-wasm/build.sh)" >&2
            exit 2
        fi
        printf '#!/bin/sh\nexec node --no-warnings "%s" "%s" "$0" "$@"\n' \
            "$work/run.mjs" "$wasm_dir/$app.wasm" >"$bin/$app"
        chmod +x "$bin/$app"
    done
fi

# ---- harness ---------------------------------------------------------------------------------

checks=0
failures=0

fail() {
    failures=$((failures + 1))
    echo "FAIL: $*" >&2
}

# expect NAME EXPECTED ACTUAL
expect() {
    checks=$((checks + 1))
    if [[ "$2" != "$3" ]]; then
        fail "$1"
        diff <(printf '%s\n' "$2") <(printf '%s\n' "$3") | sed 's/^/    /' >&2 || true
    fi
}

# run APP ARGS... : runs an app with its output in $out, its errors in $err, its status in $status.
# Output is captured exactly (a missing final newline shows).
run() {
    local app="$1"
    shift
    status=0
    "$bin/$app" "$@" >"$work/stdout" 2>"$work/stderr" || status=$?
    out="$(cat "$work/stdout"; echo .)"
    out="${out%.}"
    err="$(cat "$work/stderr")"
}

# run_in INPUT APP ARGS... : like run, with INPUT on standard input.
run_in() {
    local input="$1"
    shift
    run "$@" <<<"$input"
}

# expect_failure NAME STATUS STDERR_PART : the last run exited with STATUS and said STDERR_PART.
expect_failure() {
    checks=$((checks + 1))
    if [[ "$status" != "$2" || "$err" != *"$3"* ]]; then
        fail "$1: want status $2 and stderr containing '$3', got status $status, stderr '$err'"
    fi
}

expect_success() {
    checks=$((checks + 1))
    if [[ "$status" != 0 ]]; then
        fail "$1: exit status $status, stderr '$err'"
    fi
}

# ---- test data -------------------------------------------------------------------------------

head -c 1000000 /dev/urandom >"$data/random.bin"
printf 'one two  three\nfour\tfive\n\n  six seven eight nine  \nno newline at end' >"$data/text.txt"
printf '' >"$data/empty.txt"
printf 'a\nb\nc\n' >"$data/abc.txt"

# ---- hello, echo -----------------------------------------------------------------------------

run hello a "b c"
expect "hello" "Hello from WebAssembly on Keel! argv[3]: \"$bin/hello\" \"a\" \"b c\"
" "$out"

# echo_case ARGS... : our echo prints what coreutils' echo prints.
echo_case() {
    run echo "$@"
    expect "echo $*" "$(/bin/echo "$@"; echo .)" "$out."
}
echo_case a b c
echo_case -n a b
echo_case -n
echo_case
echo_case -n -n x
echo_case x -n
echo_case "  spaced  " "" tail

# ---- cat -------------------------------------------------------------------------------------

run cat "$data/text.txt" "$data/abc.txt"
expect "cat two files" "$(cat "$data/text.txt" "$data/abc.txt"; echo .)" "$out."
run_in "from stdin" cat
expect "cat stdin" "from stdin
" "$out"
run_in "middle" cat "$data/abc.txt" - "$data/abc.txt"
expect "cat with -" "a
b
c
middle
a
b
c
" "$out"
checks=$((checks + 1))
"$bin/cat" "$data/random.bin" | cmp -s - "$data/random.bin" || fail "cat binary file"
run cat "$data/missing" "$data/abc.txt"
expect "cat goes on after a missing file" "a
b
c
" "$out"
expect_failure "cat missing file" 1 "cat: $data/missing: No such file or directory"
run cat "$data"
expect_failure "cat directory" 1 "cat: $data:"

# ---- wc --------------------------------------------------------------------------------------

# coreutils pads to width 7 when it cannot know the input size (a pipe), as we always do, except
# for a single count of a single input.
for file in text.txt empty.txt abc.txt random.bin; do
    for option in "" -l -w -c; do
        # coreutils 9.1 does not let non-printable bytes start a word; POSIX (and we) count any
        # run of non-white-space bytes. Binary data is checked against a POSIX count below.
        [[ "$file" == random.bin && "$option" != -[lc] ]] && continue
        run wc $option <"$data/$file"
        expect "wc $option < $file" "$(cat "$data/$file" | wc $option)" "${out%$'\n'}"
    done
done
run wc -w <"$data/random.bin"
expect "wc -w of binary data, POSIX words" \
    "$(tr -s ' \t\n\v\f\r' '\n' <"$data/random.bin" | grep -ac .)" "$(awk '{print $1}' <<<"$out")"
# With file names coreutils sizes the columns to fit; compare the fields.
run wc "$data/text.txt" "$data/abc.txt" "$data/empty.txt"
expect "wc files" "$(wc "$data/text.txt" "$data/abc.txt" "$data/empty.txt" | awk '{$1=$1};1')" \
    "$(awk '{$1=$1};1' <<<"$out")"
checks=$((checks + 1))
[[ "$(sed -n 2p <<<"$out")" == "$(printf '%7d %7d %7d %s' 3 3 6 "$data/abc.txt")" ]] ||
    fail "wc line format: '$(sed -n 2p <<<"$out")'"
run wc -l "$data/abc.txt"
expect "wc -l FILE" "3 $data/abc.txt
" "$out"
run wc -c "$data/abc.txt" "$data/text.txt"
expect "wc -c FILE FILE" "      6 $data/abc.txt
     68 $data/text.txt
     74 total
" "$out"
run wc "$data/missing"
expect_failure "wc missing file" 1 "wc: $data/missing: No such file or directory"

# ---- sha256sum -------------------------------------------------------------------------------

run sha256sum </dev/null
expect "sha256 of empty input" "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  -
" "$out"
printf abc >"$data/abc.bin"
run sha256sum "$data/abc.bin"
expect "sha256 of abc" "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  $data/abc.bin
" "$out"
printf abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq >"$data/448.bin"
run sha256sum "$data/448.bin"
expect "sha256 of the 448-bit vector" \
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1  $data/448.bin
" "$out"
run sha256sum "$data/random.bin" "$data/text.txt"
expect "sha256 of 1 MB and text vs sha256sum" "$(sha256sum "$data/random.bin" "$data/text.txt")" "${out%$'\n'}"
run sha256sum <"$data/random.bin"
expect "sha256 of 1 MB on stdin" "$(sha256sum <"$data/random.bin")" "${out%$'\n'}"
# Every length around the padding boundaries (55/56/63/64 bytes) and a few blocks further.
mkdir prefixes
for length in $(seq 0 200); do
    head -c "$length" "$data/random.bin" >"prefixes/$length"
done
run sha256sum prefixes/*
expect "sha256 of 0- to 200-byte inputs vs sha256sum" "$(sha256sum prefixes/*)" "${out%$'\n'}"
run sha256sum "$data/missing"
expect_failure "sha256sum missing file" 1 "sha256sum: $data/missing: No such file or directory"

# ---- randio ----------------------------------------------------------------------------------

run randio random-order.bin 2 7
expect_success "randio 2 MiB"
expect "randio's sha256 is the file's" "sha256 $(sha256sum random-order.bin | cut -d' ' -f1)" \
    "$(tail -n 1 <<<"${out%$'\n'}")"
run randio random-order.bin 0
expect_failure "randio rejects 0 MiB" 2 "usage: randio"

# ---- shabench --------------------------------------------------------------------------------

run shabench 2
expect_success "shabench 2"
if command -v python3 >/dev/null; then
    # The same data: 1 MiB of splitmix64 output from the same seed, little-endian words, twice.
    want="$(python3 - <<'EOF'
import hashlib, struct
mask = (1 << 64) - 1
state, words = 0x4B65656C2D736861, []
for _ in range(1024 * 1024 // 8):
    state = (state + 0x9E3779B97F4A7C15) & mask
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    words.append(z ^ (z >> 31))
print(hashlib.sha256(struct.pack("<%dQ" % len(words), *words) * 2).hexdigest())
EOF
)"
    expect "shabench digest vs python hashlib" "shabench: 2 MiB sha256=$want" "$(head -n 1 <<<"$out")"
else
    echo "note: python3 not found, shabench digest not cross-checked" >&2
fi
run shabench 0
expect_failure "shabench 0" 2 "shabench: invalid size '0'"

# ---- sortbench -------------------------------------------------------------------------------

run sortbench 1000000
expect_success "sortbench 1000000"
# Fixed seed: the same checksum on every platform (native and wasm32 alike).
expect "sortbench checksum" \
    "sortbench: n=1000000 checksum=7ec985754e5022ca" \
    "$(head -n 1 <<<"$out" | sed 's/ min=.*//')"
run sortbench 1
expect_success "sortbench 1"
run sortbench x
expect_failure "sortbench x" 2 "sortbench: invalid count 'x'"

# ---- calc ------------------------------------------------------------------------------------

while IFS='|' read -r expression want; do
    run calc "$expression"
    expect "calc $expression" "$want
" "$out"
done <<'EOF'
1+2*3|7
(1+2)*3|9
2^3^2|512
-2^2|-4
2^-1|0.5
(-2)^2|4
10 % 4|2
-7 % 3|-1
7/2|3.5
1/3|0.3333333333
--3|3
+4 - -4|8
sqrt(16) + sqrt(2)|5.414213562
sin(0) + cos(0)|1
sin(pi/2)|1
ln(e)|1
exp(1)|2.718281828
ceil(1.2) * floor(-1.2)|-4
abs(-3.5)|3.5
pi|3.141592654
2 * pi * 10|62.83185307
1e3 + .5 + 2.|1002.5
1.5E-3*1000|1.5
  ( ( 1 ) )  |1
2^0.5|1.414213562
1e300*1e300|inf
EOF
run calc 1 + 2 "*" 3
expect "calc joins its arguments" "7
" "$out"

while IFS='|' read -r expression message; do
    run calc "$expression"
    expect_failure "calc error for '$expression'" 1 "calc: error: $message"
done <<'EOF'
(1+2))|unexpected ')' at column 6
(1+2|expected ')', found end of input at column 5
1+|unexpected end of input at column 3
1 + * 2|unexpected '*' at column 5
2 3|unexpected '3' at column 3
1/0|division by zero at column 2
5 % (1-1)|modulo by zero at column 3
foo(1)|unknown name 'foo' at column 1
sqrt 4|expected '(' after 'sqrt', found '4' at column 6
sqrt(-1)|sqrt of a negative number at column 6
ln(0)|ln of a non-positive number at column 4
2e|unexpected 'e' at column 2
#|unexpected '#' at column 1
   |empty expression at column 4
EOF

run_in $'1+1\n\n  \n2*3\n(\nsqrt(9)' calc
expect "calc reads lines from stdin" "2
6
3
" "$out"
expect_failure "calc reports a bad stdin line" 1 "calc: error: line 5: unexpected end of input at column 2"

# ---- mkdir, cp, ls, rm in a scratch directory -------------------------------------------------

mkdir scratch
cp "$data/random.bin" "$data/abc.txt" scratch/
cd scratch

run mkdir d
expect_success "mkdir d"
checks=$((checks + 1))
[[ -d d ]] || fail "mkdir d did not create d"
run mkdir d
expect_failure "mkdir existing" 1 "mkdir: cannot create directory 'd': File exists"
run mkdir x/y
expect_failure "mkdir without parent" 1 "mkdir: cannot create directory 'x/y': No such file or directory"
run mkdir -p x/y/z d
expect_success "mkdir -p"
checks=$((checks + 1))
[[ -d x/y/z ]] || fail "mkdir -p did not create x/y/z"
run mkdir
expect_failure "mkdir without operand" 2 "mkdir: missing operand"
printf 'file\n' >plain
run mkdir -p plain/sub
expect_failure "mkdir -p through a file" 1 "mkdir: cannot create directory 'plain/sub'"

run cp random.bin copy.bin
expect_success "cp file"
checks=$((checks + 1))
cmp -s random.bin copy.bin || fail "cp copy differs"
printf 'old contents that are longer\n' >short
run cp abc.txt short
checks=$((checks + 1))
cmp -s abc.txt short || fail "cp did not truncate the destination"
run cp abc.txt d
expect_success "cp into a directory"
checks=$((checks + 1))
cmp -s abc.txt d/abc.txt || fail "cp into a directory: d/abc.txt differs"
run cp missing other
expect_failure "cp missing source" 1 "cp: cannot stat 'missing': No such file or directory"
run cp copy.bin copy.bin
expect_failure "cp onto itself" 1 "are the same file"
run cp x y
expect_failure "cp a directory" 1 "cp: 'x' is a directory"
run cp copy.bin nodir/file
expect_failure "cp into a missing directory" 1 "cp: cannot create 'nodir/file'"
run cp onlyone
expect_failure "cp usage" 2 "usage: cp SRC DST"

touch b a c .hidden
ln -s a link
run ls
expect "ls" "a
abc.txt
b
c
copy.bin
d
link
plain
random.bin
short
x
" "$out"
expect "ls vs coreutils" "$(command ls -1)" "${out%$'\n'}"
# Some WASI hosts list "." and "..", some do not.
run ls -a
expect "ls -a vs coreutils" "$(command ls -1a | grep -vxF -e . -e ..)" "$(grep -vxF -e . -e .. <<<"${out%$'\n'}")"
run ls d x
expect "ls two directories" "d:
abc.txt

x:
y
" "$out"
run ls -l
expect "ls -l" "- $(printf '%10d' 0) a
- $(printf '%10d' 6) abc.txt
- $(printf '%10d' 0) b
- $(printf '%10d' 0) c
- $(printf '%10d' 1000000) copy.bin
d $(printf '%10d' "$(stat -c %s d)") d
l $(printf '%10d' 1) link -> a
- $(printf '%10d' 5) plain
- $(printf '%10d' 1000000) random.bin
- $(printf '%10d' 6) short
d $(printf '%10d' "$(stat -c %s x)") x
" "$out"
run ls short
expect "ls of a file" "short
" "$out"
if [[ "$mode" == native ]]; then
    run ls "$work/scratch/d"
    expect "ls of an absolute path" "abc.txt
" "$out"
fi
run ls nothere
expect_failure "ls missing" 1 "ls: cannot access 'nothere': No such file or directory"
run ls -z
expect_failure "ls bad option" 2 "usage: ls"

run rm a b
expect_success "rm two files"
checks=$((checks + 1))
[[ ! -e a && ! -e b ]] || fail "rm left a or b"
run rm a
expect_failure "rm missing" 1 "rm: cannot remove 'a': No such file or directory"
run rm -f a
expect_success "rm -f missing"
run rm d
expect_failure "rm directory" 1 "rm: cannot remove 'd': Is a directory"
run rm link
checks=$((checks + 1))
[[ ! -L link && ! -e link ]] || fail "rm did not remove the link"
run rm -r x d
expect_success "rm -r"
checks=$((checks + 1))
[[ ! -e x && ! -e d ]] || fail "rm -r left x or d"
run rm -r .
expect_failure "rm -r ." 1 "refusing to remove '.' or '..'"
run rm
expect_failure "rm without operand" 2 "rm: missing operand"
run ls -a
expect "after rm" ".hidden
abc.txt
c
copy.bin
plain
random.bin
short" "$(grep -vxF -e . -e .. <<<"${out%$'\n'}")"
cd "$work"

# ---- httpd -----------------------------------------------------------------------------------

unset LISTEN_FD
run httpd
expect_failure "httpd without LISTEN_FD" 2 "httpd: LISTEN_FD is not set"
LISTEN_FD=3x run httpd
expect_failure "httpd with a bad LISTEN_FD" 2 "httpd: invalid LISTEN_FD '3x'"
LISTEN_FD=0 run httpd </dev/null
expect_failure "httpd with LISTEN_FD not a socket" 1 "httpd: LISTEN_FD=0: not a socket"
run httpd a b
expect_failure "httpd usage" 2 "usage: httpd [DIR]"
# Over TCP natively only: node:wasi cannot preopen a listening socket (passed as stdin, Node 20
# crashes on the first connection).
if [[ "$mode" == native ]]; then
    if command -v python3 >/dev/null; then
        httpd_result="$(python3 "$apps_dir/test-httpd.py" "$bin/httpd")" || httpd_result="1 1"
        read -r httpd_checks httpd_failures <<<"$httpd_result"
        checks=$((checks + httpd_checks))
        failures=$((failures + httpd_failures))
    else
        echo "note: python3 not found, httpd not checked over TCP" >&2
    fi
fi

# ---- trap ------------------------------------------------------------------------------------

# run_trap CMD...: status and stderr of CMD. `trap MODE` should die by a signal natively, and exit
# with 134 (the runner's status for a trap) as wasm.
# An inner shell reaps it so that its "Segmentation fault" report goes to the captured stderr.
run_trap() {
    status=0
    (
        ulimit -c 0
        exec bash -c '"$@"; exit $?' trap "$@"
    ) >/dev/null 2>"$work/stderr" || status=$?
    err="$(cat "$work/stderr")"
}
for trap_mode in oob unreachable div0 stack; do
    run_trap "$bin/trap" "$trap_mode"
    checks=$((checks + 1))
    ((status > 128)) || fail "trap $trap_mode: want death by a signal or a trap, got status $status"
    [[ "$mode" == native || "$err" == *"wasm trap: "* ]] || fail "trap $trap_mode: no trap reported: '$err'"
    [[ "$err" == "trap: "* ]] || fail "trap $trap_mode: no announcement on stderr: '$err'"
done
run_trap timeout 1 "$bin/trap" loop
checks=$((checks + 1))
[[ "$status" == 124 ]] || fail "trap loop: want it still running after 1 s (timeout status 124), got $status"
run trap bogus
expect_failure "trap unknown mode" 2 "trap: unknown mode 'bogus'"
run trap
expect_failure "trap usage" 2 "usage: trap"

# ---- rustinfo (wasm only: it is a Rust wasm32-wasip1 program) ---------------------------------

if [[ "$mode" == wasm ]]; then
    KEEL_APPS_TEST=yes run rustinfo 100 x
    expect_failure "rustinfo usage" 2 "usage: "
    KEEL_APPS_TEST=yes run rustinfo 100
    expect_success "rustinfo 100"
    checks=$((checks + 1))
    grep -qx '  \[1\] "100"' <<<"$out" || fail "rustinfo does not list its arguments: $out"
    checks=$((checks + 1))
    grep -qx '  KEEL_APPS_TEST=yes' <<<"$out" || fail "rustinfo does not list its environment"
    checks=$((checks + 1))
    grep -Eq '^time: [0-9]+\.[0-9]{9} s since the epoch = 20[0-9]{2}-[01][0-9]-[0-3][0-9] ' <<<"$out" ||
        fail "rustinfo prints no plausible time: $(grep time: <<<"$out")"
    checks=$((checks + 1))
    grep -q '^primes below 100: 25 (largest 97)' <<<"$out" || fail "rustinfo primes: $out"
    run rustinfo many
    expect_failure "rustinfo bad limit" 2 "invalid limit 'many'"
fi

# ---- summary ---------------------------------------------------------------------------------

if ((failures > 0)); then
    echo "test-native: $failures of $checks checks failed" >&2
    exit 1
fi
echo "test-native: all $checks checks passed"
