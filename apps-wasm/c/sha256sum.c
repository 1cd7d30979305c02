/* sha256sum: prints "<hex digest>  <name>" for each file (standard input, named "-", for none). */

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sha256.h"

static unsigned char buffer[64 * 1024];

static int hash_fd(int fd, const char *name) {
    struct sha256 ctx;
    sha256_init(&ctx);
    for (;;) {
        ssize_t n = read(fd, buffer, sizeof buffer);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "sha256sum: %s: %s\n", name, strerror(errno));
            return 1;
        }
        sha256_update(&ctx, buffer, (size_t)n);
    }
    unsigned char digest[SHA256_DIGEST_SIZE];
    char hex[2 * SHA256_DIGEST_SIZE + 1];
    sha256_final(&ctx, digest);
    sha256_hex(digest, hex);
    printf("%s  %s\n", hex, name);
    return 0;
}

int main(int argc, char **argv) {
    int status = 0;
    if (argc < 2)
        status = hash_fd(STDIN_FILENO, "-");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-") == 0) {
            status |= hash_fd(STDIN_FILENO, "-");
            continue;
        }
        int fd = open(argv[i], O_RDONLY);
        if (fd < 0) {
            fprintf(stderr, "sha256sum: %s: %s\n", argv[i], strerror(errno));
            status = 1;
            continue;
        }
        status |= hash_fd(fd, argv[i]);
        close(fd);
    }
    if (fflush(stdout) != 0) {
        perror("sha256sum: write error");
        return 1;
    }
    return status;
}
