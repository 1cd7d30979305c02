/* echo: writes its arguments separated by spaces, then a newline (none with -n). */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    int newline = 1;
    int i = 1;
    for (; i < argc && strcmp(argv[i], "-n") == 0; i++)
        newline = 0;

    for (int first = i; i < argc; i++) {
        if (i > first)
            putchar(' ');
        fputs(argv[i], stdout);
    }
    if (newline)
        putchar('\n');
    if (fflush(stdout) != 0) {
        perror("echo: write error");
        return 1;
    }
    return 0;
}
