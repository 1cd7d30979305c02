//! Processor facilities: time stamp counter, halting, SSE state, feature checks.

use core::arch::asm;
use raw_cpuid::CpuId;

pub fn read_tsc() -> u64 {
    // SAFETY: RDTSC has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Waits for the next interrupt with interrupts enabled (atomically: no wake-up is lost).
pub fn enable_interrupts_and_halt() {
    x86_64::instructions::interrupts::enable_and_hlt();
}

pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// The x87/SSE register file as saved by FXSAVE.
#[repr(C, align(16))]
#[derive(Clone)]
pub struct FxState([u8; 512]);

impl Default for FxState {
    /// The state after FNINIT with default MXCSR: all exceptions masked.
    fn default() -> Self {
        let mut bytes = [0u8; 512];
        bytes[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
        bytes[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
        FxState(bytes)
    }
}

impl FxState {
    pub fn save(&mut self) {
        // SAFETY: the buffer is 512 bytes, 16-byte aligned; CR4.OSFXSR is set at boot.
        unsafe { asm!("fxsave64 [{}]", in(reg) self.0.as_mut_ptr(), options(nostack)) };
    }
    pub fn restore(&self) {
        // SAFETY: as in `save`; the contents came from FXSAVE or `default`, so MXCSR is valid.
        unsafe { asm!("fxrstor64 [{}]", in(reg) self.0.as_ptr(), options(nostack, readonly)) };
    }
}

/// What the kernel needs from the processor; checked once at boot.
#[derive(Debug, Clone, Copy)]
pub struct CpuFeatures {
    pub sse2: bool,
    pub fxsr: bool,
    pub apic: bool,
    pub invariant_tsc: bool,
    pub rdrand: bool,
}

pub fn features() -> CpuFeatures {
    let cpuid = CpuId::new();
    let info = cpuid.get_feature_info();
    CpuFeatures {
        sse2: info.as_ref().is_some_and(|f| f.has_sse2()),
        fxsr: info.as_ref().is_some_and(|f| f.has_fxsave_fxstor()),
        apic: info.as_ref().is_some_and(|f| f.has_apic()),
        rdrand: info.as_ref().is_some_and(|f| f.has_rdrand()),
        invariant_tsc: cpuid
            .get_advanced_power_mgmt_info()
            .is_some_and(|p| p.has_invariant_tsc()),
    }
}

/// The processor's brand string, or its vendor.
pub fn model_name(buf: &mut [u8; 48]) -> &str {
    let cpuid = CpuId::new();
    if let Some(brand) = cpuid.get_processor_brand_string() {
        let s = brand.as_str().trim();
        let n = s.len().min(48);
        buf[..n].copy_from_slice(&s.as_bytes()[..n]);
        return core::str::from_utf8(&buf[..n]).unwrap_or("unknown");
    }
    "unknown x86_64"
}

pub fn enable_interrupts() {
    x86_64::instructions::interrupts::enable();
}

pub fn disable_interrupts() {
    x86_64::instructions::interrupts::disable();
}

pub fn interrupts_enabled() -> bool {
    x86_64::instructions::interrupts::are_enabled()
}

/// Deliberate faults, for the self-tests that show a faulting task is contained. Each raises a
/// CPU exception in the calling code; none touches memory it does not own.
pub mod deliberate_fault {
    use core::arch::asm;

    /// Reads an address that is never mapped (the null page).
    #[inline(never)]
    pub fn page_fault() {
        // SAFETY: the load faults before it reads anything; page 0 is never mapped.
        unsafe { asm!("mov {tmp}, qword ptr [{addr}]", addr = in(reg) 8u64, tmp = out(reg) _) };
    }

    /// Divides by zero with the DIV instruction.
    #[inline(never)]
    pub fn divide_error() {
        // SAFETY: DIV by zero raises #DE before changing any state.
        unsafe {
            asm!("xor edx, edx", "mov eax, 1", "xor ecx, ecx", "div ecx",
                out("eax") _, out("edx") _, out("ecx") _)
        };
    }

    /// Executes UD2.
    #[inline(never)]
    pub fn invalid_opcode() {
        // SAFETY: UD2 raises #UD and does nothing else.
        unsafe { asm!("ud2") };
    }

    /// Loads through a non-canonical address.
    #[inline(never)]
    pub fn general_protection() {
        // SAFETY: a non-canonical address raises #GP before any access.
        unsafe {
            asm!("mov {tmp}, qword ptr [{addr}]", addr = in(reg) 0x8000_0000_0000_0000u64,
                tmp = out(reg) _)
        };
    }
}

/// A hardware random number: RDSEED (true entropy) if the CPU has it, else RDRAND. `None` if
/// neither exists or the CPU keeps reporting exhaustion.
pub fn hardware_random() -> Option<u64> {
    let cpuid = CpuId::new();
    let has_rdseed = cpuid
        .get_extended_feature_info()
        .is_some_and(|f| f.has_rdseed());
    let has_rdrand = cpuid.get_feature_info().is_some_and(|f| f.has_rdrand());
    for _ in 0..64 {
        let (value, ok): (u64, u8);
        if has_rdseed {
            // SAFETY: RDSEED exists (CPUID); it only writes the output register and CF.
            unsafe { asm!("rdseed {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok) };
        } else if has_rdrand {
            // SAFETY: RDRAND exists (CPUID); it only writes the output register and CF.
            unsafe { asm!("rdrand {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok) };
        } else {
            return None;
        }
        if ok == 1 {
            return Some(value);
        }
        core::hint::spin_loop();
    }
    None
}
