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

/* Sends all of buf (small messages on loopback: a short write is waited out with poll). */
static int send_all(struct conn *c, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w;
        short want = POLLOUT;
        if (c->ssl) {
            int r = SSL_write(c->ssl, buf, (int)n);
            int e = r > 0 ? 0 : SSL_get_error(c->ssl, r);
            w = r > 0 ? r : -1;
            errno = e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? EAGAIN : EPIPE;
            want = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        } else {
            w = send(c->fd, buf, n, MSG_NOSIGNAL);
        }
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                struct pollfd p = {c->fd, want, 0};
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

/* recv(), or SSL_read() with --tls: -1 and EAGAIN when nothing is ready. */
static ssize_t conn_recv(struct conn *c, char *buf, size_t n)
{
    if (!c->ssl) {
        return recv(c->fd, buf, n, 0);
    }
    int r = SSL_read(c->ssl, buf, (int)n);
    if (r > 0) {
        return r;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        errno = EAGAIN;
        return -1;
    }
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
    return send_all(c, out, h + n);
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
    if (c->state != ST_CLOSED) {
        if (c->state == ST_HANDSHAKE || c->state == ST_TLS) {
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
            handshaking--;
            if (nsubs > 0) {
                char msg[1200];
                int m =
                    snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"topic\":\"%s\"}", topic);
                c->state = ST_SUBSCRIBING;
                if (send_frame(c, 1, msg, (size_t)m) < 0) {
                    close_conn(c);
                    return;
                }
            } else {
                c->state = ST_OPEN;
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
        (http_pub && (!publisher || tls))) {
        fprintf(stderr, "wsload: need --port and either --subs N or --pub-rate R "
                        "(--http-pub: with --pub-rate, without --tls)\n");
        return 2;
    }
    srandom((unsigned)getpid());
    nconns = http_pub ? nhttp : publisher ? 1 : nsubs;
    conns = calloc((size_t)nconns, sizeof *conns);
    lat_cap = 1 << 21;
    lat = malloc(lat_cap * sizeof *lat);
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
            start_conn(ep, &sa, started);
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
    for (int i = 0; i < nconns; i++) {
        if (conns[i].state != ST_CLOSED) {
            SSL_free(conns[i].ssl);
            close(conns[i].fd);
        }
        free(conns[i].buf);
    }
    free(conns);
    free(lat);
    if (tls) {
        SSL_CTX_free(tls);
    }
    return 0;
}
