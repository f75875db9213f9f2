/* Large buffers, well beyond the local budget, through every allocation function. */
#include <malloc.h>
#include "common.h"

#define N 24

int main(void) {
    uint64_t *b[N];
    size_t sz[N];
    for (int i = 0; i < N; i++) {
        sz[i] = ((size_t)(i % 5) + 1) << 20; /* 1..5 MiB, 72 MiB in all */
        switch (i % 5) {
        case 0: b[i] = malloc(sz[i]); break;
        case 1: b[i] = calloc(sz[i] / 8, 8); break;
        case 2: CHECK(posix_memalign((void **)&b[i], 4096, sz[i]) == 0, "posix_memalign"); break;
        case 3: b[i] = aligned_alloc(256, sz[i]); break;
        default: b[i] = memalign(64, sz[i]); break;
        }
        CHECK(b[i] != NULL, "allocation %d", i);
        CHECK(malloc_usable_size(b[i]) >= sz[i], "usable size of %d", i);
        if (i % 5 == 1)
            for (size_t k = 0; k < sz[i] / 8; k++) CHECK(b[i][k] == 0, "calloc not zero");
        fill(b[i], sz[i], i);
    }
    /* Two passes, so that pages evicted after the first come back from the server. */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < N; i++) CHECK(verify(b[i], sz[i], i), "buffer %d pass %d", i, pass);
    /* Small allocations keep working alongside. */
    char *s = malloc(100);
    strcpy(s, "small");
    CHECK(strcmp(s, "small") == 0, "small");
    free(s);
    /* A block freed and allocated again reads zeros through calloc. */
    free(b[0]);
    b[0] = calloc(1, sz[0]);
    for (size_t k = 0; k < sz[0] / 8; k++) CHECK(b[0][k] == 0, "reused block not zero");
    for (int i = 0; i < N; i++) free(b[i]);
    puts("big ok");
    return 0;
}
