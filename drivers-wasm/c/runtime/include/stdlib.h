/* The part of <stdlib.h> that the C drivers and their wit-bindgen bindings use, implemented by
 * runtime.c (C drivers are freestanding: there is no libc in a WASI-dd driver). */
#ifndef KEEL_DRIVER_STDLIB_H
#define KEEL_DRIVER_STDLIB_H

#include <stddef.h>

void *malloc(size_t size);
void *calloc(size_t count, size_t size);
void *realloc(void *ptr, size_t size);
void free(void *ptr);
_Noreturn void abort(void);

#endif
