/* ls: lists directories (default "."), one name per line, sorted.
 *   -a  also show names starting with '.'
 *   -l  long format: type, size in bytes, name (and a symbolic link's target) */

#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int show_all;
static int long_format;

static char type_char(mode_t mode) {
    if (S_ISREG(mode)) return '-';
    if (S_ISDIR(mode)) return 'd';
    if (S_ISLNK(mode)) return 'l';
    if (S_ISCHR(mode)) return 'c';
    if (S_ISBLK(mode)) return 'b';
    if (S_ISFIFO(mode)) return 'p';
    if (S_ISSOCK(mode)) return 's';
    return '?';
}

/* Prints one entry; `dirfd` is the directory `name` is relative to (or AT_FDCWD). */
static int print_entry(int dirfd, const char *name, const char *shown) {
    if (!long_format) {
        puts(shown);
        return 0;
    }
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        fprintf(stderr, "ls: cannot stat '%s': %s\n", shown, strerror(errno));
        return 1;
    }
    printf("%c %10lld %s", type_char(st.st_mode), (long long)st.st_size, shown);
    if (S_ISLNK(st.st_mode)) {
        char target[4096];
        ssize_t n = readlinkat(dirfd, name, target, sizeof target - 1);
        if (n >= 0) {
            target[n] = '\0';
            printf(" -> %s", target);
        }
    }
    putchar('\n');
    return 0;
}

static int compare_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int list_directory(const char *path) {
    DIR *dir = opendir(path);
    if (dir == NULL) {
        fprintf(stderr, "ls: cannot open directory '%s': %s\n", path, strerror(errno));
        return 1;
    }

    char **names = NULL;
    size_t count = 0, capacity = 0;
    int status = 0;
    struct dirent *entry;
    errno = 0;
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.' && !show_all)
            continue;
        if (count == capacity) {
            capacity = capacity ? 2 * capacity : 64;
            char **grown = realloc(names, capacity * sizeof *names);
            if (grown == NULL) {
                fprintf(stderr, "ls: out of memory\n");
                exit(1);
            }
            names = grown;
        }
        if ((names[count] = strdup(entry->d_name)) == NULL) {
            fprintf(stderr, "ls: out of memory\n");
            exit(1);
        }
        count++;
        errno = 0;
    }
    if (errno != 0) {
        fprintf(stderr, "ls: reading directory '%s': %s\n", path, strerror(errno));
        status = 1;
    }

    qsort(names, count, sizeof *names, compare_names);
    for (size_t i = 0; i < count; i++) {
        status |= print_entry(dirfd(dir), names[i], names[i]);
        free(names[i]);
    }
    free(names);
    closedir(dir);
    return status;
}

int main(int argc, char **argv) {
    int option;
    while ((option = getopt(argc, argv, "al")) != -1) {
        switch (option) {
        case 'a': show_all = 1; break;
        case 'l': long_format = 1; break;
        default:
            fprintf(stderr, "usage: ls [-al] [PATH...]\n");
            return 2;
        }
    }

    char *dot[] = {".", NULL};
    char **paths = optind < argc ? argv + optind : dot;
    int npaths = optind < argc ? argc - optind : 1;
    int status = 0;

    for (int i = 0; i < npaths; i++) {
        struct stat st;
        if (stat(paths[i], &st) != 0) {
            fprintf(stderr, "ls: cannot access '%s': %s\n", paths[i], strerror(errno));
            status = 1;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            status |= print_entry(AT_FDCWD, paths[i], paths[i]);
            continue;
        }
        if (npaths > 1)
            printf("%s%s:\n", i > 0 ? "\n" : "", paths[i]);
        status |= list_directory(paths[i]);
    }

    if (fflush(stdout) != 0) {
        perror("ls: write error");
        return 1;
    }
    return status;
}
