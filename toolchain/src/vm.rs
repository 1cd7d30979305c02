//! Driving a booted Keel over its serial console: the harness of the QEMU integration tests and of
//! `keel bench`.
//!
//! A [`Vm`] owns one QEMU process. Two threads copy QEMU's stdout (the serial port) and stderr into
//! buffers; [`Vm::wait_for`] consumes the serial output up to a pattern. QEMU is killed when the
//! `Vm` is dropped, and by a watchdog once `max_runtime` has passed, so a hung guest cannot outlive
//! its test. When a `Vm` is dropped during a panic (a failed assertion) it prints the transcript.

use std::env;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Error, Result, anyhow, ensure};

use crate::linux::{self, LinuxImage};
use crate::paths::Layout;
use crate::qemu::{Boot, DEFAULT_MEMORY, QemuConfig, free_local_port};

/// The shell's prompt (no newline follows it).
pub const PROMPT: &str = "keel> ";
/// Hang guard for reaching the first prompt (TCG is slow; this is not a performance threshold).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How often [`Vm::command_until`] looks at most, and how long it waits between looks.
const LOOKS: u32 = 120;
const LOOK_PAUSE: Duration = Duration::from_millis(250);
/// Hang guard for one shell command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// The last line of [`Vm::transcript`].
pub const TRANSCRIPT_END: &str = "--- end of transcript ---";
/// Default lifetime of a QEMU process before the watchdog kills it.
pub const DEFAULT_MAX_RUNTIME: Duration = Duration::from_secs(600);

/// One running QEMU (or a stand-in process that speaks the same serial protocol on stdio).
pub struct Vm {
    child: Arc<Mutex<Child>>,
    stdin: Option<ChildStdin>,
    serial: Arc<Stream>,
    stderr: Arc<Stream>,
    /// Serial bytes before this offset have been returned by `wait_for`.
    cursor: usize,
    started: Instant,
    /// Dropping this sender stops the watchdog.
    _watchdog: mpsc::Sender<()>,
    /// Set once an error carrying the transcript was returned, so Drop does not print it again.
    transcript_reported: bool,
    /// The 127.0.0.1 port QEMU forwards to the guest's port 80 (0 if unknown).
    host_port: u16,
    /// QEMU's monitor socket, if the VM has one.
    monitor: Option<PathBuf>,
}

impl Vm {
    /// Boots `config` in QEMU.
    pub fn boot(config: &QemuConfig, max_runtime: Duration) -> Result<Self> {
        for file in config.boot.files() {
            let hint = match config.boot {
                Boot::Iso(_) => "make image",
                Boot::Kernel { .. } => "make linux-image",
            };
            ensure!(
                file.is_file(),
                "no boot image at {}: run `{hint}` first",
                file.display()
            );
        }
        let mut vm = Self::spawn(config.command(), max_runtime)?;
        vm.host_port = config.host_port;
        vm.monitor = config.monitor.clone();
        Ok(vm)
    }

    /// Runs one command in QEMU's human monitor and returns its output.
    pub fn monitor_command(&mut self, command: &str) -> Result<String> {
        let path = self
            .monitor
            .clone()
            .ok_or_else(|| anyhow!("this VM has no monitor"))?;
        let mut stream = std::os::unix::net::UnixStream::connect(&path)
            .with_context(|| format!("connecting to the monitor at {}", path.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let read_to_prompt = |stream: &mut std::os::unix::net::UnixStream| -> Result<String> {
            let mut seen = Vec::new();
            let mut byte = [0u8; 1];
            while !seen.ends_with(b"(qemu) ") {
                stream
                    .read_exact(&mut byte)
                    .context("reading the monitor")?;
                seen.push(byte[0]);
            }
            Ok(String::from_utf8_lossy(&seen).to_string())
        };
        read_to_prompt(&mut stream)?;
        stream.write_all(format!("{command}\n").as_bytes())?;
        read_to_prompt(&mut stream)
    }

    /// The 127.0.0.1 port that reaches the guest's TCP port 80.
    pub fn host_port(&self) -> u16 {
        self.host_port
    }

    /// Boots the test image (`$KEEL_ISO`, else `target/keel/keel.iso`) with `$KEEL_MEM` (default
    /// 128M) of memory and a free host port, and waits for the first prompt. Returns the VM and
    /// the boot log.
    pub fn boot_to_prompt() -> Result<(Self, String)> {
        Self::boot_to_prompt_with_memory(&Self::memory())
    }

    /// Like [`Vm::boot_to_prompt`] with an explicit guest memory size (QEMU's `-m` syntax).
    pub fn boot_to_prompt_with_memory(memory: &str) -> Result<(Self, String)> {
        Self::boot_to_prompt_with(memory, None, None)
    }

    /// Like [`Vm::boot_to_prompt`] with the raw image `disk` on the AHCI controller's port 0.
    pub fn boot_to_prompt_with_disk(disk: &Path) -> Result<(Self, String)> {
        Self::boot_to_prompt_with(&Self::memory(), Some(disk), None)
    }

    /// Like [`Vm::boot_to_prompt_with_disk`], with QEMU's `blkdebug` injecting the I/O errors
    /// that the configuration file `errors` describes.
    pub fn boot_to_prompt_with_faulty_disk(disk: &Path, errors: &Path) -> Result<(Self, String)> {
        Self::boot_to_prompt_with(&Self::memory(), Some(disk), Some(errors))
    }

    fn memory() -> String {
        env::var("KEEL_MEM").unwrap_or_else(|_| DEFAULT_MEMORY.to_string())
    }

    fn boot_to_prompt_with(
        memory: &str,
        disk: Option<&Path>,
        errors: Option<&Path>,
    ) -> Result<(Self, String)> {
        let port = free_local_port()?;
        let mut config = QemuConfig::new(Layout::discover().iso_for_tests(), port);
        config.memory = memory.to_string();
        config.disk = disk.map(Path::to_path_buf);
        config.disk_errors = errors.map(Path::to_path_buf);
        config.monitor =
            Some(env::temp_dir().join(format!("keel-monitor-{}-{port}.sock", std::process::id())));
        let mut vm = Self::boot(&config, DEFAULT_MAX_RUNTIME)?;
        let boot_log = vm.wait_for(PROMPT, BOOT_TIMEOUT)?;
        if boot_log.contains(" in the boot image") && boot_log.contains("drivers: ") {
            vm.wait_for_drivers()?;
        }
        Ok((vm, boot_log))
    }

    /// Waits until the boot image's drivers are bound and none is still starting, so that a
    /// test sees a quiet system: drivers allocate memory and print while they start.
    pub fn wait_for_drivers(&mut self) -> Result<String> {
        self.command_until("drivers", |output| {
            !output.contains("still binding") && !output.contains(" starting ")
        })
    }

    /// Runs shell command `line` until its output satisfies `done`, a bounded number of looks
    /// apart (the system reaches a lease, a mount or a driver state in its own time; this is a
    /// hang guard, not a performance threshold). Returns that output, or an error holding the
    /// last one.
    pub fn command_until(&mut self, line: &str, done: impl Fn(&str) -> bool) -> Result<String> {
        self.until(line, Self::command, done)
    }

    /// [`Vm::command_until`] in the Linux guest's shell.
    pub fn linux_command_until(
        &mut self,
        line: &str,
        done: impl Fn(&str) -> bool,
    ) -> Result<String> {
        self.until(line, Self::linux_command, done)
    }

    fn until(
        &mut self,
        line: &str,
        run: fn(&mut Self, &str) -> Result<String>,
        done: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let mut output = String::new();
        for _ in 0..LOOKS {
            output = run(self, line)?;
            if done(&output) {
                return Ok(output);
            }
            std::thread::sleep(LOOK_PAUSE);
        }
        Err(anyhow!(
            "`{line}` never showed what was waited for: {output:?}"
        ))
    }

    /// The row of `drivers` for driver `name`, once it contains `want` (a state such as
    /// " running " or " failed ").
    pub fn driver_row(&mut self, name: &str, want: &str) -> Result<String> {
        let column = format!(" {name} ");
        let row_of = |output: &str| {
            output
                .lines()
                .find(|l| l.contains(&column))
                .map(str::to_string)
        };
        let output =
            self.command_until("drivers", |o| row_of(o).is_some_and(|r| r.contains(want)))?;
        Ok(row_of(&output).unwrap_or_default())
    }

    /// The task serving driver `name`, once `drivers` shows it running.
    pub fn running_driver_task(&mut self, name: &str) -> Result<u64> {
        let row = self.driver_row(name, " running ")?;
        row.split_whitespace()
            .nth(3)
            .with_context(|| format!("no task column in {row:?}"))?
            .parse()
            .with_context(|| format!("task id in {row:?}"))
    }

    /// `kill TASK`, which must say that it killed the task; returns the shell's output.
    pub fn kill_task(&mut self, task: u64) -> Result<String> {
        let out = self.command(&format!("kill {task}"))?;
        ensure!(
            out.contains(&format!("killed task {task}")),
            "kill {task}: {out:?}"
        );
        Ok(out)
    }

    /// Starts `command` with piped stdio and begins collecting its output.
    pub fn spawn(mut command: Command, max_runtime: Duration) -> Result<Self> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {:?}", command.get_program()))?;
        let started = Instant::now();
        let stdin = child.stdin.take();
        let serial = Stream::collect(child.stdout.take().expect("stdout is piped"));
        let stderr = Stream::collect(child.stderr.take().expect("stderr is piped"));
        let child = Arc::new(Mutex::new(child));
        let watchdog = start_watchdog(Arc::clone(&child), Arc::clone(&stderr), max_runtime);
        Ok(Self {
            child,
            stdin,
            serial,
            stderr,
            cursor: 0,
            started,
            _watchdog: watchdog,
            transcript_reported: false,
            host_port: 0,
            monitor: None,
        })
    }

    /// When the process was started.
    pub fn started_at(&self) -> Instant {
        self.started
    }

    /// Waits until `pattern` appears in the serial output after everything returned so far, and
    /// returns that output up to and including the match. On timeout (or if QEMU exits first)
    /// the error holds the full transcript.
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> Result<String> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut state = self.serial.lock();
        loop {
            if let Some(at) = find(&state.bytes[self.cursor..], pattern.as_bytes()) {
                let end = self.cursor + at + pattern.len();
                let text = String::from_utf8_lossy(&state.bytes[self.cursor..end]).into_owned();
                self.cursor = end;
                return Ok(text);
            }
            let now = Instant::now();
            if state.closed || now >= deadline {
                let why = if state.closed {
                    "QEMU's output ended"
                } else {
                    "timed out"
                };
                drop(state);
                return Err(self.failure(format!(
                    "{why} after {:.1} s waiting for {pattern:?}",
                    start.elapsed().as_secs_f64()
                )));
            }
            state = self.serial.wait(state, deadline - now);
        }
    }

    /// Types `line` and presses Enter (`\r`, as a terminal sends it).
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\r');
        self.send_bytes(&bytes)
    }

    /// Writes raw bytes to the serial port.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("stdin is closed"))?;
        let written = stdin.write_all(bytes).and_then(|()| stdin.flush());
        written.map_err(|error| self.failure(format!("writing to QEMU's serial port: {error}")))
    }

    /// Runs one shell command: sends `line`, waits for the next prompt, and returns what the
    /// kernel printed in between without the echoed command line and the prompt, with `\r\n`
    /// turned into `\n`.
    pub fn command(&mut self, line: &str) -> Result<String> {
        self.command_with_timeout(line, COMMAND_TIMEOUT)
    }

    /// [`Vm::command`] with its own hang guard.
    pub fn command_with_timeout(&mut self, line: &str, timeout: Duration) -> Result<String> {
        self.send_line(line)?;
        let output = self.wait_for(PROMPT, timeout)?;
        Ok(command_output(&output))
    }

    /// Waits for QEMU to exit by itself; on timeout the error holds the transcript (and QEMU is
    /// killed when the `Vm` is dropped).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self
                .child
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_wait();
            match status {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    return Err(self.failure(format!(
                        "QEMU still running {:.1} s after it was expected to exit",
                        timeout.as_secs_f64()
                    )));
                }
                Err(error) => return Err(self.failure(format!("waiting for QEMU: {error}"))),
            }
        }
    }

    /// Everything QEMU has written so far: the serial output, then its stderr if any.
    pub fn transcript(&self) -> String {
        let serial = self.serial.text();
        let stderr = self.stderr.text();
        let mut text = format!("--- serial output ---\n{serial}");
        if !serial.ends_with('\n') {
            text.push('\n');
        }
        if !stderr.is_empty() {
            text.push_str(&format!("--- QEMU stderr ---\n{stderr}"));
            if !stderr.ends_with('\n') {
                text.push('\n');
            }
        }
        text.push_str(TRANSCRIPT_END);
        text
    }

    /// `error` with the transcript appended unless it already carries one. Marks the transcript
    /// as reported, so dropping the `Vm` in the ensuing panic does not print it again.
    pub fn with_transcript(&mut self, error: Error) -> Error {
        self.transcript_reported = true;
        if format!("{error:#}").contains(TRANSCRIPT_END) {
            error
        } else {
            anyhow!("{error:#}\n{}", self.transcript())
        }
    }

    /// An error for `what` that carries the transcript.
    fn failure(&mut self, what: String) -> Error {
        self.transcript_reported = true;
        anyhow!("{what}\n{}", self.transcript())
    }
}

/// Hang guard for the Linux yardstick to reach its prompt (measured under TCG: ~6 s to `/init`,
/// ~8 s to the ready marker; this is not a performance threshold).
pub const LINUX_BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// The Linux yardstick (`keel linux-image`), driven over its serial console like Keel.
impl Vm {
    /// Boots the Linux image of the tests (`$KEEL_LINUX_DIR`, else `target/linux`) on Keel's
    /// machine with `$KEEL_MEM` (default 128M) of memory, a free host port, a monitor socket and
    /// `disk` on the AHCI port 0, and waits for its prompt. Returns the VM and the boot log.
    pub fn boot_linux_to_prompt(disk: Option<&Path>) -> Result<(Self, String)> {
        let port = free_local_port()?;
        let image = LinuxImage::at(&Layout::discover().linux_dir_for_tests());
        let mut config = image.qemu_config(port);
        config.disk = disk.map(Path::to_path_buf);
        Self::boot_linux_test_config(config)
    }

    /// [`Vm::boot_linux_to_prompt`] on the machine with an IOMMU, where the WASI-dd runner can
    /// take devices through VFIO; `own_controller_disk` goes on a second AHCI controller of its
    /// own ([`QemuConfig::disk_on_own_controller`]).
    pub fn boot_linux_with_iommu_to_prompt(
        own_controller_disk: Option<&Path>,
    ) -> Result<(Self, String)> {
        let port = free_local_port()?;
        let image = LinuxImage::at(&Layout::discover().linux_dir_for_tests());
        let mut config = image.qemu_config_with_iommu(port);
        config.disk_on_own_controller = own_controller_disk.map(Path::to_path_buf);
        Self::boot_linux_test_config(config)
    }

    fn boot_linux_test_config(mut config: QemuConfig) -> Result<(Self, String)> {
        config.memory = Self::memory();
        config.monitor = Some(env::temp_dir().join(format!(
            "keel-linux-monitor-{}-{}.sock",
            std::process::id(),
            config.host_port
        )));
        Self::boot_linux_config_to_prompt(&config)
    }

    /// Boots `config` (a Linux image's [`Boot::Kernel`]) and waits for `/init`'s ready marker and
    /// the first prompt. The boot log ends with the prompt.
    pub fn boot_linux_config_to_prompt(config: &QemuConfig) -> Result<(Self, String)> {
        let mut vm = Self::boot(config, DEFAULT_MAX_RUNTIME)?;
        let mut log = vm.wait_for(linux::READY_MARKER, LINUX_BOOT_TIMEOUT)?;
        log.push_str(&vm.wait_for(linux::PROMPT, COMMAND_TIMEOUT)?);
        Ok((vm, log))
    }

    /// Runs one command in the Linux guest's shell; returns its output as [`Vm::command`] does.
    pub fn linux_command(&mut self, line: &str) -> Result<String> {
        self.linux_command_with_timeout(line, COMMAND_TIMEOUT)
    }

    /// [`Vm::linux_command`] with its own hang guard.
    pub fn linux_command_with_timeout(&mut self, line: &str, timeout: Duration) -> Result<String> {
        self.send_line(line)?;
        let output = self.wait_for(linux::PROMPT, timeout)?;
        Ok(shell_output(&output, linux::PROMPT))
    }

    /// Runs `line` in the Linux guest's shell and fails unless it exits with status 0; returns
    /// its output.
    pub fn linux_command_ok(&mut self, line: &str, timeout: Duration) -> Result<String> {
        let output =
            self.linux_command_with_timeout(&format!("{line}; echo \"exit=$?\""), timeout)?;
        let (body, status) = output
            .trim_end()
            .rsplit_once("exit=")
            .ok_or_else(|| anyhow!("no exit status in {output:?}"))?;
        ensure!(status == "0", "`{line}` exited with {status}: {body:?}");
        Ok(body.to_string())
    }

    /// The PCI address (`0000:00:02.0`) of the guest's only function with this vendor and
    /// device ID.
    pub fn linux_pci_address(&mut self, vendor: u16, device: u16) -> Result<String> {
        let found = self.linux_command_ok(
            &format!(
                "for d in /sys/bus/pci/devices/*; do \
                 [ \"$(cat $d/vendor):$(cat $d/device)\" = {vendor:#06x}:{device:#06x} ] \
                 && basename $d; done; true"
            ),
            COMMAND_TIMEOUT,
        )?;
        match found.split_whitespace().collect::<Vec<_>>().as_slice() {
            [one] => Ok(one.to_string()),
            other => Err(anyhow!(
                "{vendor:04x}:{device:04x} at {other:?}, not at one address"
            )),
        }
    }

    /// Starts the WASI-dd runner in the background with `options` (such as `--unconfined`) on
    /// the function at `address` (taking it from its Linux driver) with the guest's copy of
    /// driver `name` and driver parameters `words`. Its output goes to `/tmp/NAME.log`, its process ID to `.pid` and its exit
    /// status to `.status` beside it. (Started from a subshell, so the interactive shell prints
    /// no job notices.)
    pub fn linux_start_runner(
        &mut self,
        options: &str,
        address: &str,
        name: &str,
        words: &str,
    ) -> Result<()> {
        let log = runner_log(name);
        self.linux_command_ok(
            &format!(
                "(sh -c '{} run --bind {options} {address} {}/{name}.wasm {words} > {log} 2>&1 & \
                 echo $! > {log}.pid; wait $!; echo $? > {log}.status' &)",
                linux::RUNNER_GUEST_PATH,
                linux::DRIVERS_GUEST_DIR
            ),
            COMMAND_TIMEOUT,
        )?;
        Ok(())
    }

    /// Stops the runner of driver `name` with Ctrl-C's signal and waits for it to exit with
    /// status 0 (disks disconnected, the device quiesced); returns its output.
    pub fn linux_stop_runner(&mut self, name: &str) -> Result<String> {
        let log = runner_log(name);
        self.linux_command_ok(&format!("kill -INT $(cat {log}.pid)"), COMMAND_TIMEOUT)?;
        let status = self
            .linux_command_until(&format!("cat {log}.status 2>/dev/null; true"), |out| {
                !out.trim().is_empty()
            })?;
        let output = self.linux_command_ok(&format!("cat {log}"), COMMAND_TIMEOUT)?;
        ensure!(
            status.trim() == "0",
            "the runner exited with {status:?}: {output}"
        );
        Ok(output)
    }

    /// Runs the e1000 component under the runner (with `options`) and configures its TAP
    /// interface, `wdd0`, by DHCP; the function is at `address`.
    pub fn linux_wasm_nic_up(&mut self, options: &str, address: &str) -> Result<()> {
        self.linux_start_runner(options, address, "e1000", "")?;
        self.linux_command_until("ip -o link show wdd0 2>&1; true", |out| {
            out.contains("wdd0:") && out.contains(",UP")
        })
        .context("wdd0 never came up")?;
        self.linux_command_ok(
            &format!(
                "udhcpc -i wdd0 -s /{} -f -q -n -t 20 -T 1 -A 1",
                linux::DHCP_SCRIPT
            ),
            Duration::from_secs(120),
        )?;
        Ok(())
    }
}

/// Where [`Vm::linux_start_runner`] keeps the runner's output for driver `name`.
fn runner_log(name: &str) -> String {
    format!("/tmp/{name}.log")
}

/// [`command_output`] for a shell whose prompt is `prompt`: drops the echoed line (and whatever
/// the line editor wrote before it, such as busybox's cursor query `ESC [6n`) and the prompt.
pub fn shell_output(raw: &str, prompt: &str) -> String {
    let without_prompt = raw.strip_suffix(prompt).unwrap_or(raw);
    let after_echo = match without_prompt.find('\n') {
        Some(newline) => &without_prompt[newline + 1..],
        None => "",
    };
    after_echo.replace('\r', "")
}

impl Drop for Vm {
    fn drop(&mut self) {
        if thread::panicking() && !self.transcript_reported {
            eprintln!("{}", self.transcript());
        }
        drop(self.stdin.take());
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
        }
        let _ = child.wait();
        if let Some(monitor) = &self.monitor {
            let _ = std::fs::remove_file(monitor);
        }
    }
}

/// The kernel's output for one command: drops the echoed command line (everything up to the first
/// newline) and the trailing prompt, and normalises line endings.
pub fn command_output(raw: &str) -> String {
    let without_prompt = raw.strip_suffix(PROMPT).unwrap_or(raw);
    let after_echo = match without_prompt.find('\n') {
        Some(newline) => &without_prompt[newline + 1..],
        None => "",
    };
    after_echo.replace('\r', "")
}

/// Kills the child once `max_runtime` has passed, unless the returned sender is dropped first.
fn start_watchdog(
    child: Arc<Mutex<Child>>,
    stderr: Arc<Stream>,
    max_runtime: Duration,
) -> mpsc::Sender<()> {
    let (stop, stopped) = mpsc::channel::<()>();
    thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(max_runtime) {
            let mut child = child.lock().unwrap_or_else(|e| e.into_inner());
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                stderr.append(
                    format!(
                        "[keel harness: watchdog killed QEMU after {} s]\n",
                        max_runtime.as_secs()
                    )
                    .as_bytes(),
                );
            }
        }
    });
    stop
}

/// The first index of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// An output pipe of the child, collected by a thread.
struct Stream {
    state: Mutex<StreamState>,
    grown: Condvar,
}

#[derive(Default)]
struct StreamState {
    bytes: Vec<u8>,
    /// The pipe reached end of file (the process exited).
    closed: bool,
}

impl Stream {
    /// Starts a thread copying `pipe` into a new stream.
    fn collect(mut pipe: impl Read + Send + 'static) -> Arc<Self> {
        let stream = Arc::new(Stream {
            state: Mutex::new(StreamState::default()),
            grown: Condvar::new(),
        });
        let writer = Arc::clone(&stream);
        thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            loop {
                match pipe.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => writer.append(&buffer[..n]),
                }
            }
            writer.lock().closed = true;
            writer.grown.notify_all();
        });
        stream
    }

    fn append(&self, bytes: &[u8]) {
        self.lock().bytes.extend_from_slice(bytes);
        self.grown.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, StreamState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(
        &self,
        guard: MutexGuard<'a, StreamState>,
        timeout: Duration,
    ) -> MutexGuard<'a, StreamState> {
        match self.grown.wait_timeout(guard, timeout) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.lock().bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for Keel's shell: a boot line, the prompt, echo, and `\r`-terminated input.
    const MOCK_SHELL: &str = r#"
printf '[    0.000100] mock boot\r\nkeel> '
while IFS= read -r -d $'\r' line; do
    printf '%s\r\n' "$line"
    case "$line" in
        exit) exit 3 ;;
        silent) ;;
        *) printf 'you said: %s\r\nsecond line\r\nkeel> ' "$line" ;;
    esac
done
"#;

    fn mock_vm() -> Vm {
        let mut command = Command::new("bash");
        command.args(["-c", MOCK_SHELL]);
        Vm::spawn(command, Duration::from_secs(30)).unwrap()
    }

    #[test]
    fn wait_for_returns_output_through_the_match() {
        let mut vm = mock_vm();
        let boot = vm.wait_for(PROMPT, Duration::from_secs(10)).unwrap();
        assert_eq!(boot, "[    0.000100] mock boot\r\nkeel> ");
    }

    #[test]
    fn command_strips_echo_and_prompt() {
        let mut vm = mock_vm();
        vm.wait_for(PROMPT, Duration::from_secs(10)).unwrap();
        assert_eq!(
            vm.command("hello").unwrap(),
            "you said: hello\nsecond line\n"
        );
        assert_eq!(
            vm.command("again").unwrap(),
            "you said: again\nsecond line\n"
        );
    }

    #[test]
    fn timeout_error_holds_the_transcript() {
        let mut vm = mock_vm();
        vm.wait_for(PROMPT, Duration::from_secs(10)).unwrap();
        vm.send_line("silent").unwrap();
        let error = vm
            .wait_for(PROMPT, Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("timed out"), "{error}");
        assert!(error.contains("mock boot"), "{error}");
        assert!(error.contains("silent"), "{error}");
    }

    #[test]
    fn exit_is_observed_with_its_status() {
        let mut vm = mock_vm();
        vm.wait_for(PROMPT, Duration::from_secs(10)).unwrap();
        vm.send_line("exit").unwrap();
        let status = vm.wait_exit(Duration::from_secs(10)).unwrap();
        assert_eq!(status.code(), Some(3));
        let error = vm.wait_for(PROMPT, Duration::from_secs(10)).unwrap_err();
        assert!(
            error.to_string().starts_with("QEMU's output ended"),
            "{error}"
        );
    }

    #[test]
    fn drop_and_watchdog_kill_the_process() {
        let started = Instant::now();
        let mut sleeper = Command::new("sleep");
        sleeper.arg("1000");
        drop(Vm::spawn(sleeper, Duration::from_secs(1000)).unwrap());

        let mut sleeper = Command::new("sleep");
        sleeper.arg("1000");
        let mut vm = Vm::spawn(sleeper, Duration::from_millis(200)).unwrap();
        vm.wait_exit(Duration::from_secs(10)).unwrap();
        assert!(vm.transcript().contains("watchdog killed QEMU"));
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn command_output_without_newline_is_empty() {
        assert_eq!(command_output("\r\nkeel> "), "");
        assert_eq!(command_output("ps\r\n  ID\r\nkeel> "), "  ID\n");
    }

    #[test]
    fn shell_output_strips_the_echo_and_another_prompt() {
        assert_eq!(
            shell_output("\x1b[6nuname\r\nLinux\r\nlinux# ", "linux# "),
            "Linux\n"
        );
        assert_eq!(shell_output("true\r\nlinux# ", "linux# "), "");
    }

    #[test]
    fn find_locates_patterns() {
        assert_eq!(find(b"abc keel> ", b"keel> "), Some(4));
        assert_eq!(find(b"kee", b"keel> "), None);
    }
}
