/* Threads allocating, filling, verifying and freeing far blocks concurrently. */
#include <pthread.h>
#include "common.h"

#define THREADS 4
#define LIVE 6
#define ROUNDS 60

static void *worker(void *arg) {
    uint64_t t = (uint64_t)(uintptr_t)arg;
    uint64_t *b[LIVE] = {0};
    size_t sz[LIVE] = {0};
    uint64_t tag[LIVE] = {0};
    uint64_t r = t + 1;
    for (int round = 0; round < ROUNDS; round++) {
        int k = round % LIVE;
        if (b[k]) {
            CHECK(verify(b[k], sz[k], tag[k]), "thread %llu block %d", (unsigned long long)t, k);
            free(b[k]);
        }
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        sz[k] = (64 << 10) + (r >> 33) % (2 << 20);
        sz[k] &= ~(size_t)7;
        tag[k] = t * 1000 + round;
        b[k] = malloc(sz[k]);
        CHECK(b[k] != NULL, "malloc");
        fill(b[k], sz[k], tag[k]);
    }
    for (int k = 0; k < LIVE; k++) {
        CHECK(verify(b[k], sz[k], tag[k]), "final check");
        free(b[k]);
    }
    return NULL;
}

int main(void) {
    pthread_t th[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, worker, (void *)i);
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    puts("threads ok");
    return 0;
}
