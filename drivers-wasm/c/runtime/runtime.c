/* The freestanding runtime of the C drivers: the few libc functions that the wit-bindgen C
 * bindings call (the canonical ABI's cabi_realloc is realloc, post-return and the *_free helpers
 * are free) and a small allocator over the module's linear memory.
 *
 * The allocator keeps one free list per power-of-two block size (32 bytes to 1 GiB). A block
 * starts with a 16-byte header holding its size class, so payloads are 16-byte aligned, which
 * covers every alignment the canonical ABI asks for. Memory comes from a bump pointer that
 * starts at the linker's __heap_base and grows linear memory with memory.grow when needed. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum {
    HEADER = 16,
    MIN_SHIFT = 5,
    MAX_SHIFT = 30,
    CLASSES = MAX_SHIFT - MIN_SHIFT + 1,
    PAGE = 65536,
};

struct header {
    uint32_t class;
    uint32_t magic;
};

struct free_block {
    struct free_block *next;
};

_Static_assert(sizeof(struct header) <= HEADER, "the header fits before the payload");

#define MAGIC 0x6b65656cu

extern unsigned char __heap_base;

static struct free_block *free_lists[CLASSES];
static uintptr_t heap_top;

_Noreturn void abort(void) {
    __builtin_trap();
}

static size_t block_size(unsigned class) {
    return (size_t)1 << (class + MIN_SHIFT);
}

static int class_for(size_t size) {
    if (size > block_size(CLASSES - 1) - HEADER) {
        return -1;
    }
    unsigned class = 0;
    while (block_size(class) - HEADER < size) {
        class++;
    }
    return (int)class;
}

static void *take_fresh(size_t bytes) {
    if (heap_top == 0) {
        heap_top = ((uintptr_t)&__heap_base + (HEADER - 1)) & ~(uintptr_t)(HEADER - 1);
    }
    uint64_t end = (uint64_t)__builtin_wasm_memory_size(0) * PAGE;
    uint64_t wanted = (uint64_t)heap_top + bytes;
    if (wanted >= UINT64_C(1) << 32) {
        return NULL;
    }
    if (wanted > end) {
        size_t pages = (size_t)((wanted - end + PAGE - 1) / PAGE);
        if (__builtin_wasm_memory_grow(0, pages) == SIZE_MAX) {
            return NULL;
        }
    }
    void *block = (void *)heap_top;
    heap_top += bytes;
    return block;
}

static struct header *header_of(void *ptr) {
    struct header *header = (struct header *)((unsigned char *)ptr - HEADER);
    if (header->magic != MAGIC || header->class >= CLASSES) {
        abort();
    }
    return header;
}

void *malloc(size_t size) {
    int class = class_for(size);
    if (class < 0) {
        return NULL;
    }
    unsigned char *block;
    if (free_lists[class] != NULL) {
        struct free_block *head = free_lists[class];
        free_lists[class] = head->next;
        block = (unsigned char *)head;
    } else {
        block = take_fresh(block_size((unsigned)class));
        if (block == NULL) {
            return NULL;
        }
    }
    struct header *header = (struct header *)block;
    header->class = (uint32_t)class;
    header->magic = MAGIC;
    return block + HEADER;
}

void free(void *ptr) {
    if (ptr == NULL) {
        return;
    }
    struct header *header = header_of(ptr);
    unsigned class = header->class;
    header->magic = 0;
    struct free_block *block = (struct free_block *)header;
    block->next = free_lists[class];
    free_lists[class] = block;
}

void *calloc(size_t count, size_t size) {
    if (size != 0 && count > SIZE_MAX / size) {
        return NULL;
    }
    void *ptr = malloc(count * size);
    if (ptr != NULL) {
        memset(ptr, 0, count * size);
    }
    return ptr;
}

void *realloc(void *ptr, size_t size) {
    if (ptr == NULL) {
        return malloc(size);
    }
    size_t capacity = block_size(header_of(ptr)->class) - HEADER;
    if (size <= capacity) {
        return ptr;
    }
    void *bigger = malloc(size);
    if (bigger != NULL) {
        memcpy(bigger, ptr, capacity);
        free(ptr);
    }
    return bigger;
}

void *memcpy(void *restrict dest, const void *restrict src, size_t n) {
    unsigned char *d = dest;
    const unsigned char *s = src;
    for (size_t i = 0; i < n; i++) {
        d[i] = s[i];
    }
    return dest;
}

void *memmove(void *dest, const void *src, size_t n) {
    unsigned char *d = dest;
    const unsigned char *s = src;
    if ((uintptr_t)d < (uintptr_t)s) {
        for (size_t i = 0; i < n; i++) {
            d[i] = s[i];
        }
    } else {
        for (size_t i = n; i > 0; i--) {
            d[i - 1] = s[i - 1];
        }
    }
    return dest;
}

void *memset(void *dest, int c, size_t n) {
    unsigned char *d = dest;
    for (size_t i = 0; i < n; i++) {
        d[i] = (unsigned char)c;
    }
    return dest;
}

int memcmp(const void *a, const void *b, size_t n) {
    const unsigned char *x = a;
    const unsigned char *y = b;
    for (size_t i = 0; i < n; i++) {
        if (x[i] != y[i]) {
            return x[i] < y[i] ? -1 : 1;
        }
    }
    return 0;
}

size_t strlen(const char *s) {
    size_t n = 0;
    while (s[n] != '\0') {
        n++;
    }
    return n;
}
