/* fsbench: file-system throughput as a program sees it. Writes MIB MiB to PATH in 1 MiB
 * writes (then fsync), reads it back in 1 MiB reads, and makes 4 KiB reads at random aligned
 * offsets, one at a time. Prints one `BENCH {...}` line per measurement (median of nothing: one
 * timed run each, as nanoseconds per MiB or per read) for `keel bench` to collect.
 *
 *   fsbench PATH MIB [READS] */

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024 * 1024)
#define SMALL 4096

static unsigned char chunk[MIB];

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void bench_line(const char *name, double ns, uint64_t iterations) {
    printf("BENCH {\"name\":\"%s\",\"median_ns\":%.1f,\"iterations\":%" PRIu64 "}\n", name, ns,
           iterations);
}

static int fail(const char *what, const char *path) {
    fprintf(stderr, "fsbench: %s %s: %s\n", what, path, strerror(errno));
    return 1;
}

int main(int argc, char **argv) {
    char *end;
    unsigned long mib = argc >= 3 ? strtoul(argv[2], &end, 10) : 0;
    unsigned long reads = argc == 4 ? strtoul(argv[3], &end, 10) : 2000;
    if (argc < 3 || argc > 4 || mib == 0 || mib > 4096 || reads == 0) {
        fprintf(stderr, "usage: fsbench PATH MIB [READS]\n");
        return 2;
    }
    const char *path = argv[1];
    for (size_t i = 0; i < MIB; i++)
        chunk[i] = (unsigned char)(i * 131 + 7);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return fail("creating", path);
    uint64_t start = now_ns();
    for (unsigned long i = 0; i < mib; i++)
        if (write(fd, chunk, MIB) != MIB)
            return fail("writing", path);
    if (fsync(fd) != 0)
        return fail("syncing", path);
    uint64_t written = now_ns() - start;
    close(fd);
    fd = open(path, O_RDONLY);
    if (fd < 0)
        return fail("opening", path);
    start = now_ns();
    for (unsigned long i = 0; i < mib; i++)
        if (read(fd, chunk, MIB) != MIB)
            return fail("reading", path);
    uint64_t read_ns = now_ns() - start;
    uint64_t state = 0x243f6a8885a308d3u;
    uint64_t blocks = (uint64_t)mib * (MIB / SMALL);
    start = now_ns();
    for (unsigned long i = 0; i < reads; i++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        off_t offset = (off_t)(state % blocks) * SMALL;
        if (pread(fd, chunk, SMALL, offset) != SMALL)
            return fail("reading", path);
    }
    uint64_t random_ns = now_ns() - start;
    close(fd);
    unlink(path);
    bench_line("fs_seq_write_per_mib", (double)written / mib, mib);
    bench_line("fs_seq_read_per_mib", (double)read_ns / mib, mib);
    bench_line("fs_random_read_4k", (double)random_ns / reads, reads);
    return 0;
}
