/* The shared HTTP helpers: token characters, the Date header, reason
 * phrases and hop-by-hop field names. */
#include <string.h>
#include <unistd.h>
#include <time.h>

#include "../../src/proto/http/http.h"
#include "check.h"

static void test_tchar(void)
{
    const char *ok = "!#$%&'*+-.^_`|~09azAZ";
    for (const char *p = ok; *p; p++)
        CHECK(zf_http_is_tchar((unsigned char)*p));
    const char *bad = " \t\r\n\"(),/:;<=>?@[\\]{}";
    for (const char *p = bad; *p; p++)
        CHECK(!zf_http_is_tchar((unsigned char)*p));
    CHECK(!zf_http_is_tchar(0));
    CHECK(!zf_http_is_tchar(0x7f));
    CHECK(!zf_http_is_tchar(0x80));
    CHECK(!zf_http_is_tchar(0xff));
}

static void test_date(void)
{
    const char *d = zf_http_date();
    /* "Sun, 06 Nov 1994 08:49:37 GMT" */
    CHECK_EQ_INT(strlen(d), 29);
    CHECK(d[3] == ',' && d[4] == ' ' && d[7] == ' ' && d[11] == ' ' && d[16] == ' ');
    CHECK(d[19] == ':' && d[22] == ':');
    CHECK(strcmp(d + 25, " GMT") == 0 || strcmp(d + 26, "GMT") == 0);
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(d, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    CHECK(end && *end == 0);
    if (end) {
        time_t t = timegm(&tm);
        time_t now = time(NULL);
        CHECK(t <= now && now - t < 5);
    }
    /* cached per second, and formatted again once the clock moved on: wait
     * (at most a second) for the next second, the text must follow it */
    char before[40];
    snprintf(before, sizeof before, "%s", zf_http_date());
    time_t t0 = time(NULL);
    while (time(NULL) == t0)
        usleep(10000);
    time_t t1 = time(NULL);
    const char *after = zf_http_date();
    CHECK(strcmp(after, before) != 0);
    memset(&tm, 0, sizeof tm);
    end = strptime(after, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    CHECK(end && *end == 0 && timegm(&tm) >= t1);
}

static void test_reason(void)
{
    CHECK(strcmp(zf_http_reason(200), "OK") == 0);
    CHECK(strcmp(zf_http_reason(100), "Continue") == 0);
    CHECK(strcmp(zf_http_reason(404), "Not Found") == 0);
    CHECK(strcmp(zf_http_reason(413), "Content Too Large") == 0);
    CHECK(strcmp(zf_http_reason(414), "URI Too Long") == 0);
    CHECK(strcmp(zf_http_reason(417), "Expectation Failed") == 0);
    CHECK(strcmp(zf_http_reason(431), "Request Header Fields Too Large") == 0);
    CHECK(strcmp(zf_http_reason(207), "Multi-Status") == 0);
    CHECK(strcmp(zf_http_reason(511), "Network Authentication Required") == 0);
    CHECK(strcmp(zf_http_reason(299), "") == 0);
    CHECK(strcmp(zf_http_reason(0), "") == 0);
    CHECK(strcmp(zf_http_reason(999), "") == 0);
}

static void test_hop_by_hop(void)
{
    const char *yes[] = {"Connection", "keep-alive", "Transfer-Encoding", "TE",
                         "Upgrade",    "Trailer",    "Proxy-Connection"};
    for (size_t i = 0; i < ZF_ARRAY_LEN(yes); i++)
        CHECK(zf_http_is_hop_by_hop(yes[i], strlen(yes[i])));
    const char *no[] = {"Content-Type", "Content-Length", "Set-Cookie", "T", "Connections"};
    for (size_t i = 0; i < ZF_ARRAY_LEN(no); i++)
        CHECK(!zf_http_is_hop_by_hop(no[i], strlen(no[i])));
    /* length is honoured: a prefix of a longer buffer */
    CHECK(zf_http_is_hop_by_hop("TEXT", 2));
    CHECK(!zf_http_is_hop_by_hop("Upgrade", 6));
}

int main(void)
{
    test_tchar();
    test_date();
    test_reason();
    test_hop_by_hop();
    return zf_test_done("http_util");
}
