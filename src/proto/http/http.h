/* The HTTP module's shared pieces: listeners (endpoints) and the handoff of
 * one connection between HTTP/1.1 and HTTP/2.
 *
 * A connection starts as a bufferevent (a plain socket, or OpenSSL over a
 * socket for https). HTTP/1.1 owns it by default; it hands the bufferevent
 * to HTTP/2 when ALPN chose "h2", when the client sends the HTTP/2 preface
 * (prior knowledge), or after "Upgrade: h2c". A later WebSocket module takes
 * a connection the same way (the owner swaps, the socket stays). */
#ifndef ZF_HTTP_H
#define ZF_HTTP_H

#include <event2/bufferevent.h>

#include "../../core/config.h"
#include "../../core/log.h"
#include "../../core/server.h"

/* One listening address and what its requests are. */
struct zf_http_endpoint {
    struct zf_listener *listener;
    const char *scheme;  /* "http" / "https" */
    const char *channel; /* zfront.channel for requests on it: "http", "webdav-source" */
    int tls;             /* connections are TLS (bufferevent_openssl) */
    struct zf_http_endpoint *next;
};

/* The HTTP module's settings ([http] section). Owned by http1.c. */
struct zf_http_config {
    struct zf_strlist listen;
    uint64_t max_request_line; /* 414 */
    uint64_t max_header_size;  /* 431: whole header section */
    long max_headers;          /* 431: number of fields */
    uint64_t max_body_size;    /* 413 */
    uint64_t header_timeout_ms;
    uint64_t body_timeout_ms;
    uint64_t keepalive_timeout_ms;
    uint64_t send_timeout_ms;
    long max_keepalive_requests;
};
extern struct zf_http_config zf_http_cfg;

/* Starts HTTP/1.1 on an accepted connection. Takes ownership of bev (its
 * callbacks are replaced) and of its place in the connection count: the
 * caller counted it with zf_conn_opened() when it accepted the socket, and
 * HTTP/1.1 calls zf_conn_closed() when it closes the socket (not when it
 * hands the socket on to HTTP/2, which then owns the count). `conn` is
 * copied (id and peer survive the handoff). Bytes already read (e.g. by a
 * TLS layer) stay in bev's input. Returns ZF_OK or ZF_ERROR (bev freed,
 * count released). */
int zf_http1_start(struct zf_http_endpoint *ep, struct bufferevent *bev,
                   const struct zf_conn *conn);

/* Accept callback for plain endpoints: wraps fd in a socket bufferevent and
 * starts HTTP/1.1. */
void zf_http_accept(struct zf_listener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                    void *arg);

/* ------------------------------------------------------ the h2c hand-off
 *
 * A plain HTTP/1.1 connection becomes HTTP/2 in two cases: its first bytes
 * are the HTTP/2 client preface (prior knowledge), or a complete request
 * asks for "Upgrade: h2c" (RFC 7540 3.2). These three operations are the
 * whole interface between http1.c and h2/ for that: http1.c knows nothing
 * else of HTTP/2, h2/ nothing of HTTP/1.1 parsing. (TLS connections are
 * handed over by ALPN inside the h2 module, before HTTP/1.1 starts.)
 *
 * zf_h2c is NULL when HTTP/2 is not built or not enabled (h2.enable); the
 * h2 module sets it in its configure hook. Loop thread only. */
struct zf_exchange;
struct zf_h2c_ops {
    /* The first bytes of a plain connection, before any request: 1 when
     * they start with the whole 24-byte client preface (call start), 0 when
     * they are a proper prefix of it (wait for more bytes), -1 when the
     * connection is not HTTP/2. */
    int (*preface)(const void *buf, size_t len);
    /* A complete HTTP/1.1 request (its body read): 1 when it asks for a
     * valid h2c upgrade (Upgrade token h2c, Connection naming Upgrade and
     * HTTP2-Settings, exactly one base64url HTTP2-Settings), so the caller
     * must call start with it; 0 when it is to be served as HTTP/1.1. */
    int (*upgrade_wanted)(const struct zf_exchange *ex);
    /* Takes the connection over: bev (its callbacks are replaced; its input
     * holds what the client sent after the preface or the request) and, for
     * an upgrade, the request (upgrade_request, body complete), which
     * becomes stream 1 after zfront wrote "101 Switching Protocols". `conn`
     * is copied. Ownership of bev, of its place in the connection count
     * (zf_conn_opened at accept; HTTP/2 calls zf_conn_closed when it closes
     * the socket) and of upgrade_request passes in every case; a failure is
     * logged and frees both. */
    void (*start)(struct zf_http_endpoint *ep, struct bufferevent *bev, const struct zf_conn *conn,
                  struct zf_exchange *upgrade_request);
};
extern const struct zf_h2c_ops *zf_h2c;

/* The HTTP/1.1 connections (http1.c), for the module hooks (module.c).
 * zf__http1_stop: graceful closes idle connections now and lets busy ones
 * finish their current response (sent with Connection: close); otherwise
 * closes every connection now. Either way it detaches them from their
 * endpoint (ep becomes NULL), so the endpoints may be freed right after.
 * zf__http1_active: connections still open. zf__http1_stats: appends
 * "http.NAME: VALUE" lines. Loop thread only. */
struct evbuffer;
void zf__http1_stop(int graceful);
size_t zf__http1_active(void);
void zf__http1_stats(struct evbuffer *out);
/* Adds HTTP/1.1's samples to a metrics collection (metrics.h). */
struct zf_metrics;
void zf__http1_metrics(struct zf_metrics *m);
/* zf__http1_shed: closes at most n connections that lose nothing (idle,
 * still sending a header section, lingering), least recently active
 * first, and frees them now. Returns how many. Not from inside an HTTP/1.1
 * callback (the core calls it from its accept callback). */
size_t zf__http1_shed(size_t n);

/* (module.c) Opens one endpoint per address of `addrs` (scheme, tls,
 * channel: zfront.channel of its requests, static), each accepting with
 * cb, and pushes them on *list. The module also offers plain endpoints to
 * other modules as the "http" service (server.h).
 * Returns ZF_OK or ZF_ERROR (logged; the endpoints opened so far stay on
 * *list for the module's stop to close). */
int zf__http_listen_all(struct zf_server *srv, const struct zf_strlist *addrs,
                        const char *scheme, int tls, const char *channel, zf_accept_cb cb,
                        struct zf_http_endpoint **list);

/* Shared HTTP helpers (http_util.c). */
/* RFC 9110 tchar test. */
int zf_http_is_tchar(unsigned char c);
/* "Sun, 06 Nov 1994 08:49:37 GMT" for now, cached per second (loop thread). */
const char *zf_http_date(void);
/* Reason phrase for a status code ("Not Found"), "" for unknown. */
const char *zf_http_reason(int status);
/* True for hop-by-hop header names that an app must not send
 * (Connection, Keep-Alive, Transfer-Encoding, Upgrade, ...). */
int zf_http_is_hop_by_hop(const char *name, size_t len);
/* Frees a connection's bufferevent and closes its socket now. libevent
 * closes the socket of a freed bufferevent (BEV_OPT_CLOSE_ON_FREE) only in
 * its finalizer, later in the loop iteration: connections shed from the
 * accept callback, which takes the whole backlog in one go, would keep
 * their descriptors until the burst ends and accept() would fail with
 * EMFILE (pausing it). The socket is taken from the bufferevent (a plain
 * one's descriptor, a TLS one's socket BIO) and closed here. */
void zf__http_bev_free(struct bufferevent *bev);

#endif
