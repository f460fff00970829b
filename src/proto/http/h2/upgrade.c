/* h2c: the HTTP/1.1 "Upgrade: h2c" request check (RFC 7540 3.2), the
 * HTTP2-Settings decoding, and zf__h2c_ops, the operations behind zf_h2c
 * that HTTP/1.1 calls (preface check, upgrade check, take-over). The switch
 * itself is zf__h2_start with the decoded payload; nghttp2_session_upgrade2
 * applies the settings and opens stream 1 for the upgrading request. */
#include <event2/buffer.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "h2.h"

static const char switching[] = "HTTP/1.1 101 Switching Protocols\r\n"
                                "Connection: Upgrade\r\n"
                                "Upgrade: h2c\r\n"
                                "\r\n";

/* True when the comma-separated list `value` holds `token` (any case). */
static int has_token(const char *value, const char *token)
{
    size_t tl = strlen(token);
    const char *p = value;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *s = p;
        while (*p && *p != ',')
            p++;
        const char *e = p;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((size_t)(e - s) == tl && strncasecmp(s, token, tl) == 0)
            return 1;
    }
    return 0;
}

/* True when any field named `name` holds `token`. */
static int any_has_token(const struct zf_headers *h, const char *name, const char *token)
{
    for (size_t i = 0; i < h->n; i++)
        if (strcasecmp(h->v[i].name, name) == 0 && has_token(h->v[i].value, token))
            return 1;
    return 0;
}

/* Decodes base64url (no padding) with OpenSSL. Returns the length or -1. */
static long b64url_decode(const char *in, size_t n, uint8_t *out)
{
    char *b = malloc(n + 4);
    if (!b)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = in[i];
        if (ch == '-')
            ch = '+';
        else if (ch == '_')
            ch = '/';
        else if (ch == '=')
            break;
        else if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                   (ch >= '0' && ch <= '9'))) {
            free(b);
            return -1;
        }
        b[k++] = ch;
    }
    if (k % 4 == 1) {
        free(b);
        return -1;
    }
    size_t pad = (4 - k % 4) % 4;
    memset(b + k, '=', pad);
    int len = EVP_DecodeBlock(out, (const unsigned char *)b, (int)(k + pad));
    free(b);
    return len < 0 ? -1 : len - (long)pad;
}

/* Checks an HTTP/1.1 request for a valid h2c upgrade. Returns 1 and the
 * decoded HTTP2-Settings payload in *settings (malloc'ed, caller frees) /
 * *len, or 0 (serve the request as HTTP/1.1). */
static int upgrade_settings(const struct zf_exchange *ex, uint8_t **settings, size_t *len)
{
    const struct zf_headers *h = &ex->req_headers;
    if (!zf__h2_enabled() || !any_has_token(h, "upgrade", "h2c") ||
        !any_has_token(h, "connection", "upgrade") ||
        !any_has_token(h, "connection", "http2-settings"))
        return 0;
    const struct zf_header *f = NULL;
    for (size_t i = 0; i < h->n; i++) {
        if (strcasecmp(h->v[i].name, "http2-settings") != 0)
            continue;
        if (f)
            return 0; /* exactly one */
        f = &h->v[i];
    }
    /* a SETTINGS payload is a multiple of 6 bytes; 64 entries is plenty */
    if (!f || f->value_len > 512)
        return 0;
    uint8_t *out = malloc(f->value_len + 4);
    if (!out)
        return 0;
    long n = b64url_decode(f->value, f->value_len, out);
    if (n < 0 || n % 6 != 0) {
        free(out);
        return 0;
    }
    *settings = out;
    *len = (size_t)n;
    return 1;
}

/* ---------------------------------------------------- zf_h2c (../http.h) */

static int upgrade_wanted(const struct zf_exchange *ex)
{
    uint8_t *settings;
    size_t len;
    if (!upgrade_settings(ex, &settings, &len))
        return 0;
    free(settings);
    return 1;
}

static void start(struct zf_http_endpoint *ep, struct bufferevent *bev, const struct zf_conn *conn,
                  struct zf_exchange *upgrade_request)
{
    if (!upgrade_request) {
        zf__h2_start(ep, bev, conn, NULL, 0, NULL);
        return;
    }
    uint8_t *settings = NULL;
    size_t len = 0;
    if (!upgrade_settings(upgrade_request, &settings, &len)) {
        /* upgrade_wanted said yes a moment ago: only out of memory */
        zf_log(ZF_LOG_ERROR, conn, "http2: cannot take the h2c upgrade (out of memory?)");
        bufferevent_free(bev);
        zf_conn_closed();
        zf_exchange_release(upgrade_request);
        return;
    }
    evbuffer_add(bufferevent_get_output(bev), switching, sizeof switching - 1);
    zf__h2_start(ep, bev, conn, settings, len, upgrade_request);
    free(settings);
}

const struct zf_h2c_ops zf__h2c_ops = {
    .preface = zf__h2_preface_match,
    .upgrade_wanted = upgrade_wanted,
    .start = start,
};
