/* cat: concatenates files (standard input for no arguments or "-") to standard output. */

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char buffer[64 * 1024];

static int write_all(int fd, const char *p, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Copies fd to standard output; returns 0, or 1 after reporting an error. */
static int copy(int fd, const char *name) {
    for (;;) {
        ssize_t n = read(fd, buffer, sizeof buffer);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "cat: %s: %s\n", name, strerror(errno));
            return 1;
        }
        if (write_all(STDOUT_FILENO, buffer, (size_t)n) != 0) {
            fprintf(stderr, "cat: write error: %s\n", strerror(errno));
            return 1;
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 2)
        return copy(STDIN_FILENO, "-");

    int status = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-") == 0) {
            status |= copy(STDIN_FILENO, "-");
            continue;
        }
        int fd = open(argv[i], O_RDONLY);
        if (fd < 0) {
            fprintf(stderr, "cat: %s: %s\n", argv[i], strerror(errno));
            status = 1;
            continue;
        }
        status |= copy(fd, argv[i]);
        close(fd);
    }
    return status;
}
