/* sortbench: sorts N pseudo-random 32-bit integers (default 10,000,000; fixed seed), then prints
 * an order-sensitive checksum, whether the result is sorted, and the time per phase. Exit status 1
 * if the array is not sorted.
 *
 * The sort is the program's own introsort rather than the C library's qsort, so that a native
 * build and a WebAssembly build run the same algorithm: wasi-libc's qsort is musl's smoothsort,
 * about five times slower than glibc's merge sort on the same input, which would measure the
 * libraries instead of the compiled code. */

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

static void insertion_sort(int32_t *v, size_t n) {
    for (size_t i = 1; i < n; i++) {
        int32_t x = v[i];
        size_t j = i;
        for (; j > 0 && v[j - 1] > x; j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
}

static void sift_down(int32_t *v, size_t root, size_t n) {
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= n)
            return;
        if (child + 1 < n && v[child + 1] > v[child])
            child++;
        if (v[root] >= v[child])
            return;
        int32_t t = v[root];
        v[root] = v[child];
        v[child] = t;
        root = child;
    }
}

static void heap_sort(int32_t *v, size_t n) {
    for (size_t i = n / 2; i-- > 0;)
        sift_down(v, i, n);
    for (size_t end = n; end-- > 1;) {
        int32_t t = v[0];
        v[0] = v[end];
        v[end] = t;
        sift_down(v, 0, end);
    }
}

static int32_t median_of_three(int32_t a, int32_t b, int32_t c) {
    if (a > b) {
        int32_t t = a;
        a = b;
        b = t;
    }
    return c < a ? a : (c > b ? b : c);
}

/* Quicksort (Hoare partition around a median of three) that falls back to heapsort when the
 * recursion gets deeper than depth_left, and leaves short runs to insertion sort. */
static void intro_sort(int32_t *v, size_t n, unsigned depth_left) {
    while (n > 16) {
        if (depth_left-- == 0) {
            heap_sort(v, n);
            return;
        }
        int32_t pivot = median_of_three(v[0], v[n / 2], v[n - 1]);
        size_t i = 0, j = n - 1;
        for (;;) {
            while (v[i] < pivot)
                i++;
            while (v[j] > pivot)
                j--;
            if (i >= j)
                break;
            int32_t t = v[i];
            v[i] = v[j];
            v[j] = t;
            i++;
            j--;
        }
        /* [0, j] <= pivot <= [j + 1, n): recurse into the smaller side, loop on the larger. */
        size_t left = j + 1;
        if (left < n - left) {
            intro_sort(v, left, depth_left);
            v += left;
            n -= left;
        } else {
            intro_sort(v + left, n - left, depth_left);
            n = left;
        }
    }
    insertion_sort(v, n);
}

static void sort_ints(int32_t *v, size_t n) {
    unsigned depth = 0;
    for (size_t m = n; m > 1; m >>= 1)
        depth += 2;
    intro_sort(v, n, depth);
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
    sort_ints(values, n);

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
        fprintf(stderr, "sortbench: error: the array is not sorted\n");
        return 1;
    }
    return 0;
}
