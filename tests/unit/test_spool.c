/* Spooling: memory below the threshold, an unlinked temp file above it,
 * byte-exact content either way, and no descriptor left behind. */
#include <string.h>
#include <unistd.h>

#include "../../src/core/spool.h"
#include "check.h"

static int body_equals(struct zf_body *b, const char *expect, size_t n)
{
    if (b->len != n)
        return 0;
    if (b->fd < 0)
        return memcmp(b->mem, expect, n) == 0;
    char *buf = malloc(n);
    ssize_t r = pread(b->fd, buf, n, 0);
    int ok = r == (ssize_t)n && memcmp(buf, expect, n) == 0;
    free(buf);
    return ok;
}

int main(void)
{
    int fds = zf_test_count_fds();
    char data[10000];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (char)('a' + i % 26);

    struct zf_spool s;
    struct zf_body b;
    zf_body_init(&b);

    /* below the threshold: memory */
    zf_spool_init(&s, 4096, "/tmp");
    CHECK_EQ_INT(zf_spool_write(&s, data, 1000), ZF_OK);
    CHECK_EQ_INT(zf_spool_write(&s, data + 1000, 3096), ZF_OK);
    CHECK_EQ_INT(s.fd, -1);
    zf_spool_take(&s, &b);
    CHECK(b.fd < 0);
    CHECK(body_equals(&b, data, 4096));
    zf_body_free(&b);

    /* crossing the threshold: a temp file with everything, in order */
    zf_spool_init(&s, 4096, "/tmp");
    for (size_t off = 0; off < sizeof data; off += 700)
        CHECK_EQ_INT(zf_spool_write(&s, data + off, off + 700 > sizeof data ? sizeof data - off : 700),
                     ZF_OK);
    CHECK(s.fd >= 0);
    zf_spool_take(&s, &b);
    CHECK(b.fd >= 0);
    CHECK(body_equals(&b, data, sizeof data));
    zf_body_free(&b);
    zf_spool_free(&s);

    /* an abandoned spool closes its file */
    zf_spool_init(&s, 10, "/tmp");
    CHECK_EQ_INT(zf_spool_write(&s, data, 100), ZF_OK);
    zf_spool_free(&s);

    /* a missing directory is an error, not a crash */
    zf_spool_init(&s, 10, "/nonexistent-zfront-dir");
    CHECK_EQ_INT(zf_spool_write(&s, data, 100), ZF_ERROR);
    zf_spool_free(&s);

    CHECK_EQ_INT(zf_test_count_fds(), fds);
    return zf_test_done("spool");
}
