/* The bus message codec (src/bus/codec.c): a message encoded the documented
 * way decodes back; each kind of malformed message is refused with a reason;
 * the audience frame round-trips; UTF-8 checks refuse overlongs, surrogates
 * and control characters. */
#include <string.h>

#include "../../src/bus/bus.h"
#include "check.h"

static struct zf_bus_limits lim = {64, 1024};

struct msg {
    struct zf_bus_frame f[ZF_BUS_NFRAMES + 1];
    unsigned char head[ZF_BUS_HEADER_LEN];
};

static void make(struct msg *m, const char *topic, uint64_t epoch, uint64_t seq, uint64_t id,
                 const char *name, const char *aud, const char *data)
{
    zf_bus_header(m->head, epoch, seq, id);
    m->f[0] = (struct zf_bus_frame){topic, strlen(topic)};
    m->f[1] = (struct zf_bus_frame){m->head, sizeof m->head};
    m->f[2] = (struct zf_bus_frame){name, strlen(name)};
    m->f[3] = (struct zf_bus_frame){aud, strlen(aud)};
    m->f[4] = (struct zf_bus_frame){data, strlen(data)};
    m->f[5] = (struct zf_bus_frame){"x", 1};
}

static int decodes(struct msg *m, size_t n)
{
    struct zf_bus_msg out;
    const char *why = NULL;
    int rc = zf_bus_decode(m->f, n, &lim, &out, &why);
    CHECK(rc == ZF_OK || why != NULL);
    return rc == ZF_OK;
}

static void test_round_trip(void)
{
    struct msg m;
    make(&m, "news/x", 0x0102030405060708ULL, 2, 0xffffffffffffffffULL, "a",
         "role:Editor\nuser:bob", "{\"k\":[1,2]}");
    CHECK(memcmp(m.head, "zfb1\x01\x02\x03\x04\x05\x06\x07\x08", 12) == 0);
    struct zf_bus_msg out;
    const char *why = NULL;
    CHECK_EQ_INT(zf_bus_decode(m.f, 5, &lim, &out, &why), ZF_OK);
    CHECK(out.topic_len == 6 && memcmp(out.topic, "news/x", 6) == 0);
    CHECK(out.epoch == 0x0102030405060708ULL && out.seq == 2 && out.id == UINT64_MAX);
    CHECK(out.name_len == 1 && out.len == 11);
    int oom;
    char **aud = zf_bus_audience_split(out.audience, out.audience_len, &oom);
    CHECK(aud && !oom && strcmp(aud[0], "role:Editor") == 0 && strcmp(aud[1], "user:bob") == 0 &&
          !aud[2]);
    size_t len;
    char *joined = zf_bus_audience_join(aud, &len);
    CHECK(joined && len == 20 && strcmp(joined, "role:Editor\nuser:bob") == 0);
    free(joined);
    for (size_t i = 0; aud && aud[i]; i++)
        free(aud[i]);
    free(aud);
    CHECK(zf_bus_audience_split("", 0, &oom) == NULL && !oom);
    joined = zf_bus_audience_join(NULL, &len);
    CHECK(joined && len == 0 && !*joined);
    free(joined);
}

static void test_malformed(void)
{
    struct msg m;
    make(&m, "t", 1, 1, 1, "", "", "1");
    CHECK(decodes(&m, 5));
    CHECK(!decodes(&m, 4));
    CHECK(!decodes(&m, 6));
    make(&m, "", 1, 1, 1, "", "", "1");
    CHECK(!decodes(&m, 5));
    make(&m, "t*", 1, 1, 1, "", "", "1");
    CHECK(!decodes(&m, 5));
    char longtopic[66];
    memset(longtopic, 't', 65);
    longtopic[65] = 0;
    make(&m, longtopic, 1, 1, 1, "", "", "1");
    CHECK(!decodes(&m, 5));
    longtopic[64] = 0;
    make(&m, longtopic, 1, 1, 1, "", "", "1");
    CHECK(decodes(&m, 5));
    make(&m, "a\tb", 1, 1, 1, "", "", "1");
    CHECK(!decodes(&m, 5));
    make(&m, "t", 0, 1, 1, "", "", "1");
    CHECK(!decodes(&m, 5));
    make(&m, "t", 1, 0, 1, "", "", "1");
    CHECK(!decodes(&m, 5));
    make(&m, "t", 1, 1, 0, "", "", "1");
    CHECK(!decodes(&m, 5));
    make(&m, "t", 1, 1, 1, "", "", "1");
    m.head[3] = '2';
    CHECK(!decodes(&m, 5));
    make(&m, "t", 1, 1, 1, "", "", "1");
    m.f[1].len--;
    CHECK(!decodes(&m, 5));
    make(&m, "t", 1, 1, 1, "", "a\n", "1");
    CHECK(!decodes(&m, 5));
    make(&m, "t", 1, 1, 1, "", "\na", "1");
    CHECK(!decodes(&m, 5));
    make(&m, "t", 1, 1, 1, "", "a\n\nb", "1");
    CHECK(!decodes(&m, 5));
    make(&m, "t", 1, 1, 1, "", "a b\nc", "1");
    CHECK(decodes(&m, 5));
    char longname[66];
    memset(longname, 'n', 65);
    longname[65] = 0;
    make(&m, "t", 1, 1, 1, longname, "", "1");
    CHECK(!decodes(&m, 5));
    make(&m, "t", 1, 1, 1, "", "", "");
    CHECK(!decodes(&m, 5));
    make(&m, "t", 1, 1, 1, "", "", "1 2");
    CHECK(!decodes(&m, 5));
    make(&m, "t", 1, 1, 1, "", "", "{\"a\":");
    CHECK(!decodes(&m, 5));
    make(&m, "t", 1, 1, 1, "", "", "\"\xc3\x28\"");
    CHECK(!decodes(&m, 5));
    make(&m, "t", 1, 1, 1, "", "", " \"ok\" ");
    CHECK(decodes(&m, 5));
    char big[1100];
    memset(big, ' ', sizeof big - 1);
    big[0] = '1';
    big[sizeof big - 1] = 0;
    make(&m, "t", 1, 1, 1, "", "", big);
    CHECK(!decodes(&m, 5));
}

static void test_text(void)
{
    CHECK(zf_bus_text_ok("", 0));
    CHECK(zf_bus_text_ok("caf\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x98\x80", 14));
    CHECK(!zf_bus_text_ok("\xc0\xaf", 2));         /* overlong '/' */
    CHECK(!zf_bus_text_ok("\xe0\x80\xaf", 3));     /* overlong */
    CHECK(!zf_bus_text_ok("\xed\xa0\x80", 3));     /* surrogate */
    CHECK(!zf_bus_text_ok("\xf4\x90\x80\x80", 4)); /* past U+10FFFF */
    CHECK(!zf_bus_text_ok("\xe2\x82", 2));         /* cut short */
    CHECK(!zf_bus_text_ok("a\0b", 3));
    CHECK(!zf_bus_text_ok("a\x7f", 2));
    CHECK(!zf_bus_text_ok("\x80", 1));
}

int main(void)
{
    test_round_trip();
    test_malformed();
    test_text();
    return zf_test_done("bus_codec");
}
