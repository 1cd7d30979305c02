/* mkdir: creates directories.
 *   -p  create missing parents too, and accept directories that already exist */

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int make_one(const char *path, int tolerate_existing) {
    if (mkdir(path, 0777) == 0)
        return 0;
    int saved = errno;
    struct stat st;
    if (tolerate_existing && saved == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return 0;
    fprintf(stderr, "mkdir: cannot create directory '%s': %s\n", path, strerror(saved));
    return 1;
}

/* Creates every missing directory along `path`. */
static int make_parents(const char *path) {
    char *copy = strdup(path);
    if (copy == NULL) {
        fprintf(stderr, "mkdir: out of memory\n");
        return 1;
    }
    /* An existing parent is fine whatever it is: if it is not a directory, the next mkdir
     * says so (ENOTDIR). */
    for (char *p = copy + 1; *p != '\0'; p++) {
        if (*p != '/' || p[-1] == '/')
            continue;
        *p = '\0';
        if (mkdir(copy, 0777) != 0 && errno != EEXIST) {
            fprintf(stderr, "mkdir: cannot create directory '%s': %s\n", copy, strerror(errno));
            free(copy);
            return 1;
        }
        *p = '/';
    }
    int status = make_one(copy, 1);
    free(copy);
    return status;
}

int main(int argc, char **argv) {
    int parents = 0;
    int option;
    while ((option = getopt(argc, argv, "p")) != -1) {
        switch (option) {
        case 'p': parents = 1; break;
        default:
            fprintf(stderr, "usage: mkdir [-p] DIR...\n");
            return 2;
        }
    }
    if (optind == argc) {
        fprintf(stderr, "mkdir: missing operand\nusage: mkdir [-p] DIR...\n");
        return 2;
    }
    int status = 0;
    for (int i = optind; i < argc; i++)
        status |= parents ? make_parents(argv[i]) : make_one(argv[i], 0);
    return status;
}
