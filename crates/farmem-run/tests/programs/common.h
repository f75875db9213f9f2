/* Helpers of the shim test programs. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, "FAILED %s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } } while (0)

/* The value word `i` of buffer `tag` holds. */
static inline uint64_t pattern(uint64_t tag, uint64_t i) {
    uint64_t x = tag * 0x9E3779B97F4A7C15ull + i;
    x ^= x >> 29; x *= 0xBF58476D1CE4E5B9ull; x ^= x >> 32;
    return x;
}

static void fill(uint64_t *p, size_t bytes, uint64_t tag) {
    for (size_t i = 0; i < bytes / 8; i++) p[i] = pattern(tag, i);
}

static int verify(const uint64_t *p, size_t bytes, uint64_t tag) {
    for (size_t i = 0; i < bytes / 8; i++)
        if (p[i] != pattern(tag, i)) return 0;
    return 1;
}
