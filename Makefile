# Keel: build, run and test. Every target first runs `setup` (idempotent, cheap when all is there):
# Debian packages (QEMU, GRUB, xorriso, mtools, dosfstools) and the Rust nightly pinned in rust-toolchain.toml.
#
#   make run      boot Keel in QEMU with the serial console on this terminal (MEM=, PORT=)
#   make test     host unit tests, then the kernel image, then the QEMU integration tests
#   make image    build the kernel and target/keel/keel.iso (its path is the last line printed)
#   make bench    boot BOOTS times, run the in-kernel benchmarks, write target/bench/report.md;
#                 then the cost of a WASI-dd MMIO access on the host (target/bench/wasi-dd-host.md)
#   make bench-dd only the host part
#   make clippy   lint the host crates, the QEMU tests and the kernel (warnings are errors)
#   make fmt      check formatting

MEM ?= 128M
PORT ?= 8080
BOOTS ?= 5

CARGO ?= cargo
KEEL := $(CARGO) run --quiet -p keel-toolchain --

.DEFAULT_GOAL := image
.PHONY: setup image run test bench bench-dd clippy fmt linux-image linux-run

setup:
	@bash toolchain/setup.sh

image: setup
	@$(KEEL) image

run: setup
	@$(KEEL) run --mem $(MEM) --port $(PORT)

# The Linux yardstick: Debian's kernel and busybox-static (.debs cached in target/linux/debs), with
# the WASI-dd runner and Keel's driver components, as target/linux/vmlinuz and initramfs.cpio.gz;
# LINUX_EXTRA=DIR lays DIR's files over the initramfs. `make linux-run` boots it on Keel's machine
# with an IOMMU (MEM=, PORT=; the same disk image as `make run`, on an AHCI controller of its own).
LINUX_EXTRA_ARG = $(if $(LINUX_EXTRA),--extra $(LINUX_EXTRA))

linux-image: setup
	@$(KEEL) linux-image $(LINUX_EXTRA_ARG)

linux-run: setup
	@$(KEEL) linux-run --mem $(MEM) --port $(PORT) $(LINUX_EXTRA_ARG)

test: setup
	@$(KEEL) build-drivers
	$(CARGO) test
	@$(KEEL) image
	$(CARGO) test -p keel-toolchain --test kernel --test apps --test storage -- --test-threads=2
	@$(KEEL) linux-image
	$(CARGO) test -p keel-toolchain --test linux -- --test-threads=2

bench: setup
	@$(KEEL) linux-image
	@$(KEEL) bench --mem $(MEM) --boots $(BOOTS)
	@$(KEEL) bench-dd

bench-dd: setup
	@$(KEEL) bench-dd

clippy: setup
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy -p keel-toolchain --test kernel --test apps --test storage --test linux -- -D warnings
	@$(KEEL) clippy-kernel

fmt: setup
	$(CARGO) fmt --all -- --check
