/* wc: counts lines, words and bytes of files (standard input for none or "-").
 *   -l, -w, -c  print only the selected counts (default: all three)
 * Output per file: "%7lld %7lld %7lld name", and a "total" line for several files. As in
 * coreutils, a single count of a single input is printed without padding ("wc -l <file" says "4"). */

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct counts {
    long long lines, words, bytes;
};

static int want_lines, want_words, want_bytes;
static int width = 7;

static int is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Counts everything readable from fd; returns 0, or 1 after reporting a read error. */
static int count_fd(int fd, const char *name, struct counts *out) {
    static unsigned char buffer[64 * 1024];
    struct counts c = {0, 0, 0};
    int in_word = 0;
    for (;;) {
        ssize_t n = read(fd, buffer, sizeof buffer);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "wc: %s: %s\n", name, strerror(errno));
            return 1;
        }
        c.bytes += n;
        for (ssize_t i = 0; i < n; i++) {
            unsigned char ch = buffer[i];
            if (ch == '\n')
                c.lines++;
            if (is_space(ch)) {
                in_word = 0;
            } else if (!in_word) {
                in_word = 1;
                c.words++;
            }
        }
    }
    *out = c;
    return 0;
}

static void print_counts(const struct counts *c, const char *name) {
    const char *sep = "";
    if (want_lines) { printf("%s%*lld", sep, width, c->lines); sep = " "; }
    if (want_words) { printf("%s%*lld", sep, width, c->words); sep = " "; }
    if (want_bytes) { printf("%s%*lld", sep, width, c->bytes); sep = " "; }
    if (name != NULL)
        printf(" %s", name);
    putchar('\n');
}

int main(int argc, char **argv) {
    int option;
    while ((option = getopt(argc, argv, "lwc")) != -1) {
        switch (option) {
        case 'l': want_lines = 1; break;
        case 'w': want_words = 1; break;
        case 'c': want_bytes = 1; break;
        default:
            fprintf(stderr, "usage: wc [-lwc] [FILE...]\n");
            return 2;
        }
    }
    if (!want_lines && !want_words && !want_bytes)
        want_lines = want_words = want_bytes = 1;
    if (want_lines + want_words + want_bytes == 1 && argc - optind <= 1)
        width = 1;

    int status = 0;
    struct counts c, total = {0, 0, 0};
    if (optind == argc) {
        if (count_fd(STDIN_FILENO, "-", &c) != 0)
            return 1;
        print_counts(&c, NULL);
    }
    for (int i = optind; i < argc; i++) {
        const char *name = argv[i];
        int fd = strcmp(name, "-") == 0 ? STDIN_FILENO : open(name, O_RDONLY);
        if (fd < 0) {
            fprintf(stderr, "wc: %s: %s\n", name, strerror(errno));
            status = 1;
            continue;
        }
        int failed = count_fd(fd, name, &c);
        if (fd != STDIN_FILENO)
            close(fd);
        if (failed) {
            status = 1;
            continue;
        }
        print_counts(&c, name);
        total.lines += c.lines;
        total.words += c.words;
        total.bytes += c.bytes;
    }
    if (argc - optind > 1)
        print_counts(&total, "total");

    if (fflush(stdout) != 0) {
        perror("wc: write error");
        return 1;
    }
    return status;
}
