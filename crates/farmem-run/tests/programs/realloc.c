/* realloc across the far threshold in both directions, and in place. */
#include <malloc.h>
#include "common.h"

int main(void) {
    size_t n = 1000;
    uint64_t *p = malloc(n);
    fill(p, n, 1);
    /* Up across the threshold: moved to far memory, contents kept. */
    p = realloc(p, 1 << 20);
    CHECK(p && verify(p, n, 1), "grow 1000 B -> 1 MiB");
    CHECK(malloc_usable_size(p) % 4096 == 0, "far block of whole pages");
    fill(p, 1 << 20, 2);
    /* Grow within far memory. */
    p = realloc(p, 8 << 20);
    CHECK(p && verify(p, 1 << 20, 2), "grow 1 -> 8 MiB");
    fill(p, 8 << 20, 3);
    /* Shrink in place. */
    uint64_t *q = realloc(p, 200 << 10);
    CHECK(q == p, "shrink within far memory stays in place");
    CHECK(verify(q, 200 << 10, 3), "shrink 8 MiB -> 200 KiB");
    CHECK(malloc_usable_size(q) == 200 << 10, "usable after shrink: %zu", malloc_usable_size(q));
    /* Down across the threshold: back to the real allocator. */
    p = realloc(q, 512);
    CHECK(p && verify(p, 512, 3), "shrink 200 KiB -> 512 B");
    free(p);
    /* A growing array doubled many times (like a vector). */
    size_t cap = 16, len = 0;
    uint64_t *v = malloc(cap * 8);
    for (uint64_t i = 0; i < (4u << 20); i++) {
        if (len == cap) { cap *= 2; v = realloc(v, cap * 8); CHECK(v, "vector growth"); }
        v[len++] = pattern(9, i);
    }
    CHECK(verify(v, len * 8, 9), "vector contents");
    free(v);
    CHECK(realloc(malloc(1 << 20), 0) == NULL, "realloc to 0 frees");
    puts("realloc ok");
    return 0;
}
