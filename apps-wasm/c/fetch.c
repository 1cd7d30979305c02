/* fetch: an HTTP/1.0 GET over the connection the kernel opened for the program
 * (`run --connect=HOST:PORT fetch PATH [HOST-HEADER]`, descriptor in CONNECT_FD). Writes the
 * response body to standard output and the status line to standard error; exits 0 for a 2xx
 * status, 1 otherwise or on an error.
 *
 * WASI preview1 cannot open sockets itself, so the connection is a capability the program is
 * given, like a preopened directory. */

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char response[1 << 16];

static int write_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3 || argv[1][0] != '/') {
        fprintf(stderr, "usage: run --connect=HOST:PORT fetch /PATH [HOST-HEADER]\n");
        return 2;
    }
    const char *fd_text = getenv("CONNECT_FD");
    if (fd_text == NULL) {
        fprintf(stderr, "fetch: no connection (start it with run --connect=HOST:PORT)\n");
        return 2;
    }
    int fd = atoi(fd_text);
    char request[1024];
    int len = snprintf(request, sizeof request, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", argv[1],
                       argc == 3 ? argv[2] : "keel");
    if (len < 0 || (size_t)len >= sizeof request) {
        fprintf(stderr, "fetch: path too long\n");
        return 2;
    }
    if (write_all(fd, request, (size_t)len) != 0) {
        fprintf(stderr, "fetch: sending: %s\n", strerror(errno));
        return 1;
    }
    /* Read the head (status line and headers), then stream the body. */
    size_t have = 0;
    char *body = NULL;
    while (body == NULL) {
        if (have == sizeof response - 1) {
            fprintf(stderr, "fetch: response head too long\n");
            return 1;
        }
        ssize_t n = read(fd, response + have, sizeof response - 1 - have);
        if (n < 0) {
            fprintf(stderr, "fetch: receiving: %s\n", strerror(errno));
            return 1;
        }
        if (n == 0)
            break;
        have += (size_t)n;
        response[have] = '\0';
        body = strstr(response, "\r\n\r\n");
    }
    if (body == NULL) {
        fprintf(stderr, "fetch: the connection closed before the response head ended\n");
        return 1;
    }
    body += 4;
    char *line_end = strstr(response, "\r\n");
    fprintf(stderr, "%.*s\n", (int)(line_end - response), response);
    int ok = strncmp(response, "HTTP/1.", 7) == 0 && response[9] == '2';
    if (write_all(1, body, have - (size_t)(body - response)) != 0)
        return 1;
    for (;;) {
        ssize_t n = read(fd, response, sizeof response);
        if (n < 0) {
            fprintf(stderr, "fetch: receiving: %s\n", strerror(errno));
            return 1;
        }
        if (n == 0)
            break;
        if (write_all(1, response, (size_t)n) != 0)
            return 1;
    }
    close(fd);
    return ok ? 0 : 1;
}
