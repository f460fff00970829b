/* HTTP/2 (nghttp2) on the shared loop, and the https listeners.
 *
 * Files:
 *   module.c  the "h2" module: config keys (http.https, tls.*, h2.*), https
 *             listeners, TLS handshakes and the ALPN hand-off, stop/reload
 *   conn.c    one nghttp2 server session per connection over a bufferevent:
 *             I/O, output back-pressure, timers, abuse limits, GOAWAY
 *   stream.c  streams: request headers/body -> a zf_exchange, dispatch
 *   response.c the response pulled from the exchange by nghttp2 data
 *             providers (NO_COPY frames), zfront's own error pages
 *   upgrade.c h2c: the Upgrade request check and HTTP2-Settings decoding
 *   tunnel.c  RFC 8441 extended CONNECT: the stream as a byte pipe for the
 *             module the core's upgrade registry names for its :protocol
 *
 * The public entry point for HTTP/1.1 (prior knowledge, Upgrade: h2c, ALPN)
 * is zf_h2_start in ../http.h; the helpers below let http1.c detect both
 * hand-offs without knowing HTTP/2. */
#ifndef ZF_H2_H
#define ZF_H2_H

#include <event2/bufferevent.h>
#include <nghttp2/nghttp2.h>
#include <stdint.h>

#include "../../../core/exchange.h"
#include "../../../core/spool.h"
#include "../http.h"

/* ------------------------------------------------------- for http1.c */

/* True when the h2 module is active and HTTP/2 is enabled (h2.enable): only
 * then may HTTP/1.1 hand a connection over (preface, Upgrade: h2c). */
int zf_h2_enabled(void);

/* Compares the first bytes a client sent with the 24-byte HTTP/2 client
 * preface. Returns 1 when buf starts with the whole preface, 0 when buf is a
 * proper prefix of it (wait for more bytes), -1 when it is not HTTP/2. */
int zf_h2_preface_match(const void *buf, size_t len);

/* Checks an HTTP/1.1 request for a valid h2c upgrade (RFC 7540 3.2): an
 * "Upgrade" token h2c, "Connection" naming Upgrade and HTTP2-Settings, and
 * exactly one base64url HTTP2-Settings header. Returns 1 and the decoded
 * payload in *settings (malloc'ed, caller frees) / *len, or 0 (serve the
 * request as HTTP/1.1). */
int zf_h2c_upgrade_wanted(const struct zf_exchange *ex, uint8_t **settings, size_t *len);

/* The complete "101 Switching Protocols" response to write before calling
 * zf_h2_start for an upgrade. */
extern const char zf_h2c_switching[];

/* ------------------------------------------------------------ internal */

struct zf_h2_config {
    int enable;
    long max_concurrent_streams;
    uint64_t max_header_list_size;
    uint64_t initial_window_size;    /* per stream, for request bodies */
    uint64_t connection_window_size; /* whole connection */
    uint64_t idle_timeout_ms;        /* no open stream: GOAWAY + close */
    long max_resets;                 /* client RST_STREAMs per limit_window */
    long max_control_frames;         /* PING/SETTINGS/PRIORITY/empty DATA per window */
    uint64_t limit_window_ms;
    struct zf_strlist https; /* http.https listen addresses */
};
extern struct zf_h2_config zf_h2_cfg;

struct zf_h2_stream;

struct zf_h2_conn {
    struct zf_conn conn; /* first: log lines */
    const char *scheme;  /* copied from the endpoint (static strings): the */
    const char *channel; /* endpoint may be freed while streams still run */
    struct bufferevent *bev;
    nghttp2_session *session;
    struct event *idle_timer; /* pending while no stream is open */
    struct event *tick;       /* 1 s: stalled uploads */
    struct event *close_ev;   /* deferred free */
    struct event *linger_ev;  /* reading and discarding after our FIN */
    uint64_t linger_until;
    struct zf_h2_stream *streams;
    size_t nstreams;
    int32_t *ready; /* streams complete in this read, dispatched after it */
    size_t nready, ready_cap;
    char server_host[64];
    int server_port;
    int tls;
    int closing;     /* no more reading; freed once the output is flushed */
    int dead;        /* freed at the next loop turn */
    int goaway;      /* graceful GOAWAY sent */
    int lingering;   /* everything sent; draining input before the close */
    size_t body_mem; /* request body bytes held in memory by its streams */
    uint64_t window_start;
    long resets, control_frames;
    struct zf_h2_conn *prev, *next;
};

enum zf_h2_stream_state {
    ZF_H2_HEADERS,  /* header block arriving */
    ZF_H2_BODY,     /* request body arriving */
    ZF_H2_READY,    /* request complete, dispatch after this read */
    ZF_H2_APP,      /* at the application; response streaming */
    ZF_H2_REJECTED, /* answered by zfront itself (4xx/5xx); input ignored */
};

struct zf_h2_stream {
    struct zf_h2_conn *c;
    int32_t id;
    enum zf_h2_stream_state state;
    struct zf_exchange *ex;
    /* request */
    struct zf_spool body;
    uint64_t body_len;
    size_t body_mem; /* part of c->body_mem */
    int64_t declared_len;
    size_t header_bytes;
    long nheaders;
    int reject; /* status to answer once the header block ended, 0 = none */
    char *method, *path, *authority;
    char *protocol;                   /* :protocol (RFC 8441 extended CONNECT) */
    const struct zf_upgrade *upgrade; /* its handler, while the app decides */
    struct zf_h2_tunnel *tunnel;      /* the open pipe (tunnel.c) */
    char *cookie;                     /* cookie fields joined with "; " */
    size_t cookie_len;
    uint64_t last_recv_ms;
    /* response */
    int submitted;
    int deferred;
    int finished, failed; /* from zf_exchange_take */
    struct zf_segment *seg, *next_seg;
    size_t seg_off;
    const char *errbody; /* our own error page (static) */
    size_t errlen, erroff;
    int status;
    uint64_t sent;
    uint64_t start_us;
    struct zf_h2_stream *prev, *next;
};

/* conn.c */
extern struct zf_h2_conn *zf__h2_conns;
extern size_t zf__h2_nconns;
extern uint64_t zf__h2_abusive;
/* Sends what nghttp2 has queued, as far as the output buffer allows, and
 * closes the connection when the session is over. Never call it from inside
 * an nghttp2 callback. */
void zf__h2_flush(struct zf_h2_conn *c);
/* Frees the connection at the next loop turn (aborting its exchanges). */
void zf__h2_close(struct zf_h2_conn *c);
/* Counts a control frame / a client reset; on too many within the window,
 * terminates the session with ENHANCE_YOUR_CALM. Returns ZF_OK or ZF_ERROR
 * (connection being dropped). Safe inside nghttp2 callbacks. */
int zf__h2_count_abuse(struct zf_h2_conn *c, int reset);
/* Re-arms the idle timer / the upload tick after streams came or went. */
void zf__h2_streams_changed(struct zf_h2_conn *c);
/* Graceful: GOAWAY, let open streams finish. Otherwise close now. */
void zf__h2_stop_all(int graceful);
/* Output bytes above which nghttp2 is told to wait (WOULDBLOCK). */
#define ZF_H2_OUT_HIGH (256 * 1024)
#define ZF_H2_OUT_LOW (64 * 1024)

/* A name/value pair for nghttp2 from a string literal name and a C string
 * value (nghttp2 copies both on submit). */
#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE             \
    }

/* stream.c */
/* The stream of an id on c, or NULL (closed, never opened). */
struct zf_h2_stream *zf__h2_get_stream(struct zf_h2_conn *c, int32_t id);
/* Gives the stream's in-memory body bytes back to the connection's budget. */
void zf__h2_body_mem_drop(struct zf_h2_stream *st);
uint64_t zf__h2_now_us(void);
/* Installs the stream callbacks into cbs. */
void zf__h2_stream_callbacks(nghttp2_session_callbacks *cbs);
/* Dispatches the streams whose request completed during the last read. */
void zf__h2_dispatch_ready(struct zf_h2_conn *c);
/* Makes stream 1 of an upgraded connection from the HTTP/1.1 exchange and
 * dispatches it. Returns ZF_OK or ZF_ERROR (ex released). */
int zf__h2_upgrade_stream(struct zf_h2_conn *c, struct zf_exchange *ex);
/* Frees every stream of a dying connection, aborting exchanges. */
void zf__h2_free_streams(struct zf_h2_conn *c);
/* Answers or resets streams whose upload stalled past http.body_timeout.
 * Returns the number of streams still receiving (the tick keeps running). */
size_t zf__h2_check_stalled(struct zf_h2_conn *c, uint64_t now);
/* Number of streams alive across connections (stats). */
extern size_t zf__h2_nstreams;

/* tunnel.c: RFC 8441 extended CONNECT (:protocol), handed to the module
 * registered for that token in the core's upgrade registry. */
struct zf_h2_tunnel;
/* The header block of an extended CONNECT ended (exchange built): asks the
 * handler. Returns ZF_OK (dispatch to the app, which authorises), ZF_AGAIN
 * (the tunnel is open already) or ZF_ERROR (answered with an error). */
int zf__h2_tunnel_check(struct zf_h2_stream *st);
/* The app allowed it (2xx) or no app is asked: 200 and the pipe. Returns
 * ZF_OK or ZF_ERROR (stream reset). The exchange is let go. */
int zf__h2_tunnel_open(struct zf_h2_stream *st);
/* Tunnel bytes from the client (DATA on the stream). */
void zf__h2_tunnel_data(struct zf_h2_tunnel *t, const uint8_t *data, size_t len);
/* The stream is gone: the protocol forgets the pipe, the tunnel is freed. */
void zf__h2_tunnel_stream_gone(struct zf_h2_tunnel *t);
/* stream.c: the access log line of a stream (its status set). */
void zf__h2_access_log(struct zf_h2_stream *st);

/* response.c */
/* on_output: the worker produced headers or body for a stream. */
extern const struct zf_exchange_ops zf__h2_exchange_ops;
/* Answers the stream with a short text/plain page of zfront's own (400,
 * 408, 413, 431, 500, 501); the rest of the request is ignored. Safe inside
 * nghttp2 callbacks. */
void zf__h2_respond_error(struct zf_h2_stream *st, int status);
/* nghttp2 send_data_callback for NO_COPY DATA frames. */
int zf__h2_send_body(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
                     size_t length, nghttp2_data_source *source, void *user_data);

#endif
