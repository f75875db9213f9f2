/* A forked child whose parent dies without handing its far pages over (SIGKILL, or _exit).
 *
 * `fork_kill kill|exit` is the watcher W: a child subreaper that fork+execs itself as P
 * (`fork_kill P kill|exit`) and reports the end of every process below it, orphans included:
 * "reaped PID signal N" or "reaped PID exit N".
 *
 * P fills four 16 MiB blocks (most of them far under a 16 MiB budget) and allocates a fifth it
 * never writes, forks the child A, A forks the grandchild G, and P forks the child B. A reads
 * block 0 while P serves it, then P dies: by SIGKILL or by _exit (no exit handlers either way).
 * Then A reads the unwritten block (zeros), block 0 again (its pages are mapped in A) and
 * block 1, G reads block 2, while B, which copied P's descriptors, is still alive. Each checks
 * every word and says so: "WRONG DATA" for a word that differs, "<who> read block N" when a
 * block was right. */
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include "common.h"

#define NBIG 4
#define BIG ((size_t)16 << 20)

static void check_block(const char *who, uint64_t *p, int i) {
    if (verify(p, BIG, i + 1)) {
        printf("%s read block %d\n", who, i);
        return;
    }
    for (size_t w = 0; w < BIG / 8; w++) {
        if (p[w] != pattern(i + 1, w)) {
            printf("%s WRONG DATA in block %d at word %zu: %#llx\n", who, i, w,
                   (unsigned long long)p[w]);
            _exit(3);
        }
    }
    printf("%s read block %d\n", who, i);
}

/* Waits until every holder of the write end of `alive` (P alone) is gone. */
static void wait_gone(int alive) {
    char c;
    CHECK(read(alive, &c, 1) == 0, "waiting for the parent's end");
}

static int run_p(int die_by_kill) {
    setvbuf(stdout, NULL, _IONBF, 0);
    uint64_t *b[NBIG];
    for (int i = 0; i < NBIG; i++) {
        b[i] = malloc(BIG);
        CHECK(b[i], "malloc");
        fill(b[i], BIG, i + 1);
    }
    uint64_t *fresh = malloc(BIG);
    CHECK(fresh, "malloc");
    int alive[2], ready[2], done[2];
    CHECK(pipe(alive) == 0 && pipe(ready) == 0 && pipe(done) == 0, "pipe");
    pid_t a = fork();
    CHECK(a >= 0, "fork");
    if (a == 0) {
        close(alive[1]);
        close(ready[0]);
        close(done[0]);
        printf("A pid %d\n", getpid());
        check_block("A", b[0], 0);
        pid_t g = fork();
        CHECK(g >= 0, "fork in the child");
        if (g == 0) {
            close(done[1]);
            printf("G pid %d\n", getpid());
            CHECK(write(ready[1], "g", 1) == 1, "ready");
            wait_gone(alive[0]);
            check_block("G", b[2], 2);
            _exit(0);
        }
        CHECK(write(ready[1], "a", 1) == 1, "ready");
        wait_gone(alive[0]);
        for (size_t w = 0; w < BIG / 8; w++)
            CHECK(fresh[w] == 0, "A WRONG DATA in the unwritten block at word %zu", w);
        printf("A read the unwritten block\n");
        check_block("A", b[0], 0);
        check_block("A", b[1], 1);
        int st;
        CHECK(waitpid(g, &st, 0) == g, "waitpid");
        _exit(0);
    }
    close(done[1]);
    char c[3];
    CHECK(read(ready[0], &c[0], 1) == 1 && read(ready[0], &c[1], 1) == 1, "children ready");
    pid_t bp = fork();
    CHECK(bp >= 0, "fork");
    if (bp == 0) {
        /* Holds copies of every descriptor P had, until A and G are done. */
        close(alive[1]);
        printf("B pid %d\n", getpid());
        CHECK(write(ready[1], "b", 1) == 1, "ready");
        wait_gone(alive[0]);
        wait_gone(done[0]);
        _exit(0);
    }
    close(ready[1]);
    CHECK(read(ready[0], &c[2], 1) == 1, "B ready");
    printf("P dies\n");
    if (die_by_kill)
        kill(getpid(), SIGKILL);
    _exit(0);
}

int main(int argc, char **argv) {
    CHECK(argc >= 2, "usage: fork_kill kill|exit");
    if (strcmp(argv[1], "P") == 0) return run_p(argc >= 3 && strcmp(argv[2], "kill") == 0);
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
    printf("P pid %d\n", p);
    int st;
    pid_t r;
    while ((r = waitpid(-1, &st, 0)) > 0) {
        if (WIFSIGNALED(st))
            printf("reaped %d signal %d\n", r, WTERMSIG(st));
        else
            printf("reaped %d exit %d\n", r, WEXITSTATUS(st));
    }
    return 0;
}
