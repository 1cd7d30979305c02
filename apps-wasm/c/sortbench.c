/* sortbench: sorts N pseudo-random 32-bit integers (default 10,000,000; fixed seed) with qsort,
 * then prints an order-sensitive checksum, whether the result is sorted, and the time per phase.
 * Exit status 1 if the array is not sorted. */

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define SEED UINT64_C(0x4b65656c2d736f72) /* "Keel-sor" */

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

static int compare_ints(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    size_t n = 10000000;
    if (argc > 2) {
        fprintf(stderr, "usage: sortbench [COUNT]\n");
        return 2;
    }
    if (argc == 2) {
        char *end;
        errno = 0;
        unsigned long long value = strtoull(argv[1], &end, 10);
        if (argv[1][0] == '\0' || argv[1][0] == '-' || *end != '\0' || errno != 0 || value == 0 ||
            value > SIZE_MAX / sizeof(int32_t)) {
            fprintf(stderr, "sortbench: invalid count '%s' (want a positive integer)\n", argv[1]);
            return 2;
        }
        n = (size_t)value;
    }

    int32_t *values = malloc(n * sizeof *values);
    if (values == NULL) {
        fprintf(stderr, "sortbench: cannot allocate %zu integers\n", n);
        return 1;
    }

    double t0 = now_ms();
    uint64_t state = SEED;
    for (size_t i = 0; i < n; i++)
        values[i] = (int32_t)(uint32_t)(splitmix64(&state) >> 32);

    double t1 = now_ms();
    qsort(values, n, sizeof *values, compare_ints);

    double t2 = now_ms();
    uint64_t checksum = 0;
    int sorted = 1;
    for (size_t i = 0; i < n; i++) {
        checksum += (uint64_t)(uint32_t)values[i] * (uint64_t)(i + 1);
        if (i > 0 && values[i - 1] > values[i])
            sorted = 0;
    }
    double t3 = now_ms();

    printf("sortbench: n=%zu checksum=%016" PRIx64 " min=%" PRId32 " max=%" PRId32 " %s\n", n, checksum,
           values[0], values[n - 1], sorted ? "sorted" : "NOT SORTED");
    printf("sortbench: generate %.1f ms, sort %.1f ms, check %.1f ms\n", t1 - t0, t2 - t1, t3 - t2);
    free(values);
    if (fflush(stdout) != 0) {
        perror("sortbench: write error");
        return 1;
    }
    if (!sorted) {
        fprintf(stderr, "sortbench: error: qsort left the array unsorted\n");
        return 1;
    }
    return 0;
}
