/* shabench: hashes N MiB (default 64) with SHA-256 and prints the digest and the throughput.
 * The data is one MiB of splitmix64 output (fixed seed, each 64-bit word stored little-endian),
 * repeated N times. */

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "sha256.h"

#define MIB (1024 * 1024)
#define SEED UINT64_C(0x4b65656c2d736861) /* "Keel-sha" */

static unsigned char chunk[MIB];

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    unsigned long mebibytes = 64;
    if (argc > 2) {
        fprintf(stderr, "usage: shabench [MIB]\n");
        return 2;
    }
    if (argc == 2) {
        char *end;
        errno = 0;
        unsigned long value = strtoul(argv[1], &end, 10);
        if (argv[1][0] == '\0' || argv[1][0] == '-' || *end != '\0' || errno != 0 || value == 0 ||
            value > 1024 * 1024) {
            fprintf(stderr, "shabench: invalid size '%s' (want 1 to 1048576 MiB)\n", argv[1]);
            return 2;
        }
        mebibytes = value;
    }

    uint64_t state = SEED;
    for (size_t i = 0; i < MIB; i += 8) {
        uint64_t word = splitmix64(&state);
        for (int b = 0; b < 8; b++)
            chunk[i + b] = (unsigned char)(word >> (8 * b));
    }

    double start = now_ms();
    struct sha256 ctx;
    sha256_init(&ctx);
    for (unsigned long i = 0; i < mebibytes; i++)
        sha256_update(&ctx, chunk, MIB);
    unsigned char digest[SHA256_DIGEST_SIZE];
    char hex[2 * SHA256_DIGEST_SIZE + 1];
    sha256_final(&ctx, digest);
    double elapsed = now_ms() - start;
    sha256_hex(digest, hex);

    printf("shabench: %lu MiB sha256=%s\n", mebibytes, hex);
    printf("shabench: %.1f ms, %.1f MiB/s\n", elapsed, elapsed > 0 ? mebibytes / (elapsed / 1e3) : 0.0);
    if (fflush(stdout) != 0) {
        perror("shabench: write error");
        return 1;
    }
    return 0;
}
