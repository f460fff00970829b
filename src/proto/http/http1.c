/* HTTP/1.1 connections: limits and timeouts, request bodies read completely
 * before dispatch (spliced into the spool file where they can be),
 * pipelining, and the response writer that pulls from the exchange as the
 * socket drains. Request parsing (libhttp-parser and the checks its
 * non-strict Debian build leaves to us) is in h1_parse.c; the state both
 * share is in h1.h.
 *
 * One connection carries at most one exchange at a time. The parser pauses
 * at the end of each request; bytes of the next (pipelined) request stay in
 * the bufferevent's input, capped by its read high watermark, until the
 * current response has been queued completely. A connection is never freed
 * inside a callback chain: close_now() marks it dead and a zero-timeout
 * event ("reaper") frees it from the loop. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <fcntl.h>
#include <http_parser.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "h1.h"
#include "metrics.h"
#ifdef ZF_WITH_HTTP2
#include "tls.h"
#endif

/* The open connections, most recently active first: a connection moves to
 * the head when it is accepted and when a request of it is dispatched or
 * answered, so the tail is where shedding starts (least recently active). */
static struct {
    struct h1conn *head, *tail;
    size_t open;
    uint64_t accepted, requests, client_errors, timeouts, aborted, shed, spliced;
    int stopping_now;
} h1;

static void list_unlink(struct h1conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else if (h1.head == c)
        h1.head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else if (h1.tail == c)
        h1.tail = c->prev;
    c->prev = c->next = NULL;
}

static void list_push(struct h1conn *c)
{
    c->prev = NULL;
    c->next = h1.head;
    if (h1.head)
        h1.head->prev = c;
    h1.head = c;
    if (!h1.tail)
        h1.tail = c;
}

/* The connection did something useful: it goes last in the shedding order. */
static void touch(struct h1conn *c)
{
    if (h1.head != c) {
        list_unlink(c);
        list_push(c);
    }
}


static void close_now(struct h1conn *c);
static void splice_stop(struct h1conn *c);
static void close_after_flush(struct h1conn *c);
static void process_input(struct h1conn *c);
static void pump(struct h1conn *c);
static void hand_to_upgrade(struct h1conn *c);

static void set_timer(struct h1conn *c, uint64_t ms)
{
    if (!c->timer)
        return;
    if (!ms) {
        evtimer_del(c->timer);
        return;
    }
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    evtimer_add(c->timer, &tv);
}

/* Lets go of the file body being sliced (the output keeps the slices it
 * already holds: the segment is reference counted). */
void zf__h1_drop_file(struct h1conn *c)
{
    if (c->file)
        evbuffer_file_segment_free(c->file);
    c->file = NULL;
    c->file_pos = 0;
    c->file_left = 0;
}

/* ------------------------------------------------------------ responses we make */

static void access_log(struct h1conn *c, struct zf_exchange *ex, int status, uint64_t bytes)
{
    uint64_t start = ex && ex->start_us ? ex->start_us : c->msg_start_us;
    zf_metrics_request(ex ? ex->channel : c->channel, status, start ? now_us() - start : 0);
    if (!zf_access_log_enabled())
        return;
    struct zf_access_entry e = {0};
    e.remote_addr = c->conn.peer_addr;
    e.status = status;
    e.bytes_sent = bytes;
    if (ex && ex->method) {
        e.method = ex->method;
        e.target = ex->target;
        e.protocol = ex->protocol;
        e.referer = zf_headers_get(&ex->req_headers, "Referer");
        e.user_agent = zf_headers_get(&ex->req_headers, "User-Agent");
        e.remote_addr = ex->remote_addr;
        e.remote_user = zf_exchange_remote_user(ex);
    } else {
        e.method = c->method[0] ? c->method : NULL;
        e.target = c->url.len ? c->url.p : NULL;
        e.protocol = c->headers_done ? (c->http10 ? "HTTP/1.0" : "HTTP/1.1") : NULL;
    }
    e.duration_us = start ? now_us() - start : 0;
    zf_access_log(&e);
}

/* Queues a small text/plain response that zfront makes itself (errors),
 * always with Connection: close. Returns the body length. */
static size_t write_simple(struct h1conn *c, int status, const char *text)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    char body[320];
    int n = snprintf(body, sizeof body, "%d %s: %s\n", status, zf_http_reason(status), text);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof body)
        n = sizeof body - 1;
    int head = strcmp(c->method, "HEAD") == 0;
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nDate: %s\r\nServer: " ZF_SERVER_NAME "\r\n"
                        "Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
                        "Connection: close\r\n\r\n",
                        status, zf_http_reason(status), zf_http_date(), n);
    if (!head)
        evbuffer_add(out, body, (size_t)n);
    return head ? 0 : (size_t)n;
}

/* Answers the request being read with c->error_status and closes the
 * connection once that is written. The request never reaches a worker. */
static void reject(struct h1conn *c)
{
    splice_stop(c);
    int status = c->error_status ? c->error_status : 400;
    const char *text = c->error_text[0] ? c->error_text : "malformed request";
    if (status >= 500)
        zf_log(ZF_LOG_ERROR, &c->conn, "%d: %s", status, text);
    else if (status == 408)
        zf_log(ZF_LOG_INFO, &c->conn, "%d: %s", status, text);
    else
        zf_log(ZF_LOG_WARN, &c->conn, "%d: %s", status, text);
    if (status == 408)
        h1.timeouts++;
    else if (status < 500)
        h1.client_errors++;
    size_t n = write_simple(c, status, text);
    access_log(c, NULL, status, n);
    if (c->ex) {
        zf_exchange_abort(c->ex);
        c->ex = NULL;
    }
    close_after_flush(c);
}

/* ------------------------------------------------------------ the response */

static int valid_field(const char *s, size_t n, int name)
{
    if (name && n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (name ? !zf_http_is_tchar(ch) : (ch < 0x20 && ch != '\t') || ch == 0x7f)
            return 0;
    }
    return 1;
}

/* Writes the status line and header section of c->ex's response and
 * decides its framing: Content-Length, chunked (HTTP/1.1 without a length)
 * or close-delimited (HTTP/1.0 without a length); and whether the
 * connection stays open after it. */
static void write_head(struct h1conn *c)
{
    struct zf_exchange *ex = c->ex;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    int status = ex->status;
    int informational = status < 200;
    c->no_body = ex->is_head || informational || status == 204 || status == 304;
    c->clen = ex->content_length;
    c->chunked = !c->no_body && c->clen < 0 && !c->http10;
    c->close_delimited = !c->no_body && c->clen < 0 && c->http10;
    long maxreq = zf_http_cfg.max_keepalive_requests;
    c->keep_alive = c->req_keep_alive && !c->close_delimited && !informational &&
                    (!zf_srv || zf_srv->state == ZF_RUNNING) &&
                    (maxreq <= 0 || c->requests + 1 < (unsigned long)maxreq);

    const char *sl = ex->status_line;
    if (sl && valid_field(sl, strlen(sl), 0))
        evbuffer_add_printf(out, "HTTP/1.1 %s\r\n", sl);
    else
        evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n", status, zf_http_reason(status));
    int have_date = 0, have_server = 0;
    for (size_t i = 0; i < ex->resp_headers.n; i++) {
        const struct zf_header *h = &ex->resp_headers.v[i];
        have_date |= h->name_len == 4 && strncasecmp(h->name, "Date", 4) == 0;
        have_server |= h->name_len == 6 && strncasecmp(h->name, "Server", 6) == 0;
    }
    if (!have_date)
        evbuffer_add_printf(out, "Date: %s\r\n", zf_http_date());
    if (!have_server)
        evbuffer_add_printf(out, "Server: %s\r\n", ZF_SERVER_NAME);
    for (size_t i = 0; i < ex->resp_headers.n; i++) {
        const struct zf_header *h = &ex->resp_headers.v[i];
        if (zf_http_is_hop_by_hop(h->name, h->name_len) ||
            (h->name_len == 14 && strncasecmp(h->name, "Content-Length", 14) == 0))
            continue;
        if (!valid_field(h->name, h->name_len, 1) || !valid_field(h->value, h->value_len, 0)) {
            zf_log(ZF_LOG_WARN, &c->conn,
                   "dropping an invalid response header field from "
                   "the application");
            continue;
        }
        evbuffer_add(out, h->name, h->name_len);
        evbuffer_add(out, ": ", 2);
        evbuffer_add(out, h->value, h->value_len);
        evbuffer_add(out, "\r\n", 2);
    }
    if (c->clen >= 0 && status != 204 && status != 304 && !informational)
        evbuffer_add_printf(out, "Content-Length: %lld\r\n", (long long)c->clen);
    if (c->chunked)
        evbuffer_add(out, "Transfer-Encoding: chunked\r\n", 28);
    if (!c->keep_alive)
        evbuffer_add(out, "Connection: close\r\n", 19);
    else if (c->http10)
        evbuffer_add(out, "Connection: keep-alive\r\n", 24);
    evbuffer_add(out, "\r\n", 2);
}

/* Queues the next slice of the file body being sent. Returns ZF_OK or
 * ZF_ERROR (out of memory). */
static int write_file_slice(struct h1conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t n = c->file_left < H1_FILE_SLICE ? c->file_left : H1_FILE_SLICE;
    if (c->chunked)
        evbuffer_add_printf(out, "%zx\r\n", n);
    if (evbuffer_add_file_segment(out, c->file, c->file_pos, (ev_off_t)n) != 0)
        return ZF_ERROR;
    if (c->chunked)
        evbuffer_add(out, "\r\n", 2);
    c->file_pos += (ev_off_t)n;
    c->file_left -= n;
    c->sent += n;
    if (c->file_left == 0)
        zf__h1_drop_file(c);
    return ZF_OK;
}

/* Queues one body segment (which it consumes) to the output, within the
 * Content-Length and with chunk framing when chunked. Returns ZF_OK or
 * ZF_ERROR (out of memory: the connection must close). */
static int write_segment(struct h1conn *c, struct zf_segment *s)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t n = s->len;
    if (c->no_body) {
        zf_segment_free(s);
        return ZF_OK;
    }
    if (c->clen >= 0 && (uint64_t)c->clen - c->sent < n) {
        n = (size_t)((uint64_t)c->clen - c->sent);
        if (!c->warned_excess) {
            c->warned_excess = 1;
            zf_log(ZF_LOG_WARN, &c->conn,
                   "the application sent more than its Content-Length "
                   "(%lld): the excess is dropped",
                   (long long)c->clen);
        }
    }
    if (n == 0) {
        zf_segment_free(s);
        return ZF_OK;
    }
    if (s->type == ZF_SEG_FILE) {
        /* the segment (and so the fd) is freed once the last slice is sent */
        c->file = evbuffer_file_segment_new(s->fd, s->offset, (ev_off_t)n,
                                            EVBUF_FS_CLOSE_ON_FREE);
        if (!c->file) {
            zf_segment_free(s);
            return ZF_ERROR;
        }
        s->fd = -1;
        zf_segment_free(s);
        c->file_pos = 0;
        c->file_left = n;
        return write_file_slice(c);
    }
    if (c->chunked)
        evbuffer_add_printf(out, "%zx\r\n", n);
    int rc;
    if (n >= 4096) {
        /* counted against server.max_buffered until the output lets go */
        rc = zf_hold_add_reference(c->hold, out, s, n) == ZF_OK ? 0 : -1;
    } else {
        rc = evbuffer_add(out, s->data, n);
        zf_segment_free(s);
    }
    if (rc != 0)
        return ZF_ERROR;
    if (c->chunked)
        evbuffer_add(out, "\r\n", 2);
    c->sent += n;
    return ZF_OK;
}

/* The response was queued completely (or failed): log it, let go of the
 * exchange, then either close or go on with the next request. */
static void end_response(struct h1conn *c, int failed)
{
    struct zf_exchange *ex = c->ex;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    int must_close = !c->keep_alive;
    if (failed) {
        zf_log(ZF_LOG_WARN, &c->conn,
               "the response body is incomplete (application error): "
               "closing the connection");
        must_close = 1;
    } else if (c->chunked) {
        evbuffer_add(out, "0\r\n\r\n", 5);
    } else if (!c->no_body && c->clen >= 0 && c->sent < (uint64_t)c->clen) {
        zf_log(ZF_LOG_WARN, &c->conn,
               "the response body ended %llu bytes short of its "
               "Content-Length: closing the connection",
               (unsigned long long)((uint64_t)c->clen - c->sent));
        must_close = 1;
    }
    ex->bytes_sent = c->sent;
    access_log(c, ex, ex->status, c->sent);
    zf_exchange_release(ex);
    c->ex = NULL;
    c->requests++;
    h1.requests++;
    zf__h1_reset_message(c);
    if (must_close) {
        close_after_flush(c);
        return;
    }
    touch(c);
    c->state = H1_IDLE;
    c->conn.action = "keep-alive";
    set_timer(c, zf_http_cfg.keepalive_timeout_ms);
    process_input(c); /* pipelined requests already buffered */
}

/* The worker finished without producing a response header (the bridge
 * normally answers 500 itself): answer 500 and close. */
static void no_response(struct h1conn *c)
{
    zf_log(ZF_LOG_ERROR, &c->conn, "the application produced no response");
    size_t n = write_simple(c, 500, "the application produced no response");
    access_log(c, c->ex, 500, n);
    zf_exchange_release(c->ex);
    c->ex = NULL;
    close_after_flush(c);
}

/* Moves the response from the exchange to the socket's output: the header
 * first, then body segments while the output holds less than H1_OUT_HIGH.
 * Called when the worker produced something and when the output drained. */
static void pump(struct h1conn *c)
{
    struct zf_exchange *ex = c->ex;
    if (!ex || (c->state != H1_APP && c->state != H1_SEND))
        return;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    int finished = 0, failed = 0;
    if (!c->head_sent) {
        if (!zf_exchange_take_headers(ex)) {
            struct zf_segment *s = zf_exchange_take(ex, &finished, &failed);
            if (s)
                zf_segment_free(s);
            if (finished)
                no_response(c);
            return;
        }
        if (c->upgrade && ex->status >= 200 && ex->status < 300) {
            hand_to_upgrade(c); /* the app allowed the protocol switch */
            return;
        }
        zf_exchange_set_hold(ex, c->hold);
        write_head(c);
        c->head_sent = 1;
        c->state = H1_SEND;
        c->conn.action = "sending response";
        bufferevent_setwatermark(c->bev, EV_WRITE, H1_OUT_LOW, 0);
    }
    while (evbuffer_get_length(out) < H1_OUT_HIGH) {
        if (c->file) {
            if (write_file_slice(c) != ZF_OK) {
                zf_log(ZF_LOG_ERROR, &c->conn, "cannot queue response data: out of memory");
                close_now(c);
                return;
            }
            continue;
        }
        struct zf_segment *s = zf_exchange_take(ex, &finished, &failed);
        if (!s) {
            if (finished)
                end_response(c, failed);
            return;
        }
        if (write_segment(c, s) != ZF_OK) {
            zf_log(ZF_LOG_ERROR, &c->conn, "cannot queue response data: out of memory");
            close_now(c);
            return;
        }
    }
}

static void on_output(struct zf_exchange *ex)
{
    struct h1conn *c = ex->proto;
    if (!c || c->ex != ex || c->state == H1_DEAD)
        return;
    pump(c);
}

static void reset_now(struct h1conn *c);

/* The server is over its output budget and this response holds the most:
 * reset the connection (the kernel drops what it holds for it too). */
static void evict(struct zf_exchange *ex)
{
    struct h1conn *c = ex->proto;
    if (c && c->ex == ex && c->state != H1_DEAD)
        reset_now(c);
}

const struct zf_exchange_ops zf__h1_ops = {on_output, evict};

/* Over the output budget, the output of this connection (a response the
 * exchange already let go of) holds the most: reset it. */
static void evict_hold(void *proto)
{
    struct h1conn *c = proto;
    if (c->state != H1_DEAD)
        reset_now(c);
}

/* ------------------------------------------------------------ the input side */

/* Gives the connection to HTTP/2 (zf_h2c in http.h): the bufferevent with
 * what its input still holds and, for an h2c upgrade, the complete request,
 * which becomes stream 1. This h1conn is reaped without touching either. */
static void hand_to_h2(struct h1conn *c, struct zf_exchange *ex)
{
    struct bufferevent *bev = c->bev;
    struct zf_conn conn = c->conn;
    c->bev = NULL;
    c->ex = NULL;
    c->state = H1_DEAD;
    evtimer_del(c->timer);
    event_active(c->reaper, EV_TIMEOUT, 0);
    zf_h2c->start(c->ep, bev, &conn, ex);
}

/* Upgrade: h2c on a plain connection (RFC 7540 3.2): 101, then HTTP/2 with
 * this request as stream 1. Returns 1 when the connection was handed over. */
static int try_h2c_upgrade(struct h1conn *c)
{
    if (!zf_h2c || !c->ep || c->ep->tls || c->http10 || !zf_h2c->upgrade_wanted(c->ex))
        return 0;
    struct zf_exchange *ex = c->ex;
    zf_spool_take(&c->spool, &ex->body);
    zf_log(ZF_LOG_DEBUG, &c->conn, "%s %s %s: upgrading to h2c", ex->method, ex->target,
           ex->protocol);
    hand_to_h2(c, ex);
    return 1;
}

/* Gives the connection to the module registered for the request's Upgrade
 * token (server.h): the access log says 101, the module writes it. */
static void hand_to_upgrade(struct h1conn *c)
{
    struct zf_exchange *ex = c->ex;
    struct bufferevent *bev = c->bev;
    struct zf_conn conn = c->conn;
    access_log(c, ex, 101, 0);
    h1.requests++;
    c->bev = NULL;
    c->ex = NULL;
    c->state = H1_DEAD;
    evtimer_del(c->timer);
    event_active(c->reaper, EV_TIMEOUT, 0);
    c->upgrade->start(bev, &conn, ex);
    zf_exchange_abort(ex); /* the app's body, if any, is not wanted */
}

/* A request to switch to a protocol a module registered: refused here (bad
 * handshake), switched at once, or dispatched for the app to authorise
 * (c->upgrade set). Returns 1 when the request was dealt with here. */
static int try_upgrade(struct h1conn *c)
{
    struct zf_exchange *ex = c->ex;
    const char *tok = c->parser.upgrade ? zf_headers_get(&ex->req_headers, "Upgrade") : NULL;
    const struct zf_upgrade *u = tok ? zf_upgrade_find(tok, strcspn(tok, " \t,/")) : NULL;
    if (!u)
        return 0;
    const char *why = "bad protocol upgrade request";
    int rc = u->check(ex, &why);
    if (rc == ZF_DECLINED)
        return 0;
    if (rc != ZF_OK && rc != ZF_AGAIN) {
        c->error_status = rc >= 400 && rc < 600 ? rc : 400;
        snprintf(c->error_text, sizeof c->error_text, "%s", why);
        reject(c);
        return 1;
    }
    c->upgrade = u;
    c->req_keep_alive = 0; /* refused: what follows the request is not HTTP */
    if (rc == ZF_OK)
        return 0;
    zf_spool_take(&c->spool, &ex->body);
    hand_to_upgrade(c);
    return 1;
}

/* The request is complete: hand the body to the exchange and the exchange
 * to the worker pool. Parsing stays paused until its response is queued. */
static void dispatch(struct h1conn *c)
{
    struct zf_exchange *ex = c->ex;
    if (try_h2c_upgrade(c))
        return;
    if (try_upgrade(c))
        return;
    zf_spool_take(&c->spool, &ex->body);
    ex->start_us = now_us();
    touch(c);
    c->state = H1_APP;
    c->conn.action = "waiting for the application";
    set_timer(c, 0);
    zf_log(ZF_LOG_DEBUG, &c->conn, "%s %s %s", ex->method, ex->target, ex->protocol);
    zf_exchange_dispatch(ex);
}

/* The client shut its side while we wait for more of a request: close,
 * after whatever response is still being written. */
static void input_ended(struct h1conn *c)
{
    if (c->state == H1_BODY) {
        zf_log(ZF_LOG_INFO, &c->conn,
               "client closed the connection after %llu bytes of the "
               "request body",
               (unsigned long long)c->body_bytes);
        h1.aborted++;
    } else if (c->state == H1_HEAD && c->in_msg) {
        zf_log(ZF_LOG_INFO, &c->conn, "client closed the connection with an incomplete request");
    }
    if (c->ex) {
        zf_exchange_abort(c->ex);
        c->ex = NULL;
    }
    close_after_flush(c);
}

/* Stops reading the body with splice (done, or the connection is
 * closing): the pipe goes, and the bufferevent reads again. */
static void splice_stop(struct h1conn *c)
{
    if (c->splice_ev) {
        event_free(c->splice_ev);
        c->splice_ev = NULL;
        if (c->bev)
            bufferevent_enable(c->bev, EV_READ);
    }
    if (c->piped) {
        close(c->pipefd[0]);
        close(c->pipefd[1]);
        c->piped = 0;
    }
}

/* The socket is readable while a body is spliced: moves what is there to
 * the spool file, a bounded amount per call. Ends with the request
 * dispatched, or the connection closing (client gone: the request never
 * reaches the application; spool write failed: 500). */
static void splice_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct h1conn *c = arg;
    uint64_t before = c->body_bytes;
    for (int i = 0; i < H1_SPLICE_ROUNDS && c->body_bytes < c->body_expected; i++) {
        uint64_t left = c->body_expected - c->body_bytes;
        ssize_t r = zf_spool_splice(&c->spool, fd, c->pipefd,
                                    left < H1_SPLICE_PIPE ? (size_t)left : H1_SPLICE_PIPE);
        if (r > 0) {
            c->body_bytes += (uint64_t)r;
            c->spliced += (uint64_t)r;
            h1.spliced += (uint64_t)r;
            continue;
        }
        if (r < 0 && errno == EAGAIN)
            break;
        int err = errno;
        splice_stop(c);
        if (r == 0) {
            c->read_closed = 1;
            input_ended(c);
        } else if (err == ECONNRESET || err == EPIPE || err == ETIMEDOUT || err == ENOTCONN) {
            h1.aborted++;
            zf_log(ZF_LOG_INFO, &c->conn,
                   "client connection lost (%s) after %llu bytes of the request body",
                   strerror(err), (unsigned long long)c->body_bytes);
            close_now(c);
        } else {
            zf__h1_fail(c, 500, "cannot store the request body: %s", strerror(err));
            reject(c);
        }
        return;
    }
    if (c->body_bytes != before)
        set_timer(c, zf_http_cfg.body_timeout_ms);
    if (c->body_bytes == c->body_expected) {
        splice_stop(c);
        zf_log(ZF_LOG_DEBUG, &c->conn, "request body: %llu of %llu bytes spliced to the spool file",
               (unsigned long long)c->spliced, (unsigned long long)c->body_expected);
        c->msg_done = 1;
        dispatch(c);
    }
}

/* A Content-Length body going to a spool file on a plain socket, with
 * enough of it left and nothing buffered: the rest is spliced from the
 * socket into the file (no copy through user space). Any failure to set
 * it up leaves the usual path in place. */
static void maybe_splice(struct h1conn *c)
{
    evutil_socket_t fd = c->bev ? bufferevent_getfd(c->bev) : -1;
    if (c->splice_ev || c->state != H1_BODY || c->read_closed || c->error_status || fd < 0 ||
        !c->ep || c->ep->tls || c->spool.fd < 0 || c->body_expected < c->body_bytes ||
        c->body_expected - c->body_bytes < H1_SPLICE_MIN ||
        evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        return;
    if (pipe2(c->pipefd, O_NONBLOCK | O_CLOEXEC) != 0)
        return;
    c->piped = 1;
    fcntl(c->pipefd[1], F_SETPIPE_SZ, H1_SPLICE_PIPE); /* a smaller pipe only means more calls */
    c->splice_ev = event_new(bufferevent_get_base(c->bev), fd, EV_READ | EV_PERSIST, splice_cb, c);
    if (!c->splice_ev || event_add(c->splice_ev, NULL) != 0) {
        splice_stop(c);
        return;
    }
    bufferevent_disable(c->bev, EV_READ);
}

static void process_input_once(struct h1conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (c->state == H1_IDLE || c->state == H1_HEAD || c->state == H1_BODY) {
        size_t avail = evbuffer_get_length(in);
        if (avail == 0)
            break;
        size_t len, used = 0;
        const char *data;
        if (c->state == H1_IDLE) {
            /* the first byte of a request after keep-alive: its header
             * section must now arrive within the header timeout */
            c->state = H1_HEAD;
            c->conn.action = "reading request line";
            set_timer(c, zf_http_cfg.header_timeout_ms);
        }
        if (!c->in_msg) {
            len = avail < H1_PRESCAN ? avail : H1_PRESCAN;
            data = (const char *)evbuffer_pullup(in, (ev_ssize_t)len);
            /* h2c prior knowledge: the client preface as the first bytes of
             * a plain connection (http-parser would reject "PRI") */
            if (c->requests == 0 && zf_h2c && c->ep && !c->ep->tls) {
                int m = zf_h2c->preface(data, len);
                if (m == 1) {
                    hand_to_h2(c, NULL);
                    return;
                }
                if (m == 0)
                    break; /* a prefix of the preface: wait for the rest */
            }
        } else {
            struct evbuffer_iovec v;
            if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
                break;
            data = v.iov_base;
            len = v.iov_len;
        }
        uint64_t body_before = c->body_bytes;
        int rc = zf__h1_parse_some(c, data, len, &used);
        evbuffer_drain(in, used);
        if (rc == ZF_ERROR) {
            reject(c);
            return;
        }
        if (c->headers_done && c->state == H1_HEAD) {
            c->state = H1_BODY;
            c->conn.action = "reading request body";
            set_timer(c, zf_http_cfg.body_timeout_ms);
        } else if (c->body_bytes != body_before) {
            set_timer(c, zf_http_cfg.body_timeout_ms);
        }
        if (c->msg_done) {
            dispatch(c);
            return;
        }
        if (c->state == H1_BODY && c->expect_continue > 0 && !c->continue_sent &&
            c->body_bytes == 0) {
            c->continue_sent = 1;
            evbuffer_add(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
        }
        if (rc == ZF_AGAIN && used == 0)
            break; /* the start of a request is incomplete: wait for more */
    }
    if (c->read_closed && (c->state == H1_IDLE || c->state == H1_HEAD || c->state == H1_BODY))
        input_ended(c);
    else if (c->state == H1_BODY)
        maybe_splice(c);
}

/* Parses what the input holds, as far as the state allows. Safe to call
 * again from inside itself (the outer call loops once more). */
static void process_input(struct h1conn *c)
{
    if (c->busy) {
        c->again = 1;
        return;
    }
    c->busy = 1;
    do {
        c->again = 0;
        process_input_once(c);
    } while (c->again && c->state != H1_DEAD);
    c->busy = 0;
}

/* ------------------------------------------------------------ closing */

static void conn_free(struct h1conn *c)
{
    splice_stop(c);
    zf__h1_drop_file(c);
    if (c->ex) {
        zf_exchange_abort(c->ex);
        c->ex = NULL;
    }
    list_unlink(c);
    h1.open--;
    zf_hold_close(c->hold); /* what the output still holds stays counted until freed */
    if (c->bev) {
#ifdef ZF_WITH_HTTP2
        zf_tls_close_notify(c->bev); /* TLS only: keeps the session resumable */
#endif
        zf__http_bev_free(c->bev); /* its descriptor is free now */
        zf_conn_closed(); /* a connection handed to HTTP/2 keeps its count */
    }
    if (c->timer)
        event_free(c->timer);
    if (c->reaper)
        event_free(c->reaper);
    zf_spool_free(&c->spool);
    zf__h1_buf_free(&c->url);
    zf__h1_buf_free(&c->name);
    zf__h1_buf_free(&c->value);
    free(c);
    if (zf_srv && zf_srv->state == ZF_STOPPING && !h1.stopping_now)
        zf_server_check_idle();
}

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_free(arg);
}

/* A response is cut short (the client went away, or stopped reading past
 * the send timeout): its access-log line still goes out, as nginx writes
 * one: status 499 when no response header was sent yet, else the real
 * status, with the body bytes that left (those still in the output are
 * lost). */
static void log_cut_short(struct h1conn *c)
{
    struct zf_exchange *ex = c->ex;
    size_t queued = c->bev ? evbuffer_get_length(bufferevent_get_output(c->bev)) : 0;
    uint64_t body = c->sent > queued ? c->sent - queued : 0;
    int status = c->head_sent ? ex->status : 499;
    zf_log(ZF_LOG_INFO, &c->conn, "response aborted after %llu body bytes (logged as %d)",
           (unsigned long long)body, status);
    ex->bytes_sent = body;
    access_log(c, ex, status, body);
}

/* Closes the connection at once: output not yet written is dropped, an
 * exchange still running is aborted (the worker stops). The memory goes
 * when the loop runs the reaper. */
static void close_now(struct h1conn *c)
{
    if (c->state == H1_DEAD)
        return;
    if (c->ex && (c->state == H1_APP || c->state == H1_SEND))
        log_cut_short(c);
    splice_stop(c);
    c->state = H1_DEAD;
    c->conn.action = "closing";
    if (c->ex) {
        zf_exchange_abort(c->ex);
        c->ex = NULL;
    }
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
    if (c->timer)
        evtimer_del(c->timer);
    event_active(c->reaper, EV_TIMEOUT, 0);
}

/* Closes the connection with a TCP reset: the kernel drops what it still
 * holds for a client that stopped reading, instead of keeping the socket
 * around to deliver it. */
static void reset_now(struct h1conn *c)
{
    struct linger lg = {1, 0};
    evutil_socket_t fd = c->bev ? bufferevent_getfd(c->bev) : -1; /* NULL: handed to h2 */
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close_now(c);
}

/* Our side is done: shut the write side and read (dropping it) what the
 * client still sends for a moment, so that a response followed by unread
 * request data is not destroyed by a TCP reset. */
static void start_linger(struct h1conn *c)
{
    if (c->read_closed) {
        close_now(c);
        return;
    }
    c->state = H1_LINGER;
    c->conn.action = "closing";
#ifdef ZF_WITH_HTTP2
    zf_tls_close_notify(c->bev); /* TLS only: before our FIN */
#endif
    shutdown(bufferevent_getfd(c->bev), SHUT_WR);
    struct evbuffer *in = bufferevent_get_input(c->bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    bufferevent_enable(c->bev, EV_READ);
    set_timer(c, H1_LINGER_MS);
}

/* Closes the connection once the output queued so far is written. */
static void close_after_flush(struct h1conn *c)
{
    if (c->state == H1_DEAD || c->state == H1_FLUSH || c->state == H1_LINGER)
        return;
    c->state = H1_FLUSH;
    c->conn.action = "closing";
    set_timer(c, 0);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        start_linger(c);
        return;
    }
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
}

/* ------------------------------------------------------------ bufferevent callbacks */

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct h1conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    switch (c->state) {
    case H1_FLUSH:
    case H1_LINGER:
        evbuffer_drain(in, evbuffer_get_length(in));
        break;
    case H1_APP:
    case H1_SEND:
    case H1_DEAD:
        break; /* kept for later, up to the read high watermark */
    default:
        process_input(c);
        break;
    }
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    struct h1conn *c = arg;
    if (c->state == H1_SEND)
        pump(c);
    else if (c->state == H1_FLUSH && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        start_linger(c);
}

/* Deferred callbacks merge events: one call may carry a read EOF and a
 * write error together. Anything on the writing side, or a read error,
 * means the client is gone; a read EOF alone is a half-close. */
static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct h1conn *c = arg;
    if (what & BEV_EVENT_TIMEOUT) {
        h1.timeouts++;
        zf_log(ZF_LOG_INFO, &c->conn,
               "client took no response data for %llu ms "
               "(http.send_timeout): closing",
               (unsigned long long)zf_http_cfg.send_timeout_ms);
        reset_now(c);
        return;
    }
    if ((what & BEV_EVENT_ERROR) || ((what & BEV_EVENT_EOF) && (what & BEV_EVENT_WRITING))) {
        int err = EVUTIL_SOCKET_ERROR();
        if (c->state == H1_BODY || c->state == H1_APP || c->state == H1_SEND ||
            (c->state == H1_HEAD && c->in_msg)) {
            h1.aborted++;
            zf_log(ZF_LOG_INFO, &c->conn, "client connection lost (%s)",
                   (what & BEV_EVENT_ERROR) ? evutil_socket_error_to_string(err) : "end of file");
        }
        close_now(c);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        c->read_closed = 1;
        switch (c->state) {
        case H1_IDLE:
        case H1_HEAD:
        case H1_BODY:
            process_input(c);
            break;
        case H1_LINGER:
            close_now(c);
            break;
        default:
            /* A half-close is legal: finish the response (and any request
             * already buffered), then close. A client that went away for
             * good shows up as a write error. */
            break;
        }
    }
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct h1conn *c = arg;
    switch (c->state) {
    case H1_IDLE:
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) > 0) {
            /* still writing the last response: the send timeout guards that */
            set_timer(c, zf_http_cfg.keepalive_timeout_ms);
            return;
        }
        zf_log(ZF_LOG_DEBUG, &c->conn, "keep-alive timeout: closing");
        close_now(c);
        break;
    case H1_HEAD:
        zf__h1_fail(c, 408,
                    "the request header section did not arrive within %llu ms "
                    "(http.header_timeout)",
                    (unsigned long long)zf_http_cfg.header_timeout_ms);
        reject(c);
        break;
    case H1_BODY:
        zf__h1_fail(c, 408, "no request body data for %llu ms (http.body_timeout)",
                    (unsigned long long)zf_http_cfg.body_timeout_ms);
        reject(c);
        break;
    case H1_LINGER:
        close_now(c);
        break;
    default:
        break;
    }
}

/* ------------------------------------------------------------ starting */

/* The local address the client connected to (SERVER_NAME/SERVER_PORT when
 * the request has no Host; the listener may be bound to a wildcard). */
static void local_address(struct h1conn *c, evutil_socket_t fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)&ss;
        evutil_inet_ntop(AF_INET, &in->sin_addr, c->local_host, sizeof c->local_host);
        c->local_port = ntohs(in->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)&ss;
        evutil_inet_ntop(AF_INET6, &in6->sin6_addr, c->local_host, sizeof c->local_host);
        c->local_port = ntohs(in6->sin6_port);
    }
}

int zf_http1_start(struct zf_http_endpoint *ep, struct bufferevent *bev, const struct zf_conn *conn)
{
    zf__h1_init_settings();
    struct h1conn *c = calloc(1, sizeof *c);
    struct event_base *base = bufferevent_get_base(bev);
    if (c) {
        c->timer = evtimer_new(base, timer_cb, c);
        c->reaper = event_new(base, -1, 0, reap_cb, c);
        c->hold = zf_hold_new(evict_hold, c, &c->conn);
    }
    if (!c || !c->timer || !c->reaper || !c->hold) {
        zf_log(ZF_LOG_ERROR, conn, "out of memory for a new connection");
        if (c)
            zf_hold_close(c->hold);
        if (c && c->timer)
            event_free(c->timer);
        if (c && c->reaper)
            event_free(c->reaper);
        free(c);
        bufferevent_free(bev);
        zf_conn_closed();
        return ZF_ERROR;
    }
    c->conn = *conn;
    c->ep = ep;
    c->scheme = ep && ep->scheme ? ep->scheme : "http";
    c->channel = ep && ep->channel ? ep->channel : "http";
    c->bev = bev;
    zf_spool_init(&c->spool, 0, NULL);
    zf__h1_reset_message(c);

    local_address(c, bufferevent_getfd(bev));
    if (!c->local_host[0] && ep && ep->listener) {
        snprintf(c->local_host, sizeof c->local_host, "%s", ep->listener->host);
        c->local_port = ep->listener->port;
    }

    list_push(c);
    h1.open++;
    h1.accepted++;

    struct timeval send_tv = {(time_t)(zf_http_cfg.send_timeout_ms / 1000),
                              (suseconds_t)((zf_http_cfg.send_timeout_ms % 1000) * 1000)};
    bufferevent_setcb(bev, read_cb, write_cb, event_cb, c);
    bufferevent_setwatermark(bev, EV_READ, 0, H1_IN_MAX);
    bufferevent_setwatermark(bev, EV_WRITE, H1_OUT_LOW, 0);
    bufferevent_set_timeouts(bev, NULL, &send_tv);
    bufferevent_set_max_single_read(bev, H1_IN_MAX);
    bufferevent_enable(bev, EV_READ | EV_WRITE);

    c->state = H1_HEAD;
    c->conn.action = "reading request line";
    set_timer(c, zf_http_cfg.header_timeout_ms);
    if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
        bufferevent_trigger(bev, EV_READ, 0);
    return ZF_OK;
}

void zf_http_accept(struct zf_listener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                    void *arg)
{
    (void)l;
    struct zf_http_endpoint *ep = arg;
    struct zf_conn conn;
    zf_conn_init(&conn, "http", sa, (socklen_t)salen);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct bufferevent *bev =
        bufferevent_socket_new(zf_srv->base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!bev) {
        zf_log(ZF_LOG_ERROR, &conn, "cannot create a bufferevent: out of memory");
        evutil_closesocket(fd);
        return;
    }
    zf_conn_opened(); /* zf_http1_start takes the count over */
    zf_http1_start(ep, bev, &conn);
}

/* ------------------------------------------------------------ module hooks */

void zf__http1_stop(int graceful)
{
    struct h1conn *c = h1.head, *next;
    if (!graceful)
        h1.stopping_now = 1;
    for (; c; c = next) {
        next = c->next;
        c->ep = NULL;
        if (!graceful) {
            reset_now(c);
            event_del(c->reaper);
            conn_free(c);
            continue;
        }
        switch (c->state) {
        case H1_IDLE:
            if (evbuffer_get_length(bufferevent_get_output(c->bev)) > 0)
                close_after_flush(c); /* the end of its last response is still going out */
            else
                close_now(c);
            break;
        case H1_LINGER:
            close_now(c);
            break;
        case H1_HEAD:
            if (!c->in_msg)
                close_now(c);
            break;
        default:
            break; /* busy: its response goes out with Connection: close */
        }
    }
    h1.stopping_now = 0;
}

/* True for a connection whose closing loses nothing: idle between
 * requests or still sending its request line or header section (either
 * with its last response fully written: a pipelined request may start
 * while the previous answer still goes out), or already closing. */
static int sheddable(const struct h1conn *c)
{
    switch (c->state) {
    case H1_IDLE:
    case H1_HEAD:
        return evbuffer_get_length(bufferevent_get_output(c->bev)) == 0;
    case H1_LINGER:
        return 1;
    default:
        return 0;
    }
}

size_t zf__http1_shed(size_t n)
{
    size_t done = 0;
    struct h1conn *c = h1.tail, *prev;
    for (; c && done < n; c = prev) {
        prev = c->prev;
        if (!sheddable(c))
            continue;
        zf_log(ZF_LOG_DEBUG, &c->conn, "connection limit: closing this connection (%s)",
               c->state == H1_HEAD ? "still sending its request header section" : "idle");
        /* not inside any of its callbacks (we run from the listener's):
         * its descriptor goes now */
        close_now(c);
        event_del(c->reaper);
        conn_free(c);
        h1.shed++;
        done++;
    }
    return done;
}

size_t zf__http1_active(void)
{
    return h1.open;
}

void zf__http1_metrics(struct zf_metrics *m)
{
    zf_metrics_connections(m, "http1", h1.open, h1.accepted);
    zf_metrics_counter(m, "zfront_http1_requests_total", "HTTP/1.1 requests parsed.", NULL,
                       h1.requests);
    zf_metrics_counter(m, "zfront_http1_client_errors_total",
                       "HTTP/1.1 requests refused as malformed (4xx from zfront).", NULL,
                       h1.client_errors);
    zf_metrics_counter(m, "zfront_http1_timeouts_total",
                       "HTTP/1.1 connections closed by a read or write timeout.", NULL,
                       h1.timeouts);
    zf_metrics_counter(m, "zfront_http1_aborted_total",
                       "HTTP/1.1 responses cut because the client left.", NULL, h1.aborted);
    zf_metrics_counter(m, "zfront_http1_shed_total",
                       "HTTP/1.1 connections closed at server.max_connections.", NULL, h1.shed);
}

void zf__http1_stats(struct evbuffer *out)
{
    evbuffer_add_printf(out, "http.connections: %zu\n", h1.open);
    evbuffer_add_printf(out, "http.connections_total: %llu\n", (unsigned long long)h1.accepted);
    evbuffer_add_printf(out, "http.requests: %llu\n", (unsigned long long)h1.requests);
    evbuffer_add_printf(out, "http.client_errors: %llu\n", (unsigned long long)h1.client_errors);
    evbuffer_add_printf(out, "http.timeouts: %llu\n", (unsigned long long)h1.timeouts);
    evbuffer_add_printf(out, "http.aborted: %llu\n", (unsigned long long)h1.aborted);
    evbuffer_add_printf(out, "http.shed: %llu\n", (unsigned long long)h1.shed);
    evbuffer_add_printf(out, "http.body_spliced: %llu\n", (unsigned long long)h1.spliced);
}
