/* One HTTP/2 connection: an nghttp2 server session over a bufferevent (a
 * plain socket for h2c, OpenSSL for h2).
 *
 * Input: everything read is fed to nghttp2_session_mem_recv; streams whose
 * request completed are dispatched only after the whole read was processed,
 * so a request reset in the same read never reaches a worker.
 * Output: nghttp2 writes frames into the bufferevent's output buffer until
 * it holds ZF_H2_OUT_HIGH bytes, then is told NGHTTP2_ERR_WOULDBLOCK; the
 * write callback (low watermark ZF_H2_OUT_LOW) resumes it. Reading pauses
 * while the output is full, so a client that does not read cannot make us
 * queue without bound.
 * Timers: an idle timer (no open stream for h2.idle_timeout: GOAWAY and
 * close), the bufferevent's write timeout (http.send_timeout: a client that
 * stopped reading), and a 1 s tick while streams are open: uploads that
 * stalled (http.body_timeout) and responses whose flow-control window stayed
 * shut while output waits (http.send_timeout). */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "../tls.h"
#include "h2.h"

struct zf_h2_conn *zf__h2_conns;
size_t zf__h2_nconns;
uint64_t zf__h2_abusive;
uint64_t zf__h2_shed_count;

static nghttp2_session_callbacks *callbacks;
static nghttp2_option *option;

static const char preface[] = NGHTTP2_CLIENT_MAGIC; /* 24 bytes */

int zf__h2_preface_match(const void *buf, size_t len)
{
    size_t n = len < NGHTTP2_CLIENT_MAGIC_LEN ? len : NGHTTP2_CLIENT_MAGIC_LEN;
    if (memcmp(buf, preface, n) != 0)
        return -1;
    return len >= NGHTTP2_CLIENT_MAGIC_LEN ? 1 : 0;
}

/* ------------------------------------------------------ nghttp2 callbacks */

/* Appends a serialized frame to the output, or asks nghttp2 to wait while
 * the output buffer is full. */
static ssize_t send_cb(nghttp2_session *session, const uint8_t *data, size_t len, int flags,
                       void *user_data)
{
    (void)session;
    (void)flags;
    struct zf_h2_conn *c = user_data;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (evbuffer_get_length(out) >= ZF_H2_OUT_HIGH)
        return NGHTTP2_ERR_WOULDBLOCK;
    if (evbuffer_add(out, data, len) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return (ssize_t)len;
}

/* DATA frames as large as the client allows (default 16 KiB), at most 64
 * KiB. Over TLS a frame (9-byte header + payload) is sized to fill whole
 * 16 KiB TLS records: libevent writes each buffer chunk with one SSL_write,
 * and a 16 393-byte frame would cost a full record plus a 9-byte one. */
static ssize_t read_length_cb(nghttp2_session *session, uint8_t frame_type, int32_t stream_id,
                              int32_t session_window, int32_t stream_window,
                              uint32_t remote_max_frame_size, void *user_data)
{
    (void)session;
    (void)frame_type;
    (void)stream_id;
    struct zf_h2_conn *c = user_data;
    ssize_t n = remote_max_frame_size < 65536 ? (ssize_t)remote_max_frame_size : 65536;
    if (c->tls && n + 9 >= 16384)
        n = (n + 9) / 16384 * 16384 - 9;
    int32_t w = session_window < stream_window ? session_window : stream_window;
    if (w > 0 && w < n)
        n = w;
    return n > 0 ? n : 1;
}

static int error_cb(nghttp2_session *session, int lib_error_code, const char *msg, size_t len,
                    void *user_data)
{
    (void)session;
    struct zf_h2_conn *c = user_data;
    zf_log(ZF_LOG_DEBUG, &c->conn, "http2: %.*s (%s)", (int)len, msg,
           nghttp2_strerror(lib_error_code));
    return 0;
}

/* Drops the connection with GOAWAY(code), from inside an nghttp2 callback
 * or outside: no more input is processed. */
static void conn_error(struct zf_h2_conn *c, uint32_t code)
{
    if (c->closing)
        return;
    nghttp2_session_terminate_session(c->session, code);
    c->closing = 1;
}

/* Every frame header, before nghttp2 looks at the frame.
 *
 * RFC 9113 5.1.1: a client's new stream id must be greater than every id
 * it used before. nghttp2 1.52 ignores a HEADERS frame on a lower id that
 * it does not know (it cannot tell "never opened" from "closed and
 * forgotten"), or knows only as a PRIORITY placeholder; we know the highest
 * id the client opened, and that no stream of ours is behind it, so that is
 * a connection PROTOCOL_ERROR.
 * (Trailers on an open stream, and frames on streams nghttp2 still keeps
 * as closed, go on to nghttp2, which answers STREAM_CLOSED where due.)
 *
 * Header blocks: the raw bytes of one block (HEADERS + CONTINUATION) are
 * counted; a block larger than twice h2.max_header_list_size (HPACK never
 * needs that much for a list we would accept) drops the connection with
 * ENHANCE_YOUR_CALM. Empty CONTINUATION frames count as control frames. */
static int on_begin_frame(nghttp2_session *session, const nghttp2_frame_hd *hd, void *user_data)
{
    struct zf_h2_conn *c = user_data;
    if (c->closing)
        return 0;
    if (hd->type == NGHTTP2_HEADERS) {
        int32_t id = hd->stream_id;
        nghttp2_stream *known = nghttp2_session_find_stream(session, id);
        if (id > 0 && (id & 1) && id <= c->max_client_stream &&
            !nghttp2_session_get_stream_user_data(session, id) &&
            (!known || nghttp2_stream_get_state(known) == NGHTTP2_STREAM_STATE_IDLE)) {
            zf_log(ZF_LOG_INFO, &c->conn,
                   "http2: HEADERS opening stream %d after stream %d: PROTOCOL_ERROR", id,
                   c->max_client_stream);
            conn_error(c, NGHTTP2_PROTOCOL_ERROR);
            return 0;
        }
        if (id > c->max_client_stream && (id & 1))
            c->max_client_stream = id;
        c->block_bytes = 0;
    }
    if (hd->type == NGHTTP2_HEADERS || hd->type == NGHTTP2_CONTINUATION) {
        c->block_bytes += hd->length;
        if (c->block_bytes > 2 * zf_h2_cfg.max_header_list_size) {
            zf_log(ZF_LOG_WARN, &c->conn,
                   "http2: stream %d: header block over %llu bytes: dropping the connection",
                   hd->stream_id, (unsigned long long)(2 * zf_h2_cfg.max_header_list_size));
            zf__h2_abusive++;
            conn_error(c, NGHTTP2_ENHANCE_YOUR_CALM);
            return 0;
        }
        if (hd->type == NGHTTP2_CONTINUATION && hd->length == 0 &&
            !(hd->flags & NGHTTP2_FLAG_END_HEADERS))
            zf__h2_count_abuse(c, ZF_H2_CONTROL, 1);
    }
    return 0;
}

/* Builds the callback table and the session options once. Returns ZF_OK or
 * ZF_ERROR (out of memory). */
static int setup_library(void)
{
    if (callbacks)
        return ZF_OK;
    if (nghttp2_session_callbacks_new(&callbacks) != 0 || nghttp2_option_new(&option) != 0)
        return ZF_ERROR;
    nghttp2_session_callbacks_set_send_callback(callbacks, send_cb);
    nghttp2_session_callbacks_set_data_source_read_length_callback(callbacks, read_length_cb);
    nghttp2_session_callbacks_set_error_callback2(callbacks, error_cb);
    nghttp2_session_callbacks_set_on_begin_frame_callback(callbacks, on_begin_frame);
    zf__h2_stream_callbacks(callbacks);

    /* Our own per-window reset count closes abusers first (with a log line);
     * nghttp2's token bucket is a looser backstop. */
    uint64_t burst = (uint64_t)(zf_h2_cfg.max_resets > 0 ? zf_h2_cfg.max_resets : 1) * 2;
    uint64_t secs = zf_h2_cfg.limit_window_ms / 1000;
    uint64_t rate = burst / 2 / (secs ? secs : 1);
    nghttp2_option_set_stream_reset_rate_limit(option, burst, rate ? rate : 1);
    nghttp2_option_set_max_outbound_ack(option, 1000); /* SETTINGS/PING ACKs queued */
    nghttp2_option_set_max_settings(option, 32);
    /* No nghttp2_option_set_no_closed_streams: closed streams stay known to
     * nghttp2 (about max_concurrent_streams of them), so a frame on a stream
     * the client closed is answered with STREAM_CLOSED (RFC 9113 5.1)
     * instead of being dropped unseen.
     * Header blocks are bounded by their bytes (on_begin_frame), not by
     * their number of frames: a legitimate 37 KB block in 1 KiB frames is
     * 37 CONTINUATIONs. nghttp2's own cap stays as a backstop far above. */
    nghttp2_option_set_max_continuations(option, 4096);
    return ZF_OK;
}

/* ------------------------------------------------------------ abuse limits */

int zf__h2_count_abuse(struct zf_h2_conn *c, enum zf_h2_abuse kind, uint64_t n)
{
    uint64_t now = zf_now_ms();
    if (now - c->window_start >= zf_h2_cfg.limit_window_ms) {
        c->window_start = now;
        c->resets = c->control_frames = c->refused_headers = 0;
        c->header_bytes = 0;
    }
    const char *what = NULL;
    uint64_t count = 0;
    switch (kind) {
    case ZF_H2_RESET:
        if (++c->resets > zf_h2_cfg.max_resets && zf_h2_cfg.max_resets > 0)
            what = "stream resets (rapid reset)";
        count = (uint64_t)c->resets;
        break;
    case ZF_H2_CONTROL:
        if (++c->control_frames > zf_h2_cfg.max_control_frames && zf_h2_cfg.max_control_frames > 0)
            what = "control frames (PING/SETTINGS/PRIORITY/empty DATA flood)";
        count = (uint64_t)c->control_frames;
        break;
    case ZF_H2_REFUSED:
        if (++c->refused_headers > zf_h2_cfg.max_refused_headers &&
            zf_h2_cfg.max_refused_headers > 0)
            what = "refused header blocks (431)";
        count = (uint64_t)c->refused_headers;
        break;
    case ZF_H2_HEADER_BYTES:
        c->header_bytes += n;
        if (c->header_bytes > zf_h2_cfg.max_header_bytes && zf_h2_cfg.max_header_bytes > 0)
            what = "decoded header bytes (HPACK bomb?)";
        count = c->header_bytes;
        break;
    }
    if (!what)
        return c->closing ? ZF_ERROR : ZF_OK;
    if (!c->closing) {
        zf_log(ZF_LOG_WARN, &c->conn, "http2: %llu %s within %llu ms: dropping the connection",
               (unsigned long long)count, what, (unsigned long long)zf_h2_cfg.limit_window_ms);
        zf__h2_abusive++;
        conn_error(c, NGHTTP2_ENHANCE_YOUR_CALM);
    }
    return ZF_ERROR;
}

/* ----------------------------------------------------------------- closing */

static void conn_free(struct zf_h2_conn *c)
{
    zf__h2_free_streams(c);
    nghttp2_session_del(c->session);
    if (c->linger_ev)
        event_free(c->linger_ev);
    if (c->more_ev)
        event_free(c->more_ev);
    if (c->bev) {
        zf_tls_close_notify(c->bev); /* TLS only: keeps the session resumable */
        zf__http_bev_free(c->bev); /* its descriptor is free now */
        zf_conn_closed();
    }
    event_free(c->idle_timer);
    event_free(c->tick);
    event_free(c->close_ev);
    free(c->ready);
    if (c->prev)
        c->prev->next = c->next;
    else
        zf__h2_conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    zf__h2_nconns--;
    free(c);
    zf_server_check_idle();
}

static void on_close_ev(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_free(arg);
}

void zf__h2_close(struct zf_h2_conn *c)
{
    if (c->dead)
        return;
    c->dead = 1;
    c->closing = 1;
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    event_active(c->close_ev, 0, 0);
}

/* Lingering close (as nginx does): once the last frame (often a GOAWAY)
 * is out, send close_notify / FIN but keep reading and discarding for up
 * to LINGER_MS, so that the client's in-flight bytes do not make our kernel
 * answer with a RST that would destroy the GOAWAY before it is read. */
#define LINGER_MS 2000

static void on_linger(evutil_socket_t fd, short what, void *arg)
{
    struct zf_h2_conn *c = arg;
    char buf[16384];
    if (what & EV_TIMEOUT || zf_now_ms() > c->linger_until) {
        zf__h2_close(c);
        return;
    }
    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        break; /* EOF or error: the client is gone */
    }
    zf__h2_close(c);
}

static void start_linger(struct zf_h2_conn *c)
{
    if (c->lingering || c->dead)
        return;
    c->lingering = 1;
    c->conn.action = "closing";
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    if (c->tls) {
        SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
        if (ssl)
            SSL_shutdown(ssl); /* close_notify, written straight to the socket */
    }
    if (fd < 0 || shutdown(fd, SHUT_WR) != 0) {
        zf__h2_close(c);
        return;
    }
    c->linger_until = zf_now_ms() + LINGER_MS;
    c->linger_ev = event_new(bufferevent_get_base(c->bev), fd, EV_READ | EV_PERSIST, on_linger, c);
    struct timeval tv = {LINGER_MS / 1000, (LINGER_MS % 1000) * 1000};
    if (!c->linger_ev || event_add(c->linger_ev, &tv) != 0)
        zf__h2_close(c);
}

/* h2 over TLS: libevent's OpenSSL bufferevent hands over one TLS record
 * per readable event, so a client sending many small frames (a WebSocket
 * publisher on an RFC 8441 stream) would be served one record per loop
 * pass, and every event it publishes would go out to each subscriber on its
 * own. The connection's SSL reads ahead (zf__h2_start: whole socket reads
 * into OpenSSL's buffer); while records remain buffered there and reading
 * is on, the read event is made active again, so the records that arrived
 * are read in this pass (the socket is no longer readable: libevent would
 * not come back for them by itself).
 *
 * Up to READ_AHEAD_PASS reads per connection and loop pass (a pass is told
 * by libevent's cached time), then the rest at the next pass (more_ev, a
 * zero timeout). Unbounded, a client sending faster than the server handles
 * would keep the pass going for ever (each read refills OpenSSL's buffer
 * from the socket) and the output that waits for the next pass (tunnels,
 * tunnel.c) would never leave; bounded loosely, a WebSocket publisher's
 * backlog moves from its socket into every subscriber's send queue (past
 * ws.max_send_buffer when many share one connection). A few records per
 * pass keep both: the events of those records leave each subscriber
 * together, and the output keeps pace with the reading. */
#define READ_AHEAD_PASS 4

static void read_more(struct zf_h2_conn *c);

/* The reads (on_read calls) of this connection in the current loop pass. */
static unsigned *pass_reads(struct zf_h2_conn *c)
{
    struct timeval now;
    event_base_gettimeofday_cached(bufferevent_get_base(c->bev), &now);
    if (now.tv_sec != c->ahead_pass.tv_sec || now.tv_usec != c->ahead_pass.tv_usec) {
        c->ahead_pass = now;
        c->ahead_n = 0;
    }
    return &c->ahead_n;
}

static void on_more(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct zf_h2_conn *c = arg;
    event_base_gettimeofday_cached(bufferevent_get_base(c->bev), &c->ahead_pass);
    c->ahead_n = 0;
    read_more(c);
}

static void read_more(struct zf_h2_conn *c)
{
    if (!c->tls || c->closing || c->dead || c->lingering ||
        !(bufferevent_get_enabled(c->bev) & EV_READ))
        return;
    SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
    if (!ssl || !SSL_has_pending(ssl))
        return;
    struct event_base *base = bufferevent_get_base(c->bev);
    if (*pass_reads(c) < READ_AHEAD_PASS) {
        event_active(&c->bev->ev_read, EV_READ, 1);
        return;
    }
    static const struct timeval next_pass = {0, 0};
    if (!c->more_ev)
        c->more_ev = evtimer_new(base, on_more, c);
    if (!c->more_ev) {
        event_active(&c->bev->ev_read, EV_READ, 1); /* out of memory: no fairness */
        return;
    }
    if (!evtimer_pending(c->more_ev, NULL))
        evtimer_add(c->more_ev, &next_pass);
}

void zf__h2_flush(struct zf_h2_conn *c)
{
    if (c->dead || c->lingering)
        return;
    int rv = nghttp2_session_send(c->session);
    if (rv != 0) {
        zf_log(ZF_LOG_INFO, &c->conn, "http2: cannot send: %s", nghttp2_strerror(rv));
        zf__h2_close(c);
        return;
    }
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t pending = evbuffer_get_length(out);
    if (!nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session))
        c->closing = 1;
    if (c->closing) {
        bufferevent_disable(c->bev, EV_READ);
        if (pending == 0)
            start_linger(c);
        else
            bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0); /* tell us when all is out */
        return;
    }
    if (pending >= ZF_H2_OUT_HIGH) {
        bufferevent_disable(c->bev, EV_READ);
    } else {
        bufferevent_enable(c->bev, EV_READ);
        read_more(c); /* records read ahead while reading was off, or in this read */
    }
}

/* ------------------------------------------------------------- bufferevent */

static void on_read(struct bufferevent *bev, void *arg)
{
    struct zf_h2_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (c->closing) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    c->conn.action = "reading HTTP/2 frames";
    if (c->tls)
        ++*pass_reads(c); /* see read_more */
    while (evbuffer_get_length(in) > 0 && !c->closing) {
        struct evbuffer_iovec v[16];
        int n = evbuffer_peek(in, -1, NULL, v, 16);
        if (n > 16)
            n = 16;
        size_t used = 0;
        for (int i = 0; i < n && !c->closing; i++) {
            ssize_t rv = nghttp2_session_mem_recv(c->session, v[i].iov_base, v[i].iov_len);
            if (rv < 0) {
                int lvl = rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC ? ZF_LOG_INFO : ZF_LOG_WARN;
                if (rv == NGHTTP2_ERR_FLOODED)
                    zf__h2_abusive++;
                zf_log(lvl, &c->conn, "http2: closing: %s", nghttp2_strerror((int)rv));
                /* tell the client why rather than close silently (not to a
                 * client that does not speak HTTP/2 at all) */
                if (rv != NGHTTP2_ERR_BAD_CLIENT_MAGIC)
                    conn_error(c, rv == NGHTTP2_ERR_FLOODED ? NGHTTP2_ENHANCE_YOUR_CALM
                                                            : NGHTTP2_PROTOCOL_ERROR);
                c->closing = 1;
                break;
            }
            used += (size_t)rv;
        }
        evbuffer_drain(in, used);
        if (n <= 0)
            break;
    }
    if (c->closing)
        evbuffer_drain(in, evbuffer_get_length(in));
    zf__h2_dispatch_ready(c);
    zf__h2_flush(c);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct zf_h2_conn *c = arg;
    if (c->closing) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0 &&
            !nghttp2_session_want_write(c->session))
            start_linger(c);
        else
            zf__h2_flush(c); /* e.g. a GOAWAY still queued in nghttp2 */
        return;
    }
    c->conn.action = "sending HTTP/2 frames";
    zf__h2_flush(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct zf_h2_conn *c = arg;
    if (what & BEV_EVENT_TIMEOUT)
        zf_log(ZF_LOG_INFO, &c->conn, "http2: client did not read for %llu ms: closing",
               (unsigned long long)zf_http_cfg.send_timeout_ms);
    else if (what & BEV_EVENT_ERROR && !c->closing && EVUTIL_SOCKET_ERROR() != ECONNRESET &&
             EVUTIL_SOCKET_ERROR() != EPIPE)
        zf_log(ZF_LOG_DEBUG, &c->conn, "http2: connection error: %s",
               evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    zf__h2_close(c);
}

/* ------------------------------------------------------------------ timers */

static void arm_idle(struct zf_h2_conn *c)
{
    uint64_t ms = zf_h2_cfg.idle_timeout_ms;
    if (!ms)
        return;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    evtimer_add(c->idle_timer, &tv);
}

static void on_idle(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct zf_h2_conn *c = arg;
    if (c->nstreams > 0 || c->closing)
        return;
    zf_log(ZF_LOG_DEBUG, &c->conn, "http2: idle for %llu ms: GOAWAY",
           (unsigned long long)zf_h2_cfg.idle_timeout_ms);
    nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(c->session), NGHTTP2_NO_ERROR,
                          (const uint8_t *)"idle", 4);
    c->closing = 1;
    zf__h2_flush(c);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct zf_h2_conn *c = arg;
    if (c->dead)
        return;
    uint64_t now = zf_now_ms();
    size_t watched = zf__h2_check_stalled(c, now) + zf__h2_check_output(c, now);
    if (watched > 0) {
        struct timeval tv = {1, 0};
        evtimer_add(c->tick, &tv);
    }
    zf__h2_flush(c);
}

void zf__h2_streams_changed(struct zf_h2_conn *c)
{
    c->active_ms = zf_now_ms();
    if (c->nstreams == 0)
        arm_idle(c);
    else
        evtimer_del(c->idle_timer);
    if (c->nstreams > 0 && !evtimer_pending(c->tick, NULL)) {
        struct timeval tv = {1, 0};
        evtimer_add(c->tick, &tv);
    }
}

/* -------------------------------------------------------------------- start */

/* Local address of the connection for SERVER_NAME/SERVER_PORT. */
static void local_addr(struct zf_h2_conn *c, struct zf_http_endpoint *ep)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    snprintf(c->server_host, sizeof c->server_host, "%s", ep->listener ? ep->listener->host : "");
    c->server_port = ep->listener ? ep->listener->port : 0;
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (void *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, c->server_host, sizeof c->server_host);
        c->server_port = ntohs(in->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (void *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, c->server_host, sizeof c->server_host);
        c->server_port = ntohs(in6->sin6_port);
    }
}

int zf__h2_start(struct zf_http_endpoint *ep, struct bufferevent *bev, const struct zf_conn *conn,
                 const uint8_t *upgrade_settings, size_t settings_len,
                 struct zf_exchange *upgrade_request)
{
    struct zf_h2_conn *c = calloc(1, sizeof *c);
    if (!c || setup_library() != ZF_OK)
        goto fail;
    c->conn = *conn;
    c->conn.proto = ep->tls ? "h2" : "h2c";
    c->conn.action = "starting HTTP/2";
    c->scheme = ep->scheme ? ep->scheme : ep->tls ? "https" : "http";
    c->channel = ep->channel ? ep->channel : "http";
    c->bev = bev;
    c->tls = ep->tls;
    c->window_start = c->active_ms = zf_now_ms();
    struct event_base *base = bufferevent_get_base(bev);
    c->idle_timer = evtimer_new(base, on_idle, c);
    c->tick = evtimer_new(base, on_tick, c);
    c->close_ev = event_new(base, -1, 0, on_close_ev, c);
    if (!c->idle_timer || !c->tick || !c->close_ev)
        goto fail;
    if (nghttp2_session_server_new2(&c->session, callbacks, c, option) != 0)
        goto fail;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)zf_h2_cfg.max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)zf_h2_cfg.initial_window_size},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)zf_h2_cfg.max_header_list_size},
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1}, /* RFC 8441, when a module uses it */
    };
    size_t niv = ZF_ARRAY_LEN(iv) - (zf_upgrade_pipes() ? 0 : 1);
    if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, niv) != 0)
        goto fail;
    if (zf_h2_cfg.connection_window_size > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE)
        nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)zf_h2_cfg.connection_window_size);
    if (upgrade_settings &&
        nghttp2_session_upgrade2(c->session, upgrade_settings, settings_len,
                                 upgrade_request && upgrade_request->is_head, NULL) != 0) {
        zf_log(ZF_LOG_INFO, &c->conn, "http2: bad HTTP2-Settings in the h2c upgrade");
        goto fail;
    }
    local_addr(c, ep);

    c->next = zf__h2_conns;
    if (zf__h2_conns)
        zf__h2_conns->prev = c;
    zf__h2_conns = c;
    zf__h2_nconns++;

    if (c->tls) {
        SSL *ssl = bufferevent_openssl_get_ssl(bev);
        if (ssl)
            SSL_set_read_ahead(ssl, 1); /* see read_more */
    }
    bufferevent_setcb(bev, on_read, on_write, on_event, c);
    bufferevent_setwatermark(bev, EV_WRITE, ZF_H2_OUT_LOW, 0);
    bufferevent_setwatermark(bev, EV_READ, 0, 0);
    uint64_t ms = zf_http_cfg.send_timeout_ms;
    struct timeval wt = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    bufferevent_set_timeouts(bev, NULL, ms ? &wt : NULL);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    zf_log(ZF_LOG_DEBUG, &c->conn, "http2: session started (%s)",
           upgrade_settings ? "h2c upgrade"
           : ep->tls        ? "ALPN h2"
                            : "prior knowledge");

    if (upgrade_request) {
        if (zf__h2_upgrade_stream(c, upgrade_request) != ZF_OK) {
            zf__h2_close(c);
            return ZF_OK; /* the connection is ours now; freed on the next turn */
        }
    } else {
        arm_idle(c);
    }
    if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
        on_read(bev, c);
    else
        zf__h2_flush(c);
    return ZF_OK;

fail:
    zf_log(ZF_LOG_ERROR, conn, "http2: cannot start a session (out of memory?)");
    if (c) {
        if (c->session)
            nghttp2_session_del(c->session);
        if (c->idle_timer)
            event_free(c->idle_timer);
        if (c->tick)
            event_free(c->tick);
        if (c->close_ev)
            event_free(c->close_ev);
        free(c);
    }
    bufferevent_free(bev);
    zf_conn_closed();
    if (upgrade_request)
        zf_exchange_release(upgrade_request);
    return ZF_ERROR;
}

/* -------------------------------------------------------------------- shed */

/* True for a connection whose closing loses nothing: no stream open (idle
 * between requests, or the client preface/SETTINGS not even complete) and
 * no byte of an earlier response still waiting in the output, or one that
 * is closing anyway. */
static int sheddable(struct zf_h2_conn *c)
{
    if (c->dead || c->lingering)
        return 1;
    return c->nstreams == 0 && evbuffer_get_length(bufferevent_get_output(c->bev)) == 0;
}

/* Tells the client, as far as the socket takes it at once, that the
 * connection goes (GOAWAY NO_ERROR, so a client knows no request of it was
 * processed and may retry elsewhere). Never waits: what does not fit is
 * dropped with the connection. */
static void shed_goaway(struct zf_h2_conn *c)
{
    if (c->dead || c->lingering || c->closing)
        return;
    nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(c->session), NGHTTP2_NO_ERROR,
                          (const uint8_t *)"overload", 8);
    if (nghttp2_session_send(c->session) != 0)
        return;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t len = evbuffer_get_length(out);
    if (len == 0 || len > 4096)
        return;
    const unsigned char *p = evbuffer_pullup(out, (ev_ssize_t)len);
    if (!p)
        return;
    if (c->tls) {
        SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
        if (ssl)
            SSL_write(ssl, p, (int)len); /* a record the client can read */
    } else {
        evutil_socket_t fd = bufferevent_getfd(c->bev);
        if (fd >= 0)
            (void)!send(fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    evbuffer_drain(out, len);
}

size_t zf__h2_shed(size_t n)
{
    size_t done = 0;
    while (done < n) {
        struct zf_h2_conn *oldest = NULL;
        for (struct zf_h2_conn *c = zf__h2_conns; c; c = c->next)
            if (sheddable(c) && (!oldest || c->active_ms <= oldest->active_ms))
                oldest = c;
        if (!oldest)
            break;
        zf_log(ZF_LOG_DEBUG, &oldest->conn, "connection limit: closing this connection (%s)",
               oldest->dead || oldest->lingering ? "closing"
               : oldest->max_client_stream == 0  ? "no request yet"
                                                 : "idle");
        shed_goaway(oldest);
        /* not inside any of its callbacks (the core calls from its accept
         * callback): the descriptor goes now */
        conn_free(oldest);
        zf__h2_shed_count++;
        done++;
    }
    return done;
}

/* -------------------------------------------------------------------- stop */

void zf__h2_stop_all(int graceful)
{
    for (struct zf_h2_conn *c = zf__h2_conns, *next; c; c = next) {
        next = c->next;
        if (c->dead)
            continue;
        if (!graceful) {
            zf__h2_close(c);
            continue;
        }
        if (c->goaway)
            continue;
        c->goaway = 1;
        c->conn.action = "finishing streams before shutdown";
        nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(c->session), NGHTTP2_NO_ERROR,
                              (const uint8_t *)"shutdown", 8);
        if (c->nstreams == 0)
            c->closing = 1;
        zf__h2_flush(c);
    }
}
