/* memtouch: allocates RESERVE MiB, writes to the first TOUCH MiB of it, reports, then waits
 * SECONDS (default 0) before exiting. Shows what a host commits for memory a program has but
 * does not use: on Keel, only touched pages take RAM. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MIB (1024UL * 1024UL)

static int parse(const char *text, unsigned long max, unsigned long *out) {
    char *end;
    errno = 0;
    unsigned long value = strtoul(text, &end, 10);
    if (text[0] == '\0' || text[0] == '-' || *end != '\0' || errno != 0 || value > max)
        return -1;
    *out = value;
    return 0;
}

int main(int argc, char **argv) {
    unsigned long reserve, touch, seconds = 0;
    if (argc < 3 || argc > 4 || parse(argv[1], 1024, &reserve) || parse(argv[2], 1024, &touch) ||
        (argc == 4 && parse(argv[3], 1000000, &seconds)) || touch > reserve) {
        fprintf(stderr, "usage: memtouch RESERVE_MIB TOUCH_MIB [SECONDS] (TOUCH <= RESERVE <= 1024)\n");
        return 2;
    }
    unsigned char *block = malloc(reserve * MIB + 1);
    if (block == NULL) {
        fprintf(stderr, "memtouch: cannot allocate %lu MiB\n", reserve);
        return 1;
    }
    memset(block, 0xa5, touch * MIB);
    unsigned long sum = 0;
    for (unsigned long i = 0; i < touch * MIB; i += 4096)
        sum += block[i];
    printf("memtouch: touched %lu of %lu MiB (check %lu)\n", touch, reserve, sum);
    fflush(stdout);
    struct timespec ts = {(time_t)seconds, 0};
    while (nanosleep(&ts, &ts) != 0) {
        if (errno != EINTR) {
            perror("memtouch");
            return 1;
        }
    }
    free(block);
    return 0;
}
