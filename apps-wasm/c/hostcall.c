/* hostcall: measures the cost of one WASI call from WebAssembly into the host.
 *
 *   hostcall [N]    makes N (default 1000000) clock_res_get calls and prints the mean in ns.
 *
 * clock_res_get does almost nothing on the host side, so the figure is the price of crossing
 * between Wasm and the host and back. */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <wasi/api.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    long n = 1000000;
    if (argc > 1) {
        char *end;
        n = strtol(argv[1], &end, 10);
        if (*end != '\0' || n < 0) {
            fprintf(stderr, "hostcall: invalid count '%s'\n", argv[1]);
            return 2;
        }
    }
    __wasi_timestamp_t resolution = 0;
    long long start = now_ns();
    for (long i = 0; i < n; i++) {
        if (__wasi_clock_res_get(__WASI_CLOCKID_MONOTONIC, &resolution) != 0) {
            fprintf(stderr, "hostcall: clock_res_get failed\n");
            return 1;
        }
    }
    long long elapsed = now_ns() - start;
    printf("hostcall: %ld calls in %lld ns (%.1f ns per call)\n", n, elapsed,
           n ? (double)elapsed / (double)n : 0.0);
    return 0;
}
