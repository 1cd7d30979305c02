/* sleep: waits for the given number of seconds (a decimal fraction is allowed). */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: sleep SECONDS\n");
        return 2;
    }
    char *end;
    double seconds = strtod(argv[1], &end);
    if (*end != '\0' || seconds < 0 || seconds > 1e6) {
        fprintf(stderr, "sleep: invalid time interval '%s'\n", argv[1]);
        return 2;
    }
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {
        if (errno != EINTR) {
            perror("sleep");
            return 1;
        }
    }
    return 0;
}
