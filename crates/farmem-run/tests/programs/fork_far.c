/* A forked child working on far memory: blocks several times the local budget, filled before
 * the fork so that most of their pages are far. While the child waits, the parent rewrites one
 * block, frees another and reuses its space, so the backend's copies change under the child.
 * The child then checks every byte is as at the fork, forks a grandchild that checks a block
 * too, writes its own pattern and checks it; the parent, after waitpid, checks its data is its
 * own and writes more. With `orphan`, the parent exits right after the fork instead, and the
 * child checks every block once the parent is gone.
 * Usage: fork_far MiB_PER_BLOCK [orphan] */
#include <sys/wait.h>
#include <unistd.h>
#include "common.h"

#define NBIG 4

static size_t waitchild(pid_t pid, const char *who) {
    int st;
    CHECK(waitpid(pid, &st, 0) == pid, "waitpid %s", who);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s failed (status %#x)", who, st);
    return 0;
}

int main(int argc, char **argv) {
    CHECK(argc >= 2, "usage: fork_far MiB_PER_BLOCK");
    size_t big = (size_t)atoi(argv[1]) << 20;
    uint64_t *b[NBIG];
    for (int i = 0; i < NBIG; i++) {
        b[i] = malloc(big);
        CHECK(b[i], "malloc");
        fill(b[i], big, i + 1);
    }
    int go[2];
    CHECK(pipe(go) == 0, "pipe");
    fflush(stdout);
    int orphan = argc >= 3 && strcmp(argv[2], "orphan") == 0;
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0 && orphan) {
        char c;
        close(go[1]);
        CHECK(read(go[0], &c, 1) == 0, "the child waits until the parent is gone");
        for (int i = 0; i < NBIG; i++)
            CHECK(verify(b[i], big, i + 1), "orphaned child sees block %d as at the fork", i);
        fill(b[0], big, 7);
        CHECK(verify(b[0], big, 7), "orphaned child's own writes");
        printf("orphan ok\n");
        fflush(stdout);
        _exit(0);
    }
    if (orphan) {
        puts("parent exits");
        return 0;
    }
    if (pid == 0) {
        char c;
        CHECK(read(go[0], &c, 1) == 1, "child waits for the parent");
        for (int i = 0; i < NBIG; i++)
            CHECK(verify(b[i], big, i + 1), "child sees block %d as at the fork", i);
        pid_t g = fork();
        CHECK(g >= 0, "fork in the child");
        if (g == 0) {
            CHECK(verify(b[NBIG - 1], big, NBIG), "grandchild sees the last block as at the fork");
            fill(b[NBIG - 1], big, 300);
            CHECK(verify(b[NBIG - 1], big, 300), "grandchild's own writes");
            _exit(0);
        }
        waitchild(g, "grandchild");
        for (int i = 0; i < NBIG; i++) fill(b[i], big, 100 + i);
        for (int i = 0; i < NBIG; i++)
            CHECK(verify(b[i], big, 100 + i), "child's own writes to block %d", i);
        printf("child ok\n");
        fflush(stdout);
        _exit(0);
    }
    /* Change the far pages under the child: a rewrite (written back over the old copies), a
     * free, and a new block that may take the freed space. */
    fill(b[0], big, 50);
    free(b[1]);
    uint64_t *n = malloc(big);
    CHECK(n, "malloc after the fork");
    fill(n, big, 51);
    for (int i = 2; i < NBIG; i++) CHECK(verify(b[i], big, i + 1), "parent's block %d", i);
    CHECK(write(go[1], "g", 1) == 1, "start the child");
    waitchild(pid, "child");
    CHECK(verify(b[0], big, 50), "parent's rewritten block after the child");
    CHECK(verify(n, big, 51), "parent's new block after the child");
    for (int i = 2; i < NBIG; i++)
        CHECK(verify(b[i], big, i + 1), "parent's block %d after the child", i);
    for (int i = 2; i < NBIG; i++) fill(b[i], big, 60 + i);
    for (int i = 2; i < NBIG; i++) CHECK(verify(b[i], big, 60 + i), "parent writes more %d", i);
    CHECK(verify(b[0], big, 50) && verify(n, big, 51), "parent's blocks at the end");
    free(b[0]);
    free(n);
    for (int i = 2; i < NBIG; i++) free(b[i]);
    puts("parent ok");
    return 0;
}
