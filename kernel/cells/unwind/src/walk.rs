//! Walking the stack with the DWARF call-frame information in `.eh_frame`.

use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameHdr, EndianSlice, FrameDescriptionEntry, LittleEndian,
    ParsedEhFrameHdr, Pointer, Register, RegisterRule, UnwindContext, UnwindSection,
    UnwindTableRow, X86_64,
};

/// Register values by DWARF number: rax, rdx, rcx, rbx, rsi, rdi, rbp, rsp, r8-r15, and 16 for
/// the return address (the frame's program counter). Layout shared with the assembly in lib.rs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Registers {
    pub gp: [u64; 17],
}

pub const RSP: usize = 7;
pub const PC: usize = 16;

impl Registers {
    fn get(&self, reg: Register) -> Result<u64, WalkError> {
        self.gp
            .get(reg.0 as usize)
            .copied()
            .ok_or(WalkError::UnsupportedRule)
    }
    fn set(&mut self, reg: Register, value: u64) -> Result<(), WalkError> {
        *self
            .gp
            .get_mut(reg.0 as usize)
            .ok_or(WalkError::UnsupportedRule)? = value;
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// The outermost frame was reached (its return address is undefined).
    EndOfStack,
    /// No `.eh_frame` entry covers the program counter.
    NoUnwindInfo(u64),
    /// A CFA or register rule this unwinder does not evaluate (DWARF expressions).
    UnsupportedRule,
    /// A saved register would be read outside the task's stack.
    BadStackAccess(u64),
    BadEhFrame,
}

type Slice = EndianSlice<'static, LittleEndian>;

/// The kernel image's unwind sections.
pub struct UnwindSections {
    pub eh_frame_hdr: &'static [u8],
    pub eh_frame: &'static [u8],
    pub eh_frame_address: u64,
    pub text: core::ops::Range<u64>,
}

pub struct Walker {
    bases: BaseAddresses,
    hdr: ParsedEhFrameHdr<Slice>,
    eh_frame: EhFrame<Slice>,
    text: core::ops::Range<u64>,
    context: alloc::boxed::Box<UnwindContext<usize>>,
}

impl Walker {
    pub fn new(sections: &UnwindSections) -> Result<Self, WalkError> {
        let bases = BaseAddresses::default()
            .set_eh_frame_hdr(sections.eh_frame_hdr.as_ptr() as u64)
            .set_eh_frame(sections.eh_frame_address)
            .set_text(sections.text.start);
        let hdr = EhFrameHdr::new(sections.eh_frame_hdr, LittleEndian)
            .parse(&bases, 8)
            .map_err(|_| WalkError::BadEhFrame)?;
        let eh_frame = EhFrame::new(sections.eh_frame, LittleEndian);
        Ok(Self {
            bases,
            hdr,
            eh_frame,
            text: sections.text.clone(),
            context: alloc::boxed::Box::new(UnwindContext::new()),
        })
    }

    /// The FDE covering `address`.
    pub fn fde(&self, address: u64) -> Result<FrameDescriptionEntry<Slice>, WalkError> {
        if !self.text.contains(&address) {
            return Err(WalkError::NoUnwindInfo(address));
        }
        let table = self.hdr.table().ok_or(WalkError::BadEhFrame)?;
        table
            .fde_for_address(
                &self.eh_frame,
                &self.bases,
                address,
                EhFrame::cie_from_offset,
            )
            .map_err(|_| WalkError::NoUnwindInfo(address))
    }

    /// The LSDA address of a function, if it has one.
    pub fn lsda(fde: &FrameDescriptionEntry<Slice>) -> Option<u64> {
        match fde.lsda()? {
            Pointer::Direct(address) => Some(address),
            Pointer::Indirect(_) => None,
        }
    }

    /// The caller's registers, given this frame's. `lookup` is the address inside the
    /// instruction the frame is stopped at; `read` reads a saved value from the stack.
    pub fn step(
        &mut self,
        fde: &FrameDescriptionEntry<Slice>,
        regs: &Registers,
        lookup: u64,
        read: &dyn Fn(u64) -> Result<u64, WalkError>,
    ) -> Result<Registers, WalkError> {
        let row: &UnwindTableRow<usize> = fde
            .unwind_info_for_address(&self.eh_frame, &self.bases, &mut self.context, lookup)
            .map_err(|_| WalkError::NoUnwindInfo(lookup))?;
        let cfa = match row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } => {
                regs.get(*register)?.wrapping_add(*offset as u64)
            }
            CfaRule::Expression(_) => return Err(WalkError::UnsupportedRule),
        };
        let mut caller = *regs;
        let mut return_address_defined = false;
        for (reg, rule) in row.registers() {
            let value = match rule {
                RegisterRule::Undefined => {
                    if *reg == X86_64::RA {
                        return Err(WalkError::EndOfStack);
                    }
                    continue;
                }
                RegisterRule::SameValue => regs.get(*reg)?,
                RegisterRule::Offset(n) => read(cfa.wrapping_add(*n as u64))?,
                RegisterRule::ValOffset(n) => cfa.wrapping_add(*n as u64),
                RegisterRule::Register(r) => regs.get(*r)?,
                RegisterRule::Constant(c) => *c,
                _ => return Err(WalkError::UnsupportedRule),
            };
            if *reg == X86_64::RA {
                return_address_defined = true;
            }
            caller.set(*reg, value)?;
        }
        if !return_address_defined {
            return Err(WalkError::EndOfStack);
        }
        caller.gp[RSP] = cfa;
        Ok(caller)
    }
}
