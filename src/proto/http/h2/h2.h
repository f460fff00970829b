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
 * HTTP/1.1 reaches HTTP/2 only through zf_h2c (../http.h), set by the
 * module when HTTP/2 is enabled; everything below is internal to h2/. */
#ifndef ZF_H2_H
#define ZF_H2_H

#include <event2/bufferevent.h>
#include <nghttp2/nghttp2.h>
#include <stdint.h>

#include "../../../core/exchange.h"
#include "../../../core/spool.h"
#include "../http.h"

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
    long max_refused_headers;        /* header blocks answered 431 per window */
    uint64_t max_header_bytes;       /* decoded header bytes per window */
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
    struct event *idle_timer;  /* pending while no stream is open */
    struct event *tick;        /* 1 s: stalled uploads */
    struct event *close_ev;    /* deferred free */
    struct event *linger_ev;   /* reading and discarding after our FIN */
    struct event *more_ev;     /* TLS: reading what OpenSSL read ahead, next pass */
    struct timeval ahead_pass; /* the loop pass (its cached time) ahead_n counts in */
    unsigned ahead_n;          /* read events re-activated in that pass */
    uint64_t linger_until;
    struct zf_h2_stream *streams;
    size_t nstreams;
    int32_t *ready; /* streams complete in this read, dispatched after it */
    size_t nready, ready_cap;
    char server_host[64];
    int server_port;
    int tls;
    int closing;               /* no more reading; freed once the output is flushed */
    int dead;                  /* freed at the next loop turn */
    int goaway;                /* graceful GOAWAY sent */
    int lingering;             /* everything sent; draining input before the close */
    size_t body_mem;           /* request body bytes held in memory by its streams */
    int32_t max_client_stream; /* highest stream id the client opened */
    uint64_t block_bytes;      /* raw bytes of the header block arriving */
    uint64_t stall_since;      /* ms: connection window shut while output waits */
    uint64_t data_sent;        /* DATA payload bytes sent on all streams */
    uint64_t stall_sent;       /* data_sent when stall_since was last checked */
    uint64_t window_start;
    long resets, control_frames, refused_headers;
    uint64_t header_bytes; /* decoded, name + value + 32 per field */
    uint64_t active_ms;    /* ms: started, or a stream came or went (shedding order) */
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
    int finished, failed;   /* from zf_exchange_take */
    int complete;           /* our END_STREAM went out: the response is whole */
    uint64_t stall_since;   /* ms: window shut while output waits; 0 = not */
    uint64_t stall_sent;    /* `sent` when stall_since was last checked */
    int stall_reset;        /* reset for that (http.send_timeout) */
    struct zf_segment *seg; /* taken from the exchange, being sent */
    size_t seg_off;
    const char *errbody; /* our own error page (static) */
    size_t errlen, erroff;
    int status;
    uint64_t sent;
    uint64_t start_us;
    struct zf_h2_stream *prev, *next;
};

/* upgrade.c: the operations behind zf_h2c (prior knowledge, Upgrade: h2c). */
extern const struct zf_h2c_ops zf__h2c_ops;

/* module.c: true when the module is active and h2.enable is set. */
int zf__h2_enabled(void);

/* conn.c */
/* Starts HTTP/2 on a connection. Takes ownership of bev. The preface and
 * any frames already received are in bev's input. When upgrade_settings is
 * not NULL this is an h2c upgrade: the 101 was sent already, the decoded
 * HTTP2-Settings payload is given, and `upgrade_request` (the HTTP/1.1
 * request, body complete) becomes stream 1 (ownership passes). Returns
 * ZF_OK or ZF_ERROR (bev and upgrade_request freed). */
int zf__h2_start(struct zf_http_endpoint *ep, struct bufferevent *bev, const struct zf_conn *conn,
                 const uint8_t *upgrade_settings, size_t settings_len,
                 struct zf_exchange *upgrade_request);
/* 1 / 0 / -1: see zf_h2c_ops.preface in ../http.h. */
int zf__h2_preface_match(const void *buf, size_t len);
extern struct zf_h2_conn *zf__h2_conns;
extern size_t zf__h2_nconns;
extern uint64_t zf__h2_abusive;
/* Sends what nghttp2 has queued, as far as the output buffer allows, and
 * closes the connection when the session is over. Never call it from inside
 * an nghttp2 callback. */
void zf__h2_flush(struct zf_h2_conn *c);
/* Frees the connection at the next loop turn (aborting its exchanges). */
void zf__h2_close(struct zf_h2_conn *c);
/* What zf__h2_count_abuse counts, each against its limit per
 * h2.limit_window. */
enum zf_h2_abuse {
    ZF_H2_CONTROL,      /* PING, SETTINGS, PRIORITY, empty DATA/CONTINUATION */
    ZF_H2_RESET,        /* client RST_STREAM */
    ZF_H2_REFUSED,      /* a header block answered 431 */
    ZF_H2_HEADER_BYTES, /* n decoded header bytes */
};
/* Counts n of `what`; on too many within the window, terminates the
 * session with ENHANCE_YOUR_CALM (logged once). Returns ZF_OK or ZF_ERROR
 * (connection being dropped: process no more input). Safe inside nghttp2
 * callbacks. */
int zf__h2_count_abuse(struct zf_h2_conn *c, enum zf_h2_abuse what, uint64_t n);
/* Re-arms the idle timer / the upload tick after streams came or went. */
void zf__h2_streams_changed(struct zf_h2_conn *c);
/* Graceful: GOAWAY, let open streams finish. Otherwise close now. */
void zf__h2_stop_all(int graceful);
/* The connection limit (struct zf_module.shed): closes at most n HTTP/2
 * connections with no open stream (idle, or the preface/SETTINGS not yet
 * complete) and nothing of a response left to send, least recently active
 * first, after a GOAWAY(NO_ERROR) written only as far as the socket takes
 * it at once; frees them now (their descriptors and their place in the
 * connection count). A connection with a stream in progress is never
 * closed. Returns how many. Not from inside an nghttp2 or bufferevent
 * callback of these connections (the core calls it from its accept
 * callback). */
size_t zf__h2_shed(size_t n);
extern uint64_t zf__h2_shed_count;
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
/* exchange op (stream.c): the server is over its output budget and this
 * stream's response holds the most: reset it (ENHANCE_YOUR_CALM) and abort
 * the exchange. */
void zf__h2_evict(struct zf_exchange *ex);
/* Answers the stream with a short text/plain page of zfront's own (400,
 * 408, 413, 431, 500, 501); the rest of the request is ignored. Safe inside
 * nghttp2 callbacks. */
void zf__h2_respond_error(struct zf_h2_stream *st, int status);
/* Resets streams (and closes the connection) whose flow-control window
 * stayed shut for http.send_timeout while output waits. Returns the number
 * of streams with a response in progress. Not inside nghttp2 callbacks. */
size_t zf__h2_check_output(struct zf_h2_conn *c, uint64_t now);
/* nghttp2 send_data_callback for NO_COPY DATA frames. */
int zf__h2_send_body(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
                     size_t length, nghttp2_data_source *source, void *user_data);

#endif
