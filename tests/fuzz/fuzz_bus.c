/* libFuzzer target: zf_bus_decode (src/bus/codec.c), every message a bus
 * peer can send.
 *
 * Input layout: a sequence of frames, each a 2-byte big-endian length then
 * that many bytes (a short last frame takes what is left); at most 8 frames.
 * Byte lengths are capped by the input, so any frame count and size is
 * reachable.
 *
 * Checks: decode returns ZF_OK or ZF_ERROR (with a reason); ZF_OK means
 * exactly 5 frames, a non-empty topic within the limit that is UTF-8 text
 * and not a pattern, non-zero epoch/sequence/id matching the header bytes,
 * and every pointer inside its frame; the audience splits into non-empty
 * tokens that join back to the same frame. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/bus/bus.h"

static void fail(const char *what)
{
    fprintf(stderr, "\n==== zfront fuzz_bus: %s\n", what);
    abort();
}

static int inside(const void *p, size_t len, const struct zf_bus_frame *f)
{
    const char *a = p, *b = f->p;
    return len == 0 || (a >= b && a + len <= b + f->len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct zf_bus_frame f[8];
    size_t n = 0;
    /* copies, so that reading past a frame is caught by ASan */
    uint8_t *copies[8] = {0};
    while (size >= 2 && n < 8) {
        size_t len = (size_t)data[0] << 8 | data[1];
        data += 2;
        size -= 2;
        if (len > size)
            len = size;
        copies[n] = malloc(len ? len : 1);
        memcpy(copies[n], data, len);
        f[n].p = copies[n];
        f[n].len = len;
        n++;
        data += len;
        size -= len;
    }
    struct zf_bus_limits lim = {64, 4096};
    struct zf_bus_msg m;
    const char *why = NULL;
    int rc = zf_bus_decode(f, n, &lim, &m, &why);
    if (rc != ZF_OK && rc != ZF_ERROR)
        fail("unexpected return code");
    if (rc == ZF_ERROR && !why)
        fail("error without a reason");
    if (rc == ZF_OK) {
        if (n != ZF_BUS_NFRAMES)
            fail("accepted a message that is not 5 frames");
        if (m.topic_len == 0 || m.topic_len > lim.max_topic ||
            !zf_bus_text_ok(m.topic, m.topic_len) || m.topic[m.topic_len - 1] == '*')
            fail("accepted a bad topic");
        if (!m.epoch || !m.seq || !m.id || f[1].len != ZF_BUS_HEADER_LEN)
            fail("accepted a bad header");
        unsigned char head[ZF_BUS_HEADER_LEN];
        zf_bus_header(head, m.epoch, m.seq, m.id);
        if (memcmp(head, f[1].p, sizeof head) != 0)
            fail("header does not encode back to the same bytes");
        if (!inside(m.topic, m.topic_len, &f[0]) || !inside(m.name, m.name_len, &f[2]) ||
            !inside(m.audience, m.audience_len, &f[3]) || !inside(m.data, m.len, &f[4]))
            fail("a field points outside its frame");
        if (m.len == 0 || m.len > lim.max_payload)
            fail("accepted a bad payload size");
        int oom;
        char **aud = zf_bus_audience_split(m.audience, m.audience_len, &oom);
        if (oom)
            fail("out of memory");
        size_t jl = 0;
        char *joined = zf_bus_audience_join(aud, &jl);
        if (!joined || jl != m.audience_len || memcmp(joined, m.audience, jl) != 0)
            fail("audience does not join back to the same frame");
        for (size_t i = 0; aud && aud[i]; i++) {
            if (!aud[i][0])
                fail("empty audience token accepted");
            free(aud[i]);
        }
        free(aud);
        free(joined);
    }
    for (size_t i = 0; i < n; i++)
        free(copies[i]);
    return 0;
}
