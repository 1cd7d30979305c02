/* cp: copies SRC to DST (a file, or an existing directory to copy into). */

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char buffer[64 * 1024];

/* The last component of a file's path (a file's path has no trailing '/'). */
static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash != NULL ? slash + 1 : path;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: cp SRC DST\n");
        return 2;
    }
    const char *src = argv[1];
    const char *dst = argv[2];
    char *joined = NULL;

    struct stat src_st, dst_st;
    if (stat(src, &src_st) != 0) {
        fprintf(stderr, "cp: cannot stat '%s': %s\n", src, strerror(errno));
        return 1;
    }
    if (S_ISDIR(src_st.st_mode)) {
        fprintf(stderr, "cp: '%s' is a directory (not copied)\n", src);
        return 1;
    }
    if (stat(dst, &dst_st) == 0 && S_ISDIR(dst_st.st_mode)) {
        const char *name = base_name(src);
        size_t len = strlen(dst) + 1 + strlen(name) + 1;
        if ((joined = malloc(len)) == NULL) {
            fprintf(stderr, "cp: out of memory\n");
            return 1;
        }
        snprintf(joined, len, "%s/%s", dst, name);
        dst = joined;
    }
    if (stat(dst, &dst_st) == 0 && dst_st.st_dev == src_st.st_dev && dst_st.st_ino == src_st.st_ino) {
        fprintf(stderr, "cp: '%s' and '%s' are the same file\n", src, dst);
        free(joined);
        return 1;
    }

    int in = open(src, O_RDONLY);
    if (in < 0) {
        fprintf(stderr, "cp: cannot open '%s' for reading: %s\n", src, strerror(errno));
        free(joined);
        return 1;
    }
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (out < 0) {
        fprintf(stderr, "cp: cannot create '%s': %s\n", dst, strerror(errno));
        close(in);
        free(joined);
        return 1;
    }

    int status = 0;
    for (;;) {
        ssize_t n = read(in, buffer, sizeof buffer);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "cp: error reading '%s': %s\n", src, strerror(errno));
            status = 1;
            break;
        }
        for (ssize_t done = 0; done < n;) {
            ssize_t w = write(out, buffer + done, (size_t)(n - done));
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                fprintf(stderr, "cp: error writing '%s': %s\n", dst, strerror(errno));
                status = 1;
                goto done;
            }
            done += w;
        }
    }
done:
    close(in);
    if (close(out) != 0 && status == 0) {
        fprintf(stderr, "cp: error writing '%s': %s\n", dst, strerror(errno));
        status = 1;
    }
    free(joined);
    return status;
}
