/* microbench: the operating-system microbenchmarks of Keel's `bench`, as Linux processes and
 * threads do them, for the Linux guest of `keel linux-image` (built static on the host).
 *
 *   null system call        getppid() through syscall(2)         vs Keel's null WASI host call
 *   context switch          two processes ping-pong a byte over two pipes; a round trip is two
 *                           switches                              vs two Keel tasks yielding
 *   thread spawn + join     pthread_create + pthread_join         vs spawn + join of a task
 *   pipe round trip         one byte there and back between two processes
 *                                                                 vs a channel round trip
 *   map + touch + unmap     mmap of 4 KiB, one write, munmap      vs map + unmap of a page
 *
 * Each prints `BENCH {"name":...,"median_ns":...,"iterations":...}`: the median over rounds of
 * each round's mean, as Keel reports its figures. */

#define _GNU_SOURCE

#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 21

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(const char *name, double *per_op, int rounds, int iterations) {
    qsort(per_op, (size_t)rounds, sizeof *per_op, compare);
    printf("BENCH {\"name\":\"%s\",\"median_ns\":%.1f,\"iterations\":%d}\n", name,
           per_op[rounds / 2], rounds * iterations);
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void null_syscall(void) {
    enum { N = 20000 };
    double per_op[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t start = now_ns();
        for (int i = 0; i < N; i++)
            syscall(SYS_getppid);
        per_op[r] = (double)(now_ns() - start) / N;
    }
    report("linux_null_syscall", per_op, ROUNDS, N);
}

/* A child that echoes every byte from `in` to `out` until end of file. */
static pid_t echo_child(int in, int out, int close1, int close2) {
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        close(close1);
        close(close2);
        char byte;
        while (read(in, &byte, 1) == 1)
            if (write(out, &byte, 1) != 1)
                break;
        _exit(0);
    }
    return pid;
}

/* Round trips of one byte to a child process; `name` gets the time per round trip divided by
 * `per_round_trip`. */
static void ping_pong(const char *name, int per_round_trip) {
    enum { N = 2000 };
    int there[2], back[2];
    if (pipe(there) != 0 || pipe(back) != 0)
        die("pipe");
    pid_t child = echo_child(there[0], back[1], there[1], back[0]);
    close(there[0]);
    close(back[1]);
    double per_op[ROUNDS];
    char byte = 'k';
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t start = now_ns();
        for (int i = 0; i < N; i++) {
            if (write(there[1], &byte, 1) != 1 || read(back[0], &byte, 1) != 1)
                die("ping-pong");
        }
        per_op[r] = (double)(now_ns() - start) / N / per_round_trip;
    }
    close(there[1]);
    close(back[0]);
    waitpid(child, NULL, 0);
    report(name, per_op, ROUNDS, N);
}

static void *nothing(void *arg) {
    return arg;
}

static void thread_spawn_join(void) {
    enum { N = 200 };
    double per_op[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t start = now_ns();
        for (int i = 0; i < N; i++) {
            pthread_t thread;
            if (pthread_create(&thread, NULL, nothing, NULL) != 0 ||
                pthread_join(thread, NULL) != 0)
                die("pthread");
        }
        per_op[r] = (double)(now_ns() - start) / N;
    }
    report("linux_thread_spawn_join", per_op, ROUNDS, N);
}

static void map_touch_unmap(void) {
    enum { N = 2000 };
    double per_op[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t start = now_ns();
        for (int i = 0; i < N; i++) {
            volatile char *page =
                mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (page == MAP_FAILED)
                die("mmap");
            page[0] = 1;
            munmap((void *)page, 4096);
        }
        per_op[r] = (double)(now_ns() - start) / N;
    }
    report("linux_map_touch_unmap", per_op, ROUNDS, N);
}

int main(void) {
    null_syscall();
    ping_pong("linux_context_switch", 2);
    thread_spawn_join();
    ping_pong("linux_pipe_round_trip", 1);
    map_touch_unmap();
    printf("microbench: done\n");
    return 0;
}
