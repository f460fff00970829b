/* The bus message format (bus.h, docs/protocols/bus.md): five frames,
 * topic first so SUB prefix filters work, then a fixed binary header, the
 * sender's instance name, the audience and the payload. Everything a peer
 * sends is checked here before the hub sees it. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

void zf_bus_header(unsigned char out[ZF_BUS_HEADER_LEN], uint64_t epoch, uint64_t seq, uint64_t id)
{
    memcpy(out, ZF_BUS_MAGIC, 4);
    put_u64(out + 4, epoch);
    put_u64(out + 12, seq);
    put_u64(out + 20, id);
}

/* UTF-8 (RFC 3629: no overlongs, no surrogates, at most U+10FFFF) and no
 * C0 control character or DEL: topics and names end up in JSON and logs. */
int zf_bus_text_ok(const char *text, size_t len)
{
    const unsigned char *p = (const unsigned char *)text, *end = p + len;
    while (p < end) {
        unsigned c = *p;
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f)
                return 0;
            p++;
            continue;
        }
        size_t n;
        unsigned cp, min;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1, cp = c & 0x1f, min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2, cp = c & 0x0f, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if ((size_t)(end - p) <= n)
            return 0;
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        p += n + 1;
    }
    return 1;
}

/* Audience tokens: non-empty, '\n'-separated, no control character. */
static int audience_ok(const char *p, size_t len)
{
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || p[i] == '\n') {
            if (i == start || !zf_bus_text_ok(p + start, i - start))
                return 0;
            start = i + 1;
        }
    }
    return 1;
}

int zf_bus_decode(const struct zf_bus_frame *f, size_t n, const struct zf_bus_limits *lim,
                  struct zf_bus_msg *m, const char **why)
{
    memset(m, 0, sizeof *m);
    if (n != ZF_BUS_NFRAMES) {
        *why = "not 5 frames";
        return ZF_ERROR;
    }
    m->topic = f[0].p;
    m->topic_len = f[0].len;
    if (m->topic_len == 0 || m->topic_len > lim->max_topic) {
        *why = "empty or too long topic (bus.max_topic)";
        return ZF_ERROR;
    }
    if (!zf_bus_text_ok(m->topic, m->topic_len) || m->topic[m->topic_len - 1] == '*') {
        *why = "topic not UTF-8 text, or a pattern";
        return ZF_ERROR;
    }
    const unsigned char *h = f[1].p;
    if (f[1].len != ZF_BUS_HEADER_LEN || memcmp(h, ZF_BUS_MAGIC, 4) != 0) {
        *why = "bad header frame (magic or length)";
        return ZF_ERROR;
    }
    m->epoch = get_u64(h + 4);
    m->seq = get_u64(h + 12);
    m->id = get_u64(h + 20);
    if (!m->epoch || !m->seq || !m->id) {
        *why = "zero origin, sequence or id";
        return ZF_ERROR;
    }
    m->name = f[2].p;
    m->name_len = f[2].len;
    if (m->name_len > ZF_BUS_MAX_NAME || !zf_bus_text_ok(m->name, m->name_len)) {
        *why = "bad instance name";
        return ZF_ERROR;
    }
    m->audience = f[3].p;
    m->audience_len = f[3].len;
    if (m->audience_len && !audience_ok(m->audience, m->audience_len)) {
        *why = "bad audience";
        return ZF_ERROR;
    }
    m->data = f[4].p;
    m->len = f[4].len;
    if (m->len == 0 || (lim->max_payload && m->len > lim->max_payload)) {
        *why = "empty or too large payload (hub.max_event)";
        return ZF_ERROR;
    }
    /* The WebSocket module embeds the payload in its JSON text as it is:
     * it must be one JSON value (jansson also checks its UTF-8). */
    json_t *v = json_loadb(m->data, m->len, JSON_DECODE_ANY, NULL);
    if (!v) {
        *why = "payload not one JSON value";
        return ZF_ERROR;
    }
    json_decref(v);
    return ZF_OK;
}

char *zf_bus_audience_join(char *const *tokens, size_t *len)
{
    size_t n = 0;
    for (char *const *t = tokens; t && *t; t++)
        n += strlen(*t) + 1;
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    size_t at = 0;
    for (char *const *t = tokens; t && *t; t++) {
        size_t l = strlen(*t);
        if (at)
            out[at++] = '\n';
        memcpy(out + at, *t, l);
        at += l;
    }
    out[at] = 0;
    *len = at;
    return out;
}

char **zf_bus_audience_split(const char *p, size_t len, int *oom)
{
    *oom = 0;
    if (!len)
        return NULL;
    size_t n = 1;
    for (size_t i = 0; i < len; i++)
        n += p[i] == '\n';
    char **v = calloc(n + 1, sizeof *v);
    if (!v)
        goto fail;
    size_t start = 0, k = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || p[i] == '\n') {
            if (!(v[k++] = strndup(p + start, i - start)))
                goto fail;
            start = i + 1;
        }
    }
    return v;
fail:
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
    *oom = 1;
    return NULL;
}
