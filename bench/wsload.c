/* wsload: a WebSocket fan-out load client that is not the bottleneck.
 *
 * One process, one epoll loop, many sockets (no threads, no per-message allocation).
 * Speaks the JSON protocol of docs/protocols/websocket.md (zfront.v1), which the peer
 * servers of bench/ws_fanout.py speak too.
 *
 *   wsload --port P --subs N [--topic T] [--expect M] [--idle S] [--timeout S]
 *       opens N subscriber connections (at most --burst handshakes in flight), subscribes
 *       each to T, prints "ready N" on stdout when all are subscribed, then counts events
 *       until every connection got M of them, or nothing came for --idle seconds, or stdin
 *       is closed (--hold: only that), or --timeout. Each event's data carries "t", the
 *       publisher's send time (CLOCK_REALTIME seconds): receipt - t is the latency.
 * --tls: wss:// (OpenSSL; HTTP/1.1 by ALPN; the certificate is not checked: loopback).
 * --h2 [--streams K]: WebSocket over HTTP/2 (RFC 8441 extended CONNECT, libnghttp2's client
 *       session): with --tls h2 by ALPN, without it h2c by prior knowledge. K WebSockets
 *       (streams) share each HTTP/2 connection (default 1). A connection whose server does
 *       not choose h2, or does not announce SETTINGS_ENABLE_CONNECT_PROTOCOL = 1, fails with
 *       a message on stderr: there is no fall-back to HTTP/1.1. Subscribers and the
 *       WebSocket publisher both speak it; the WebSocket frames are the same, in DATA.
 *
 *   wsload --port P --http-pub PATH --pub-rate R --pub-seconds S [--batch B] [--conns C]
 *       an HTTP publisher (bench/bus.py): C keep-alive HTTP/1.1 connections (default 4), at
 *       most one request in flight on each, send `GET PATH?i=FIRST&n=COUNT` so that R
 *       messages per second are asked for, at most B per request (default 1): the
 *       application behind PATH publishes messages FIRST .. FIRST+COUNT-1 itself, each with
 *       its own send time "t". Ends when every request is answered; "sent" counts the
 *       messages asked for, "acked" those whose request got 200, "bad" the other answers.
 *
 *   wsload --port P --pub-rate R --pub-seconds S [--topic T] [--hold]
 *       one publisher connection: R publish messages per second for S seconds, then reads
 *       (acks) for a second, or with --hold until stdin is closed: a server may drop the
 *       publishes it has not handled yet when the publisher goes away.
 *
 * Both print one JSON line at the end: counts, first/last receipt times, latency
 * percentiles and the process's own CPU seconds (getrusage), so a client-bound figure is
 * visible as such. Frames: the RFC 6455 subset a client needs (masked text frames out;
 * unmasked text, ping, close in). Loopback benchmarks only: no TLS, no redirects.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ST_CONNECTING, ST_TLS, ST_HANDSHAKE, ST_SUBSCRIBING, ST_OPEN, ST_CLOSED };

struct conn {
    int fd;
    int state;
    SSL *ssl;        /* --tls */
    size_t len, cap; /* input buffer */
    char *buf;
    uint64_t events;
    uint64_t inflight; /* --http-pub: messages asked for by the request in flight (0: none) */
    /* --h2: this WebSocket is stream `sid` of HTTP/2 connection `h2` (fd and ssl unused) */
    struct h2conn *h2;
    int32_t sid;     /* 0 until the CONNECT is submitted */
    int stream_gone; /* nghttp2 closed the stream (no RST_STREAM of ours) */
    int deferred;    /* the DATA provider waits for frames */
    int status;      /* :status of the CONNECT's answer */
    char *out;       /* WebSocket frames not yet taken by the DATA provider */
    size_t olen, ooff, ocap;
};

/* --h2: one HTTP/2 connection carrying the WebSockets conns[first .. first + n - 1]. */
struct h2conn {
    int fd;
    int state; /* ST_CONNECTING, ST_TLS, ST_HANDSHAKE (until the server's SETTINGS), ST_OPEN */
    SSL *ssl;
    nghttp2_session *sess;
    int first, n;
    int settings_seen; /* the server's first SETTINGS arrived */
    const char *fatal; /* why the connection must be dropped, set inside callbacks */
    int dirty;         /* on the to-send list */
};

static const char *host = "127.0.0.1";
static int port;
static const char *path = "/ws";
static const char *topic = "bench";
static int nsubs, burst = 200, hold;
static double pub_rate, pub_seconds, idle_s = 3, timeout_s = 55;
static uint64_t expect;
static SSL_CTX *tls;
static const char *http_pub; /* --http-pub PATH */
static int batch = 1, nhttp = 4;
static uint64_t acked, requests, reconnects;

static struct conn *conns;
static int h2mode, streams_per = 1;
static struct h2conn *h2s;
static int nh2, h2_started;
static int *h2_dirty; /* connections with frames to send */
static int nh2_dirty;
static double h2_rx_time; /* receipt time of the bytes nghttp2 is parsing */
static int nconns, started, handshaking, subscribed, closed_early;
static uint64_t received, bad;
static double first_rx, last_rx;
static float *lat; /* latency samples, ms */
static size_t nlat, lat_cap, lat_stride = 1, lat_seen;

static double now_real(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "wsload: %s: %s\n", what, strerror(errno));
    exit(2);
}

/* Sends all of buf on a socket, through ssl when not NULL (small messages on loopback: a
 * short write is waited out with poll). */
static int send_raw(int fd, SSL *ssl, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w;
        short want = POLLOUT;
        if (ssl) {
            int r = SSL_write(ssl, buf, (int)n);
            int e = r > 0 ? 0 : SSL_get_error(ssl, r);
            w = r > 0 ? r : -1;
            errno = e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? EAGAIN : EPIPE;
            want = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        } else {
            w = send(fd, buf, n, MSG_NOSIGNAL);
        }
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                struct pollfd p = {fd, want, 0};
                poll(&p, 1, 1000);
                continue;
            }
            return -1;
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

static int send_all(struct conn *c, const char *buf, size_t n)
{
    return send_raw(c->fd, c->ssl, buf, n);
}

/* recv(), or SSL_read() when ssl is not NULL: -1 and EAGAIN when nothing is ready. */
static ssize_t raw_recv(int fd, SSL *ssl, char *buf, size_t n)
{
    if (!ssl) {
        return recv(fd, buf, n, 0);
    }
    int r = SSL_read(ssl, buf, (int)n);
    if (r > 0) {
        return r;
    }
    int e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        errno = EAGAIN;
        return -1;
    }
    return 0;
}

static ssize_t conn_recv(struct conn *c, char *buf, size_t n)
{
    return raw_recv(c->fd, c->ssl, buf, n);
}

static void h2_mark_dirty(struct h2conn *h)
{
    if (!h->dirty) {
        h->dirty = 1;
        h2_dirty[nh2_dirty++] = (int)(h - h2s);
    }
}

/* --h2: queues frame bytes for the stream's DATA (sent by h2_send). -1 once it is closed. */
static int h2_write(struct conn *c, const char *buf, size_t n)
{
    if (c->state == ST_CLOSED || c->stream_gone || !c->h2->sess) {
        return -1;
    }
    if (c->olen + n > c->ocap) {
        if (c->ooff) { /* the provider took the front: reuse that room first */
            memmove(c->out, c->out + c->ooff, c->olen - c->ooff);
            c->olen -= c->ooff;
            c->ooff = 0;
        }
        if (c->olen + n > c->ocap) {
            c->ocap = c->olen + n > 2 * c->ocap ? c->olen + n : 2 * c->ocap;
            c->out = realloc(c->out, c->ocap);
            if (!c->out) {
                die("realloc");
            }
        }
    }
    memcpy(c->out + c->olen, buf, n);
    c->olen += n;
    if (c->deferred && c->sid > 0) {
        c->deferred = 0;
        nghttp2_session_resume_data(c->h2->sess, c->sid);
    }
    h2_mark_dirty(c->h2);
    return 0;
}

/* A masked client frame (opcode op) carrying payload p. */
static int send_frame(struct conn *c, int op, const char *p, size_t n)
{
    char out[16 + 4096];
    size_t h = 0;
    if (n > 4096) {
        return -1;
    }
    out[h++] = (char)(0x80 | op);
    if (n < 126) {
        out[h++] = (char)(0x80 | n);
    } else {
        out[h++] = (char)(0x80 | 126);
        out[h++] = (char)(n >> 8);
        out[h++] = (char)(n & 0xff);
    }
    uint32_t r = (uint32_t)random();
    unsigned char mask[4] = {r & 0xff, (r >> 8) & 0xff, (r >> 16) & 0xff, r >> 24};
    memcpy(out + h, mask, 4);
    h += 4;
    for (size_t i = 0; i < n; i++) {
        out[h + i] = (char)(p[i] ^ mask[i & 3]);
    }
    return c->h2 ? h2_write(c, out, h + n) : send_all(c, out, h + n);
}

static void add_latency(double ms)
{
    lat_seen++;
    if (lat_seen % lat_stride) {
        return;
    }
    if (nlat == lat_cap) { /* keep memory bounded: drop every other sample, double stride */
        for (size_t i = 0; i < nlat / 2; i++) {
            lat[i] = lat[2 * i + 1];
        }
        nlat /= 2;
        lat_stride *= 2;
    }
    lat[nlat++] = (float)ms;
}

static void on_text(struct conn *c, const char *p, size_t n, double t)
{
    /* The messages are small JSON objects; the test is on their type field. */
    if (memmem(p, n, "\"event\"", 7)) {
        const char *q = memmem(p, n, "\"t\":", 4);
        received++;
        c->events++;
        if (first_rx == 0) {
            first_rx = t;
        }
        last_rx = t;
        if (q) {
            add_latency((t - strtod(q + 4, NULL)) * 1000.0);
        } else {
            bad++;
        }
    } else if (c->state == ST_SUBSCRIBING && memmem(p, n, "\"subscribed\"", 12)) {
        c->state = ST_OPEN;
        subscribed++;
    } else if (memmem(p, n, "\"error\"", 7)) {
        bad++;
        if (bad < 5) {
            fprintf(stderr, "wsload: server said %.*s\n", (int)n, p);
        }
    }
}

static void close_conn(struct conn *c)
{
    if (c->state != ST_CLOSED && c->h2) { /* one stream; the connection stays */
        if (c->state == ST_HANDSHAKE) {
            handshaking--;
        }
        if (c->sid > 0 && !c->stream_gone && c->h2->sess) {
            nghttp2_submit_rst_stream(c->h2->sess, NGHTTP2_FLAG_NONE, c->sid, NGHTTP2_CANCEL);
            h2_mark_dirty(c->h2);
        }
        c->state = ST_CLOSED;
        closed_early++;
        return;
    }
    if (c->state != ST_CLOSED) {
        if (c->state == ST_HANDSHAKE || c->state == ST_TLS || c->state == ST_CONNECTING) {
            handshaking--;
        }
        if (c->ssl) {
            SSL_free(c->ssl);
            c->ssl = NULL;
        }
        close(c->fd);
        c->state = ST_CLOSED;
        closed_early++;
        if (c->inflight) {
            fprintf(stderr, "wsload: connection closed with a request in flight\n");
            bad++;
            c->inflight = 0;
        }
    }
}

/* Parses whole frames from c->buf. */
static void parse_frames(struct conn *c, double t)
{
    size_t off = 0;
    while (c->len - off >= 2) {
        unsigned char *b = (unsigned char *)c->buf + off;
        size_t avail = c->len - off, h = 2;
        uint64_t n = b[1] & 0x7f;
        if (n == 126) {
            if (avail < 4) {
                break;
            }
            n = ((uint64_t)b[2] << 8) | b[3];
            h = 4;
        } else if (n == 127) {
            if (avail < 10) {
                break;
            }
            n = 0;
            for (int i = 0; i < 8; i++) {
                n = (n << 8) | b[2 + i];
            }
            h = 10;
        }
        if (avail < h + n) {
            if (h + n > c->cap) {
                c->cap = h + n;
                memmove(c->buf, b, avail);
                c->len = avail;
                off = 0;
                c->buf = realloc(c->buf, c->cap);
                if (!c->buf) {
                    die("realloc");
                }
            }
            break;
        }
        int op = b[0] & 0x0f;
        const char *p = (const char *)b + h;
        if (op == 1) {
            on_text(c, p, n, t);
        } else if (op == 9) {
            send_frame(c, 10, p, n);
        } else if (op == 8) {
            close_conn(c);
            return;
        }
        off += h + n;
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
}

/* --http-pub: parses whole HTTP/1.1 responses from c->buf (the bench app answers with a
 * Content-Length, never chunked) and counts the messages of the request each one answers. */
static void parse_http(struct conn *c)
{
    size_t off = 0;
    for (;;) {
        char *b = c->buf + off, *end = memmem(b, c->len - off, "\r\n\r\n", 4);
        if (!end) {
            break;
        }
        size_t hl = (size_t)(end + 4 - b), cl = 0;
        int last = 0; /* "Connection: close": the server reads no further request */
        for (char *q = b; q < end; q++) {
            if ((q == b || q[-1] == '\n') && strncasecmp(q, "content-length:", 15) == 0) {
                cl = strtoul(q + 15, NULL, 10);
            }
            if ((q == b || q[-1] == '\n') && strncasecmp(q, "connection: close", 17) == 0) {
                last = 1;
            }
        }
        if (c->len - off < hl + cl) {
            break;
        }
        if (hl >= 12 && memcmp(b, "HTTP/1.", 7) == 0 && memcmp(b + 9, "200", 3) == 0) {
            acked += c->inflight;
        } else {
            bad++;
            if (bad < 5) {
                fprintf(stderr, "wsload: server answered %.*s\n", (int)(end - b), b);
            }
        }
        c->inflight = 0;
        off += hl + cl;
        if (last) { /* reopened by the publishing loop */
            c->len = 0;
            close_conn(c);
            return;
        }
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
}

/* The server accepted the WebSocket: subscribe (subscribers) or start publishing. */
static void ws_opened(struct conn *c)
{
    handshaking--;
    if (nsubs > 0) {
        char msg[1200];
        int m = snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"topic\":\"%s\"}", topic);
        c->state = ST_SUBSCRIBING;
        if (send_frame(c, 1, msg, (size_t)m) < 0) {
            close_conn(c);
        }
    } else {
        c->state = ST_OPEN;
    }
}

/* Appends n input bytes to c->buf. */
static void buf_append(struct conn *c, const uint8_t *p, size_t n)
{
    if (c->len + n > c->cap) {
        while (c->len + n > c->cap) {
            c->cap = c->cap ? c->cap * 2 : 4096;
        }
        c->buf = realloc(c->buf, c->cap);
        if (!c->buf) {
            die("realloc");
        }
    }
    memcpy(c->buf + c->len, p, n);
    c->len += n;
}

static void on_readable(struct conn *c)
{
    for (;;) {
        if (c->len == c->cap) {
            c->cap = c->cap ? c->cap * 2 : 4096;
            c->buf = realloc(c->buf, c->cap);
            if (!c->buf) {
                die("realloc");
            }
        }
        ssize_t r = conn_recv(c, c->buf + c->len, c->cap - c->len);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
            return;
        }
        if (r <= 0) {
            close_conn(c);
            return;
        }
        c->len += (size_t)r;
        if (http_pub) {
            parse_http(c);
            if (c->state == ST_CLOSED) {
                return;
            }
            continue;
        }
        double t = now_real();
        if (c->state == ST_HANDSHAKE) {
            char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
            if (!end) {
                continue;
            }
            if (c->len < 12 || memcmp(c->buf + 9, "101", 3) != 0) {
                fprintf(stderr, "wsload: handshake refused: %.*s\n", (int)(end - c->buf), c->buf);
                close_conn(c);
                return;
            }
            size_t hl = (size_t)(end + 4 - c->buf);
            memmove(c->buf, c->buf + hl, c->len - hl);
            c->len -= hl;
            ws_opened(c);
            if (c->state == ST_CLOSED) {
                return;
            }
        }
        parse_frames(c, t);
        if (c->state == ST_CLOSED) {
            return;
        }
    }
}

static void start_conn(int ep, struct sockaddr_in *sa, int i)
{
    struct conn *c = &conns[i];
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) {
        die("socket");
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)sa, sizeof *sa) < 0 && errno != EINPROGRESS) {
        die("connect");
    }
    c->state = ST_CONNECTING;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
        die("epoll_ctl");
    }
    handshaking++;
    started++;
}

static void send_request(int ep, struct conn *c, int i)
{
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: d3NiZW5jaC1rZXktMDAwMQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     path, host, port);
    c->state = ST_HANDSHAKE;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    if (send_all(c, req, (size_t)n) < 0) {
        close_conn(c);
    }
}

/* Advances the TLS handshake (--tls); the HTTP request follows it. */
static void tls_step(int ep, struct conn *c, int i)
{
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        send_request(ep, c, i);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        fprintf(stderr, "wsload: TLS handshake failed\n");
        ERR_print_errors_fp(stderr);
        close_conn(c);
        return;
    }
    struct epoll_event ev = {.events = e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT,
                             .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void on_connected(int ep, struct conn *c, int i)
{
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) {
        errno = err;
        fprintf(stderr, "wsload: connect: %s\n", strerror(err));
        close_conn(c);
        return;
    }
    if (tls) {
        c->ssl = SSL_new(tls);
        if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) {
            die("SSL_new");
        }
        SSL_set_connect_state(c->ssl);
        c->state = ST_TLS;
        tls_step(ep, c, i);
        return;
    }
    if (http_pub) { /* no handshake: requests go out as the rate asks for them */
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->state = ST_OPEN;
        handshaking--;
        return;
    }
    send_request(ep, c, i);
}

/* ---------------------------------------------------------------- --h2 (RFC 8441) */

/* The DATA provider of a WebSocket's stream: the frames h2_write queued. */
static ssize_t h2_read_data(nghttp2_session *sess, int32_t sid, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *user)
{
    (void)sess, (void)sid, (void)flags, (void)user;
    struct conn *c = src->ptr;
    size_t n = c->olen - c->ooff;
    if (n == 0) {
        c->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    if (n > length) {
        n = length;
    }
    memcpy(buf, c->out + c->ooff, n);
    c->ooff += n;
    if (c->ooff == c->olen) {
        c->ooff = c->olen = 0;
    }
    return (ssize_t)n;
}

static int h2_on_header(nghttp2_session *sess, const nghttp2_frame *frame, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *user)
{
    (void)flags, (void)user;
    struct conn *c = nghttp2_session_get_stream_user_data(sess, frame->hd.stream_id);
    if (c && namelen == 7 && memcmp(name, ":status", 7) == 0 && valuelen == 3) {
        c->status = (int)strtol((const char *)value, NULL, 10); /* nghttp2 ends it with NUL */
    }
    return 0;
}

static void h2_submit_connects(struct h2conn *h);

static int h2_on_frame(nghttp2_session *sess, const nghttp2_frame *frame, void *user)
{
    struct h2conn *h = user;
    if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK) &&
        !h->settings_seen) {
        /* RFC 8441 3: extended CONNECT only once the server said so in its SETTINGS */
        uint32_t ecp = 0, maxstreams = UINT32_MAX;
        for (size_t i = 0; i < frame->settings.niv; i++) {
            if (frame->settings.iv[i].settings_id == NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL) {
                ecp = frame->settings.iv[i].value;
            }
            if (frame->settings.iv[i].settings_id == NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) {
                maxstreams = frame->settings.iv[i].value;
            }
        }
        h->settings_seen = 1;
        if (ecp != 1) {
            h->fatal = "the server does not announce SETTINGS_ENABLE_CONNECT_PROTOCOL = 1";
        } else if ((uint32_t)h->n > maxstreams) {
            h->fatal = "--streams is above the server's SETTINGS_MAX_CONCURRENT_STREAMS";
        } else {
            h->state = ST_OPEN;
            h2_submit_connects(h);
        }
        return 0;
    }
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_RESPONSE) {
        return 0;
    }
    struct conn *c = nghttp2_session_get_stream_user_data(sess, frame->hd.stream_id);
    if (!c || c->state != ST_HANDSHAKE) {
        return 0;
    }
    if (c->status != 200) { /* RFC 8441 5: any 2xx accepts; zfront answers 200 */
        fprintf(stderr, "wsload: handshake refused: HTTP/2 :status %d\n", c->status);
        close_conn(c);
        return 0;
    }
    ws_opened(c);
    return 0;
}

static int h2_on_data(nghttp2_session *sess, uint8_t flags, int32_t sid, const uint8_t *data,
                      size_t len, void *user)
{
    (void)flags, (void)user;
    struct conn *c = nghttp2_session_get_stream_user_data(sess, sid);
    if (!c || c->state == ST_CLOSED || c->state == ST_HANDSHAKE) {
        return 0;
    }
    buf_append(c, data, len);
    parse_frames(c, h2_rx_time);
    return 0;
}

static int h2_on_close(nghttp2_session *sess, int32_t sid, uint32_t code, void *user)
{
    (void)user;
    struct conn *c = nghttp2_session_get_stream_user_data(sess, sid);
    if (c) {
        c->stream_gone = 1;
        if (c->state == ST_HANDSHAKE) {
            fprintf(stderr, "wsload: HTTP/2 stream %d closed before its answer (%s)\n", sid,
                    nghttp2_http2_strerror(code));
        }
        close_conn(c);
    }
    return 0;
}

/* Sends everything nghttp2 has queued. -1: the connection is lost or the session is over. */
static int h2_send(struct h2conn *h)
{
    for (;;) {
        const uint8_t *d;
        ssize_t n = nghttp2_session_mem_send(h->sess, &d);
        if (n < 0) {
            fprintf(stderr, "wsload: h2: %s\n", nghttp2_strerror((int)n));
            return -1;
        }
        if (n == 0) {
            break;
        }
        if (send_raw(h->fd, h->ssl, (const char *)d, (size_t)n) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Drops an HTTP/2 connection and every WebSocket on it (counted as closed). */
static void h2_close(struct h2conn *h, const char *why)
{
    if (h->state == ST_CLOSED) {
        return;
    }
    if (why) {
        fprintf(stderr, "wsload: HTTP/2 connection %d: %s\n", (int)(h - h2s), why);
    }
    nghttp2_session_del(h->sess);
    h->sess = NULL; /* close_conn sends no RST_STREAM now */
    for (int i = h->first; i < h->first + h->n; i++) {
        close_conn(&conns[i]);
    }
    if (h->ssl) {
        SSL_free(h->ssl);
        h->ssl = NULL;
    }
    close(h->fd);
    h->state = ST_CLOSED;
}

/* The server's SETTINGS allowed it: one extended CONNECT per WebSocket of h, each with a DATA
 * provider that waits (deferred) for its frames. Inside an nghttp2 callback: submits only. */
static void h2_submit_connects(struct h2conn *h)
{
    char authority[80];
    snprintf(authority, sizeof authority, "%s:%d", host, port);
    const char *scheme = h->ssl ? "https" : "http";
    nghttp2_nv hdrs[] = {
        {(uint8_t *)":method", (uint8_t *)"CONNECT", 7, 7, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":protocol", (uint8_t *)"websocket", 9, 9, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":scheme", (uint8_t *)scheme, 7, strlen(scheme), NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":path", (uint8_t *)path, 5, strlen(path), NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":authority", (uint8_t *)authority, 10, strlen(authority),
         NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"sec-websocket-version", (uint8_t *)"13", 21, 2, NGHTTP2_NV_FLAG_NONE},
    };
    for (int i = h->first; i < h->first + h->n; i++) {
        struct conn *c = &conns[i];
        nghttp2_data_provider prd = {.source.ptr = c, .read_callback = h2_read_data};
        int32_t sid =
            nghttp2_submit_request(h->sess, NULL, hdrs, sizeof hdrs / sizeof *hdrs, &prd, c);
        if (sid < 0) {
            fprintf(stderr, "wsload: h2: CONNECT: %s\n", nghttp2_strerror(sid));
            close_conn(c);
            continue;
        }
        c->sid = sid;
    }
    h2_mark_dirty(h);
}

/* TCP (and TLS) are up: the client session, our SETTINGS (larger windows, so the client does
 * not hold the server back) and the preface; the CONNECTs follow the server's SETTINGS. */
static void h2_session_start(int ep, struct h2conn *h, int i)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0) {
        die("nghttp2_session_callbacks_new");
    }
    nghttp2_session_callbacks_set_on_header_callback(cbs, h2_on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, h2_on_frame);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2_on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2_on_close);
    int rv = nghttp2_session_client_new(&h->sess, cbs, h);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0) {
        die("nghttp2_session_client_new");
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}, /* per stream */
    };
    nghttp2_submit_settings(h->sess, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof *iv);
    nghttp2_session_set_local_window_size(h->sess, NGHTTP2_FLAG_NONE, 0, 16 << 20);
    h->state = ST_HANDSHAKE;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_MOD, h->fd, &ev);
    if (h2_send(h) < 0) {
        h2_close(h, "lost while sending the preface");
    }
}

static void h2_start_conn(int ep, struct sockaddr_in *sa)
{
    int i = h2_started++;
    struct h2conn *h = &h2s[i];
    h->first = started;
    h->n = nconns - started < streams_per ? nconns - started : streams_per;
    h->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (h->fd < 0) {
        die("socket");
    }
    int one = 1;
    setsockopt(h->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(h->fd, (struct sockaddr *)sa, sizeof *sa) < 0 && errno != EINPROGRESS) {
        die("connect");
    }
    h->state = ST_CONNECTING;
    for (int k = h->first; k < h->first + h->n; k++) {
        conns[k].h2 = h;
        conns[k].fd = -1;
        conns[k].state = ST_HANDSHAKE; /* until its CONNECT is answered */
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, h->fd, &ev) < 0) {
        die("epoll_ctl");
    }
    handshaking += h->n;
    started += h->n;
}

static void h2_tls_step(int ep, struct h2conn *h, int i)
{
    int r = SSL_do_handshake(h->ssl);
    if (r == 1) {
        const unsigned char *alpn = NULL;
        unsigned alen = 0;
        SSL_get0_alpn_selected(h->ssl, &alpn, &alen);
        if (alen != 2 || memcmp(alpn, "h2", 2) != 0) {
            char why[128];
            snprintf(why, sizeof why, "the server chose \"%.*s\" by ALPN, not h2", (int)alen,
                     alpn ? (const char *)alpn : "");
            h2_close(h, why);
            return;
        }
        h2_session_start(ep, h, i);
        return;
    }
    int e = SSL_get_error(h->ssl, r);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        ERR_print_errors_fp(stderr);
        h2_close(h, "TLS handshake failed");
        return;
    }
    struct epoll_event ev = {.events = e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT,
                             .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_MOD, h->fd, &ev);
}

/* Reads what the socket has, feeds it to nghttp2 (which calls back per frame and stream), then
 * sends what that produced (WINDOW_UPDATE, SETTINGS ACK, subscribes, pongs, CONNECTs). */
static void h2_readable(struct h2conn *h)
{
    static uint8_t buf[65536];
    for (;;) {
        ssize_t r = raw_recv(h->fd, h->ssl, (char *)buf, sizeof buf);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
            break;
        }
        if (r <= 0) {
            h2_close(h, h->settings_seen ? NULL : "closed by the server before its SETTINGS");
            return;
        }
        h2_rx_time = now_real();
        ssize_t m = nghttp2_session_mem_recv(h->sess, buf, (size_t)r);
        if (m < 0) {
            h2_close(h, nghttp2_strerror((int)m));
            return;
        }
        if (h->fatal) {
            h2_close(h, h->fatal);
            return;
        }
    }
    if (h2_send(h) < 0) {
        h2_close(h, "lost while sending");
    }
}

static void h2_event(int ep, struct h2conn *h, int i)
{
    if (h->state == ST_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(h->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            h2_close(h, strerror(err));
            return;
        }
        if (!tls) {
            h2_session_start(ep, h, i); /* h2c, prior knowledge */
            return;
        }
        h->ssl = SSL_new(tls);
        if (!h->ssl || !SSL_set_fd(h->ssl, h->fd)) {
            die("SSL_new");
        }
        SSL_set_connect_state(h->ssl);
        h->state = ST_TLS;
        h2_tls_step(ep, h, i);
    } else if (h->state == ST_TLS) {
        h2_tls_step(ep, h, i);
    } else {
        h2_readable(h);
    }
}

/* Sends what the WebSockets queued (publishes, subscribes, RST_STREAMs) on every connection
 * that has something. */
static void h2_flush_dirty(void)
{
    for (int k = 0; k < nh2_dirty; k++) {
        struct h2conn *h = &h2s[h2_dirty[k]];
        if (h->state != ST_CLOSED && h->sess && h2_send(h) < 0) {
            h2_close(h, "lost while sending");
        }
        h->dirty = 0;
    }
    nh2_dirty = 0;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    static struct option opts[] = {{"host", 1, 0, 'H'},
                                   {"port", 1, 0, 'p'},
                                   {"path", 1, 0, 'P'},
                                   {"topic", 1, 0, 't'},
                                   {"subs", 1, 0, 'n'},
                                   {"expect", 1, 0, 'e'},
                                   {"idle", 1, 0, 'i'},
                                   {"timeout", 1, 0, 'T'},
                                   {"burst", 1, 0, 'b'},
                                   {"pub-rate", 1, 0, 'r'},
                                   {"pub-seconds", 1, 0, 's'},
                                   {"tls", 0, 0, 'S'},
                                   {"hold", 0, 0, 'h'},
                                   {"http-pub", 1, 0, 'u'},
                                   {"batch", 1, 0, 'B'},
                                   {"conns", 1, 0, 'c'},
                                   {"h2", 0, 0, '2'},
                                   {"streams", 1, 0, 'K'},
                                   {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'H':
            host = optarg;
            break;
        case 'p':
            port = atoi(optarg);
            break;
        case 'P':
            path = optarg;
            break;
        case 't':
            topic = optarg;
            break;
        case 'n':
            nsubs = atoi(optarg);
            break;
        case 'e':
            expect = strtoull(optarg, NULL, 10);
            break;
        case 'i':
            idle_s = atof(optarg);
            break;
        case 'T':
            timeout_s = atof(optarg);
            break;
        case 'b':
            burst = atoi(optarg);
            break;
        case 'r':
            pub_rate = atof(optarg);
            break;
        case 's':
            pub_seconds = atof(optarg);
            break;
        case 'h':
            hold = 1;
            break;
        case 'u':
            http_pub = optarg;
            break;
        case 'B':
            batch = atoi(optarg);
            break;
        case 'c':
            nhttp = atoi(optarg);
            break;
        case '2':
            h2mode = 1;
            break;
        case 'K':
            streams_per = atoi(optarg);
            break;
        case 'S':
            tls = SSL_CTX_new(TLS_client_method());
            if (!tls) {
                die("SSL_CTX_new");
            }
            SSL_CTX_set_verify(tls, SSL_VERIFY_NONE, NULL); /* loopback, self-signed */
            SSL_CTX_set_alpn_protos(tls, (const unsigned char *)"\x08http/1.1", 9);
            break;
        default:
            fprintf(stderr, "wsload: see the comment at the top of bench/wsload.c\n");
            return 2;
        }
    }
    int publisher = pub_rate > 0;
    if (port <= 0 || (nsubs <= 0) == !publisher || burst <= 0 || batch <= 0 || nhttp <= 0 ||
        (http_pub && (!publisher || tls || h2mode)) || streams_per <= 0) {
        fprintf(stderr, "wsload: need --port and either --subs N or --pub-rate R "
                        "(--http-pub: with --pub-rate, without --tls or --h2)\n");
        return 2;
    }
    if (h2mode && tls) { /* h2 or nothing: no fall-back to HTTP/1.1 */
        SSL_CTX_set_alpn_protos(tls, (const unsigned char *)"\x02h2", 3);
    }
    srandom((unsigned)getpid());
    nconns = http_pub ? nhttp : publisher ? 1 : nsubs;
    conns = calloc((size_t)nconns, sizeof *conns);
    lat_cap = 1 << 21;
    lat = malloc(lat_cap * sizeof *lat);
    if (h2mode) {
        nh2 = (nconns + streams_per - 1) / streams_per;
        h2s = calloc((size_t)nh2, sizeof *h2s);
        h2_dirty = calloc((size_t)nh2, sizeof *h2_dirty);
        if (!h2s || !h2_dirty) {
            die("malloc");
        }
    }
    if (!conns || !lat) {
        die("malloc");
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "wsload: --host must be an IPv4 address\n");
        return 2;
    }
    int ep = epoll_create1(0);
    if (ep < 0) {
        die("epoll_create1");
    }
    /* stdin: its EOF stops a subscriber run (the driver closes it). */
    struct epoll_event sev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    int watch_stdin = (!publisher || hold) && epoll_ctl(ep, EPOLL_CTL_ADD, 0, &sev) == 0;

    double t0 = now_mono(), deadline = t0 + timeout_s, ready_at = 0, pub_start = 0;
    double last_event_mono = 0;
    uint64_t sent = 0, pub_total = (uint64_t)(pub_rate * pub_seconds);
    int ready = 0, stop = 0;
    double pub_done = 0;
    struct epoll_event evs[256];
    while (!stop) {
        while (started < nconns && handshaking < burst) {
            if (h2mode) {
                h2_start_conn(ep, &sa);
            } else {
                start_conn(ep, &sa, started);
            }
        }
        if (!ready && started == nconns && handshaking == 0 &&
            (publisher || subscribed + closed_early == nconns)) {
            ready = 1;
            ready_at = now_mono();
            if (!publisher) {
                printf("ready %d\n", subscribed);
                fflush(stdout);
            }
        }
        int timeout = 100;
        if (publisher && ready) {
            double now = now_mono();
            if (!pub_start) {
                pub_start = now_real();
                ready_at = now;
            }
            uint64_t due = (uint64_t)((now - ready_at) * pub_rate) + 1;
            if (due > pub_total) {
                due = pub_total;
            }
            for (int k = 0; http_pub && k < nconns && sent < pub_total; k++) {
                struct conn *hc = &conns[k];
                if (hc->state == ST_CLOSED && reconnects < 100000) {
                    /* the server ends keep-alive connections (max_keepalive_requests) */
                    free(hc->buf);
                    memset(hc, 0, sizeof *hc);
                    start_conn(ep, &sa, k);
                    started--;
                    closed_early--;
                    reconnects++;
                }
            }
            for (int k = 0; http_pub && k < nconns && sent < due; k++) {
                struct conn *hc = &conns[k];
                if (hc->state != ST_OPEN || hc->inflight) {
                    continue;
                }
                uint64_t m = due - sent < (uint64_t)batch ? due - sent : (uint64_t)batch;
                char req[1400];
                int rl = snprintf(req, sizeof req,
                                  "GET %s?i=%llu&n=%llu HTTP/1.1\r\nHost: %s:%d\r\n\r\n", http_pub,
                                  (unsigned long long)sent, (unsigned long long)m, host, port);
                if (send_all(hc, req, (size_t)rl) < 0) {
                    close_conn(hc);
                    continue;
                }
                hc->inflight = m;
                sent += m;
                requests++;
            }
            if (http_pub) {
                int open = 0, busy = 0;
                for (int k = 0; k < nconns; k++) {
                    open += conns[k].state != ST_CLOSED;
                    busy += conns[k].state == ST_OPEN && conns[k].inflight;
                }
                if (!open) {
                    fprintf(stderr, "wsload: every publisher connection was lost\n");
                    break;
                }
                if (sent >= pub_total && !busy) {
                    break; /* every request answered */
                }
            }
            for (; !http_pub && sent < due; sent++) {
                char msg[200];
                int m = snprintf(msg, sizeof msg,
                                 "{\"type\":\"publish\",\"topic\":\"%s\",\"data\":"
                                 "{\"i\":%llu,\"t\":%.6f}}",
                                 topic, (unsigned long long)sent, now_real());
                if (conns[0].state == ST_CLOSED || send_frame(&conns[0], 1, msg, (size_t)m) < 0) {
                    fprintf(stderr, "wsload: publisher connection lost\n");
                    stop = 1;
                    break;
                }
            }
            if (sent >= pub_total && !pub_done) {
                pub_done = now; /* keep reading the acks a moment: closing with unread
                                   input would reset the connection */
            }
            if (pub_done && !hold && now - pub_done > 1.0) {
                break;
            }
            timeout = 1;
        }
        if (h2mode) {
            h2_flush_dirty();
        }
        int n = epoll_wait(ep, evs, 256, timeout);
        if (n < 0 && errno != EINTR) {
            die("epoll_wait");
        }
        for (int k = 0; k < n; k++) {
            uint32_t i = evs[k].data.u32;
            if (i == UINT32_MAX) {
                char tmp[64];
                if (read(0, tmp, sizeof tmp) <= 0) {
                    stop = 1;
                    epoll_ctl(ep, EPOLL_CTL_DEL, 0, NULL);
                }
                continue;
            }
            if (h2mode) {
                uint64_t before = received;
                if (h2s[i].state != ST_CLOSED) {
                    h2_event(ep, &h2s[i], (int)i);
                }
                if (received != before) {
                    last_event_mono = now_mono();
                }
                continue;
            }
            struct conn *c = &conns[i];
            if (c->state == ST_CLOSED) {
                continue;
            }
            if (c->state == ST_CONNECTING) {
                on_connected(ep, c, (int)i);
            } else if (c->state == ST_TLS) {
                tls_step(ep, c, (int)i);
            } else {
                uint64_t before = received;
                on_readable(c);
                if (received != before) {
                    last_event_mono = now_mono();
                }
            }
        }
        double now = now_mono();
        if (now > deadline) {
            fprintf(stderr, "wsload: --timeout reached\n");
            break;
        }
        if (!publisher && ready && !hold) {
            if (expect && received >= expect * (uint64_t)subscribed) {
                break;
            }
            if (last_event_mono && now - last_event_mono > idle_s) {
                break;
            }
            if (subscribed == 0 || closed_early >= nconns) { /* none left open */
                break;
            }
        }
        if (!watch_stdin && hold && ready) {
            break;
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
                 ru.ru_stime.tv_usec / 1e6;
    qsort(lat, nlat, sizeof *lat, cmp_float);
    double p50 = nlat ? lat[nlat / 2] : 0, p99 = nlat ? lat[(size_t)(nlat * 0.99)] : 0;
    double pmax = nlat ? lat[nlat - 1] : 0;
    printf("{\"role\":\"%s\",\"conns\":%d,\"subscribed\":%d,\"closed\":%d,\"sent\":%llu,"
           "\"received\":%llu,\"bad\":%llu,\"pub_start\":%.6f,\"first_rx\":%.6f,"
           "\"last_rx\":%.6f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
           "\"samples\":%zu,\"cpu_s\":%.3f,\"requests\":%llu,\"acked\":%llu,\"reconnects\":%llu}\n",
           publisher ? "publisher" : "subscriber", nconns, subscribed, closed_early,
           (unsigned long long)sent, (unsigned long long)received, (unsigned long long)bad,
           pub_start, first_rx, last_rx, p50, p99, pmax, nlat, cpu, (unsigned long long)requests,
           (unsigned long long)acked, (unsigned long long)reconnects);
    fflush(stdout);
    for (int i = 0; i < nh2; i++) {
        if (h2s[i].state != ST_CLOSED && i < h2_started) {
            nghttp2_session_del(h2s[i].sess);
            SSL_free(h2s[i].ssl);
            close(h2s[i].fd);
        }
    }
    free(h2s);
    free(h2_dirty);
    for (int i = 0; i < nconns; i++) {
        if (conns[i].state != ST_CLOSED && !conns[i].h2) {
            SSL_free(conns[i].ssl);
            close(conns[i].fd);
        }
        free(conns[i].buf);
        free(conns[i].out);
    }
    free(conns);
    free(lat);
    if (tls) {
        SSL_CTX_free(tls);
    }
    return 0;
}
