/* HTTP/2 streams, response side: the application's response pulled from
 * the exchange by an nghttp2 data provider, and zfront's own error pages.
 *
 * The data provider answers with NGHTTP2_DATA_FLAG_NO_COPY, so nghttp2
 * never copies body bytes: send_body builds each DATA frame (9-byte header,
 * then the bytes of the exchange's current segment: copied for DATA
 * segments, pread for FILE segments) in a pooled buffer and adds it to the
 * output by reference. It does so only as the flow-control windows open and
 * while the output buffer has room, so a 1 GiB file is never in memory and
 * a stalled stream does not hold up the others. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "h2.h"

static void on_output(struct zf_exchange *ex);
const struct zf_exchange_ops zf__h2_exchange_ops = {.on_output = on_output,
                                                    .evict = zf__h2_evict};

/* --------------------------------------------------------- our own answers */

static const struct {
    int status;
    const char *body;
} errors[] = {
    {400, "400 Bad Request\n"},
    {408, "408 Request Timeout: the request body stopped arriving\n"},
    {413, "413 Content Too Large: the request body exceeds the limit\n"},
    {431, "431 Request Header Fields Too Large\n"},
    {500, "500 Internal Server Error\n"},
    {501, "501 Not Implemented\n"},
};

static ssize_t read_errbody(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *source, void *user_data)
{
    (void)session;
    (void)id;
    (void)user_data;
    struct zf_h2_stream *st = source->ptr;
    size_t n = st->errlen - st->erroff;
    if (n > length)
        n = length;
    memcpy(buf, st->errbody + st->erroff, n);
    st->erroff += n;
    st->sent += n;
    if (st->erroff == st->errlen)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* Answers the stream with a short text/plain error page of our own; the
 * request (still arriving or not) is ignored from now on. Safe inside
 * nghttp2 callbacks. */
void zf__h2_respond_error(struct zf_h2_stream *st, int status)
{
    struct zf_h2_conn *c = st->c;
    if (st->submitted) {
        nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    st->state = ZF_H2_REJECTED;
    st->status = status;
    st->errbody = "error\n";
    for (size_t i = 0; i < ZF_ARRAY_LEN(errors); i++)
        if (errors[i].status == status)
            st->errbody = errors[i].body;
    st->errlen = strlen(st->errbody);
    zf__h2_body_mem_drop(st);
    zf_spool_free(&st->body);
    char code[8], len[24];
    snprintf(code, sizeof code, "%d", status);
    snprintf(len, sizeof len, "%zu", st->errlen);
    nghttp2_nv nv[] = {NV(":status", code), NV("content-type", "text/plain; charset=utf-8"),
                       NV("content-length", len), NV("server", ZF_SERVER_NAME),
                       NV("date", zf_http_date())};
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_errbody};
    st->submitted = 1;
    if (nghttp2_submit_response(c->session, st->id, nv, ZF_ARRAY_LEN(nv), &prd) != 0)
        nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
}

/* ---------------------------------------------------------------- response */

/* Makes st->seg the segment to send next, taking it from the exchange.
 * Returns 1 when there is one; 0 with st->finished/failed up to date.
 *
 * Only one segment is ever taken ahead of the flow-control window (nghttp2
 * calls read_body only while the window is open): what the client has not
 * made room for stays queued in the exchange, where it counts, so the
 * exchange's own suspension holds the application back over HTTP/2 as it
 * does over HTTP/1.1. */
static int fill(struct zf_h2_stream *st)
{
    if (st->seg)
        return 1;
    if (st->finished)
        return 0;
    struct zf_segment *s;
    while ((s = zf_exchange_take(st->ex, &st->finished, &st->failed)) && s->len == 0)
        zf_segment_free(s);
    st->seg = s;
    st->seg_off = 0;
    return s != NULL;
}

static ssize_t read_body(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *source, void *user_data)
{
    (void)session;
    (void)buf;
    struct zf_h2_stream *st = source->ptr;
    struct zf_h2_conn *c = user_data;
    if (!fill(st)) {
        if (!st->finished) {
            st->deferred = 1;
            return NGHTTP2_ERR_DEFERRED;
        }
        if (st->failed) {
            zf_log(ZF_LOG_INFO, &c->conn,
                   "http2: stream %d: the application failed mid-body: "
                   "resetting the stream",
                   id);
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    size_t left = st->seg->len - st->seg_off;
    size_t n = left < length ? left : length;
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    /* zf_exchange_take told whether this segment was the last one; when
     * the worker finishes later, an empty DATA frame ends the stream */
    if (n == left && st->finished && !st->failed)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* Reads exactly n bytes of fd at off. Returns ZF_OK or ZF_ERROR. */
static int pread_all(int fd, void *buf, size_t n, off_t off)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return ZF_ERROR;
        p += r;
        off += r;
        n -= (size_t)r;
    }
    return ZF_OK;
}

/* DATA frames are built in buffers from a small free list and handed to
 * the output by reference, so a steady download reuses the same few pages:
 * buffers taken fresh from malloc on every frame (and given back to the
 * kernel when the heap shrinks) cost a page fault per 4 KiB, which showed
 * as a third of the loop's time in profiles of TLS downloads. */
#define FRAME_BUF (9 + 256 + 65536)
#define FRAME_CACHE 128
static void *frame_free[FRAME_CACHE];
static size_t frame_nfree;

static void *frame_get(void)
{
    return frame_nfree ? frame_free[--frame_nfree] : malloc(FRAME_BUF);
}

/* evbuffer cleanup: the frame was written (or the buffer freed). */
static void frame_put(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    if (frame_nfree < FRAME_CACHE)
        frame_free[frame_nfree++] = arg;
    else
        free(arg);
}

/* Writes one whole DATA frame (header + `length` bytes of the current
 * segment) into the output, or asks nghttp2 to retry later when the output
 * buffer is full. A file that cannot be read resets the stream. */
int zf__h2_send_body(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
                     size_t length, nghttp2_data_source *source, void *user_data)
{
    (void)session;
    struct zf_h2_conn *c = user_data;
    struct zf_h2_stream *st = source->ptr;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (evbuffer_get_length(out) >= ZF_H2_OUT_HIGH)
        return NGHTTP2_ERR_WOULDBLOCK;
    size_t pad = frame->data.padlen; /* we never ask for padding; handled anyway */
    size_t total = 9 + (pad ? 1 : 0) + length + (pad > 1 ? pad - 1 : 0);
    if (total > FRAME_BUF)
        return NGHTTP2_ERR_CALLBACK_FAILURE; /* cannot happen: frames are <= 64 KiB */
    uint8_t *buf = frame_get();
    if (!buf)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    uint8_t *p = buf;
    memcpy(p, framehd, 9);
    p += 9;
    if (pad)
        *p++ = (uint8_t)(pad - 1);
    struct zf_segment *s = st->seg;
    if (s->type == ZF_SEG_DATA) {
        memcpy(p, s->data + st->seg_off, length);
    } else if ((errno = 0, pread_all(s->fd, p, length, s->offset + (off_t)st->seg_off)) != ZF_OK) {
        zf_log(ZF_LOG_ERROR, &c->conn, "http2: stream %d: cannot read the response file: %s",
               st->id, errno ? strerror(errno) : "file shorter than announced");
        frame_put(NULL, 0, buf);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (pad > 1)
        memset(p + length, 0, pad - 1);
    if (evbuffer_add_reference(out, buf, total, frame_put, buf) != 0) {
        frame_put(NULL, 0, buf);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    st->sent += length;
    c->data_sent += length;
    c->conn.action = "sending a response body";
    st->seg_off += length;
    if (st->seg_off == s->len) {
        zf_segment_free(s);
        st->seg = NULL;
        st->seg_off = 0;
    }
    return 0;
}

/* h2 forbids connection-specific fields (RFC 9113 8.2.2). */
static int h2_forbidden(const char *name)
{
    static const char *const names[] = {"connection",        "keep-alive", "proxy-connection",
                                        "transfer-encoding", "upgrade",    "te"};
    for (size_t i = 0; i < ZF_ARRAY_LEN(names); i++)
        if (strcasecmp(name, names[i]) == 0)
            return 1;
    return name[0] == ':';
}

/* A field name of token characters and a value without CR, LF or NUL. */
static int valid_field(const struct zf_header *f)
{
    if (f->name_len == 0)
        return 0;
    for (size_t i = 0; i < f->name_len; i++)
        if (!zf_http_is_tchar((unsigned char)f->name[i]))
            return 0;
    for (size_t i = 0; i < f->value_len; i++)
        if (f->value[i] == '\r' || f->value[i] == '\n' || f->value[i] == 0)
            return 0;
    return 1;
}

/* Submits the application's response headers with a data provider.
 * Returns ZF_OK, ZF_AGAIN (not ready yet) or ZF_ERROR (stream reset). */
static int submit_response(struct zf_h2_stream *st)
{
    struct zf_h2_conn *c = st->c;
    struct zf_exchange *ex = st->ex;
    if (!zf_exchange_take_headers(ex)) {
        struct zf_segment *s = zf_exchange_take(ex, &st->finished, &st->failed);
        zf_segment_free(s);
        if (!st->finished)
            return ZF_AGAIN;
        zf_log(ZF_LOG_ERROR, &c->conn, "http2: stream %d: the application ended without a response",
               st->id);
        zf__h2_respond_error(st, 500);
        return ZF_OK;
    }
    /* Range requests on file responses are answered by the bridge (206/416
     * with Content-Range), the same for every protocol. */
    int status = ex->status;
    if (status < 200 || status > 999) {
        /* no interim status can end an HTTP/2 exchange */
        zf_log(ZF_LOG_ERROR, &c->conn, "http2: stream %d: the application answered status %d",
               st->id, status);
        zf__h2_respond_error(st, 500);
        return ZF_OK;
    }
    if (st->upgrade && status >= 200 && status < 300)
        return zf__h2_tunnel_open(st); /* the app allowed the extended CONNECT */
    int64_t clen = ex->content_length;
    int nobody = ex->is_head || status == 204 || status == 304;

    struct zf_headers *h = &ex->resp_headers;
    size_t names = 0;
    for (size_t i = 0; i < h->n; i++)
        names += h->v[i].name_len + 1;
    nghttp2_nv *nv = malloc((h->n + 4) * sizeof *nv);
    char *lower = malloc(names + 1);
    if (!nv || !lower) {
        free(nv);
        free(lower);
        st->submitted = 1;
        nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
        return ZF_ERROR;
    }
    char code[8], len[24];
    snprintf(code, sizeof code, "%d", status);
    size_t k = 0;
    nv[k++] = (nghttp2_nv)NV(":status", code);
    int have_date = 0, have_server = 0, have_len = 0;
    char *lp = lower;
    for (size_t i = 0; i < h->n; i++) {
        const struct zf_header *f = &h->v[i];
        if (h2_forbidden(f->name) || !valid_field(f)) {
            zf_log(ZF_LOG_WARN, &c->conn,
                   "http2: stream %d: dropping the response header "
                   "field \"%.40s\" (not allowed or invalid in HTTP/2)",
                   st->id, f->name);
            continue;
        }
        for (size_t j = 0; j < f->name_len; j++)
            lp[j] = (char)((f->name[j] >= 'A' && f->name[j] <= 'Z') ? f->name[j] + 32 : f->name[j]);
        lp[f->name_len] = 0;
        have_len |= strcmp(lp, "content-length") == 0;
        have_date |= strcmp(lp, "date") == 0;
        have_server |= strcmp(lp, "server") == 0;
        nv[k++] = (nghttp2_nv){(uint8_t *)lp, (uint8_t *)f->value, f->name_len, f->value_len,
                               NGHTTP2_NV_FLAG_NONE};
        lp += f->name_len + 1;
    }
    if (!have_len && clen >= 0 && status != 204 && status != 304) {
        snprintf(len, sizeof len, "%lld", (long long)clen);
        nv[k++] = (nghttp2_nv)NV("content-length", len);
    }
    if (!have_date)
        nv[k++] = (nghttp2_nv)NV("date", zf_http_date());
    if (!have_server)
        nv[k++] = (nghttp2_nv)NV("server", ZF_SERVER_NAME);
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_body};
    int rv = nghttp2_submit_response(c->session, st->id, nv, k, nobody ? NULL : &prd);
    free(nv);
    free(lower);
    st->submitted = 1;
    st->status = status;
    if (rv != 0) {
        zf_log(ZF_LOG_ERROR, &c->conn, "http2: stream %d: cannot submit the response: %s", st->id,
               nghttp2_strerror(rv));
        nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
        return ZF_ERROR;
    }
    return ZF_OK;
}

/* ---------------------------------------------------- flow-control stalls */

/* True when the stream has response output that only the client's window
 * keeps from going out: headers sent, body not ended, and a segment in hand
 * or queued in the exchange (or the worker done). */
static int output_waiting(struct zf_h2_stream *st)
{
    if (st->state != ZF_H2_APP || !st->submitted || st->complete || st->deferred)
        return 0;
    if (st->seg || st->finished)
        return 1;
    struct zf_exchange *ex = st->ex;
    pthread_mutex_lock(&ex->lock);
    int waiting = ex->seg_head != NULL || ex->done;
    pthread_mutex_unlock(&ex->lock);
    return waiting;
}

/* Called once a second: a stream whose send window stays shut while its
 * output waits holds the exchange (queued bytes, a spool file, the
 * application's suspended iterator) for as long as the client likes; after
 * http.send_timeout (no byte sent, window shut at every tick) it is reset
 * (CANCEL) and its exchange aborted. A shut
 * connection window does that to every stream: the connection is closed
 * with GOAWAY(ENHANCE_YOUR_CALM). Returns the number of streams with a
 * response still going (the tick keeps running for them). */
size_t zf__h2_check_output(struct zf_h2_conn *c, uint64_t now)
{
    uint64_t limit = zf_http_cfg.send_timeout_ms;
    int conn_shut = nghttp2_session_get_remote_window_size(c->session) <= 0;
    int conn_waiting = 0;
    size_t n = 0;
    for (struct zf_h2_stream *st = c->streams, *next; st; st = next) {
        next = st->next;
        if (st->state != ZF_H2_APP || st->complete)
            continue;
        n++;
        int waiting = output_waiting(st);
        conn_waiting |= waiting;
        /* a busy stream's window is shut most of the time (the client's
         * WINDOW_UPDATE is used up at once): only a window that stayed shut
         * with no byte sent since the last tick is a stall */
        if (!waiting || nghttp2_session_get_stream_remote_window_size(c->session, st->id) > 0 ||
            st->sent != st->stall_sent) {
            st->stall_since = 0;
            st->stall_sent = st->sent;
            continue;
        }
        if (!st->stall_since) {
            st->stall_since = now;
        } else if (limit && now - st->stall_since >= limit && !st->stall_reset) {
            zf_log(ZF_LOG_INFO, &c->conn,
                   "http2: stream %d: flow-control window shut for %llu ms with output "
                   "waiting (http.send_timeout): resetting the stream",
                   st->id, (unsigned long long)(now - st->stall_since));
            st->stall_reset = 1;
            nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
        }
    }
    if (!conn_shut || !conn_waiting || c->data_sent != c->stall_sent) {
        c->stall_since = 0;
        c->stall_sent = c->data_sent;
    } else if (!c->stall_since) {
        c->stall_since = now;
    } else if (limit && now - c->stall_since >= limit && !c->closing) {
        zf_log(ZF_LOG_INFO, &c->conn,
               "http2: connection flow-control window shut for %llu ms with output waiting "
               "(http.send_timeout): closing",
               (unsigned long long)(now - c->stall_since));
        nghttp2_session_terminate_session(c->session, NGHTTP2_ENHANCE_YOUR_CALM);
        c->closing = 1;
    }
    return n;
}

/* The worker produced something for this stream (loop thread). */
static void on_output(struct zf_exchange *ex)
{
    struct zf_h2_stream *st = ex->proto;
    struct zf_h2_conn *c = st->c;
    if (c->dead || st->state != ZF_H2_APP)
        return;
    if (!st->submitted) {
        if (submit_response(st) == ZF_AGAIN)
            return;
    } else if (st->deferred) {
        st->deferred = 0;
        nghttp2_session_resume_data(c->session, st->id);
    }
    zf__h2_flush(c);
}
