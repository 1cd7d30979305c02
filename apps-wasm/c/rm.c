/* rm: removes files.
 *   -r  remove directories and their contents, recursively
 *   -f  ignore missing files, never complain about them */

#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int recursive;
static int force;

static void out_of_memory(void) {
    fprintf(stderr, "rm: out of memory\n");
    exit(1);
}

static char *join(const char *dir, const char *name) {
    size_t len = strlen(dir) + 1 + strlen(name) + 1;
    char *path = malloc(len);
    if (path == NULL)
        out_of_memory();
    snprintf(path, len, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", name);
    return path;
}

static int remove_path(const char *path);

/* Removes everything inside directory `path`, then the directory itself. */
static int remove_tree(const char *path) {
    DIR *dir = opendir(path);
    if (dir == NULL) {
        fprintf(stderr, "rm: cannot open directory '%s': %s\n", path, strerror(errno));
        return 1;
    }
    /* Read all names first: removing while reading would disturb the directory stream. */
    char **names = NULL;
    size_t count = 0, capacity = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        if (count == capacity) {
            capacity = capacity ? 2 * capacity : 32;
            char **grown = realloc(names, capacity * sizeof *names);
            if (grown == NULL)
                out_of_memory();
            names = grown;
        }
        names[count++] = join(path, entry->d_name);
    }
    closedir(dir);

    int status = 0;
    for (size_t i = 0; i < count; i++) {
        status |= remove_path(names[i]);
        free(names[i]);
    }
    free(names);

    if (status == 0 && rmdir(path) != 0) {
        fprintf(stderr, "rm: cannot remove '%s': %s\n", path, strerror(errno));
        status = 1;
    }
    return status;
}

static int remove_path(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (force && errno == ENOENT)
            return 0;
        fprintf(stderr, "rm: cannot remove '%s': %s\n", path, strerror(errno));
        return 1;
    }
    if (S_ISDIR(st.st_mode)) {
        if (!recursive) {
            fprintf(stderr, "rm: cannot remove '%s': Is a directory\n", path);
            return 1;
        }
        return remove_tree(path);
    }
    if (unlink(path) != 0) {
        fprintf(stderr, "rm: cannot remove '%s': %s\n", path, strerror(errno));
        return 1;
    }
    return 0;
}

/* True for ".", "..", and paths ending in "/." or "/..". */
static int is_dot_or_dotdot(const char *path) {
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/')
        len--;
    size_t start = len;
    while (start > 0 && path[start - 1] != '/')
        start--;
    size_t n = len - start;
    return (n == 1 && path[start] == '.') || (n == 2 && path[start] == '.' && path[start + 1] == '.');
}

int main(int argc, char **argv) {
    int option;
    while ((option = getopt(argc, argv, "frR")) != -1) {
        switch (option) {
        case 'f': force = 1; break;
        case 'r':
        case 'R': recursive = 1; break;
        default:
            fprintf(stderr, "usage: rm [-fr] FILE...\n");
            return 2;
        }
    }
    if (optind == argc && !force) {
        fprintf(stderr, "rm: missing operand\nusage: rm [-fr] FILE...\n");
        return 2;
    }

    int status = 0;
    for (int i = optind; i < argc; i++) {
        if (is_dot_or_dotdot(argv[i])) {
            fprintf(stderr, "rm: refusing to remove '.' or '..' directory: skipping '%s'\n", argv[i]);
            status = 1;
            continue;
        }
        status |= remove_path(argv[i]);
    }
    return status;
}
