/* randio: random-order writes and reads of a file, verified. Writes MIB MiB to PATH as blocks
 * of 16 KiB in a random order (each block's bytes follow from SEED and its index), syncs, then
 * reads every block back in another random order and compares. Prints the SHA-256 the file
 * must have, so that a test can check it again later (after a reboot, or on the host).
 *
 *   randio PATH MIB [SEED]
 *
 * Exit status: 0 if every block read back as written, 1 on a mismatch or an I/O error. */

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sha256.h"

#define BLOCK (16 * 1024)
#define MIB (1024 * 1024)

static unsigned char expected[BLOCK];
static unsigned char actual[BLOCK];

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static void fill_block(uint64_t seed, uint32_t index, unsigned char *out) {
    uint64_t state = seed ^ ((uint64_t)index * UINT64_C(0x2545f4914f6cdd1d));
    for (size_t i = 0; i < BLOCK; i += 8) {
        uint64_t word = splitmix64(&state);
        memcpy(out + i, &word, 8);
    }
}

/* A random permutation of 0..count-1 (Fisher-Yates). */
static uint32_t *shuffled(uint32_t count, uint64_t *state) {
    uint32_t *order = malloc(sizeof(uint32_t) * count);
    if (order == NULL)
        return NULL;
    for (uint32_t i = 0; i < count; i++)
        order[i] = i;
    for (uint32_t i = count - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(splitmix64(state) % (i + 1));
        uint32_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    return order;
}

static int parse_u64(const char *text, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 0);
    if (text[0] == '\0' || text[0] == '-' || *end != '\0' || errno != 0)
        return -1;
    *out = value;
    return 0;
}

int main(int argc, char **argv) {
    uint64_t mebibytes, seed = 1;
    if (argc < 3 || argc > 4 || parse_u64(argv[2], &mebibytes) != 0 || mebibytes == 0 ||
        mebibytes > 1024 || (argc == 4 && parse_u64(argv[3], &seed) != 0)) {
        fprintf(stderr, "usage: randio PATH MIB [SEED] (MIB from 1 to 1024)\n");
        return 2;
    }
    const char *path = argv[1];
    uint32_t blocks = (uint32_t)(mebibytes * MIB / BLOCK);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        fprintf(stderr, "randio: %s: %s\n", path, strerror(errno));
        return 1;
    }
    uint64_t order_state = seed * UINT64_C(0x9e3779b97f4a7c15) + 1;
    uint32_t *order = shuffled(blocks, &order_state);
    if (order == NULL) {
        fprintf(stderr, "randio: out of memory\n");
        return 1;
    }
    for (uint32_t i = 0; i < blocks; i++) {
        fill_block(seed, order[i], expected);
        ssize_t n = pwrite(fd, expected, BLOCK, (off_t)order[i] * BLOCK);
        if (n != BLOCK) {
            fprintf(stderr, "randio: writing block %" PRIu32 ": %s\n", order[i],
                    n < 0 ? strerror(errno) : "short write");
            return 1;
        }
    }
    if (fsync(fd) != 0) {
        fprintf(stderr, "randio: fsync: %s\n", strerror(errno));
        return 1;
    }
    free(order);
    order = shuffled(blocks, &order_state);
    if (order == NULL) {
        fprintf(stderr, "randio: out of memory\n");
        return 1;
    }
    uint32_t mismatches = 0;
    for (uint32_t i = 0; i < blocks; i++) {
        fill_block(seed, order[i], expected);
        ssize_t n = pread(fd, actual, BLOCK, (off_t)order[i] * BLOCK);
        if (n != BLOCK) {
            fprintf(stderr, "randio: reading block %" PRIu32 ": %s\n", order[i],
                    n < 0 ? strerror(errno) : "short read");
            return 1;
        }
        if (memcmp(expected, actual, BLOCK) != 0) {
            if (mismatches < 5)
                fprintf(stderr, "randio: block %" PRIu32 " differs\n", order[i]);
            mismatches++;
        }
    }
    free(order);
    close(fd);
    struct sha256 sha;
    sha256_init(&sha);
    for (uint32_t i = 0; i < blocks; i++) {
        fill_block(seed, i, expected);
        sha256_update(&sha, expected, BLOCK);
    }
    unsigned char digest[SHA256_DIGEST_SIZE];
    char hex[2 * SHA256_DIGEST_SIZE + 1];
    sha256_final(&sha, digest);
    sha256_hex(digest, hex);
    printf("randio: %" PRIu64 " MiB in %" PRIu32 " blocks written and read in random order, "
           "%" PRIu32 " mismatches\n",
           mebibytes, blocks, mismatches);
    printf("sha256 %s\n", hex);
    return mismatches == 0 ? 0 : 1;
}
