/* libFuzzer target: zf_range_parse (src/core/range.c), the Range header of
 * file responses.
 *
 * Input layout: byte 0 picks how the representation size is made from bytes
 * 1..8 (small, any 64-bit value, just below 2^64, or near a power of two);
 * the rest is the header value (a C string: it ends at the first NUL).
 *
 * Checks: the result is ZF_OK, ZF_DECLINED or ZF_ERROR; ZF_OK means
 * 1 <= len, start < size and start + len <= size (no overflow); ZF_OK leaves
 * the outputs untouched otherwise; a range served is served again when asked
 * for explicitly ("bytes=start-end" gives the same start and len); a suffix
 * range ends at the last byte. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/core/range.h"

static void fail(const char *value, uint64_t size, const char *what)
{
    fprintf(stderr, "\n==== zfront fuzz_range: %s\nsize %llu, value \"%s\"\n", what,
            (unsigned long long)size, value);
    abort();
}

static uint64_t make_size(const uint8_t *p, uint8_t mode)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    switch (mode & 3) {
    case 0:
        return v % 70;
    case 1:
        return v;
    case 2:
        return UINT64_MAX - (v % 70);
    default: {
        uint64_t base = 1ULL << (p[0] % 64);
        return base + (v >> 8) % 5 - 2;
    }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (n < 9)
        return 0;
    uint64_t size = make_size(data + 1, data[0]);
    char *value = malloc(n - 9 + 1);
    if (!value)
        abort();
    memcpy(value, data + 9, n - 9);
    value[n - 9] = 0;

    const uint64_t poison = 0xdeadbeefdeadbeefULL;
    uint64_t start = poison, len = poison;
    int rc = zf_range_parse(value, size, &start, &len);
    if (rc != ZF_OK && rc != ZF_ERROR && rc != ZF_DECLINED)
        fail(value, size, "unexpected return code");
    if (rc != ZF_OK && (start != poison || len != poison))
        fail(value, size, "outputs written without ZF_OK");
    if (rc == ZF_OK) {
        if (len < 1)
            fail(value, size, "ZF_OK with an empty range");
        if (start >= size)
            fail(value, size, "ZF_OK with start beyond the end");
        if (len > size - start)
            fail(value, size, "ZF_OK with start + len beyond the end");
        /* the same range asked for explicitly */
        char again[64];
        snprintf(again, sizeof again, "bytes=%llu-%llu", (unsigned long long)start,
                 (unsigned long long)(start + len - 1));
        uint64_t s2 = poison, l2 = poison;
        if (zf_range_parse(again, size, &s2, &l2) != ZF_OK || s2 != start || l2 != len)
            fail(value, size, "the range served is not served again when asked explicitly");
        /* a suffix range ("-N" after "=", no first byte position) ends at the end */
        const char *eq = strchr(value, '=');
        if (eq) {
            const char *p = eq + 1;
            while (*p == ' ' || *p == '\t')
                p++;
            if (*p == '-' && start + len != size)
                fail(value, size, "a suffix range that does not end at the last byte");
        }
    }
    free(value);
    return 0;
}
