/* diskbench: Keel's `blk bench` as a Linux program, for the Linux guest of `keel linux-image`
 * (built static on the host). On a block device, from MiB FIRST, with direct I/O:
 *
 *   sequential write   MIB writes of 1 MiB, then fdatasync     vs Keel's writes + flush
 *   sequential read    MIB reads of 1 MiB
 *   4 KiB random read  1000 reads at 4 KiB-aligned places in those MIB MiB, one at a time,
 *                      in the same pseudo-random order as Keel's
 *
 *   diskbench DEVICE FIRST_MIB MIB PREFIX
 *
 * prints `BENCH {"name":"PREFIXdisk_seq_write_per_mib",...}` and the two others, timed inside
 * the guest as Keel times its own. The data written is overwritten for good. */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MIB (1u << 20)
#define SMALL 4096u
#define RANDOM_READS 1000u

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void line(const char *prefix, const char *name, uint64_t ns, uint64_t iterations) {
    printf("BENCH {\"name\":\"%s%s\",\"median_ns\":%.1f,\"iterations\":%" PRIu64 "}\n", prefix,
           name, (double)ns / (double)iterations, iterations);
}

static int fail(const char *what, uint64_t at) {
    fprintf(stderr, "diskbench: %s at byte %" PRIu64 ": %s\n", what, at, strerror(errno));
    return 1;
}

/* A whole transfer, or an error: direct I/O on a block device moves all or fails. */
static int transfer(int fd, int writing, void *buf, size_t len, uint64_t at) {
    ssize_t done = writing ? pwrite(fd, buf, len, (off_t)at) : pread(fd, buf, len, (off_t)at);
    if (done != (ssize_t)len) {
        if (done >= 0) errno = EIO;
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: diskbench DEVICE FIRST_MIB MIB PREFIX\n");
        return 2;
    }
    const char *device = argv[1];
    uint64_t first = strtoull(argv[2], NULL, 10) * MIB;
    uint64_t mib = strtoull(argv[3], NULL, 10);
    const char *prefix = argv[4];
    if (mib == 0) {
        fprintf(stderr, "diskbench: MIB must be at least 1\n");
        return 2;
    }
    int fd = open(device, O_RDWR | O_DIRECT);
    if (fd < 0) return fail("open", 0);
    void *buf;
    if (posix_memalign(&buf, SMALL, MIB) != 0) return fail("allocate", 0);
    for (size_t i = 0; i < MIB; i++) ((uint8_t *)buf)[i] = (uint8_t)(i * 131 + 7);

    uint64_t start = now_ns();
    for (uint64_t i = 0; i < mib; i++)
        if (transfer(fd, 1, buf, MIB, first + i * MIB) != 0) return fail("write", first + i * MIB);
    if (fdatasync(fd) != 0) return fail("fdatasync", 0);
    line(prefix, "disk_seq_write_per_mib", now_ns() - start, mib);

    start = now_ns();
    for (uint64_t i = 0; i < mib; i++)
        if (transfer(fd, 0, buf, MIB, first + i * MIB) != 0) return fail("read", first + i * MIB);
    line(prefix, "disk_seq_read_per_mib", now_ns() - start, mib);

    uint64_t slots = mib * MIB / SMALL;
    uint64_t state = 0x243f6a8885a308d3u;
    start = now_ns();
    for (unsigned i = 0; i < RANDOM_READS; i++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        uint64_t at = first + (state % slots) * SMALL;
        if (transfer(fd, 0, buf, SMALL, at) != 0) return fail("random read", at);
    }
    line(prefix, "disk_random_read_4k", now_ns() - start, RANDOM_READS);
    free(buf);
    close(fd);
    return 0;
}
