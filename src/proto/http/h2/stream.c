/* HTTP/2 streams, request side: each stream's header block and body
 * (spooled per stream, like HTTP/1.1 bodies) become the same
 * protocol-neutral exchange as an HTTP/1.1 request; complete requests are
 * dispatched to the worker pool after the read that completed them. The
 * response side is response.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "../../../core/config.h"
#include "../../../core/metrics.h"
#include "h2.h"

size_t zf__h2_nstreams;

uint64_t zf__h2_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static char *dup_n(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

struct zf_h2_stream *zf__h2_get_stream(struct zf_h2_conn *c, int32_t id)
{
    return nghttp2_session_get_stream_user_data(c->session, id);
}

/* Request bodies held in memory on one connection are capped at
 * ZF_H2_BODY_MEM: beyond it every further body of that connection goes to
 * its temp file at once, so 100 concurrent uploads cannot hold 100 x
 * wsgi.input_spool of memory. */
#define ZF_H2_BODY_MEM (4u * 1024 * 1024)

void zf__h2_body_mem_drop(struct zf_h2_stream *st)
{
    st->c->body_mem -= st->body_mem;
    st->body_mem = 0;
}

/* ------------------------------------------------------------- lifetime */

/* A new stream linked into c (NULL when out of memory). */
static struct zf_h2_stream *stream_new(struct zf_h2_conn *c, int32_t id)
{
    struct zf_h2_stream *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->c = c;
    st->id = id;
    st->declared_len = -1;
    st->last_recv_ms = zf_now_ms();
    zf_spool_init(&st->body, zf_cfg.input_spool, zf_cfg.tmp_dir);
    st->next = c->streams;
    if (c->streams)
        c->streams->prev = st;
    c->streams = st;
    c->nstreams++;
    zf__h2_nstreams++;
    zf__h2_streams_changed(c);
    return st;
}

/* One combined-format line per stream that was answered or reached the
 * application. A response the client aborted (RST_STREAM, connection gone)
 * before its END_STREAM went out is logged too, as nginx does: status 499
 * when no response headers were sent yet, else the real status, with the
 * body bytes sent so far. */
void zf__h2_access_log(struct zf_h2_stream *st)
{
    struct zf_exchange *ex = st->ex;
    if (!ex)
        return;
    int status = st->status;
    if (!st->complete && st->state == ZF_H2_APP && !st->submitted)
        status = 499;
    if (!status)
        return;
    uint64_t duration_us = st->start_us ? zf__h2_now_us() - st->start_us : 0;
    zf_metrics_request(ex->channel, status, duration_us);
    if (!zf_access_log_enabled())
        return;
    struct zf_access_entry e = {
        .remote_addr = ex->remote_addr,
        .method = ex->method,
        .target = ex->target,
        .protocol = ex->protocol,
        .status = status,
        .bytes_sent = st->sent,
        .referer = zf_headers_get(&ex->req_headers, "referer"),
        .user_agent = zf_headers_get(&ex->req_headers, "user-agent"),
        .remote_user = zf_exchange_remote_user(ex),
        .duration_us = duration_us,
    };
    zf_access_log(&e);
}

/* Unlinks and frees a stream. Its exchange is released when the worker
 * finished it, aborted otherwise (the worker stops producing). */
static void stream_free(struct zf_h2_stream *st)
{
    struct zf_h2_conn *c = st->c;
    zf__h2_access_log(st);
    if (st->tunnel)
        zf__h2_tunnel_stream_gone(st->tunnel);
    if (st->ex) {
        if (st->state == ZF_H2_APP && !st->finished)
            zf_exchange_abort(st->ex);
        else
            zf_exchange_release(st->ex);
    }
    zf_segment_free(st->seg);
    zf__h2_body_mem_drop(st);
    zf_spool_free(&st->body);
    free(st->method);
    free(st->path);
    free(st->authority);
    free(st->protocol);
    free(st->cookie);
    if (st->prev)
        st->prev->next = st->next;
    else
        c->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    c->nstreams--;
    zf__h2_nstreams--;
    free(st);
    if (!c->dead)
        zf__h2_streams_changed(c);
}

void zf__h2_free_streams(struct zf_h2_conn *c)
{
    while (c->streams)
        stream_free(c->streams);
}

/* ----------------------------------------------------------------- request */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct zf_h2_conn *c = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct zf_h2_stream *st = stream_new(c, frame->hd.stream_id);
    if (!st)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    st->ex = zf_exchange_new(&zf__h2_exchange_ops, st, &c->conn);
    if (!st->ex) {
        stream_free(st);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, st);
    c->conn.action = "reading HTTP/2 request headers";
    return 0;
}

/* Keeps pseudo-headers aside and the regular fields in the exchange, within
 * h2.max_header_list_size and http.max_headers (431). nghttp2 has already
 * checked the field syntax and the HTTP/2 rules (lowercase, no
 * connection-specific fields, pseudo-header order). */
static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    (void)session;
    (void)flags;
    struct zf_h2_conn *c = user_data;
    /* Every decoded field counts, refused or not: nghttp2 expands and
     * checks each one, so a block of tiny references to a big table entry
     * costs CPU however it ends. Past the limit, stop decoding now. */
    if (zf__h2_count_abuse(c, ZF_H2_HEADER_BYTES, namelen + valuelen + 32) != ZF_OK)
        return NGHTTP2_ERR_PAUSE;
    struct zf_h2_stream *st = zf__h2_get_stream(c, frame->hd.stream_id);
    if (!st || st->state != ZF_H2_HEADERS)
        return 0; /* trailers: ignored */
    st->header_bytes += namelen + valuelen + 32;
    if (st->header_bytes > zf_h2_cfg.max_header_list_size && !st->reject) {
        zf_log(ZF_LOG_INFO, &c->conn, "http2: stream %d: header list over %llu bytes: 431", st->id,
               (unsigned long long)zf_h2_cfg.max_header_list_size);
        st->reject = 431;
    }
    if (st->reject)
        return 0;
    const char *n = (const char *)name, *v = (const char *)value;
    char **pseudo = NULL;
    if (namelen > 0 && n[0] == ':') {
        if (namelen == 7 && memcmp(n, ":method", 7) == 0)
            pseudo = &st->method;
        else if (namelen == 5 && memcmp(n, ":path", 5) == 0)
            pseudo = &st->path;
        else if (namelen == 10 && memcmp(n, ":authority", 10) == 0)
            pseudo = &st->authority;
        else if (namelen == 9 && memcmp(n, ":protocol", 9) == 0)
            pseudo = &st->protocol;
        if (pseudo && !*pseudo && !(*pseudo = dup_n(v, valuelen)))
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        return 0;
    }
    if (++st->nheaders > zf_http_cfg.max_headers && zf_http_cfg.max_headers > 0) {
        zf_log(ZF_LOG_INFO, &c->conn, "http2: stream %d: more than %ld header fields: 431", st->id,
               zf_http_cfg.max_headers);
        st->reject = 431;
        return 0;
    }
    /* As ZServer did: X_Forwarded_For must not become HTTP_X_FORWARDED_FOR. */
    if (memchr(n, '_', namelen))
        return 0;
    if (namelen == 6 && memcmp(n, "cookie", 6) == 0) {
        /* RFC 9113 8.2.3: split cookie fields are joined with "; " */
        char *p = realloc(st->cookie, st->cookie_len + 2 + valuelen + 1);
        if (!p)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        if (st->cookie_len) {
            memcpy(p + st->cookie_len, "; ", 2);
            st->cookie_len += 2;
        }
        memcpy(p + st->cookie_len, v, valuelen);
        st->cookie_len += valuelen;
        p[st->cookie_len] = 0;
        st->cookie = p;
        return 0;
    }
    if (namelen == 14 && memcmp(n, "content-length", 14) == 0)
        st->declared_len = strtoll(v, NULL, 10);
    if (zf_headers_add(&st->ex->req_headers, n, namelen, v, valuelen) != ZF_OK)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

static void request_complete(struct zf_h2_stream *st);

/* The request header block ended: build the exchange's request line and
 * Host, apply the limits, answer Expect: 100-continue. */
static void headers_complete(struct zf_h2_stream *st, int end_stream)
{
    struct zf_h2_conn *c = st->c;
    struct zf_exchange *ex = st->ex;
    if (st->reject) {
        zf__h2_respond_error(st, st->reject);
        zf__h2_count_abuse(c, ZF_H2_REFUSED, 1);
        return;
    }
    if (!st->method || !st->path) {
        /* CONNECT (no :path): extended CONNECT is not enabled here */
        zf__h2_respond_error(st, st->method && strcmp(st->method, "CONNECT") == 0 ? 501 : 400);
        return;
    }
    if (zf_exchange_set_target(ex, st->method, strlen(st->method), st->path, strlen(st->path)) !=
        ZF_OK) {
        zf__h2_respond_error(st, 500);
        return;
    }
    ex->protocol = "HTTP/2";
    ex->scheme = c->scheme;
    ex->channel = c->channel;
    snprintf(ex->server_host, sizeof ex->server_host, "%s", c->server_host);
    ex->server_port = c->server_port;
    int ok = 1;
    if (st->authority) {
        /* :authority is the Host of HTTP/2 (RFC 9113 8.3.1) */
        struct zf_headers *h = &ex->req_headers;
        size_t i = 0;
        while (i < h->n && strcasecmp(h->v[i].name, "host") != 0)
            i++;
        if (i < h->n) {
            char *v = strdup(st->authority);
            ok = v != NULL;
            if (v) {
                free(h->v[i].value);
                h->v[i].value = v;
                h->v[i].value_len = strlen(v);
            }
        } else {
            ok = zf_headers_add(h, "host", 4, st->authority, strlen(st->authority)) == ZF_OK;
        }
    }
    if (st->cookie)
        ok = ok &&
             zf_headers_add(&ex->req_headers, "cookie", 6, st->cookie, st->cookie_len) == ZF_OK;
    if (!ok) {
        zf__h2_respond_error(st, 500);
        return;
    }
    if (zf_http_cfg.max_body_size && st->declared_len > (int64_t)zf_http_cfg.max_body_size) {
        zf_log(ZF_LOG_INFO, &c->conn,
               "http2: stream %d: Content-Length %lld over "
               "http.max_body_size: 413",
               st->id, (long long)st->declared_len);
        zf__h2_respond_error(st, 413);
        return;
    }
    if (st->protocol) {
        /* extended CONNECT (nghttp2 checked its form): the request is
         * complete now, its DATA frames are the tunnel */
        if (zf__h2_tunnel_check(st) == ZF_OK) {
            st->state = ZF_H2_BODY;
            request_complete(st);
        }
        return;
    }
    st->state = ZF_H2_BODY;
    const char *expect = zf_headers_get(&ex->req_headers, "expect");
    if (!end_stream && expect && strcasecmp(expect, "100-continue") == 0) {
        nghttp2_nv nv[] = {NV(":status", "100")};
        nghttp2_submit_headers(c->session, NGHTTP2_FLAG_NONE, st->id, NULL, nv, 1, NULL);
    }
}

/* END_STREAM: the body is complete. The stream is dispatched after the
 * current read (see zf__h2_dispatch_ready). */
static void request_complete(struct zf_h2_stream *st)
{
    struct zf_h2_conn *c = st->c;
    if (st->state != ZF_H2_BODY)
        return;
    struct zf_exchange *ex = st->ex;
    zf__h2_body_mem_drop(st);
    zf_spool_take(&st->body, &ex->body);
    if (st->declared_len < 0 && st->body_len > 0) {
        /* HTTP/2 bodies need no Content-Length; WSGI wants CONTENT_LENGTH */
        char len[24];
        int n = snprintf(len, sizeof len, "%llu", (unsigned long long)st->body_len);
        if (zf_headers_add(&ex->req_headers, "content-length", 14, len, (size_t)n) != ZF_OK) {
            zf__h2_respond_error(st, 500);
            return;
        }
    }
    if (c->nready == c->ready_cap) {
        size_t cap = c->ready_cap ? c->ready_cap * 2 : 16;
        int32_t *r = realloc(c->ready, cap * sizeof *r);
        if (!r) {
            zf__h2_respond_error(st, 500);
            return;
        }
        c->ready = r;
        c->ready_cap = cap;
    }
    c->ready[c->nready++] = st->id;
    st->state = ZF_H2_READY;
}

void zf__h2_dispatch_ready(struct zf_h2_conn *c)
{
    for (size_t i = 0; i < c->nready; i++) {
        struct zf_h2_stream *st = zf__h2_get_stream(c, c->ready[i]);
        if (!st || st->state != ZF_H2_READY)
            continue; /* reset in the same read: never reaches a worker */
        st->state = ZF_H2_APP;
        st->start_us = zf__h2_now_us();
        st->ex->start_us = st->start_us;
        zf_exchange_dispatch(st->ex);
    }
    c->nready = 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *user_data)
{
    (void)session;
    (void)flags;
    struct zf_h2_conn *c = user_data;
    struct zf_h2_stream *st = zf__h2_get_stream(c, id);
    if (st && st->tunnel) {
        zf__h2_tunnel_data(st->tunnel, data, len);
        return 0;
    }
    if (!st || st->state != ZF_H2_BODY || st->protocol)
        return 0; /* (a tunnel's bytes before it opened are dropped) */
    c->conn.action = "reading an HTTP/2 request body";
    st->last_recv_ms = zf_now_ms();
    st->body_len += len;
    if (zf_http_cfg.max_body_size && st->body_len > zf_http_cfg.max_body_size) {
        zf_log(ZF_LOG_INFO, &c->conn,
               "http2: stream %d: body over http.max_body_size "
               "(%llu bytes): 413",
               id, (unsigned long long)zf_http_cfg.max_body_size);
        zf__h2_respond_error(st, 413);
        return 0;
    }
    if (st->body.fd < 0 && c->body_mem + len > ZF_H2_BODY_MEM)
        st->body.threshold = 0; /* spill this one to its temp file now */
    if (zf_spool_write(&st->body, data, len) != ZF_OK) {
        zf_log(ZF_LOG_ERROR, &c->conn, "http2: stream %d: cannot spool the request body in %s: %s",
               id, zf_cfg.tmp_dir, strerror(errno));
        zf__h2_respond_error(st, 500);
        return 0;
    }
    if (st->body.fd >= 0) {
        zf__h2_body_mem_drop(st);
    } else {
        st->body_mem += len;
        c->body_mem += len;
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)session;
    struct zf_h2_conn *c = user_data;
    struct zf_h2_stream *st;
    int end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    switch (frame->hd.type) {
    case NGHTTP2_DATA:
        if (frame->hd.length == 0 && !end)
            zf__h2_count_abuse(c, ZF_H2_CONTROL, 1);
        if (end && (st = zf__h2_get_stream(c, frame->hd.stream_id)))
            request_complete(st);
        break;
    case NGHTTP2_HEADERS:
        st = zf__h2_get_stream(c, frame->hd.stream_id);
        if (!st)
            break;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST && st->state == ZF_H2_HEADERS)
            headers_complete(st, end);
        if (end)
            request_complete(st);
        break;
    case NGHTTP2_PING:
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
            zf__h2_count_abuse(c, ZF_H2_CONTROL, 1);
        break;
    case NGHTTP2_PRIORITY:
        zf__h2_count_abuse(c, ZF_H2_CONTROL, 1);
        break;
    case NGHTTP2_RST_STREAM:
        /* Rapid reset is work begun and thrown away: only a reset of a
         * stream still alive here counts. One for a stream already closed
         * costs nothing, and well-behaved clients send them: python3-h2
         * answers the frames that crossed its own RST_STREAM with
         * RST_STREAM(STREAM_CLOSED), so cancellations on a busy server
         * counted two or three times each. nghttp2's token bucket (setup
         * in conn.c) still bounds every incoming RST_STREAM. */
        if (zf__h2_get_stream(c, frame->hd.stream_id))
            zf__h2_count_abuse(c, ZF_H2_RESET, 1);
        break;
    default:
        break;
    }
    return 0;
}

/* After we ended a stream that the client is still sending on (an early
 * 413/408/431), tell it to stop with RST_STREAM(NO_ERROR) (RFC 9113 8.1). */
static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct zf_h2_conn *c = user_data;
    if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM) ||
        (frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS))
        return 0;
    struct zf_h2_stream *st = zf__h2_get_stream(c, frame->hd.stream_id);
    if (st)
        st->complete = 1; /* the whole response is out */
    if (st && (st->state == ZF_H2_REJECTED || st->tunnel) &&
        nghttp2_session_get_stream_remote_close(session, st->id) == 0)
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t error_code,
                           void *user_data)
{
    (void)session;
    struct zf_h2_conn *c = user_data;
    struct zf_h2_stream *st = zf__h2_get_stream(c, id);
    if (!st)
        return 0;
    if (error_code != NGHTTP2_NO_ERROR && st->state == ZF_H2_APP && !st->finished)
        zf_log(ZF_LOG_DEBUG, &c->conn, "http2: stream %d closed before the response ended: %s", id,
               nghttp2_http2_strerror(error_code));
    nghttp2_session_set_stream_user_data(session, id, NULL);
    stream_free(st);
    return 0;
}

void zf__h2_evict(struct zf_exchange *ex)
{
    struct zf_h2_stream *st = ex->proto;
    struct zf_h2_conn *c = st->c;
    zf__h2_access_log(st); /* now: the stream forgets its exchange */
    st->ex = NULL;
    zf_exchange_abort(ex);
    zf_segment_free(st->seg);
    st->seg = NULL;
    st->finished = st->failed = 1; /* read_body resets the stream, if asked */
    nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_ENHANCE_YOUR_CALM);
    zf__h2_flush(c);
}

int zf__h2_upgrade_stream(struct zf_h2_conn *c, struct zf_exchange *ex)
{
    struct zf_h2_stream *st = stream_new(c, 1);
    if (!st) {
        zf_exchange_release(ex);
        return ZF_ERROR;
    }
    st->ex = ex;
    ex->ops = &zf__h2_exchange_ops;
    ex->proto = st;
    ex->conn = &c->conn;
    ex->conn_id = c->conn.id;
    nghttp2_session_set_stream_user_data(c->session, 1, st);
    c->max_client_stream = 1;
    st->state = ZF_H2_APP;
    st->start_us = zf__h2_now_us();
    ex->start_us = st->start_us;
    zf_exchange_dispatch(ex);
    return ZF_OK;
}

size_t zf__h2_check_stalled(struct zf_h2_conn *c, uint64_t now)
{
    size_t n = 0;
    for (struct zf_h2_stream *st = c->streams; st; st = st->next) {
        if (st->state != ZF_H2_HEADERS && st->state != ZF_H2_BODY)
            continue;
        uint64_t limit = zf_http_cfg.body_timeout_ms;
        if (limit && now - st->last_recv_ms > limit) {
            zf_log(ZF_LOG_INFO, &c->conn,
                   "http2: stream %d: request body stalled for %llu ms: "
                   "408",
                   st->id, (unsigned long long)(now - st->last_recv_ms));
            zf__h2_respond_error(st, 408);
            continue;
        }
        n++;
    }
    return n;
}

void zf__h2_stream_callbacks(nghttp2_session_callbacks *cbs)
{
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_send_data_callback(cbs, zf__h2_send_body);
}
