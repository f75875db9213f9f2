/* A parent killed at an arbitrary moment while its forked child reads far memory.
 *
 * `fork_kill_race MS` is the watcher W: a child subreaper that fork+execs itself as P
 * (`fork_kill_race P MS`) and prints how every process below it ended ("exit N" or
 * "signal N"). P fills four 16 MiB blocks (most of them far under a 16 MiB budget), forks the
 * child A, sleeps MS milliseconds and kills itself with SIGKILL, whatever A is doing (waiting
 * for a page P is fetching for it, say). A checks every word of every block: "WRONG DATA" for
 * a word that differs, "A read all" when every block was right. */
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "common.h"

#define NBIG 4
#define BIG ((size_t)16 << 20)

static int run_p(long ms) {
    setvbuf(stdout, NULL, _IONBF, 0);
    uint64_t *b[NBIG];
    for (int i = 0; i < NBIG; i++) {
        b[i] = malloc(BIG);
        CHECK(b[i], "malloc");
        fill(b[i], BIG, i + 1);
    }
    pid_t a = fork();
    CHECK(a >= 0, "fork");
    if (a == 0) {
        for (int i = 0; i < NBIG; i++)
            for (size_t w = 0; w < BIG / 8; w++)
                if (b[i][w] != pattern(i + 1, w)) {
                    printf("A WRONG DATA in block %d at word %zu\n", i, w);
                    _exit(3);
                }
        printf("A read all\n");
        _exit(0);
    }
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
    kill(getpid(), SIGKILL);
    return 1;
}

int main(int argc, char **argv) {
    CHECK(argc >= 2, "usage: fork_kill_race MS");
    if (strcmp(argv[1], "P") == 0) return run_p(argc >= 3 ? atol(argv[2]) : 0);
    setvbuf(stdout, NULL, _IONBF, 0);
    /* A deadline for the whole run: a child waiting forever must not hang the test. */
    alarm(120);
    CHECK(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0, "subreaper");
    pid_t p = fork();
    CHECK(p >= 0, "fork");
    if (p == 0) {
        execl("/proc/self/exe", argv[0], "P", argv[1], (char *)NULL);
        _exit(127);
    }
    int st;
    while (waitpid(-1, &st, 0) > 0) {
        if (WIFSIGNALED(st))
            printf("signal %d\n", WTERMSIG(st));
        else
            printf("exit %d\n", WEXITSTATUS(st));
    }
    return 0;
}
