/* fork under the shim: a child touching resident far memory, a child reading far memory
 * that was not resident, and fork + exec. Usage: fork resident|absent|exec PROGRAM */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include "common.h"

#define BIG (8 << 20)
#define NBIG 6

int main(int argc, char **argv) {
    CHECK(argc >= 2, "usage");
    uint64_t *big[NBIG];
    for (int i = 0; i < NBIG; i++) { big[i] = malloc(BIG); fill(big[i], BIG, i); }
    /* Written last and small: resident at the fork. */
    uint64_t *recent = malloc(256 << 10);
    fill(recent, 256 << 10, 77);
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        if (strcmp(argv[1], "resident") == 0) {
            CHECK(verify(recent, 256 << 10, 77), "child reads the resident block");
            fill(recent, 256 << 10, 78);          /* private to the child */
            uint64_t *own = malloc(4 << 20);      /* the child's own large block */
            fill(own, 4 << 20, 79);
            CHECK(verify(own, 4 << 20, 79), "child's own block");
            free(own);
            free(big[0]);                         /* the parent's: must not reach the server */
            _exit(0);
        }
        if (strcmp(argv[1], "absent") == 0) {
            uint64_t sum = 0;
            for (int i = 0; i < NBIG; i++)
                for (size_t k = 0; k < BIG / 8; k += 512) sum += big[i][k];
            printf("child read everything: %llu\n", (unsigned long long)sum);
            fflush(stdout);
            _exit(0);
        }
        execv(argv[2], argv + 2);
        _exit(126);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
    if (WIFSIGNALED(st)) printf("child signal %d\n", WTERMSIG(st));
    else printf("child exit %d\n", WEXITSTATUS(st));
    /* The parent's memory is intact whatever the child did. */
    CHECK(verify(recent, 256 << 10, 77), "parent's resident block after the child");
    for (int i = 0; i < NBIG; i++) CHECK(verify(big[i], BIG, i), "parent's block %d", i);
    uint64_t *after = malloc(BIG);
    fill(after, BIG, 99);
    CHECK(verify(after, BIG, 99), "allocating after the fork");
    free(after);
    for (int i = 0; i < NBIG; i++) free(big[i]);
    free(recent);
    puts("parent ok");
    return 0;
}
