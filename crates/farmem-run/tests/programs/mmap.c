/* Large anonymous mmaps through the shim: partial munmap, mremap, and Python-style arenas. */
#define _GNU_SOURCE
#include <sys/mman.h>
#include "common.h"

#define MIB (1ul << 20)

int main(void) {
    uint64_t *p = mmap(NULL, 8 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED, "mmap");
    fill(p, 8 * MIB, 1);
    CHECK(verify(p, 8 * MIB, 1), "first fill");
    CHECK(munmap((char *)p + 6 * MIB, 2 * MIB) == 0, "munmap of the tail");
    CHECK(verify(p, 6 * MIB, 1), "head kept");
    uint64_t *q = mremap(p, 6 * MIB, 12 * MIB, MREMAP_MAYMOVE);
    CHECK(q != MAP_FAILED, "mremap");
    CHECK(verify(q, 6 * MIB, 1), "contents moved");
    for (size_t i = 6 * MIB / 8; i < 12 * MIB / 8; i++) CHECK(q[i] == 0, "grown part is zero");
    fill(q, 12 * MIB, 2);
    /* Many arenas, as Python's allocator makes them, freed out of order. */
    uint64_t *a[32];
    for (int i = 0; i < 32; i++) {
        a[i] = mmap(NULL, MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        CHECK(a[i] != MAP_FAILED, "arena");
        fill(a[i], MIB, 100 + i);
    }
    for (int i = 0; i < 32; i += 2) CHECK(munmap(a[i], MIB) == 0, "munmap arena");
    for (int i = 1; i < 32; i += 2) CHECK(verify(a[i], MIB, 100 + i), "arena %d", i);
    for (int i = 1; i < 32; i += 2) CHECK(munmap(a[i], MIB) == 0, "munmap arena");
    CHECK(verify(q, 12 * MIB, 2), "after the arenas");
    CHECK(munmap(q, 12 * MIB) == 0, "munmap");
    /* A reservation is left to the kernel and works as usual. */
    char *r = mmap(NULL, 64 * MIB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    CHECK(r != MAP_FAILED && mprotect(r, MIB, PROT_READ | PROT_WRITE) == 0, "reservation");
    r[0] = 1;
    CHECK(munmap(r, 64 * MIB) == 0, "unmapping the reservation");
    puts("mmap ok");
    return 0;
}
