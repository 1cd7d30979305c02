/* mkdata: writes N MiB of the same data shabench hashes (one MiB of splitmix64 output, fixed
 * seed, repeated) to PATH, for tests that move a large file around. */

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB (1024 * 1024)
#define SEED UINT64_C(0x4b65656c2d736861) /* "Keel-sha", as in shabench */

static unsigned char chunk[MIB];

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: mkdata MIB PATH\n");
        return 2;
    }
    char *end;
    errno = 0;
    unsigned long mebibytes = strtoul(argv[1], &end, 10);
    if (argv[1][0] == '\0' || argv[1][0] == '-' || *end != '\0' || errno != 0 || mebibytes == 0 ||
        mebibytes > 4096) {
        fprintf(stderr, "mkdata: invalid size '%s' (want 1 to 4096 MiB)\n", argv[1]);
        return 2;
    }
    uint64_t state = SEED;
    for (size_t i = 0; i < MIB; i += 8) {
        uint64_t word = splitmix64(&state);
        for (int b = 0; b < 8; b++)
            chunk[i + b] = (unsigned char)(word >> (8 * b));
    }
    FILE *out = fopen(argv[2], "wb");
    if (out == NULL) {
        fprintf(stderr, "mkdata: %s: %s\n", argv[2], strerror(errno));
        return 1;
    }
    for (unsigned long i = 0; i < mebibytes; i++) {
        if (fwrite(chunk, 1, MIB, out) != MIB) {
            fprintf(stderr, "mkdata: %s: %s\n", argv[2], strerror(errno));
            fclose(out);
            return 1;
        }
    }
    if (fclose(out) != 0) {
        fprintf(stderr, "mkdata: %s: %s\n", argv[2], strerror(errno));
        return 1;
    }
    return 0;
}
