//! Multiboot2 header and the 32-to-64-bit entry.
//!
//! GRUB enters `_start` in 32-bit protected mode with paging off, EAX = multiboot2 magic and
//! EBX = the boot information's physical address. The stub identity-maps the first 4 GiB with
//! 2 MiB pages (and mirrors them at the direct-map base so Rust code can use one address for
//! physical memory from the start), turns on PAE, long mode, NX, write protection and SSE, and
//! calls `keel_boot_entry(magic, info)` on a boot stack. Rust code replaces these tables with
//! 4 KiB mappings that honour section permissions.

core::arch::global_asm!(
    r#"
    .section .multiboot2_header, "a"
    .balign 8
mb2_header_start:
    .long 0xE85250D6
    .long 0
    .long mb2_header_end - mb2_header_start
    .long -(0xE85250D6 + (mb2_header_end - mb2_header_start))
    .balign 8
    .short 0
    .short 0
    .long 8
mb2_header_end:

    .section .boot.text, "ax"
    .set BOOT_STACK_SIZE, 128 * 1024
    .code32
    .global _start
_start:
    cli
    cld
    movl $(boot_stack_bottom + BOOT_STACK_SIZE), %esp
    movl %eax, %edi
    movl %ebx, %esi

    /* Long mode available? (CPUID 0x80000001, EDX bit 29) */
    movl $0x80000000, %eax
    cpuid
    cmpl $0x80000001, %eax
    jb no_long_mode
    movl $0x80000001, %eax
    cpuid
    btl $29, %edx
    jnc no_long_mode

    /* PML4[0] and PML4[256] -> PDPT; PDPT[0..4] -> four page directories. */
    movl $boot_pdpt, %eax
    orl $0x3, %eax
    movl %eax, boot_pml4
    movl %eax, boot_pml4 + 256 * 8
    xorl %ecx, %ecx
1:  movl %ecx, %eax
    shll $12, %eax
    addl $boot_pd, %eax
    orl $0x3, %eax
    movl %eax, boot_pdpt(,%ecx,8)
    movl $0, boot_pdpt + 4(,%ecx,8)
    incl %ecx
    cmpl $4, %ecx
    jne 1b
    /* 2048 entries of 2 MiB: present, writable, huge. */
    xorl %ecx, %ecx
2:  movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax
    movl %eax, boot_pd(,%ecx,8)
    movl $0, boot_pd + 4(,%ecx,8)
    incl %ecx
    cmpl $2048, %ecx
    jne 2b

    movl $boot_pml4, %eax
    movl %eax, %cr3
    /* CR4: PAE | OSFXSR | OSXMMEXCPT */
    movl %cr4, %eax
    orl $((1 << 5) | (1 << 9) | (1 << 10)), %eax
    movl %eax, %cr4
    /* EFER: LME | NXE */
    movl $0xC0000080, %ecx
    rdmsr
    orl $((1 << 8) | (1 << 11)), %eax
    wrmsr
    /* CR0: PG | WP | MP, EM off */
    movl %cr0, %eax
    andl $~(1 << 2), %eax
    orl $((1 << 31) | (1 << 16) | (1 << 1)), %eax
    movl %eax, %cr0

    lgdt boot_gdt_pointer
    ljmp $0x08, $long_mode_entry

no_long_mode:
    movl $no_long_mode_message, %esi
3:  movb (%esi), %al
    testb %al, %al
    jz 4f
    movw $0x3F8, %dx
    outb %al, %dx
    incl %esi
    jmp 3b
4:  hlt
    jmp 4b

    .code64
long_mode_entry:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movq $(boot_stack_bottom + BOOT_STACK_SIZE), %rsp
    xorl %ebp, %ebp
    movl %edi, %edi
    movl %esi, %esi
    call keel_boot_entry
5:  hlt
    jmp 5b

    .section .rodata.boot, "a"
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00209A0000000000
    .quad 0x0000920000000000
boot_gdt_pointer:
    .short boot_gdt_pointer - boot_gdt - 1
    .long boot_gdt
no_long_mode_message:
    .asciz "Keel needs a 64-bit (long mode) CPU.\r\n"

"#,
    options(att_syntax)
);

/// Boot page tables and the boot stack. Zero-initialised statics land in `.bss`.
#[repr(C, align(4096))]
struct BootMemory<const N: usize>([u8; N]);

#[allow(dead_code)] // referenced from the assembly only
mod boot_memory {
    use super::{BOOT_STACK_SIZE, BootMemory};
    #[unsafe(no_mangle)]
    static mut boot_pml4: BootMemory<4096> = BootMemory([0; 4096]);
    #[unsafe(no_mangle)]
    static mut boot_pdpt: BootMemory<4096> = BootMemory([0; 4096]);
    #[unsafe(no_mangle)]
    static mut boot_pd: BootMemory<{ 4 * 4096 }> = BootMemory([0; 4 * 4096]);
    /// The stack the boot code runs on; later the idle task's.
    #[unsafe(no_mangle)]
    static mut boot_stack_bottom: BootMemory<BOOT_STACK_SIZE> = BootMemory([0; BOOT_STACK_SIZE]);
}

core::arch::global_asm!(
    ".global boot_stack_top",
    ".set boot_stack_top, boot_stack_bottom + 128 * 1024"
);

/// Size of the boot stack (the idle task's stack later); the assembly uses the same number.
pub const BOOT_STACK_SIZE: usize = 128 * 1024;
