/* The part of <string.h> that the C drivers and their wit-bindgen bindings use (runtime.c). */
#ifndef KEEL_DRIVER_STRING_H
#define KEEL_DRIVER_STRING_H

#include <stddef.h>

void *memcpy(void *restrict dest, const void *restrict src, size_t n);
void *memmove(void *dest, const void *src, size_t n);
void *memset(void *dest, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

#endif
