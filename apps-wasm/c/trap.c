/* trap: deliberately fails in the way named by its argument, to test how the host handles it.
 *   oob          load from far outside linear memory
 *   unreachable  execute an `unreachable` instruction (__builtin_trap)
 *   div0         integer division by zero
 *   stack        unbounded recursion until the call stack is exhausted
 *   loop         spin forever, counting in memory (the host must interrupt or kill it)
 *   spin         spin forever in registers alone: no memory access, no call, nothing that
 *                could fault (only the host's own means can stop it)
 * None of them returns; reaching the end of main is itself a failure (exit status 1). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static volatile unsigned long long depth;
static volatile int keep_recursing = 1;

/* Not a tail call: the volatile update after the call keeps every frame live. */
static void __attribute__((noinline)) recurse(void) {
    depth++;
    if (keep_recursing)
        recurse();
    depth--;
}

static void announce(const char *what) {
    fprintf(stderr, "trap: %s\n", what);
    fflush(stderr);
}

int main(int argc, char **argv) {
    static const char usage[] = "usage: trap oob|unreachable|div0|stack|loop|spin\n";
    if (argc != 2) {
        fputs(usage, stderr);
        return 2;
    }
    const char *mode = argv[1];

    if (strcmp(mode, "oob") == 0) {
        /* 4 GiB - 16: beyond any wasm32 memory that is not 4 GiB, and unmapped natively. */
        volatile uintptr_t address = (uintptr_t)0xfffffff0u;
        announce("loading from address 0xfffffff0");
        volatile int value = *(volatile int *)address;
        printf("trap: read %d\n", value);
    } else if (strcmp(mode, "unreachable") == 0) {
        announce("executing unreachable");
        __builtin_trap();
    } else if (strcmp(mode, "div0") == 0) {
        volatile int numerator = 1, zero = 0;
        announce("dividing by zero");
        volatile int quotient = numerator / zero;
        printf("trap: quotient %d\n", quotient);
    } else if (strcmp(mode, "stack") == 0) {
        announce("recursing without end");
        recurse();
    } else if (strcmp(mode, "loop") == 0) {
        announce("looping forever");
        for (volatile unsigned long long spins = 0;; spins++) {
        }
    } else if (strcmp(mode, "spin") == 0) {
        announce("spinning in registers");
        /* A loop with a constant condition may run forever (C11 6.8.5p6); it compiles to a
         * Wasm `loop` that branches to itself. */
        for (;;) {
        }
    } else {
        fprintf(stderr, "trap: unknown mode '%s'\n", mode);
        fputs(usage, stderr);
        return 2;
    }
    fprintf(stderr, "trap: '%s' did not trap\n", mode);
    return 1;
}
