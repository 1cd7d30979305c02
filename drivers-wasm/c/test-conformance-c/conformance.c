/* A WASI-dd test driver in C: calls the interface against the fake device of wasi-dd's tests
 * (register layout in drivers-wasm/test-conformance) the way the Rust conformance driver does,
 * plus a denied configuration write, and reports what it saw, one line per interface.
 * Scenario: `conformance-c`. Bindings: wit-bindgen's C generator, world `test-driver`. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test_driver.h"

typedef wasi_dd_dd_types_reg_op_t reg_op;
typedef wasi_dd_dd_types_width_t width;
typedef wasi_dd_dd_types_error_code_t error_code;
typedef wasi_dd_dd_pci_borrow_device_t pci_device;
typedef wasi_dd_dd_mmio_borrow_mmio_region_t region;
typedef wasi_dd_dd_ports_borrow_port_range_t port_range;
typedef wasi_dd_dd_dma_borrow_dma_buffer_t dma_buffer;
typedef wasi_dd_dd_irq_borrow_interrupt_t interrupt;

#define W8 WASI_DD_DD_TYPES_WIDTH_W8
#define W16 WASI_DD_DD_TYPES_WIDTH_W16
#define W32 WASI_DD_DD_TYPES_WIDTH_W32
#define W64 WASI_DD_DD_TYPES_WIDTH_W64
#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

/* Registers of the fake device's BAR 0. */
enum {
    CTRL = 0x000,
    STATUS = 0x008,
    ICR = 0x0c0,
    ICS = 0x0c8,
    SCRATCH = 0x100,
};
#define CTRL_RESET (UINT64_C(1) << 31)

/* A growing byte string, handed to the host as the scenario's result (the bindings' post-return
 * function frees it). Running out of memory traps, as the bindings' cabi_realloc does. */
struct text {
    char *bytes;
    size_t len;
    size_t cap;
};

static void text_bytes(struct text *t, const char *bytes, size_t len) {
    if (len == 0) {
        return;
    }
    if (len > t->cap - t->len) {
        size_t cap = t->cap == 0 ? 256 : t->cap;
        while (len > cap - t->len) {
            if (cap > SIZE_MAX / 2) {
                abort();
            }
            cap *= 2;
        }
        char *grown = realloc(t->bytes, cap);
        if (grown == NULL) {
            abort();
        }
        t->bytes = grown;
        t->cap = cap;
    }
    memcpy(t->bytes + t->len, bytes, len);
    t->len += len;
}

static void text_str(struct text *t, const char *s) {
    text_bytes(t, s, strlen(s));
}

/* `value` in lower-case hex, zero-padded to at least `digits` digits. */
static void text_hex(struct text *t, uint64_t value, unsigned digits) {
    char buf[16];
    unsigned n = 0;
    do {
        buf[15 - n] = "0123456789abcdef"[value & 0xf];
        value >>= 4;
        n++;
    } while (value != 0 && n < 16);
    while (n < digits && n < 16) {
        buf[15 - n] = '0';
        n++;
    }
    text_bytes(t, buf + 16 - n, n);
}

static void text_dec(struct text *t, uint64_t value) {
    char buf[20];
    unsigned n = 0;
    do {
        buf[19 - n] = (char)('0' + value % 10);
        value /= 10;
        n++;
    } while (value != 0);
    text_bytes(t, buf + 20 - n, n);
}

static void text_bool(struct text *t, bool value) {
    text_str(t, value ? "true" : "false");
}

static void text_hex_list(struct text *t, const test_driver_list_u64_t *values) {
    for (size_t i = 0; i < values->len; i++) {
        if (i > 0) {
            text_str(t, " ");
        }
        text_hex(t, values->ptr[i], 0);
    }
}

/* Moves the text into a component-model string (the host frees it through post-return). */
static void text_into_string(struct text *t, test_driver_string_t *out) {
    if (t->len == 0) {
        free(t->bytes);
        out->ptr = NULL;
    } else {
        out->ptr = (uint8_t *)t->bytes;
    }
    out->len = t->len;
    t->bytes = NULL;
    t->len = 0;
    t->cap = 0;
}

static const char *code_name(error_code code) {
    static const char *const names[] = {
        "out-of-range", "misaligned", "denied",      "no-such-resource", "in-use",
        "out-of-memory", "timed-out", "unsupported", "stale-handle", "device-error",
    };
    return code < COUNT(names) ? names[code] : "unknown-error";
}

/* One run of the scenario: the report so far and, after a failed step, why. */
struct run {
    pci_device dev;
    struct text report;
    struct text error;
    bool failed;
};

static bool fail(struct run *r, const char *step, error_code code) {
    text_str(&r->error, step);
    text_str(&r->error, ": ");
    text_str(&r->error, code_name(code));
    r->failed = true;
    return false;
}

static bool fail_batch(struct run *r, const char *step, wasi_dd_dd_types_batch_error_t error) {
    text_str(&r->error, step);
    text_str(&r->error, ": op ");
    text_dec(&r->error, error.index);
    text_str(&r->error, " ");
    text_str(&r->error, code_name(error.code));
    r->failed = true;
    return false;
}

static void line(struct run *r, const char *s) {
    if (r->report.len > 0) {
        text_str(&r->report, "\n");
    }
    text_str(&r->report, s);
}

static reg_op op_read(uint64_t offset, width w) {
    return (reg_op){.tag = WASI_DD_DD_TYPES_REG_OP_READ, .val.read = {.offset = offset, .width = w}};
}

static reg_op op_write(uint64_t offset, width w, uint64_t value) {
    return (reg_op){.tag = WASI_DD_DD_TYPES_REG_OP_WRITE,
                    .val.write = {.offset = offset, .width = w, .value = value}};
}

static reg_op op_modify(uint64_t offset, width w, uint64_t clear, uint64_t set) {
    return (reg_op){.tag = WASI_DD_DD_TYPES_REG_OP_MODIFY,
                    .val.modify = {.offset = offset, .width = w, .clear = clear, .set = set}};
}

static reg_op op_poll(uint64_t offset, width w, uint64_t mask, uint64_t expect, uint64_t timeout_ns) {
    return (reg_op){.tag = WASI_DD_DD_TYPES_REG_OP_POLL,
                    .val.poll = {.offset = offset,
                                 .width = w,
                                 .mask = mask,
                                 .expect = expect,
                                 .timeout_ns = timeout_ns}};
}

static reg_op op_delay(uint64_t ns) {
    return (reg_op){.tag = WASI_DD_DD_TYPES_REG_OP_DELAY, .val.delay = ns};
}

static bool config_read(struct run *r, uint32_t offset, width w, uint32_t *value, const char *step) {
    error_code code;
    if (!wasi_dd_dd_pci_method_device_config_read(r->dev, offset, w, value, &code)) {
        return fail(r, step, code);
    }
    return true;
}

static bool config_write(struct run *r, uint32_t offset, width w, uint32_t value, const char *step) {
    error_code code;
    if (!wasi_dd_dd_pci_method_device_config_write(r->dev, offset, w, value, &code)) {
        return fail(r, step, code);
    }
    return true;
}

static bool mmio_read(struct run *r, region reg, uint64_t offset, width w, uint64_t *value,
                      const char *step) {
    error_code code;
    if (!wasi_dd_dd_mmio_method_mmio_region_read(reg, offset, w, value, &code)) {
        return fail(r, step, code);
    }
    return true;
}

static bool mmio_write(struct run *r, region reg, uint64_t offset, width w, uint64_t value,
                       const char *step) {
    error_code code;
    if (!wasi_dd_dd_mmio_method_mmio_region_write(reg, offset, w, value, &code)) {
        return fail(r, step, code);
    }
    return true;
}

static bool port_read(struct run *r, port_range ports, uint32_t offset, width w, uint32_t *value,
                      const char *step) {
    error_code code;
    if (!wasi_dd_dd_ports_method_port_range_read(ports, offset, w, value, &code)) {
        return fail(r, step, code);
    }
    return true;
}

static bool port_write(struct run *r, port_range ports, uint32_t offset, width w, uint32_t value,
                       const char *step) {
    error_code code;
    if (!wasi_dd_dd_ports_method_port_range_write(ports, offset, w, value, &code)) {
        return fail(r, step, code);
    }
    return true;
}

static bool irq_wait(struct run *r, interrupt irq, uint64_t timeout_ns, bool *fired, const char *step) {
    error_code code;
    if (!wasi_dd_dd_irq_method_interrupt_wait(irq, timeout_ns, fired, &code)) {
        return fail(r, step, code);
    }
    return true;
}

static bool irq_call(struct run *r, bool (*call)(interrupt, error_code *), interrupt irq,
                     const char *step) {
    error_code code;
    if (!call(irq, &code)) {
        return fail(r, step, code);
    }
    return true;
}

static const char *bar_kind_name(wasi_dd_dd_pci_bar_kind_t kind) {
    switch (kind) {
    case WASI_DD_DD_PCI_BAR_KIND_MEMORY32:
        return "memory32";
    case WASI_DD_DD_PCI_BAR_KIND_MEMORY64:
        return "memory64";
    case WASI_DD_DD_PCI_BAR_KIND_IO:
        return "io";
    default:
        return "unknown";
    }
}

static void identity(struct run *r) {
    wasi_dd_dd_pci_pci_address_t a;
    wasi_dd_dd_pci_device_id_t id;
    wasi_dd_dd_pci_list_bar_info_t bars;
    wasi_dd_dd_pci_method_device_address(r->dev, &a);
    wasi_dd_dd_pci_method_device_id(r->dev, &id);
    wasi_dd_dd_pci_method_device_bars(r->dev, &bars);
    struct text *t = &r->report;
    line(r, "device ");
    text_hex(t, a.segment, 4);
    text_str(t, ":");
    text_hex(t, a.bus, 2);
    text_str(t, ":");
    text_hex(t, a.device, 2);
    text_str(t, ".");
    text_dec(t, a.function);
    text_str(t, " id ");
    text_hex(t, id.vendor, 4);
    text_str(t, ":");
    text_hex(t, id.device, 4);
    text_str(t, " sub ");
    text_hex(t, id.subsystem_vendor, 4);
    text_str(t, ":");
    text_hex(t, id.subsystem, 4);
    text_str(t, " class ");
    text_hex(t, id.class_, 2);
    text_str(t, ".");
    text_hex(t, id.subclass, 2);
    text_str(t, ".");
    text_hex(t, id.prog_if, 2);
    text_str(t, " rev ");
    text_hex(t, id.revision, 2);
    text_str(t, " bars");
    for (size_t i = 0; i < bars.len; i++) {
        const wasi_dd_dd_pci_bar_info_t *bar = &bars.ptr[i];
        text_str(t, " ");
        text_dec(t, bar->index);
        text_str(t, ":");
        text_str(t, bar_kind_name(bar->kind));
        text_str(t, ":");
        text_dec(t, bar->size);
        if (bar->prefetchable) {
            text_str(t, ":prefetchable");
        }
    }
    wasi_dd_dd_pci_list_bar_info_free(&bars);
}

static bool config(struct run *r) {
    uint32_t ids, device_id, revision, cap_ptr, first, second;
    if (!config_read(r, 0x00, W32, &ids, "config-read 0") ||
        !config_read(r, 0x02, W16, &device_id, "config-read 2") ||
        !config_read(r, 0x08, W8, &revision, "config-read 8") ||
        !config_read(r, 0x34, W8, &cap_ptr, "config-read 0x34") ||
        !config_write(r, 0x80, W32, 0xdeadbeef, "config-write 0x80") ||
        !config_write(r, 0x84, W16, 0x1234, "config-write 0x84") ||
        !config_write(r, 0x86, W8, 0x56, "config-write 0x86") ||
        !config_read(r, 0x80, W32, &first, "config-read 0x80") ||
        !config_read(r, 0x84, W32, &second, "config-read 0x84")) {
        return false;
    }
    /* BAR 0 belongs to the host: the write must be refused before it reaches the device. */
    error_code code;
    const char *bar_write = "ok";
    if (!wasi_dd_dd_pci_method_device_config_write(r->dev, 0x10, W32, 0xffffffff, &code)) {
        bar_write = code_name(code);
    }
    struct text *t = &r->report;
    line(r, "config ");
    text_hex(t, ids, 8);
    text_str(t, " ");
    text_hex(t, device_id, 4);
    text_str(t, " ");
    text_hex(t, revision, 2);
    text_str(t, " cap-ptr=");
    text_hex(t, cap_ptr, 2);
    text_str(t, " scratch=");
    text_hex(t, first, 8);
    text_str(t, " ");
    text_hex(t, second, 8);
    text_str(t, " bar0-write=");
    text_str(t, bar_write);
    return true;
}

static bool mmio_single(struct run *r, region reg) {
    uint64_t word, byte, half, quad, mixed;
    if (!mmio_write(r, reg, SCRATCH, W32, 0x12345678, "write w32") ||
        !mmio_read(r, reg, SCRATCH, W32, &word, "read w32") ||
        !mmio_read(r, reg, SCRATCH + 1, W8, &byte, "read w8") ||
        !mmio_read(r, reg, SCRATCH + 2, W16, &half, "read w16") ||
        !mmio_write(r, reg, SCRATCH + 8, W64, UINT64_C(0x0123456789abcdef), "write w64") ||
        !mmio_read(r, reg, SCRATCH + 8, W64, &quad, "read w64") ||
        !mmio_write(r, reg, SCRATCH + 0x10, W8, 0xab, "write w8") ||
        !mmio_write(r, reg, SCRATCH + 0x12, W16, 0xcdef, "write w16") ||
        !mmio_read(r, reg, SCRATCH + 0x10, W32, &mixed, "read mixed")) {
        return false;
    }
    struct text *t = &r->report;
    line(r, "mmio ");
    text_hex(t, word, 8);
    text_str(t, " ");
    text_hex(t, byte, 2);
    text_str(t, " ");
    text_hex(t, half, 4);
    text_str(t, " ");
    text_hex(t, quad, 16);
    text_str(t, " ");
    text_hex(t, mixed, 8);
    return true;
}

static bool mmio_batch(struct run *r, region reg) {
    reg_op ops[] = {
        op_write(CTRL, W32, CTRL_RESET),
        op_poll(CTRL, W32, CTRL_RESET, 0, 1000000),
        op_read(STATUS, W32),
        op_modify(SCRATCH, W32, 0xff, 0x01),
        op_read(SCRATCH, W32),
        op_delay(500),
        op_read(SCRATCH + 8, W64),
    };
    wasi_dd_dd_mmio_list_reg_op_t list = {.ptr = ops, .len = COUNT(ops)};
    test_driver_list_u64_t values;
    wasi_dd_dd_types_batch_error_t error;
    if (!wasi_dd_dd_mmio_method_mmio_region_batch(reg, &list, &values, &error)) {
        return fail_batch(r, "mmio batch", error);
    }
    line(r, "mmio-batch ");
    text_hex_list(&r->report, &values);
    test_driver_list_u64_free(&values);
    return true;
}

static bool port_access(struct run *r, port_range ports) {
    uint32_t byte, half, word;
    if (!port_write(r, ports, 0, W8, 0x5a, "port write w8") ||
        !port_read(r, ports, 0, W8, &byte, "port read w8") ||
        !port_write(r, ports, 2, W16, 0xbeef, "port write w16") ||
        !port_read(r, ports, 2, W16, &half, "port read w16") ||
        !port_write(r, ports, 4, W32, 0xcafef00d, "port write w32") ||
        !port_read(r, ports, 4, W32, &word, "port read w32")) {
        return false;
    }
    reg_op ops[] = {
        op_write(8, W32, 0x11223344),
        op_read(8, W16),
        op_modify(8, W32, 0xff00, 0x5500),
        op_read(8, W32),
    };
    wasi_dd_dd_ports_list_reg_op_t list = {.ptr = ops, .len = COUNT(ops)};
    test_driver_list_u64_t values;
    wasi_dd_dd_types_batch_error_t error;
    if (!wasi_dd_dd_ports_method_port_range_batch(ports, &list, &values, &error)) {
        return fail_batch(r, "port batch", error);
    }
    struct text *t = &r->report;
    line(r, "ports ");
    text_hex(t, byte, 2);
    text_str(t, " ");
    text_hex(t, half, 4);
    text_str(t, " ");
    text_hex(t, word, 8);
    text_str(t, " batch ");
    text_hex_list(t, &values);
    test_driver_list_u64_free(&values);
    return true;
}

static bool allocate(struct run *r, uint64_t size, uint64_t align,
                     wasi_dd_dd_dma_own_dma_buffer_t *buffer, const char *step) {
    error_code code;
    if (!wasi_dd_dd_pci_method_device_allocate_dma(r->dev, size, align, buffer, &code)) {
        return fail(r, step, code);
    }
    return true;
}

/* The ring's part of the DMA step, with the ring's handle owned (and dropped) by the caller. */
static bool dma_ring(struct run *r, dma_buffer ring, uint64_t *address, test_driver_list_u8_t *bytes,
                     test_driver_list_u64_t *values) {
    error_code code;
    if (!wasi_dd_dd_dma_method_dma_buffer_device_address(ring, address, &code)) {
        return fail(r, "device-address", code);
    }
    uint8_t data[] = {1, 2, 3, 4, 5};
    test_driver_list_u8_t list = {.ptr = data, .len = COUNT(data)};
    if (!wasi_dd_dd_dma_method_dma_buffer_write(ring, 16, &list, &code)) {
        return fail(r, "dma write", code);
    }
    if (!wasi_dd_dd_dma_method_dma_buffer_read(ring, 16, 5, bytes, &code)) {
        return fail(r, "dma read", code);
    }
    reg_op ops[] = {
        op_write(0, W32, 0xa5a5a5a5),
        op_write(4, W32, 0x5a5a5a5a),
        op_read(0, W64),
        op_modify(0, W8, 0xff, 0x11),
        op_poll(0, W8, 0xff, 0x11, 0),
        op_read(0, W32),
        op_delay(100),
    };
    wasi_dd_dd_dma_list_reg_op_t batch = {.ptr = ops, .len = COUNT(ops)};
    wasi_dd_dd_types_batch_error_t error;
    if (!wasi_dd_dd_dma_method_dma_buffer_batch(ring, &batch, values, &error)) {
        test_driver_list_u8_free(bytes);
        return fail_batch(r, "dma batch", error);
    }
    return true;
}

/* A buffer freed early: its calls answer stale-handle from then on. */
static bool dma_small(struct run *r, dma_buffer small, uint64_t *address, const char **after_free) {
    error_code code;
    if (!wasi_dd_dd_dma_method_dma_buffer_device_address(small, address, &code)) {
        return fail(r, "device-address small", code);
    }
    if (!wasi_dd_dd_dma_method_dma_buffer_free(small, &code)) {
        return fail(r, "free", code);
    }
    test_driver_list_u8_t stale;
    if (wasi_dd_dd_dma_method_dma_buffer_read(small, 0, 1, &stale, &code)) {
        test_driver_list_u8_free(&stale);
        *after_free = "ok";
    } else {
        *after_free = code_name(code);
    }
    return true;
}

static bool dma(struct run *r) {
    wasi_dd_dd_dma_own_dma_buffer_t ring_own;
    if (!allocate(r, 4096, 4096, &ring_own, "allocate 4096")) {
        return false;
    }
    dma_buffer ring = wasi_dd_dd_dma_borrow_dma_buffer(ring_own);
    uint64_t address = 0;
    test_driver_list_u8_t bytes;
    test_driver_list_u64_t values;
    if (!dma_ring(r, ring, &address, &bytes, &values)) {
        wasi_dd_dd_dma_dma_buffer_drop_own(ring_own);
        return false;
    }
    uint64_t ring_size = wasi_dd_dd_dma_method_dma_buffer_size(ring);

    wasi_dd_dd_dma_own_dma_buffer_t small_own;
    bool ok = allocate(r, 100, 64, &small_own, "allocate 100");
    uint64_t small_address = 0;
    uint64_t small_size = 0;
    const char *after_free = "";
    if (ok) {
        dma_buffer small = wasi_dd_dd_dma_borrow_dma_buffer(small_own);
        small_size = wasi_dd_dd_dma_method_dma_buffer_size(small);
        ok = dma_small(r, small, &small_address, &after_free);
        wasi_dd_dd_dma_dma_buffer_drop_own(small_own);
    }
    if (ok) {
        struct text *t = &r->report;
        line(r, "dma size=");
        text_dec(t, ring_size);
        text_str(t, " aligned=");
        text_bool(t, address % 4096 == 0 && address != 0);
        text_str(t, " read=");
        for (size_t i = 0; i < bytes.len; i++) {
            if (i > 0) {
                text_str(t, ",");
            }
            text_dec(t, bytes.ptr[i]);
        }
        text_str(t, " batch ");
        text_hex_list(t, &values);
        text_str(t, " small=");
        text_dec(t, small_size);
        text_str(t, " aligned=");
        text_bool(t, small_address % 64 == 0 && small_address != 0);
        text_str(t, " after-free=");
        text_str(t, after_free);
    }
    test_driver_list_u8_free(&bytes);
    test_driver_list_u64_free(&values);
    wasi_dd_dd_dma_dma_buffer_drop_own(ring_own);
    return ok;
}

static bool interrupt_steps(struct run *r, interrupt irq, region reg) {
    uint64_t initial = wasi_dd_dd_irq_method_interrupt_count(irq);
    bool idle, fired, while_masked, after_unmask;
    uint64_t cause, cleared;
    if (!irq_wait(r, irq, 1000, &idle, "wait idle") ||
        !mmio_write(r, reg, ICS, W32, 0x1, "write ICS") ||
        !irq_wait(r, irq, 1000000, &fired, "wait fired") ||
        !mmio_read(r, reg, ICR, W32, &cause, "read ICR") ||
        !mmio_read(r, reg, ICR, W32, &cleared, "read ICR again") ||
        !irq_call(r, wasi_dd_dd_irq_method_interrupt_acknowledge, irq, "acknowledge") ||
        !irq_call(r, wasi_dd_dd_irq_method_interrupt_mask, irq, "mask") ||
        !mmio_write(r, reg, ICS, W32, 0x4, "write ICS masked") ||
        !irq_wait(r, irq, 1000, &while_masked, "wait masked") ||
        !irq_call(r, wasi_dd_dd_irq_method_interrupt_unmask, irq, "unmask") ||
        !irq_wait(r, irq, 1000, &after_unmask, "wait unmasked") ||
        !irq_call(r, wasi_dd_dd_irq_method_interrupt_acknowledge, irq, "acknowledge again")) {
        return false;
    }
    struct text *t = &r->report;
    line(r, "irq count=");
    text_dec(t, initial);
    text_str(t, " idle=");
    text_bool(t, idle);
    text_str(t, " fired=");
    text_bool(t, fired);
    text_str(t, " icr=");
    text_hex(t, cause, 0);
    text_str(t, ",");
    text_hex(t, cleared, 0);
    text_str(t, " masked=");
    text_bool(t, while_masked);
    text_str(t, " unmasked=");
    text_bool(t, after_unmask);
    text_str(t, " count=");
    text_dec(t, wasi_dd_dd_irq_method_interrupt_count(irq));
    return true;
}

static bool interrupt_step(struct run *r, region reg) {
    wasi_dd_dd_pci_own_interrupt_t irq;
    error_code code;
    if (!wasi_dd_dd_pci_method_device_interrupt(r->dev, &irq, &code)) {
        return fail(r, "interrupt", code);
    }
    bool ok = interrupt_steps(r, wasi_dd_dd_irq_borrow_interrupt(irq), reg);
    wasi_dd_dd_irq_interrupt_drop_own(irq);
    return ok;
}

static bool bus_mastering(struct run *r) {
    uint32_t before, on, off;
    error_code code;
    if (!config_read(r, 0x04, W16, &before, "read command")) {
        return false;
    }
    if (!wasi_dd_dd_pci_method_device_set_bus_mastering(r->dev, true, &code)) {
        return fail(r, "bus mastering on", code);
    }
    if (!config_read(r, 0x04, W16, &on, "read command")) {
        return false;
    }
    if (!wasi_dd_dd_pci_method_device_set_bus_mastering(r->dev, false, &code)) {
        return fail(r, "bus mastering off", code);
    }
    if (!config_read(r, 0x04, W16, &off, "read command")) {
        return false;
    }
    struct text *t = &r->report;
    line(r, "command ");
    text_hex(t, before, 4);
    text_str(t, " ");
    text_hex(t, on, 4);
    text_str(t, " ");
    text_hex(t, off, 4);
    return true;
}

static void time_and_log(struct run *r) {
    uint64_t start = wasi_dd_dd_platform_now_ns();
    wasi_dd_dd_platform_sleep_ns(10000);
    uint64_t end = wasi_dd_dd_platform_now_ns();
    test_driver_string_t message;
    test_driver_string_set(&message, "conformance-c: every interface answered");
    wasi_dd_dd_platform_log(WASI_DD_DD_PLATFORM_LOG_LEVEL_INFO, &message);
    line(r, "time slept-at-least-10us=");
    text_bool(&r->report, end >= start && end - start >= 10000);
}

/* The steps that need the registers and ports, which the caller owns and drops. */
static bool with_bars(struct run *r, region reg, port_range ports) {
    line(r, "regions mmio=");
    text_dec(&r->report, wasi_dd_dd_mmio_method_mmio_region_size(reg));
    text_str(&r->report, " ports=");
    text_dec(&r->report, wasi_dd_dd_ports_method_port_range_size(ports));
    return mmio_single(r, reg) && mmio_batch(r, reg) && port_access(r, ports) && dma(r) &&
           interrupt_step(r, reg) && bus_mastering(r);
}

static bool conformance(struct run *r) {
    identity(r);
    if (!config(r)) {
        return false;
    }
    wasi_dd_dd_pci_own_mmio_region_t reg;
    wasi_dd_dd_pci_own_port_range_t ports;
    error_code code;
    if (!wasi_dd_dd_pci_method_device_map_bar(r->dev, 0, &reg, &code)) {
        return fail(r, "map-bar 0", code);
    }
    if (!wasi_dd_dd_pci_method_device_io_bar(r->dev, 1, &ports, &code)) {
        wasi_dd_dd_mmio_mmio_region_drop_own(reg);
        return fail(r, "io-bar 1", code);
    }
    bool ok = with_bars(r, wasi_dd_dd_mmio_borrow_mmio_region(reg),
                        wasi_dd_dd_ports_borrow_port_range(ports));
    wasi_dd_dd_ports_port_range_drop_own(ports);
    wasi_dd_dd_mmio_mmio_region_drop_own(reg);
    if (ok) {
        time_and_log(r);
    }
    return ok;
}

static bool is(const test_driver_string_t *s, const char *literal) {
    size_t len = strlen(literal);
    return s->len == len && memcmp(s->ptr, literal, len) == 0;
}

bool exports_test_driver_run(test_driver_own_device_t device, test_driver_string_t *scenario,
                             test_driver_string_t *ret, test_driver_string_t *err) {
    struct run r = {.dev = wasi_dd_dd_pci_borrow_device(device)};
    if (is(scenario, "conformance-c")) {
        conformance(&r);
    } else {
        text_str(&r.error, "unknown scenario \"");
        text_bytes(&r.error, (const char *)scenario->ptr, scenario->len);
        text_str(&r.error, "\"");
        r.failed = true;
    }
    test_driver_string_free(scenario);
    wasi_dd_dd_pci_device_drop_own(device);
    if (r.failed) {
        free(r.report.bytes);
        text_into_string(&r.error, err);
        return false;
    }
    free(r.error.bytes);
    text_into_string(&r.report, ret);
    return true;
}
