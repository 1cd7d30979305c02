/* hello: greets and shows its argument vector on one line. */
#include <stdio.h>

int main(int argc, char **argv) {
    printf("Hello from WebAssembly on Keel! argv[%d]:", argc);
    for (int i = 0; i < argc; i++)
        printf(" \"%s\"", argv[i]);
    putchar('\n');
    if (fflush(stdout) != 0) {
        perror("hello: write error");
        return 1;
    }
    return 0;
}
