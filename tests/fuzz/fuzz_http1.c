/* libFuzzer target: the HTTP/1.1 request parser of src/proto/http/http1.c
 * (http-parser plus zfront's own checks), fed arbitrary bytes the way
 * process_input feeds it, without a socket or a loop (as
 * tests/unit/test_http1.c does).
 *
 * Input layout: byte 0 picks the settings (bit 0: small limits, bit 1: bodies
 * spooled to a temp file from the 9th byte, bits 2-4: how finely the bytes
 * are split), byte 1 seeds the split points, the rest is what the client
 * sends (up to 8 pipelined requests are read from it).
 *
 * Every input is parsed twice, in one piece and split at the chosen points,
 * and both readings must agree. For every request zfront accepts it checks:
 * method, target, version and field names and values are well-formed, the
 * limits held, and a strict RFC 9112 reading of the same bytes (h1ref.h)
 * ends the request at the same byte with the same fields and the same
 * de-chunked body. Nothing may leak (exchanges, descriptors; memory is
 * LeakSanitizer's).
 *
 * A failed check prints "invariant [ID] violated" and aborts, so libFuzzer
 * saves the input. ZF_FUZZ_IGNORE=id1,id2 turns named checks into counters
 * (for known bugs still open); ZF_FUZZ_STATS=1 prints counts at exit;
 * ZF_FUZZ_VERBOSE=1 tells what became of each request (to study an input). */
#include <stdarg.h>
#include <stdint.h>

/* build.sh may point these at another tree's files (ZF_FUZZ_SRC), to try
 * a fix before it goes into the shared one */
#ifdef ZF_FUZZ_H1_PARSE_C
#include ZF_FUZZ_H1_PARSE_C
#else
#include "../../src/proto/http/h1_parse.c"
#endif
#ifdef ZF_FUZZ_HTTP1_C
#include ZF_FUZZ_HTTP1_C
#else
#include "../../src/proto/http/http1.c"
#endif
#include "h1ref.h"

/* ================================================================ reporting */

static const char *ignore_list;
static int print_stats;
static int verbose;
static struct {
    unsigned long inputs, accepted, rejected, incomplete, status[600];
    unsigned long ignored_hits;
} st;
static const uint8_t *cur_data;
static size_t cur_len;

static int ignored(const char *id)
{
    if (!ignore_list)
        return 0;
    size_t n = strlen(id);
    for (const char *p = ignore_list; (p = strstr(p, id)); p += n)
        if ((p == ignore_list || p[-1] == ',') && (p[n] == 0 || p[n] == ','))
            return 1;
    return 0;
}

static void dump(const char *label, const uint8_t *p, size_t n)
{
    fprintf(stderr, "%s (%zu bytes): \"", label, n);
    for (size_t i = 0; i < n && i < 600; i++) {
        unsigned char ch = p[i];
        if (ch == '\r')
            fputs("\\r", stderr);
        else if (ch == '\n')
            fputs("\\n", stderr);
        else if (ch == '"' || ch == '\\')
            fprintf(stderr, "\\%c", ch);
        else if (ch < 0x20 || ch >= 0x7f)
            fprintf(stderr, "\\x%02x", ch);
        else
            fputc(ch, stderr);
    }
    fprintf(stderr, n > 600 ? "\"...\n" : "\"\n");
}

static void violation(const char *id, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void violation(const char *id, const char *fmt, ...)
{
    if (ignored(id)) {
        st.ignored_hits++;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "\n==== zfront fuzz_http1: invariant [%s] violated: ", id);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (cur_data && cur_len >= 2) {
        fprintf(stderr, "settings byte 0x%02x, split seed 0x%02x\n", cur_data[0], cur_data[1]);
        dump("client bytes", cur_data + 2, cur_len - 2);
    }
    abort();
}

#define INVARIANT(id, cond, ...)                                                                   \
    do {                                                                                           \
        if (!(cond))                                                                               \
            violation(id, __VA_ARGS__);                                                            \
    } while (0)

static void report_stats(void)
{
    fprintf(stderr,
            "fuzz_http1: %lu inputs; requests accepted %lu, rejected %lu, incomplete %lu; "
            "ignored violations %lu\n",
            st.inputs, st.accepted, st.rejected, st.incomplete, st.ignored_hits);
    for (int s = 0; s < 600; s++)
        if (st.status[s])
            fprintf(stderr, "  status %d: %lu\n", s, st.status[s]);
}

/* ================================================================ a transcript */

/* What one reading of the input produced, byte for byte, so that two
 * readings (whole and split) can be compared with memcmp. */
struct tr {
    char *p;
    size_t len, cap;
};

static void tr_add(struct tr *t, const void *p, size_t n)
{
    if (t->len + n > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->len + n)
            cap *= 2;
        t->p = realloc(t->p, cap);
        if (!t->p)
            abort();
        t->cap = cap;
    }
    memcpy(t->p + t->len, p, n);
    t->len += n;
}

static void tr_bytes(struct tr *t, const void *p, size_t n)
{
    uint64_t len = n;
    tr_add(t, &len, sizeof len);
    tr_add(t, p, n);
}

static void tr_str(struct tr *t, const char *s)
{
    tr_bytes(t, s ? s : "(null)", strlen(s ? s : "(null)"));
}

/* ================================================================ feeding */

/* Split points: xorshift steps of 1..max bytes (max 0: all at once). */
struct splitter {
    uint64_t s;
    size_t max;
};

static size_t next_step(struct splitter *sp, size_t remaining)
{
    if (!sp->max)
        return remaining;
    sp->s ^= sp->s << 13;
    sp->s ^= sp->s >> 7;
    sp->s ^= sp->s << 17;
    return 1 + (size_t)(sp->s % sp->max);
}

static struct h1conn *conn_new(void)
{
    zf__h1_init_settings();
    struct h1conn *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->conn.id = 1;
    c->conn.proto = "http";
    c->scheme = "http";
    c->channel = "http";
    zf_spool_init(&c->spool, 0, NULL);
    zf__h1_reset_message(c);
    return c;
}

static void conn_next(struct h1conn *c)
{
    if (c->ex)
        zf_exchange_abort(c->ex);
    c->ex = NULL;
    zf__h1_reset_message(c);
}

static void conn_free_parser(struct h1conn *c)
{
    conn_next(c);
    zf_spool_free(&c->spool);
    zf__h1_buf_free(&c->url);
    zf__h1_buf_free(&c->name);
    zf__h1_buf_free(&c->value);
    free(c);
}

/* Feeds data the way process_input does: pieces arrive per the splitter;
 * bytes the parser did not take stay pending in front of the next piece.
 * Returns ZF_OK (request complete, body moved into the exchange), ZF_AGAIN
 * (input ran out) or ZF_ERROR; *left is what was not consumed. */
static int feed_request(struct h1conn *c, const char *data, size_t len, struct splitter *sp,
                        size_t *left)
{
    char *pending = malloc(len + 1);
    size_t plen = 0, off = 0;
    int rc = ZF_AGAIN;
    if (!pending)
        abort();
    for (;;) {
        if (off < len) {
            size_t k = next_step(sp, len - off);
            if (k > len - off)
                k = len - off;
            memcpy(pending + plen, data + off, k);
            plen += k;
            off += k;
        }
        while (plen > 0) {
            size_t used = 0;
            int r = zf__h1_parse_some(c, pending, plen, &used);
            if (used > plen)
                violation("used", "parse_some consumed %zu of %zu bytes", used, plen);
            memmove(pending, pending + used, plen - used);
            plen -= used;
            if (r == ZF_ERROR) {
                rc = ZF_ERROR;
                goto out;
            }
            if (c->msg_done) {
                zf_spool_take(&c->spool, &c->ex->body);
                rc = ZF_OK;
                goto out;
            }
            if (r == ZF_AGAIN)
                break;
        }
        if (off >= len)
            break;
    }
out:
    *left = plen + (len - off);
    free(pending);
    return rc;
}

/* The body handed to the exchange, as a malloc'd copy (*n bytes). */
static char *body_copy(const struct zf_body *b, size_t *n)
{
    *n = b->len;
    char *p = malloc(b->len + 1);
    if (!p)
        abort();
    if (b->fd >= 0) {
        ssize_t r = pread(b->fd, p, b->len, 0);
        INVARIANT("body", r == (ssize_t)b->len, "spooled body: read %zd of %zu bytes", r, b->len);
        char extra;
        INVARIANT("body", pread(b->fd, &extra, 1, (off_t)b->len) == 0,
                  "spooled body holds more than its %zu bytes", b->len);
    } else if (b->len) {
        INVARIANT("body", b->mem != NULL, "body of %zu bytes without memory", b->len);
        memcpy(p, b->mem, b->len);
    }
    return p;
}

/* ================================================================ checks */

static int has_ctl(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return 1;
    }
    return 0;
}

/* Checks a request zfront accepted on its own terms: what the WSGI bridge
 * will see must be well-formed and within the configured limits. */
static void check_shape(struct h1conn *c, size_t blen)
{
    struct zf_exchange *ex = c->ex;
    size_t mlen = strlen(ex->method);
    INVARIANT("method", mlen > 0 && mlen <= H1_METHOD_MAX, "method of %zu bytes", mlen);
    for (size_t i = 0; i < mlen; i++)
        INVARIANT("method", zf_http_is_tchar((unsigned char)ex->method[i]),
                  "method byte 0x%02x is not a tchar", (unsigned char)ex->method[i]);
    size_t tlen = strlen(ex->target);
    INVARIANT("target", tlen > 0, "empty request-target");
    /* zf_exchange_set_target drops a fragment ("#..."): the rest is kept */
    const char *hash = memchr(c->url.p, '#', c->url.len);
    size_t want = hash ? (size_t)(hash - c->url.p) : c->url.len;
    INVARIANT("target", tlen == want, "request-target holds a NUL byte");
    for (size_t i = 0; i < tlen; i++) {
        unsigned char ch = (unsigned char)ex->target[i];
        INVARIANT("target", ch > 0x20 && ch != 0x7f, "request-target byte 0x%02x", ch);
    }
    INVARIANT("limits", tlen <= zf_http_cfg.max_request_line, "request-target of %zu bytes", tlen);
    INVARIANT("version",
              (strcmp(ex->protocol, "HTTP/1.1") == 0 && !c->http10) ||
                  (strcmp(ex->protocol, "HTTP/1.0") == 0 && c->http10),
              "protocol %s with http10=%d", ex->protocol, c->http10);
    int hosts = 0;
    for (size_t i = 0; i < ex->req_headers.n; i++) {
        const struct zf_header *h = &ex->req_headers.v[i];
        INVARIANT("field-name", h->name_len > 0, "empty field name");
        for (size_t k = 0; k < h->name_len; k++)
            INVARIANT("field-name", zf_http_is_tchar((unsigned char)h->name[k]),
                      "field name byte 0x%02x is not a tchar", (unsigned char)h->name[k]);
        INVARIANT("field-value", !has_ctl(h->value, h->value_len),
                  "control byte in the value of %s", h->name);
        INVARIANT("field-value",
                  h->value_len == 0 ||
                      (h->value[0] != ' ' && h->value[0] != '\t' &&
                       h->value[h->value_len - 1] != ' ' && h->value[h->value_len - 1] != '\t'),
                  "value of %s keeps leading or trailing whitespace", h->name);
        hosts += h->name_len == 4 && strncasecmp(h->name, "Host", 4) == 0;
        if (!c->http10 && h->name_len == 6 && strncasecmp(h->name, "Expect", 6) == 0)
            INVARIANT("expect",
                      h->value_len == 12 && strncasecmp(h->value, "100-continue", 12) == 0,
                      "HTTP/1.1 request with \"Expect: %.*s\" accepted (zfront answers 417 "
                      "to expectations other than 100-continue)",
                      (int)h->value_len, h->value);
    }
    INVARIANT("host", hosts <= 1, "%d Host fields", hosts);
    INVARIANT("host", c->http10 || hosts == 1, "HTTP/1.1 request without Host");
    INVARIANT("limits", (long)ex->req_headers.n <= zf_http_cfg.max_headers, "%zu fields",
              ex->req_headers.n);
    INVARIANT("limits", !zf_http_cfg.max_body_size || blen <= zf_http_cfg.max_body_size,
              "body of %zu bytes", blen);
}

/* Checks that the strict reference reads the bytes zfront took for one
 * request (d[0, consumed), out of avail bytes) the same way. */
static void check_reference(struct h1conn *c, const char *d, size_t consumed, size_t avail,
                            const char *body, size_t blen)
{
    struct zf_exchange *ex = c->ex;
    struct ref_req *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    int rc = ref_parse(d, avail, r);
    /* CONNECT gets one id of its own: http-parser ends it at the header
     * section whatever its framing says (it expects a tunnel to follow).
     * Once the two disagree about where a request ends, the rest of the
     * comparison would only repeat it. */
    int connect = strcmp(ex->method, "CONNECT") == 0;
    if (rc == REF_INVALID) {
        /* the invariant id is "ref-" and the reference's reason id */
        char id[40];
        snprintf(id, sizeof id, "ref-%.*s", (int)strcspn(r->why, ":"), r->why);
        violation(connect ? "connect-body" : id,
                  "zfront accepted a request (%s %s) that a strict parser refuses (%s)", ex->method,
                  ex->target, r->why);
    } else if (rc == REF_INCOMPLETE)
        violation(connect ? "connect-body" : "ref-incomplete",
                  "zfront ended a request (%s %s) after %zu bytes where a strict parser needs "
                  "more (body of %zu bytes handed over)",
                  ex->method, ex->target, consumed, blen);
    else if (r->consumed != consumed)
        violation(connect ? "connect-body" : "ref-consumed",
                  "zfront ended a request (%s %s) after %zu bytes, a strict parser after %zu",
                  ex->method, ex->target, consumed, r->consumed);
    if (rc != REF_OK || r->consumed != consumed) {
        free(r->body);
        free(r);
        return;
    }
    INVARIANT("ref-content",
              strlen(ex->method) == r->mlen && memcmp(ex->method, r->method, r->mlen) == 0,
              "method %s, strict parser %.*s", ex->method, (int)r->mlen, r->method);
    const char *rhash = memchr(r->target, '#', r->tlen); /* dropped by zfront */
    size_t rtlen = rhash ? (size_t)(rhash - r->target) : r->tlen;
    INVARIANT("ref-content",
              strlen(ex->target) == rtlen && memcmp(ex->target, r->target, rtlen) == 0,
              "target %s, strict parser %.*s", ex->target, (int)r->tlen, r->target);
    INVARIANT("ref-content", c->http10 == (r->minor == 0), "version differs");
    INVARIANT("ref-content", ex->req_headers.n == r->nf, "%zu fields, strict parser %zu",
              ex->req_headers.n, r->nf);
    for (size_t i = 0; i < r->nf && i < ex->req_headers.n; i++) {
        const struct zf_header *h = &ex->req_headers.v[i];
        const struct ref_field *f = &r->f[i];
        INVARIANT("ref-content",
                  h->name_len == f->nlen && memcmp(h->name, f->name, f->nlen) == 0 &&
                      h->value_len == f->vlen && memcmp(h->value, f->value, f->vlen) == 0,
                  "field %zu is \"%s: %s\", strict parser \"%.*s: %.*s\"", i, h->name, h->value,
                  (int)f->nlen, f->name, (int)f->vlen, f->value);
    }
    INVARIANT("ref-body", blen == r->blen && (blen == 0 || memcmp(body, r->body, blen) == 0),
              "body of %zu bytes differs from the strict parser's %zu bytes (chunked %d)", blen,
              r->blen, r->chunked);
    INVARIANT("limits", (long)(r->nf + r->ntrailers) <= zf_http_cfg.max_headers,
              "%zu fields and %zu trailer fields", r->nf, r->ntrailers);
    INVARIANT("close", !r->must_close || !c->req_keep_alive,
              "HTTP/1.0 request with Transfer-Encoding kept alive (RFC 9112 6.1: must close)");
    free(r->body);
    free(r);
}

/* ================================================================ one reading */

/* Reads up to 8 pipelined requests from d with the given split points and
 * writes what came out to t. check: run the checks on accepted requests. */
static void read_all(const char *d, size_t n, struct splitter *sp, struct tr *t, int *last_status,
                     int check)
{
    struct h1conn *c = conn_new();
    size_t off = 0;
    *last_status = 0;
    for (int k = 0; k < 8 && off < n; k++) {
        size_t left = 0;
        int rc = feed_request(c, d + off, n - off, sp, &left);
        size_t consumed = (n - off) - left;
        if (verbose)
            fprintf(stderr, "  [%s, pieces of 1..%zu] request %d: %s, %zu bytes taken%s%s\n",
                    check ? "whole" : "split", sp->max, k,
                    rc == ZF_OK      ? "accepted"
                    : rc == ZF_ERROR ? "refused"
                                     : "incomplete",
                    consumed, rc == ZF_ERROR ? ": " : "", rc == ZF_ERROR ? c->error_text : "");
        if (rc == ZF_ERROR) {
            tr_add(t, "E", 1);
            *last_status = c->error_status;
            INVARIANT("status", c->error_status >= 400 && c->error_status < 600,
                      "rejected with status %d", c->error_status);
            if (check) {
                st.rejected++;
                st.status[c->error_status % 600]++;
            }
            break;
        }
        if (rc == ZF_AGAIN) {
            tr_add(t, "I", 1);
            if (check)
                st.incomplete++;
            break;
        }
        INVARIANT("consumed", consumed > 0 && consumed <= n - off, "request of %zu bytes",
                  consumed);
        struct zf_exchange *ex = c->ex;
        size_t blen;
        char *body = body_copy(&ex->body, &blen);
        tr_add(t, "O", 1);
        tr_bytes(t, &consumed, sizeof consumed);
        tr_str(t, ex->method);
        tr_str(t, ex->target);
        tr_str(t, ex->path);
        tr_str(t, ex->query);
        tr_str(t, ex->protocol);
        int flags[] = {c->req_keep_alive, c->expect_continue, c->http10, ex->is_head};
        tr_bytes(t, flags, sizeof flags);
        for (size_t i = 0; i < ex->req_headers.n; i++) {
            tr_bytes(t, ex->req_headers.v[i].name, ex->req_headers.v[i].name_len);
            tr_bytes(t, ex->req_headers.v[i].value, ex->req_headers.v[i].value_len);
        }
        tr_bytes(t, body, blen);
        if (check) {
            st.accepted++;
            check_shape(c, blen);
            check_reference(c, d + off, consumed, n - off, body, blen);
        }
        free(body);
        off += consumed;
        conn_next(c);
    }
    conn_free_parser(c);
}

/* ================================================================ entry points */

/* The lowest free descriptor: a descriptor left open by one input raises
 * it. libFuzzer's own threads may hold one for a moment, so a change must
 * last to count. */
static int fd_probe(void)
{
    int fd = dup(0);
    if (fd >= 0)
        close(fd);
    return fd;
}

static int fd_leaked(int base)
{
    for (int i = 0; i < 50; i++) {
        if (fd_probe() == base)
            return 0;
        usleep(1000);
    }
    return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    zf_core_config_register();
    zf_log_level = -1; /* silent: the parser's own lines are not the point */
    ignore_list = getenv("ZF_FUZZ_IGNORE");
    print_stats = getenv("ZF_FUZZ_STATS") && *getenv("ZF_FUZZ_STATS") == '1';
    if (print_stats)
        atexit(report_stats);
    verbose = getenv("ZF_FUZZ_VERBOSE") && *getenv("ZF_FUZZ_VERBOSE") == '1';
    return 0;
}

static void configure(uint8_t ctl)
{
    if (ctl & 1) {
        zf_http_cfg.max_request_line = 64;
        zf_http_cfg.max_header_size = 256;
        zf_http_cfg.max_headers = 4;
        zf_http_cfg.max_body_size = 32;
    } else {
        zf_http_cfg.max_request_line = 8192;
        zf_http_cfg.max_header_size = 65536;
        zf_http_cfg.max_headers = 100;
        zf_http_cfg.max_body_size = 1 << 30;
    }
    /* as the module's configure() does: http-parser's own limit just above ours */
    http_parser_set_max_header_size(
        (uint32_t)(zf_http_cfg.max_request_line + zf_http_cfg.max_header_size + 4096));
    zf_cfg.input_spool = (ctl & 2) ? 8 : 1 << 20;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t steps[] = {1, 2, 3, 7, 16, 64, 512, 0};
    if (size < 2)
        return 0;
    cur_data = data;
    cur_len = size;
    st.inputs++;
    int fd_base = fd_probe();
    configure(data[0]);
    const char *d = (const char *)data + 2;
    size_t n = size - 2;

    struct tr whole = {0}, split = {0};
    int whole_status, split_status;
    struct splitter all = {0, 0};
    read_all(d, n, &all, &whole, &whole_status, 1);
    struct splitter sp = {0x9e3779b97f4a7c15ULL ^ ((uint64_t)data[1] << 17) ^ n,
                          steps[(data[0] >> 2) & 7]};
    if (!sp.max)
        sp.max = n / 2 + 1; /* a few large pieces */
    read_all(d, n, &sp, &split, &split_status, 0);
    if (whole.len != split.len || (whole.len && memcmp(whole.p, split.p, whole.len) != 0)) {
        /* find the first request that differs, for the message */
        size_t i = 0;
        while (i < whole.len && i < split.len && whole.p[i] == split.p[i])
            i++;
        violation("split",
                  "reading the input in one piece and in pieces of 1..%zu bytes differ "
                  "(transcripts of %zu and %zu bytes differ from byte %zu; statuses %d / %d)",
                  sp.max, whole.len, split.len, i, whole_status, split_status);
    }
    INVARIANT("split-status", whole_status == split_status,
              "rejected with %d in one piece, %d in pieces of 1..%zu bytes", whole_status,
              split_status, sp.max);
    free(whole.p);
    free(split.p);

    INVARIANT("leak-exchange", zf_exchange_count() == 0, "%zu exchanges alive",
              zf_exchange_count());
    INVARIANT("leak-fd", !fd_leaked(fd_base), "lowest free descriptor %d, was %d", fd_probe(),
              fd_base);
    cur_data = NULL;
    return 0;
}
