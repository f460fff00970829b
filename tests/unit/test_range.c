/* Range header parsing: every branch of RFC 9110's byte-range rules. */
#include "../../src/core/range.h"
#include "check.h"

static void expect_ok(const char *h, uint64_t size, uint64_t start, uint64_t len)
{
    uint64_t s = 99, l = 99;
    int rc = zf_range_parse(h, size, &s, &l);
    CHECK_EQ_INT(rc, ZF_OK);
    CHECK_EQ_INT(s, start);
    CHECK_EQ_INT(l, len);
}

int main(void)
{
    uint64_t s, l;
    expect_ok("bytes=0-99", 1000, 0, 100);
    expect_ok("bytes=500-", 1000, 500, 500);
    expect_ok("bytes=-100", 1000, 900, 100);
    expect_ok("bytes=-5000", 1000, 0, 1000);     /* suffix longer than the file */
    expect_ok("bytes=990-2000", 1000, 990, 10);  /* last clipped */
    expect_ok(" bytes = 1-1 ", 1000, 1, 1);
    expect_ok("BYTES=0-0", 1, 0, 1);
    CHECK_EQ_INT(zf_range_parse("bytes=1000-", 1000, &s, &l), ZF_ERROR);
    CHECK_EQ_INT(zf_range_parse("bytes=5000-6000", 1000, &s, &l), ZF_ERROR);
    CHECK_EQ_INT(zf_range_parse("bytes=-0", 1000, &s, &l), ZF_ERROR);
    CHECK_EQ_INT(zf_range_parse("bytes=0-", 0, &s, &l), ZF_ERROR);
    CHECK_EQ_INT(zf_range_parse("bytes=0-1,5-6", 1000, &s, &l), ZF_DECLINED);
    CHECK_EQ_INT(zf_range_parse("items=0-1", 1000, &s, &l), ZF_DECLINED);
    CHECK_EQ_INT(zf_range_parse("bytes=5-1", 1000, &s, &l), ZF_DECLINED);
    CHECK_EQ_INT(zf_range_parse("bytes=-", 1000, &s, &l), ZF_DECLINED);
    CHECK_EQ_INT(zf_range_parse("bytes=a-b", 1000, &s, &l), ZF_DECLINED);
    CHECK_EQ_INT(zf_range_parse("bytes=1-2x", 1000, &s, &l), ZF_DECLINED);
    CHECK_EQ_INT(zf_range_parse("bytes=99999999999999999999999-", 1000, &s, &l), ZF_DECLINED);
    return zf_test_done("range");
}
