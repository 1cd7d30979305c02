//! `keel bench`: boots the image several times, measures QEMU start to the first prompt, runs the
//! shell's `bench` command, and writes `target/bench/report.md` and `report.json`.
//!
//! The kernel prints one line per benchmark, `BENCH {"name":"...","median_ns":<f64>,
//! "iterations":<n>}`, and ends with `bench: done`. Benchmarks are measurements, not tests: nothing
//! here has a threshold.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::json::{self, Value};
use crate::paths::Layout;
use crate::qemu::{QemuConfig, free_local_port, qemu_program};
use crate::vm::{BOOT_TIMEOUT, PROMPT, Vm};

/// Prefix of a benchmark result line.
pub const BENCH_PREFIX: &str = "BENCH ";
/// The line that ends the `bench` command's output.
pub const BENCH_DONE: &str = "bench: done";
/// Hang guard for the whole `bench` command (TCG is slow).
pub const BENCH_TIMEOUT: Duration = Duration::from_secs(600);
/// The native MMIO read that the WASI-dd MMIO figures are compared with.
pub const MMIO_BASELINE: &str = "mmio_read_native";
/// How many times `keel bench` boots the image by default.
pub const DEFAULT_BOOTS: usize = 5;

/// Theseus's published figures (µs, real hardware), for context beside ours.
pub const THESEUS_REFERENCE: [TheseusFigure; 4] = [
    TheseusFigure {
        benchmark: "context_switch",
        measure: "context switch",
        micros: 0.34,
    },
    TheseusFigure {
        benchmark: "spawn_join",
        measure: "create task",
        micros: 244.0,
    },
    TheseusFigure {
        benchmark: "map_unmap_page",
        measure: "memory map",
        micros: 0.99,
    },
    TheseusFigure {
        benchmark: "channel_round_trip",
        measure: "IPC",
        micros: 1.03,
    },
];

/// One of Theseus's published figures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TheseusFigure {
    /// Our benchmark it is shown beside.
    pub benchmark: &'static str,
    /// Theseus's name for the measurement.
    pub measure: &'static str,
    pub micros: f64,
}

/// One `BENCH` line.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchSample {
    pub name: String,
    pub median_ns: f64,
    pub iterations: u64,
}

/// What one boot measured.
#[derive(Clone, Debug)]
pub struct BootRun {
    pub boot_to_prompt: Duration,
    pub samples: Vec<BenchSample>,
}

/// Everything the report is made from.
#[derive(Clone, Debug)]
pub struct Report {
    /// The benchmarked ISO.
    pub image: String,
    pub qemu_version: String,
    pub host_cpu: String,
    pub memory: String,
    pub runs: Vec<BootRun>,
}

/// One benchmark summarised over all boots.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub name: String,
    /// Median over boots of each boot's median.
    pub median_ns: f64,
    pub min_ns: f64,
    pub max_ns: f64,
    pub iterations: u64,
    pub boots: usize,
    pub theseus: Option<TheseusFigure>,
}

/// Options of `keel bench`.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub iso: PathBuf,
    pub memory: String,
    pub boots: usize,
}

/// Parses a `BENCH {...}` line; `None` if the line is something else.
pub fn parse_bench_line(line: &str) -> Option<Result<BenchSample>> {
    let object = line.trim().strip_prefix(BENCH_PREFIX)?;
    Some(parse_bench_object(object).with_context(|| format!("bad benchmark line {line:?}")))
}

fn parse_bench_object(object: &str) -> Result<BenchSample> {
    let fields = json::parse_flat_object(object)?;
    let field = |key: &str| {
        fields
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value)
            .ok_or_else(|| anyhow!("missing {key:?}"))
    };
    let Value::String(name) = field("name")? else {
        bail!("\"name\" is not a string");
    };
    let Value::Number(median_ns) = *field("median_ns")? else {
        bail!("\"median_ns\" is not a number");
    };
    let iterations = match *field("iterations")? {
        Value::Number(n) if n >= 0.0 && n.fract() == 0.0 => n as u64,
        _ => bail!("\"iterations\" is not a non-negative integer"),
    };
    ensure!(!name.is_empty(), "empty benchmark name");
    ensure!(
        median_ns.is_finite() && median_ns >= 0.0,
        "median_ns {median_ns} is not a duration"
    );
    Ok(BenchSample {
        name: name.clone(),
        median_ns,
        iterations,
    })
}

/// All `BENCH` lines of the `bench` command's output; at least one is required.
pub fn parse_bench_output(text: &str) -> Result<Vec<BenchSample>> {
    let samples = text
        .lines()
        .filter_map(parse_bench_line)
        .collect::<Result<Vec<_>>>()?;
    ensure!(
        !samples.is_empty(),
        "the bench command printed no BENCH line"
    );
    Ok(samples)
}

/// The median (mean of the two middle values for an even count); NaN for no values.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

impl Report {
    /// One row per benchmark, in the order the kernel first printed them.
    pub fn rows(&self) -> Vec<Row> {
        let mut names: Vec<&str> = Vec::new();
        for sample in self.runs.iter().flat_map(|run| &run.samples) {
            if !names.contains(&sample.name.as_str()) {
                names.push(&sample.name);
            }
        }
        names.into_iter().map(|name| self.row(name)).collect()
    }

    fn row(&self, name: &str) -> Row {
        let samples: Vec<&BenchSample> = self
            .runs
            .iter()
            .flat_map(|run| run.samples.iter().filter(|s| s.name == name))
            .collect();
        let medians: Vec<f64> = samples.iter().map(|s| s.median_ns).collect();
        let iterations: Vec<f64> = samples.iter().map(|s| s.iterations as f64).collect();
        Row {
            name: name.to_string(),
            median_ns: median(&medians),
            min_ns: medians.iter().copied().fold(f64::INFINITY, f64::min),
            max_ns: medians.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            iterations: median(&iterations) as u64,
            boots: samples.len(),
            theseus: THESEUS_REFERENCE
                .iter()
                .find(|figure| figure.benchmark == name)
                .copied(),
        }
    }

    /// Seconds from QEMU start to the first prompt, one per boot.
    pub fn boot_seconds(&self) -> Vec<f64> {
        self.runs
            .iter()
            .map(|run| run.boot_to_prompt.as_secs_f64())
            .collect()
    }
}

/// The Markdown report.
pub fn render_markdown(report: &Report) -> String {
    let mut md = String::new();
    let boots = report.boot_seconds();
    let _ = writeln!(md, "# Keel benchmarks\n");
    let _ = writeln!(
        md,
        "{} boots of `{}` in {} (q35, `-cpu max`, {} of memory) on {}.\n",
        boots.len(),
        report.image,
        report.qemu_version,
        report.memory,
        report.host_cpu
    );
    let _ = writeln!(
        md,
        "QEMU runs under **TCG** (software CPU emulation, no KVM): every figure is far slower than \
         the same code on real hardware and only comparable with other runs under TCG. Theseus's \
         published figures were measured on real hardware and are listed for context only.\n"
    );
    let _ = writeln!(
        md,
        "Boot to prompt (QEMU start to the first `{}`, wall time): median {:.3} s, min {:.3} s, \
         max {:.3} s.\n",
        PROMPT.trim_end(),
        median(&boots),
        boots.iter().copied().fold(f64::INFINITY, f64::min),
        boots.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    let _ = writeln!(
        md,
        "| benchmark | Keel median (µs) | min–max over boots (µs) | iterations | Theseus (µs, real hardware) |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---|");
    for row in report.rows() {
        let theseus = match row.theseus {
            Some(figure) => format!("{} ({})", figure.micros, figure.measure),
            None => "—".to_string(),
        };
        let _ = writeln!(
            md,
            "| {} | {:.3} | {:.3}–{:.3} | {} | {} |",
            row.name,
            row.median_ns / 1e3,
            row.min_ns / 1e3,
            row.max_ns / 1e3,
            row.iterations,
            theseus
        );
    }
    let _ = writeln!(
        md,
        "\nEach Keel figure is the median over boots of the median the kernel measured in that boot."
    );
    let rows = report.rows();
    if let Some(row) = rows.iter().find(|r| r.name == "tcp_guest_to_host_per_mib") {
        let _ = writeln!(
            md,
            "\nNetwork (e1000 driver component, smoltcp, `httpd` in Keel; QEMU user networking): \
             a 10 MiB download at {:.2} MB/s from guest to host",
            (1 << 20) as f64 / (row.median_ns / 1e9) / 1e6
        );
    }
    if let Some(row) = rows.iter().find(|r| r.name == "http_request_10_clients") {
        let _ = writeln!(
            md,
            "and {:.0} HTTP requests per second with 10 clients at once.",
            1e9 / row.median_ns
        );
    }
    let compared: Vec<String> = LINUX_COMPARISONS
        .iter()
        .filter_map(|c| {
            let find = |name: &str| rows.iter().find(|r| r.name == name);
            let rate = |row: &Row| match c.unit {
                "MB/s" => (1 << 20) as f64 / (row.median_ns / 1e9) / 1e6,
                _ => 1e9 / row.median_ns,
            };
            let keel = rate(find(c.keel)?);
            let linux = rate(find(c.linux)?);
            let (wasm, wasm_ratio) = match find(c.wasm_on_linux) {
                Some(row) => (
                    format!("{:.1} {}", rate(row), c.unit),
                    format!("{:.2}", rate(row) / linux),
                ),
                None => ("—".to_string(), "—".to_string()),
            };
            Some(format!(
                "| {} | {keel:.1} {unit} | {wasm} | {linux:.1} {unit} | {:.2} | {wasm_ratio} |",
                c.what,
                keel / linux,
                unit = c.unit
            ))
        })
        .collect();
    if !compared.is_empty() {
        let _ = writeln!(
            md,
            "\nThe same WebAssembly driver components on Keel and on Linux (under `wasi-dd-run`, \
             the device taken through VFIO behind QEMU's IOMMU; the NIC a TAP interface, the \
             disk an NBD device), against Linux 6.1's own e1000 and ahci drivers (Debian's \
             kernel, busybox `httpd`, `diskbench` with direct I/O), on the same QEMU machine in \
             the same run (Linux with {LINUX_MEMORY} of memory). Rates: higher is faster; a \
             ratio of 1 or more means at least as fast as Linux's own driver:\n"
        );
        let _ = writeln!(
            md,
            "| measurement | Wasm driver on Keel | Wasm driver on Linux | Linux's driver | Keel / Linux | Wasm on Linux / Linux |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
        for line in compared {
            let _ = writeln!(md, "{line}");
        }
    }
    let versus: Vec<String> = LINUX_TIMES
        .iter()
        .filter_map(|(keel, linux, what)| {
            let k = rows.iter().find(|r| r.name == *keel)?;
            let l = rows.iter().find(|r| r.name == *linux)?;
            Some(format!(
                "| {what} | {} | {} | {:.2} |",
                human_time(k.median_ns),
                human_time(l.median_ns),
                k.median_ns / l.median_ns
            ))
        })
        .collect();
    if !versus.is_empty() {
        let _ = writeln!(
            md,
            "\nKeel against Linux in the same run (time per operation; below 1 means Keel is \
             faster). Linux's figures come from `microbench` (processes, pipes, pthreads, mmap) \
             and the same C programs compiled natively; Keel's from `bench` (tasks, channels, \
             pages) and those programs as WebAssembly:\n"
        );
        let _ = writeln!(md, "| operation | Keel | Linux | Keel / Linux |");
        let _ = writeln!(md, "|---|---:|---:|---:|");
        for line in versus {
            let _ = writeln!(md, "{line}");
        }
    }
    let split: Vec<&Row> = PACKET_COST_FIELDS
        .iter()
        .filter_map(|f| rows.iter().find(|r| r.name == format!("net_packet_{f}")))
        .collect();
    if split.len() == PACKET_COST_FIELDS.len() {
        let total: f64 = split.iter().map(|r| r.median_ns).sum();
        let _ = writeln!(
            md,
            "\nGuest CPU time per packet during the download (frames in and out of the NIC \
             loop), {:.1} µs in all:\n",
            total / 1e3
        );
        let _ = writeln!(md, "| where | µs per packet | share |");
        let _ = writeln!(md, "|---|---:|---:|");
        for (row, what) in split.iter().zip([
            "driver (Wasm code of the e1000 component)",
            "WASI-dd host calls the driver made",
            "frame copies between stack and DMA buffers",
            "network stack (smoltcp, native)",
        ]) {
            let _ = writeln!(
                md,
                "| {what} | {:.2} | {:.0}% |",
                row.median_ns / 1e3,
                row.median_ns / total * 100.0
            );
        }
    }
    let storage: Vec<String> = STORAGE_FIGURES
        .iter()
        .filter_map(|(name, what)| {
            let row = rows.iter().find(|r| r.name == *name)?;
            Some(if name.ends_with("_per_mib") {
                format!(
                    "| {what} | {:.1} MB/s |",
                    (1 << 20) as f64 / (row.median_ns / 1e9) / 1e6
                )
            } else {
                format!("| {what} | {:.0} IOPS |", 1e9 / row.median_ns)
            })
        })
        .collect();
    if !storage.is_empty() {
        let _ = writeln!(
            md,
            "\nStorage (AHCI driver component on q35's ICH9 controller, a raw image; the raw \
             device from the kernel, the file system from a WASI program):\n"
        );
        let _ = writeln!(md, "| measurement | Keel |");
        let _ = writeln!(md, "|---|---:|");
        for line in storage {
            let _ = writeln!(md, "{line}");
        }
    }
    if let Some(native) = rows.iter().find(|r| r.name == MMIO_BASELINE) {
        let _ = writeln!(
            md,
            "\nOne 32-bit MMIO read of QEMU's `edu` device, against `{MMIO_BASELINE}` (a volatile \
             load through Keel's own mapping) in the same boots:\n"
        );
        let _ = writeln!(md, "| benchmark | ns per read | vs native |");
        let _ = writeln!(md, "|---|---:|---:|");
        for row in rows.iter().filter(|r| r.name.starts_with("mmio_read_")) {
            let _ = writeln!(
                md,
                "| {} | {:.1} | {:.1}x |",
                row.name,
                row.median_ns,
                row.median_ns / native.median_ns
            );
        }
    }
    md
}

/// The JSON report.
pub fn render_json(report: &Report) -> String {
    let boots = report.boot_seconds();
    let samples: Vec<String> = boots.iter().map(|s| json::number(*s)).collect();
    let rows: Vec<String> = report.rows().iter().map(row_json).collect();
    format!(
        "{{\n  \"image\": {},\n  \"qemu\": {},\n  \"accelerator\": \"tcg\",\n  \
         \"host_cpu\": {},\n  \"memory\": {},\n  \"boots\": {},\n  \"boot_to_prompt_s\": {{\"median\": {}, \"samples\": [{}]}},\n  \
         \"benchmarks\": [\n    {}\n  ]\n}}\n",
        json::quote(&report.image),
        json::quote(&report.qemu_version),
        json::quote(&report.host_cpu),
        json::quote(&report.memory),
        boots.len(),
        json::number(median(&boots)),
        samples.join(", "),
        rows.join(",\n    ")
    )
}

fn row_json(row: &Row) -> String {
    let theseus = match row.theseus {
        Some(figure) => format!(
            "{{\"measure\": {}, \"us\": {}}}",
            json::quote(figure.measure),
            json::number(figure.micros)
        ),
        None => "null".to_string(),
    };
    format!(
        "{{\"name\": {}, \"median_ns\": {}, \"min_ns\": {}, \"max_ns\": {}, \"iterations\": {}, \
         \"boots\": {}, \"theseus\": {}}}",
        json::quote(&row.name),
        json::number(row.median_ns),
        json::number(row.min_ns),
        json::number(row.max_ns),
        row.iterations,
        row.boots,
        theseus
    )
}

/// Runs the benchmarks and writes the reports; returns the Markdown report's path.
pub fn run(layout: &Layout, options: &BenchOptions) -> Result<PathBuf> {
    ensure!(options.boots > 0, "need at least one boot");
    let mut runs = Vec::with_capacity(options.boots);
    for boot in 1..=options.boots {
        eprintln!("bench: boot {boot} of {}", options.boots);
        let run = bench_one_boot(layout, options).with_context(|| format!("boot {boot}"))?;
        eprintln!(
            "bench: prompt after {:.3} s, {} benchmarks",
            run.boot_to_prompt.as_secs_f64(),
            run.samples.len()
        );
        runs.push(run);
    }
    let report = Report {
        image: options.iso.display().to_string(),
        qemu_version: qemu_version(),
        host_cpu: host_cpu(),
        memory: options.memory.clone(),
        runs,
    };
    write_reports(layout, &report)
}

fn bench_one_boot(layout: &Layout, options: &BenchOptions) -> Result<BootRun> {
    let mut config = QemuConfig::new(&options.iso, free_local_port()?);
    config.memory = options.memory.clone();
    let max_runtime = BOOT_TIMEOUT + BENCH_TIMEOUT + Duration::from_secs(60);
    let mut vm = Vm::boot(&config, max_runtime)?;
    vm.wait_for(PROMPT, BOOT_TIMEOUT)?;
    let boot_to_prompt = Instant::now() - vm.started_at();
    vm.send_line("bench")?;
    let output = vm.wait_for(BENCH_DONE, BENCH_TIMEOUT)?;
    let mut samples = parse_bench_output(&output).map_err(|error| {
        anyhow!("{error:#}\n--- bench output ---\n{output}\n--- end of bench output ---")
    })?;
    drop(vm);
    // The network is measured in a fresh boot: the in-kernel benchmarks leave the heap grown
    // and fragmented (a 40 MiB sort, a 64 MiB hash), which is not the state a server starts in.
    let disk = options.iso.with_file_name("bench-disk.img");
    let _ = fs::remove_file(&disk);
    crate::disk::create_fat32_image_with_partition(
        &disk,
        BENCH_DISK_BYTES,
        BENCH_PARTITION_BYTES,
        "BENCH",
        &[],
    )?;
    let mut config = QemuConfig::new(&options.iso, free_local_port()?);
    config.memory = options.memory.clone();
    config.disk = Some(disk.clone());
    let mut vm = Vm::boot(&config, max_runtime)?;
    vm.wait_for(PROMPT, BOOT_TIMEOUT)?;
    samples.extend(network(&mut vm, config.host_port).context("network benchmarks")?);
    samples.extend(storage(&mut vm).context("storage benchmarks")?);
    drop(vm);
    samples.extend(linux_yardstick(layout, &disk).context("the Linux yardstick")?);
    samples
        .extend(wasm_drivers_on_linux(layout, &disk).context("Keel's driver components on Linux")?);
    let _ = fs::remove_file(&disk);
    Ok(BootRun {
        boot_to_prompt,
        samples,
    })
}

/// The storage benchmarks and what the report calls them.
const STORAGE_FIGURES: [(&str, &str); 6] = [
    (
        "disk_seq_write_per_mib",
        "raw device, sequential write (1 MiB requests)",
    ),
    (
        "disk_seq_read_per_mib",
        "raw device, sequential read (1 MiB requests)",
    ),
    (
        "disk_random_read_4k",
        "raw device, 4 KiB random read, one at a time",
    ),
    (
        "fs_seq_write_per_mib",
        "FAT32 file, sequential write (1 MiB writes, fsync)",
    ),
    (
        "fs_seq_read_per_mib",
        "FAT32 file, sequential read (1 MiB reads)",
    ),
    (
        "fs_random_read_4k",
        "FAT32 file, 4 KiB random pread, one at a time",
    ),
];
/// One measurement with each driver: Keel's Wasm driver on Keel, the same component under the
/// runner on Linux, and Linux's own driver.
struct DriverComparison {
    keel: &'static str,
    wasm_on_linux: &'static str,
    linux: &'static str,
    what: &'static str,
    unit: &'static str,
}

const fn compare(
    keel: &'static str,
    wasm_on_linux: &'static str,
    linux: &'static str,
    what: &'static str,
    unit: &'static str,
) -> DriverComparison {
    DriverComparison {
        keel,
        wasm_on_linux,
        linux,
        what,
        unit,
    }
}

/// What the report compares across the three drivers.
const LINUX_COMPARISONS: [DriverComparison; 5] = [
    compare(
        "tcp_guest_to_host_per_mib",
        "linux_wasm_tcp_guest_to_host_per_mib",
        "linux_tcp_guest_to_host_per_mib",
        "TCP guest to host, 10 MiB over HTTP",
        "MB/s",
    ),
    compare(
        "http_request_10_clients",
        "linux_wasm_http_request_10_clients",
        "linux_http_request_10_clients",
        "HTTP requests, 10 clients",
        "req/s",
    ),
    compare(
        "disk_seq_write_per_mib",
        "linux_wasm_disk_seq_write_per_mib",
        "linux_disk_seq_write_per_mib",
        "raw disk sequential write, 1 MiB",
        "MB/s",
    ),
    compare(
        "disk_seq_read_per_mib",
        "linux_wasm_disk_seq_read_per_mib",
        "linux_disk_seq_read_per_mib",
        "raw disk sequential read, 1 MiB",
        "MB/s",
    ),
    compare(
        "disk_random_read_4k",
        "linux_wasm_disk_random_read_4k",
        "linux_disk_random_read_4k",
        "raw disk 4 KiB random read, one at a time",
        "IOPS",
    ),
];
/// Memory of the Linux guest in `make bench` (Keel's is `--mem`).
const LINUX_MEMORY: &str = "256M";

/// Keel's operation, Linux's counterpart and what the report calls the pair (times).
const LINUX_TIMES: [(&str, &str, &str); 7] = [
    (
        "wasi_null_call",
        "linux_null_syscall",
        "null call into the kernel (WASI host call / getppid)",
    ),
    (
        "context_switch",
        "linux_context_switch",
        "context switch (tasks / processes over pipes)",
    ),
    (
        "spawn_join",
        "linux_thread_spawn_join",
        "spawn and join (task / pthread)",
    ),
    (
        "channel_round_trip",
        "linux_pipe_round_trip",
        "IPC round trip (channel / pipe)",
    ),
    (
        "map_unmap_page",
        "linux_map_touch_unmap",
        "map and unmap a page (mmap+touch+munmap)",
    ),
    (
        "wasm_sha256_64mib",
        "linux_sha256_64mib",
        "SHA-256 of 64 MiB (Wasm / native C)",
    ),
    (
        "wasm_sort_10m_ints",
        "linux_sort_10m_ints",
        "sort 10 M ints (Wasm / native C)",
    ),
];

/// Nanoseconds as µs, ms or s, whichever reads best.
fn human_time(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} µs", ns / 1e3)
    }
}

/// The benchmark disk: a FAT32 partition in the first half, raw sectors behind it.
const BENCH_DISK_BYTES: u64 = 256 << 20;
const BENCH_PARTITION_BYTES: u64 = 128 << 20;
/// MiB moved by each storage benchmark.
const STORAGE_MIB: u64 = 64;

/// Size of the file the download benchmark fetches.
const DOWNLOAD_MIB: usize = 10;
/// Clients and requests each for the request-rate benchmark.
const CLIENTS: usize = 10;
const REQUESTS_PER_CLIENT: usize = 20;

/// `GET path` that must answer 200; the size of the body.
fn http_fetch(port: u16, path: &str) -> Result<usize> {
    let response = crate::http::get(port, path)?;
    ensure!(
        response.status.starts_with("HTTP/1.1 200"),
        "GET {path}: {}",
        response.status
    );
    Ok(response.body.len())
}

/// The network through the e1000 driver component, measured from the host: `httpd` in Keel
/// serving a 10 MiB file (guest-to-host TCP throughput; one sample, its time per MiB) and a
/// small page to 10 clients at once (time per request over all of them).
fn network(vm: &mut Vm, port: u16) -> Result<Vec<BenchSample>> {
    vm.command_until("ifconfig", |o| o.contains("inet 10.0.2.15"))?;
    for line in [
        "mkdir -p /tmp/www".to_string(),
        "cp /README /tmp/www/index.html".to_string(),
        format!("mkdata {DOWNLOAD_MIB} /tmp/www/big.bin"),
        "run --dir=/tmp/www --listen=80 httpd /tmp/www &".to_string(),
    ] {
        vm.command_with_timeout(&line, Duration::from_secs(120))?;
    }
    crate::http::wait_until_served(port, "/index.html")?;
    let before = packet_cost(vm)?;
    let start = Instant::now();
    let bytes = http_fetch(port, "/big.bin").context("downloading 10 MiB")?;
    let download = start.elapsed();
    ensure!(bytes == DOWNLOAD_MIB << 20, "short download: {bytes} bytes");
    let after = packet_cost(vm)?;
    let packets = after.first().copied().unwrap_or(0) - before.first().copied().unwrap_or(0);
    ensure!(
        packets > 0,
        "the download moved no packets: {before:?} {after:?}"
    );
    let per_packet: Vec<BenchSample> = PACKET_COST_FIELDS
        .iter()
        .enumerate()
        .map(|(i, name)| BenchSample {
            name: format!("net_packet_{name}"),
            median_ns: (after[i + 1] - before[i + 1]) as f64 / packets as f64,
            iterations: packets,
        })
        .collect();
    let requests = CLIENTS * REQUESTS_PER_CLIENT;
    let per_request = match request_rate(port) {
        Ok(per_request) => per_request,
        Err(error) => {
            let state = vm.command("ifconfig").unwrap_or_default();
            return Err(error.context(format!("Keel's interface then: {state}")));
        }
    };
    let mut samples = vec![
        BenchSample {
            name: "tcp_guest_to_host_per_mib".into(),
            median_ns: download.as_nanos() as f64 / DOWNLOAD_MIB as f64,
            iterations: 1,
        },
        BenchSample {
            name: "http_request_10_clients".into(),
            median_ns: per_request.as_nanos() as f64,
            iterations: requests as u64,
        },
    ];
    samples.extend(per_packet);
    Ok(samples)
}

/// Time per request with [`CLIENTS`] clients making [`REQUESTS_PER_CLIENT`] requests each for
/// `/index.html` at once.
fn request_rate(port: u16) -> Result<Duration> {
    let start = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            std::thread::spawn(move || -> Result<()> {
                for i in 0..REQUESTS_PER_CLIENT {
                    http_fetch(port, "/index.html").with_context(|| format!("request {i}"))?;
                }
                Ok(())
            })
        })
        .collect();
    for client in clients {
        client
            .join()
            .map_err(|_| anyhow!("an HTTP client panicked"))??;
    }
    Ok(start.elapsed() / (CLIENTS * REQUESTS_PER_CLIENT) as u32)
}

/// The same measurements on Linux (Debian's kernel, its own e1000 and ahci drivers, busybox
/// `httpd`, `diskbench`), booted on the same machine in the same run: the yardstick.
fn linux_yardstick(layout: &Layout, disk: &Path) -> Result<Vec<BenchSample>> {
    let image = crate::linux::LinuxImage::at(&layout.linux_dir());
    ensure!(
        image.exists(),
        "no Linux image: run `make linux-image` (make bench does)"
    );
    let mut config = image.qemu_config(free_local_port()?);
    // Linux with its initramfs in RAM gets more memory than Keel: in 128 MiB its OOM killer
    // ends the 10 M-int sort that Keel runs in 128 MiB.
    config.memory = LINUX_MEMORY.to_string();
    config.disk = Some(disk.to_path_buf());
    let port = config.host_port;
    let (mut vm, _) = Vm::boot_linux_config_to_prompt(&config)?;
    let (download, per_request) = linux_httpd(&mut vm, port)?;
    let mut samples = disk_bench(&mut vm, "/dev/sda", "linux_")?;
    let sample = |name: &str, total: Duration, iterations: u64| BenchSample {
        name: name.to_string(),
        median_ns: total.as_nanos() as f64 / iterations as f64,
        iterations,
    };
    // The OS microbenchmarks as Linux processes, and the CPU-bound C programs that Keel runs
    // as WebAssembly, compiled natively (timed from the host like Keel times its programs).
    let micro = vm.linux_command_with_timeout("microbench", BENCH_TIMEOUT)?;
    samples.extend(parse_bench_output(&micro).with_context(|| format!("microbench: {micro}"))?);
    for (name, line) in [
        ("linux_sha256_64mib", "shabench 64 >/dev/null"),
        ("linux_sort_10m_ints", "sortbench 10000000 >/dev/null"),
    ] {
        let start = Instant::now();
        let output = vm.linux_command_with_timeout(line, BENCH_TIMEOUT)?;
        ensure!(output.trim().is_empty(), "{line}: {output}");
        samples.push(sample(name, start.elapsed(), 1));
    }
    samples.extend(network_samples("linux_", download, per_request));
    Ok(samples)
}

/// busybox `httpd` in the Linux guest serving a 10 MiB file and a small page, measured from the
/// host as Keel's `httpd` is: the download's time, and the time per request with 10 clients.
fn linux_httpd(vm: &mut Vm, port: u16) -> Result<(Duration, Duration)> {
    vm.linux_command_with_timeout(
        &format!(
            "mkdir -p /tmp/www && dd if=/dev/urandom of=/tmp/www/big.bin bs=1M \
             count={DOWNLOAD_MIB} 2>/dev/null && head -c 1024 /tmp/www/big.bin \
             > /tmp/www/index.html && httpd -p 80 -h /tmp/www"
        ),
        Duration::from_secs(120),
    )?;
    crate::http::wait_until_served(port, "/index.html")?;
    let start = Instant::now();
    let bytes = http_fetch(port, "/big.bin").context("downloading 10 MiB from Linux")?;
    let download = start.elapsed();
    ensure!(bytes == DOWNLOAD_MIB << 20, "short download: {bytes} bytes");
    let per_request = request_rate(port).context("HTTP requests to Linux")?;
    Ok((download, per_request))
}

/// [`linux_httpd`]'s figures as `PREFIXtcp_guest_to_host_per_mib` and
/// `PREFIXhttp_request_10_clients`.
fn network_samples(prefix: &str, download: Duration, per_request: Duration) -> [BenchSample; 2] {
    let requests = (CLIENTS * REQUESTS_PER_CLIENT) as u64;
    [
        BenchSample {
            name: format!("{prefix}tcp_guest_to_host_per_mib"),
            median_ns: download.as_nanos() as f64 / DOWNLOAD_MIB as f64,
            iterations: DOWNLOAD_MIB as u64,
        },
        BenchSample {
            name: format!("{prefix}http_request_10_clients"),
            median_ns: per_request.as_nanos() as f64,
            iterations: requests,
        },
    ]
}

/// `diskbench` in the Linux guest on `device`: Keel's `blk bench` (the raw sectors behind the
/// partition, 1 MiB sequential writes and reads, 4 KiB random reads) with direct I/O, timed
/// inside the guest; its figures are named `PREFIXdisk_...`.
fn disk_bench(vm: &mut Vm, device: &str, prefix: &str) -> Result<Vec<BenchSample>> {
    let first_mib = (crate::disk::PARTITION_START_LBA * 512 + BENCH_PARTITION_BYTES) >> 20;
    let line = format!("diskbench {device} {first_mib} {STORAGE_MIB} {prefix}");
    let output = vm.linux_command_ok(&line, BENCH_TIMEOUT)?;
    let samples = parse_bench_output(&output).with_context(|| format!("{line}: {output}"))?;
    ensure!(samples.len() == 3, "{line} measured {samples:?}: {output}");
    Ok(samples)
}

/// Keel's driver components on Linux: the same network and disk measurements with the e1000
/// and ahci components under `wasi-dd-run` (VFIO behind QEMU's IOMMU; the disk on an AHCI
/// controller of its own, since the chipset's shares its IOMMU group with the LPC bridge).
fn wasm_drivers_on_linux(layout: &Layout, disk: &Path) -> Result<Vec<BenchSample>> {
    let image = crate::linux::LinuxImage::at(&layout.linux_dir());
    let mut config = image.qemu_config_with_iommu(free_local_port()?);
    config.memory = LINUX_MEMORY.to_string();
    config.disk_on_own_controller = Some(disk.to_path_buf());
    let port = config.host_port;
    let (mut vm, _) = Vm::boot_linux_config_to_prompt(&config)?;
    let nic = vm.linux_pci_address(0x8086, 0x100e)?;
    vm.linux_wasm_nic_up("", &nic)?;
    let (download, per_request) = linux_httpd(&mut vm, port)?;
    vm.linux_stop_runner("e1000")?;
    vm.linux_start_runner("", crate::qemu::OWN_AHCI_ADDRESS, "ahci", "")?;
    vm.linux_command_until("cat /sys/block/nbd0/size 2>/dev/null; true", |out| {
        out.trim().parse::<u64>().is_ok_and(|sectors| sectors > 0)
    })
    .context("the ahci component's disk never appeared as /dev/nbd0")?;
    let mut samples = disk_bench(&mut vm, "/dev/nbd0", "linux_wasm_")?;
    vm.linux_stop_runner("ahci")?;
    samples.extend(network_samples("linux_wasm_", download, per_request));
    Ok(samples)
}

/// The NIC loop's CPU time counters after `packets`, in the order `ifconfig -v` prints them.
const PACKET_COST_FIELDS: [&str; 4] = ["driver_ns", "host_calls_ns", "copy_ns", "stack_ns"];

/// `ifconfig -v`'s cumulative counters: packets, then [`PACKET_COST_FIELDS`].
fn packet_cost(vm: &mut Vm) -> Result<Vec<u64>> {
    let output = vm.command("ifconfig -v")?;
    let line = output
        .lines()
        .find(|l| l.trim_start().starts_with("cpu totals:"))
        .with_context(|| format!("no cpu totals in {output:?}"))?;
    let value = |key: &str| -> Result<u64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {key} in {line:?}"))
    };
    let mut values = vec![value("packets")?];
    for field in PACKET_COST_FIELDS {
        values.push(value(field)?);
    }
    Ok(values)
}

/// The disk through the AHCI driver component: the raw sectors behind the partition from the
/// kernel (`blk bench`), and a file on the mounted FAT32 volume from a program (`fsbench`).
fn storage(vm: &mut Vm) -> Result<Vec<BenchSample>> {
    vm.command_until("mount", |o| o.contains(" on /disk "))?;
    let first_raw = (crate::disk::PARTITION_START_LBA * 512 + BENCH_PARTITION_BYTES) / 512;
    let mut samples = Vec::new();
    for line in [
        format!("blk bench sd0 {first_raw} {STORAGE_MIB}"),
        format!("fsbench /disk/bench.bin {STORAGE_MIB}"),
    ] {
        let output = vm.command_with_timeout(&line, BENCH_TIMEOUT)?;
        let found = parse_bench_output(&output).with_context(|| format!("{line}: {output}"))?;
        ensure!(!found.is_empty(), "{line} measured nothing: {output}");
        samples.extend(found);
    }
    Ok(samples)
}

fn write_reports(layout: &Layout, report: &Report) -> Result<PathBuf> {
    let dir = layout.bench_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let markdown = dir.join("report.md");
    fs::write(&markdown, render_markdown(report))
        .with_context(|| format!("writing {}", markdown.display()))?;
    let json_path = dir.join("report.json");
    fs::write(&json_path, render_json(report))
        .with_context(|| format!("writing {}", json_path.display()))?;
    Ok(markdown)
}

/// The first line of `qemu-system-x86_64 --version`.
fn qemu_version() -> String {
    Command::new(qemu_program())
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "QEMU (unknown version)".to_string())
}

/// The host CPU's model name and core count.
fn host_cpu() -> String {
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "an unknown CPU".to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model} ({cores} cores)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, median_ns: f64) -> BenchSample {
        BenchSample {
            name: name.into(),
            median_ns,
            iterations: 1000,
        }
    }

    fn report() -> Report {
        let run = |boot_ms, cs, heap| BootRun {
            boot_to_prompt: Duration::from_millis(boot_ms),
            samples: vec![
                sample("context_switch", cs),
                sample("heap_alloc_free", heap),
            ],
        };
        Report {
            image: "target/keel/keel.iso".into(),
            qemu_version: "QEMU emulator version 7.2".into(),
            host_cpu: "Test CPU (2 cores)".into(),
            memory: "128M".into(),
            runs: vec![
                run(900, 3000.0, 50.0),
                run(1100, 1000.0, 70.0),
                run(1000, 2000.0, 60.0),
            ],
        }
    }

    #[test]
    fn parses_bench_lines() {
        let line =
            "BENCH {\"name\":\"context_switch\",\"median_ns\":1234.5,\"iterations\":10000}\r";
        assert_eq!(
            parse_bench_line(line).unwrap().unwrap(),
            BenchSample {
                name: "context_switch".into(),
                median_ns: 1234.5,
                iterations: 10000
            }
        );
        assert!(parse_bench_line("bench: done").is_none());
        assert!(parse_bench_line("[    1.000000] BENCH later").is_none());
    }

    #[test]
    fn rejects_bad_bench_lines() {
        for bad in [
            "BENCH {}",
            "BENCH {\"name\":\"x\",\"median_ns\":\"1\",\"iterations\":1}",
            "BENCH {\"name\":\"x\",\"median_ns\":1,\"iterations\":1.5}",
            "BENCH {\"name\":\"x\",\"median_ns\":-1,\"iterations\":1}",
            "BENCH {\"name\":\"\",\"median_ns\":1,\"iterations\":1}",
            "BENCH not json",
        ] {
            assert!(parse_bench_line(bad).unwrap().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn parses_a_whole_bench_run() {
        let output = "bench\r\nBENCH {\"name\":\"a\",\"median_ns\":1,\"iterations\":2}\r\n\
                      some log\r\nBENCH {\"name\":\"b\",\"median_ns\":3.5,\"iterations\":4}\r\nbench: done";
        let samples = parse_bench_output(output).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[1].name, "b");
        assert!(parse_bench_output("bench\r\nbench: done").is_err());
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn rows_summarise_over_boots() {
        let rows = report().rows();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].name, "context_switch");
        assert_eq!(rows[0].median_ns, 2000.0);
        assert_eq!((rows[0].min_ns, rows[0].max_ns), (1000.0, 3000.0));
        assert_eq!(rows[0].boots, 3);
        assert_eq!(rows[0].theseus.unwrap().micros, 0.34);
        assert!(rows[1].theseus.is_none());
    }

    #[test]
    fn markdown_has_table_boot_time_and_tcg_note() {
        let md = render_markdown(&report());
        assert!(
            md.contains("| context_switch | 2.000 | 1.000–3.000 | 1000 | 0.34 (context switch) |")
        );
        assert!(md.contains("| heap_alloc_free | 0.060 | 0.050–0.070 | 1000 | — |"));
        assert!(md.contains("median 1.000 s"));
        assert!(md.contains("TCG"));
    }

    #[test]
    fn markdown_compares_wasi_dd_mmio_reads_with_the_native_one() {
        let mut report = report();
        assert!(!render_markdown(&report).contains("vs native"));
        for run in &mut report.runs {
            run.samples.push(sample("mmio_read_native", 80.0));
            run.samples
                .push(sample("mmio_read_wasi_dd_packed32", 320.0));
        }
        let md = render_markdown(&report);
        assert!(md.contains("| mmio_read_native | 80.0 | 1.0x |"), "{md}");
        assert!(
            md.contains("| mmio_read_wasi_dd_packed32 | 320.0 | 4.0x |"),
            "{md}"
        );
    }

    #[test]
    fn markdown_gives_network_throughput_and_request_rate() {
        let mut report = report();
        for run in &mut report.runs {
            // 1 MiB in 0.5 s; 4 ms per request.
            run.samples.push(sample("tcp_guest_to_host_per_mib", 5e8));
            run.samples.push(sample("http_request_10_clients", 4e6));
        }
        let md = render_markdown(&report);
        assert!(md.contains("a 10 MiB download at 2.10 MB/s"), "{md}");
        assert!(md.contains("and 250 HTTP requests per second"), "{md}");
    }

    #[test]
    fn markdown_compares_each_driver_with_linuxs_own() {
        let mut report = report();
        for run in &mut report.runs {
            // IOPS: Keel 2000, the component on Linux 500, Linux's driver 4000; no Wasm-on-Linux
            // figure for the download.
            run.samples.push(sample("disk_random_read_4k", 5e5));
            run.samples
                .push(sample("linux_wasm_disk_random_read_4k", 2e6));
            run.samples.push(sample("linux_disk_random_read_4k", 2.5e5));
            run.samples.push(sample("tcp_guest_to_host_per_mib", 5e8));
            run.samples
                .push(sample("linux_tcp_guest_to_host_per_mib", 2.5e8));
        }
        let md = render_markdown(&report);
        assert!(
            md.contains(
                "| raw disk 4 KiB random read, one at a time | 2000.0 IOPS | 500.0 IOPS | \
                 4000.0 IOPS | 0.50 | 0.12 |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| TCP guest to host, 10 MiB over HTTP | 2.1 MB/s | — | 4.2 MB/s | 0.50 | — |"
            ),
            "{md}"
        );
    }

    #[test]
    fn json_report_is_well_formed_enough() {
        let text = render_json(&report());
        assert!(text.contains("\"boot_to_prompt_s\": {\"median\": 1, \"samples\": [0.9, 1.1, 1]}"));
        assert!(text.contains("\"theseus\": {\"measure\": \"context switch\", \"us\": 0.34}"));
        assert_eq!(text.matches('{').count(), text.matches('}').count());
        assert_eq!(text.matches('[').count(), text.matches(']').count());
    }

    #[test]
    fn reference_covers_the_compared_benchmarks() {
        let names: Vec<_> = THESEUS_REFERENCE.iter().map(|f| f.benchmark).collect();
        assert_eq!(
            names,
            [
                "context_switch",
                "spawn_join",
                "map_unmap_page",
                "channel_round_trip"
            ]
        );
    }
}
