/* The WebSocket module: notifications over RFC 6455 (framing by wslay) on
 * the core's topic hub (src/core/hub.h).
 *
 * A connection arrives by an HTTP/1.1 Upgrade at `ws.path`: http1.c finds
 * this module through the core's upgrade registry (server.h), asks the app
 * (a WSGI request with zfront.channel=websocket) when `ws.app_auth` is on,
 * then hands the bufferevent over. From then on the session (session.c)
 * owns the socket; it knows the hub and nothing of HTTP.
 *
 * Loop thread only. The wire format is in docs/protocols/websocket.md. */
#ifndef ZF_WS_H
#define ZF_WS_H

#include <event2/bufferevent.h>

#include "../../core/config.h"
#include "../../core/exchange.h"
#include "../../core/log.h"
#include "../../core/server.h"

/* [ws] settings. Owned by module.c. */
struct zf_ws_config {
    char *path;                      /* upgrade path; "" disables the module */
    int app_auth;                    /* the app authorises each handshake */
    struct zf_strlist public_topics; /* topics anyone may subscribe to */
    struct zf_strlist origins;       /* allowed Origin values; empty: same host */
    uint64_t max_message;            /* 1009 beyond */
    uint64_t max_send_buffer;        /* slow consumer: 1008 beyond */
    uint64_t ping_interval_ms;       /* 0: no keepalive */
    uint64_t pong_timeout_ms;        /* dead peer */
    uint64_t close_timeout_ms;       /* after our close frame */
    long max_subscriptions;          /* per connection */
    long max_connections;            /* sessions at once; 503 beyond */
    char *app_path;                  /* client messages go to the app here; "" off */
};
extern struct zf_ws_config zf_ws_cfg;

/* The handshake request, kept only when a grant's `send` grants
 * something: each message to the app is a request with the same headers
 * (cookies, Authorization) and query string. A separate allocation, so
 * that the many sessions that only listen do not carry it. */
struct zf_ws_request {
    struct zf_headers headers;
    char *query;
    const char *scheme; /* static */
    char server_host[64];
    int server_port;
};

/* What the handshake granted a session: NULL-terminated string arrays,
 * owned by the session once started. */
struct zf_ws_grant {
    char **topics;                 /* subscribe: exact topics, or prefixes ending in '/' or '*' */
    char **publish;                /* publish: same form */
    char **audience;               /* audience tokens */
    char *protocol;                /* the subprotocol chosen ("zfront.v1") or NULL */
    char **send;                   /* topics whose messages go to the app (ws.app_path) */
    struct zf_ws_request *request; /* set when `send` grants something, else NULL */
};

/* Starts a session on an upgraded connection: writes the 101 (with
 * Sec-WebSocket-Accept `accept`), then speaks WebSocket. Takes ownership of
 * bev and of g's arrays. Returns ZF_OK or ZF_ERROR (everything freed). */
int zf__ws_session_start(struct bufferevent *bev, const struct zf_conn *conn, const char *accept,
                         struct zf_ws_grant *g);
/* The same over an HTTP/2 stream (RFC 8441): the transport already
 * answered 200. Takes g's arrays; on ZF_ERROR the caller resets the stream.
 * Returns ZF_OK or ZF_ERROR. */
int zf__ws_session_start_pipe(struct zf_pipe *p, struct event_base *base,
                              const struct zf_conn *conn, struct zf_ws_grant *g);
/* Graceful: every session sends what is queued, then closes with 1001;
 * otherwise sessions are freed now. */
void zf__ws_stop(int graceful);
size_t zf__ws_active(void);
void zf__ws_stats(struct evbuffer *out);
/* The module's metrics collector (metrics.h). */
struct zf_metrics;
void zf__ws_metrics(struct zf_metrics *m, void *arg);
void zf__ws_grant_free(struct zf_ws_grant *g);
/* True when `topic` is allowed by one of `rules` (exact, or a prefix
 * ending in '/' or '*'; a client pattern "a/b*" needs a prefix rule that
 * covers "a/b"). */
int zf__ws_allowed(char *const *rules, const char *topic);
/* wss://: a BIO (BIO *) on fd that sends and receives and does not close
 * fd or tell it (tls_bio.c says why), or NULL when out of memory. Built
 * with ZF_WITH_HTTP2 (OpenSSL). */
void *zf__ws_bio_new(evutil_socket_t fd);

#endif
