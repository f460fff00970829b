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
 * callbacks are replaced). `conn` is copied (id and peer survive the
 * handoff). Bytes already read (e.g. by a TLS layer) stay in bev's input.
 * Returns ZF_OK or ZF_ERROR (bev freed). */
int zf_http1_start(struct zf_http_endpoint *ep, struct bufferevent *bev,
                   const struct zf_conn *conn);

/* Accept callback for plain endpoints: wraps fd in a socket bufferevent and
 * starts HTTP/1.1. */
void zf_http_accept(struct zf_listener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                    void *arg);

#ifdef ZF_WITH_HTTP2
/* Starts HTTP/2 on a connection. Takes ownership of bev. The preface and
 * any frames already received are in bev's input. When upgrade_settings is
 * not NULL this is an h2c upgrade: the 101 was sent already, the decoded
 * HTTP2-Settings payload is given, and `upgrade_request` (the HTTP/1.1
 * request, body complete) becomes stream 1 (ownership passes). Returns
 * ZF_OK or ZF_ERROR (bev and upgrade_request freed). */
struct zf_exchange;
int zf_h2_start(struct zf_http_endpoint *ep, struct bufferevent *bev, const struct zf_conn *conn,
                const uint8_t *upgrade_settings, size_t settings_len,
                struct zf_exchange *upgrade_request);
#endif

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

#endif
