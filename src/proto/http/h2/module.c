/* The "h2" module: HTTPS listeners, TLS handshakes with the ALPN hand-off
 * (h2 -> zf__h2_start, http/1.1 -> zf_http1_start), HTTP/2 settings and
 * limits, stop/reload hooks for every HTTP/2 connection (TLS or h2c).
 *
 * It is a module of its own rather than more keys in the HTTP/1.1 module so
 * that TLS and HTTP/2 stay in files that build only with nghttp2, with their
 * own stop/active/reload hooks; HTTP/1.1 reaches it only through zf_h2c
 * (../http.h), which configure sets when HTTP/2 is enabled. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../../../core/metrics.h"
#include "../tls.h"
#include "h2.h"

struct zf_h2_config zf_h2_cfg;

/* Mozilla's "intermediate" TLS 1.2 list: ECDHE key exchange, AEAD only. */
#define DEFAULT_CIPHERS                                                                            \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

static const struct zf_cfg_key keys[] = {
    {"http.https", ZF_CFG_LIST, &zf_h2_cfg.https, NULL, "--https",
     "HTTPS listen addresses (host:port); HTTP/2 or HTTP/1.1 is chosen by ALPN."},
    {"tls.cert", ZF_CFG_STR, &zf_tls_cfg.cert, NULL, "--cert",
     "PEM certificate for https (leaf first, optionally followed by intermediates). Without "
     "it a self-signed certificate for localhost is generated into <server.state_dir>/tls/."},
    {"tls.key", ZF_CFG_STR, &zf_tls_cfg.key, NULL, "--key",
     "PEM private key of tls.cert (default: looked for in the tls.cert file)."},
    {"tls.chain", ZF_CFG_STR, &zf_tls_cfg.chain, NULL, "--cert-chain",
     "PEM file of intermediate certificates sent after tls.cert."},
    {"tls.ciphers", ZF_CFG_STR, &zf_tls_cfg.ciphers, DEFAULT_CIPHERS, NULL,
     "TLS 1.2 cipher list (OpenSSL syntax); TLS 1.3 uses OpenSSL's AEAD suites. TLS 1.0 "
     "and 1.1 are always refused."},
    {"tls.session_timeout", ZF_CFG_MSEC, &zf_tls_cfg.session_timeout_ms, "1h", NULL,
     "Lifetime of a TLS session for resumption (session cache and tickets)."},
    {"tls.session_tickets", ZF_CFG_BOOL, &zf_tls_cfg.session_tickets, "true", NULL,
     "Offer session tickets (stateless resumption); the ticket keys survive SIGHUP."},
    {"tls.handshake_timeout", ZF_CFG_MSEC, &zf_tls_cfg.handshake_timeout_ms, "10s", NULL,
     "A TLS handshake that takes longer is dropped."},
    {"h2.enable", ZF_CFG_BOOL, &zf_h2_cfg.enable, "true", "--http2",
     "Serve HTTP/2: h2 by ALPN on https, h2c (prior knowledge and Upgrade: h2c) on http."},
    {"h2.max_concurrent_streams", ZF_CFG_INT, &zf_h2_cfg.max_concurrent_streams, "128", NULL,
     "SETTINGS_MAX_CONCURRENT_STREAMS: open streams per connection."},
    {"h2.max_header_list_size", ZF_CFG_SIZE, &zf_h2_cfg.max_header_list_size, "64k", NULL,
     "SETTINGS_MAX_HEADER_LIST_SIZE; a larger request header list is answered 431."},
    {"h2.initial_window_size", ZF_CFG_SIZE, &zf_h2_cfg.initial_window_size, "1m", NULL,
     "Flow-control window per stream for request bodies (they are spooled as they arrive)."},
    {"h2.connection_window_size", ZF_CFG_SIZE, &zf_h2_cfg.connection_window_size, "16m", NULL,
     "Flow-control window of the whole connection for request bodies."},
    {"h2.idle_timeout", ZF_CFG_MSEC, &zf_h2_cfg.idle_timeout_ms, "60s", NULL,
     "A connection with no open stream for this long gets GOAWAY and is closed."},
    {"h2.max_resets", ZF_CFG_INT, &zf_h2_cfg.max_resets, "200", NULL,
     "Resets (RST_STREAM) of streams still in progress a client may send per h2.limit_window "
     "before the connection is dropped with ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487); "
     "resets of streams already finished are not counted."},
    {"h2.max_control_frames", ZF_CFG_INT, &zf_h2_cfg.max_control_frames, "1000", NULL,
     "PING, SETTINGS, PRIORITY and empty DATA frames a client may send per h2.limit_window "
     "before the connection is dropped (flood protection)."},
    {"h2.max_refused_headers", ZF_CFG_INT, &zf_h2_cfg.max_refused_headers, "20", NULL,
     "Request header blocks a client may have refused with 431 per h2.limit_window; one more "
     "and the connection is dropped with ENHANCE_YOUR_CALM. 0 is unlimited."},
    {"h2.max_header_bytes", ZF_CFG_SIZE, &zf_h2_cfg.max_header_bytes, "128m", NULL,
     "Decoded request header bytes (name + value + 32 per field, refused blocks included) a "
     "client may send per h2.limit_window; beyond, GOAWAY(ENHANCE_YOUR_CALM) and close at once "
     "(HPACK bomb: tiny references to a big table entry). 0 is unlimited."},
    {"h2.limit_window", ZF_CFG_MSEC, &zf_h2_cfg.limit_window_ms, "10s", NULL,
     "The window over which h2.max_resets, h2.max_control_frames, h2.max_refused_headers and "
     "h2.max_header_bytes are counted."},
    {NULL},
};

/* A TLS connection until its handshake is done. */
struct handshake {
    struct zf_conn conn;
    struct zf_http_endpoint *ep;
    struct bufferevent *bev;
    struct handshake *prev, *next;
};

static struct {
    int active;
    struct zf_http_endpoint *endpoints;
    struct handshake *handshakes, *hs_tail; /* newest first; the tail is the oldest */
    size_t nhandshakes;
    uint64_t tls_ok, tls_failed, tls_resumed, alpn_h2, tls_shed;
} m;

int zf__h2_enabled(void)
{
    return m.active && zf_h2_cfg.enable;
}

/* ----------------------------------------------------------- handshakes */

static void hs_unlink(struct handshake *hs)
{
    if (hs->prev)
        hs->prev->next = hs->next;
    else
        m.handshakes = hs->next;
    if (hs->next)
        hs->next->prev = hs->prev;
    else
        m.hs_tail = hs->prev;
    hs->prev = hs->next = NULL;
    m.nhandshakes--;
}

/* Closes a handshake that will not finish (failed, shed, shutdown): its
 * socket and its place in the connection count go now. */
static void hs_free(struct handshake *hs)
{
    hs_unlink(hs);
    zf__http_bev_free(hs->bev);
    free(hs);
    zf_conn_closed();
}

/* Logs why a handshake failed, at info (clients do this all the time). */
static void log_failure(struct handshake *hs, short what)
{
    char reason[256] = "";
    unsigned long e, found = 0;
    /* libevent queues SSL_get_error()'s code (lib 0) next to OpenSSL's own
     * error codes: report the first real one */
    while ((e = bufferevent_get_openssl_error(hs->bev)) != 0)
        if (!found && ERR_GET_LIB(e) != 0)
            found = e;
    if (found)
        ERR_error_string_n(found, reason, sizeof reason);
    else if (what & BEV_EVENT_TIMEOUT)
        snprintf(reason, sizeof reason, "no handshake within %llu ms",
                 (unsigned long long)zf_tls_cfg.handshake_timeout_ms);
    else if (what & BEV_EVENT_EOF)
        snprintf(reason, sizeof reason, "client closed the connection");
    else
        snprintf(reason, sizeof reason, "%s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    zf_log(ZF_LOG_INFO, &hs->conn, "tls: handshake failed: %s", reason);
}

/* Handshake done (or failed): hand the connection to HTTP/2 or HTTP/1.1 by
 * the ALPN result. The bufferevent and the connection's place in the count
 * change owner; the handshake record is freed here. */
static void on_hs_event(struct bufferevent *bev, short what, void *arg)
{
    struct handshake *hs = arg;
    if (!(what & BEV_EVENT_CONNECTED)) {
        m.tls_failed++;
        log_failure(hs, what);
        hs_free(hs);
        zf_server_check_idle();
        return;
    }
    hs_unlink(hs);
    m.tls_ok++;
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    int h2 = zf_h2_cfg.enable && zf_tls_alpn_h2(ssl);
    if (SSL_session_reused(ssl))
        m.tls_resumed++;
    if (zf_log_level >= ZF_LOG_DEBUG) {
        char d[160];
        zf_tls_describe(ssl, d, sizeof d);
        zf_log(ZF_LOG_DEBUG, &hs->conn, "tls: handshake done: %s", d);
    }
    bufferevent_set_timeouts(bev, NULL, NULL);
    struct zf_conn conn = hs->conn;
    struct zf_http_endpoint *ep = hs->ep;
    free(hs);
    if (h2) {
        m.alpn_h2++;
        zf__h2_start(ep, bev, &conn, NULL, 0, NULL);
    } else {
        conn.proto = "https";
        zf_http1_start(ep, bev, &conn);
    }
    zf_server_check_idle();
}

static void tls_accept(struct zf_listener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                       void *arg)
{
    struct zf_http_endpoint *ep = arg;
    struct handshake *hs = calloc(1, sizeof *hs);
    SSL *ssl = hs ? zf_tls_new_ssl() : NULL;
    if (!ssl) {
        zf_log(ZF_LOG_ERROR, NULL, "tls: out of memory accepting on %s", l->addr);
        free(hs);
        evutil_closesocket(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    zf_conn_init(&hs->conn, "https", sa, (socklen_t)salen);
    hs->conn.action = "TLS handshake";
    hs->ep = ep;
    hs->bev = bufferevent_openssl_socket_new(zf_srv->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE);
    if (!hs->bev) {
        zf_log(ZF_LOG_ERROR, &hs->conn, "tls: cannot create the TLS connection");
        SSL_free(ssl);
        evutil_closesocket(fd);
        free(hs);
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(hs->bev, 1);
    uint64_t ms = zf_tls_cfg.handshake_timeout_ms;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    bufferevent_set_timeouts(hs->bev, ms ? &tv : NULL, ms ? &tv : NULL);
    bufferevent_setcb(hs->bev, NULL, NULL, on_hs_event, hs);
    bufferevent_enable(hs->bev, EV_READ | EV_WRITE);
    hs->next = m.handshakes;
    if (m.handshakes)
        m.handshakes->prev = hs;
    else
        m.hs_tail = hs;
    m.handshakes = hs;
    m.nhandshakes++;
    /* counted from here until its socket closes, whoever owns it then
     * (this module, HTTP/1.1 or HTTP/2) */
    zf_conn_opened();
}

/* The connection limit: TLS handshakes not finished (a client that opens
 * TLS and never completes it holds a descriptor for tls.handshake_timeout),
 * oldest first; then HTTP/2 connections with no stream open; then, when
 * the HTTP module is not active (https only, so the core does not ask it),
 * HTTP/1.1-over-TLS connections that lose nothing. Each closed one frees
 * its descriptor now. Returns how many were closed. */
static size_t shed(struct zf_server *srv, size_t n)
{
    (void)srv;
    size_t done = 0;
    while (done < n && m.hs_tail) {
        struct handshake *hs = m.hs_tail;
        zf_log(ZF_LOG_DEBUG, &hs->conn,
               "connection limit: closing this connection (TLS handshake not finished)");
        hs_free(hs);
        m.tls_shed++;
        done++;
    }
    if (done < n)
        done += zf__h2_shed(n - done);
    if (done < n && zf_http_cfg.listen.n == 0)
        done += zf__http1_shed(n - done);
    return done;
}

/* --------------------------------------------------------------- hooks */

extern const struct zf_module zf_h2_module;

static int configure(struct zf_server *srv)
{
    (void)srv;
    struct {
        const char *name;
        long long value, min, max;
    } checks[] = {
        {"h2.max_concurrent_streams", zf_h2_cfg.max_concurrent_streams, 1, 0x7fffffff},
        {"h2.max_header_list_size", (long long)zf_h2_cfg.max_header_list_size, 1024, 0xffffffffLL},
        {"h2.initial_window_size", (long long)zf_h2_cfg.initial_window_size, 1, 0x7fffffff},
        {"h2.connection_window_size", (long long)zf_h2_cfg.connection_window_size, 1, 0x7fffffff},
        {"h2.limit_window", (long long)zf_h2_cfg.limit_window_ms, 1, LLONG_MAX},
    };
    for (size_t i = 0; i < ZF_ARRAY_LEN(checks); i++) {
        if (checks[i].value < checks[i].min || checks[i].value > checks[i].max) {
            zf_log(ZF_LOG_ERROR, NULL, "%s: %lld is out of range (%lld..%lld)", checks[i].name,
                   checks[i].value, checks[i].min, checks[i].max);
            return ZF_ERROR;
        }
    }
    /* h2c also runs on plain endpoints another module asks for (server.h) */
    static const struct zf_service h2c_service = {.name = "http", .module = &zf_h2_module};
    zf_service_register(&h2c_service);
    int https = zf_h2_cfg.https.n > 0;
    if (https && zf_tls_init(zf_h2_cfg.enable) != ZF_OK)
        return ZF_ERROR;
    if (!https && !(zf_h2_cfg.enable && zf_http_cfg.listen.n > 0))
        return ZF_DECLINED;
    m.active = 1;
    return ZF_OK;
}

static void h2_metrics(struct zf_metrics *mm, void *arg)
{
    (void)arg;
    zf_metrics_connections(mm, "http2", zf__h2_nconns, UINT64_MAX);
    zf_metrics_gauge(mm, "zfront_http2_streams", "HTTP/2 streams open.", NULL,
                     (double)zf__h2_nstreams);
    zf_metrics_counter(mm, "zfront_http2_abusive_total",
                       "HTTP/2 connections dropped for abuse (floods, resets).", NULL,
                       zf__h2_abusive);
    zf_metrics_counter(mm, "zfront_http2_shed_total",
                       "HTTP/2 connections closed at server.max_connections.", NULL,
                       zf__h2_shed_count);
    if (!zf_h2_cfg.https.n)
        return;
    zf_metrics_connections(mm, "tls_handshake", m.nhandshakes, UINT64_MAX);
    zf_metrics_counter(mm, "zfront_tls_handshakes_total", "TLS handshakes, by result.",
                       "result=\"ok\"", m.tls_ok);
    zf_metrics_counter(mm, "zfront_tls_handshakes_total", "TLS handshakes, by result.",
                       "result=\"failed\"", m.tls_failed);
    zf_metrics_counter(mm, "zfront_tls_resumed_total", "TLS sessions resumed.", NULL,
                       m.tls_resumed);
    zf_metrics_counter(mm, "zfront_tls_alpn_h2_total", "TLS connections that chose h2 (ALPN).",
                       NULL, m.alpn_h2);
}

static int start(struct zf_server *srv)
{
    zf_metrics_register(h2_metrics, NULL);
    m.active = 1; /* also when only kept active for another module's endpoints */
    zf_h2c = zf_h2_cfg.enable ? &zf__h2c_ops : NULL;
    return zf__http_listen_all(srv, &zf_h2_cfg.https, "https", 1, "http", tls_accept,
                               &m.endpoints);
}

static void stop(struct zf_server *srv, int graceful)
{
    (void)srv;
    /* Listeners go first (no new connections); the endpoints stay, the
     * connections still point at them. */
    for (struct zf_http_endpoint *ep = m.endpoints; ep; ep = ep->next) {
        zf_listener_free(ep->listener);
        ep->listener = NULL;
    }
    while (m.handshakes)
        hs_free(m.handshakes);
    zf__h2_stop_all(graceful);
    /* HTTP/1.1 over TLS connections belong to http1.c; when the HTTP module
     * is not active (https only), its hooks are not called: call them here. */
    if (zf_http_cfg.listen.n == 0)
        zf__http1_stop(graceful);
}

static size_t active(struct zf_server *srv)
{
    (void)srv;
    return zf__h2_nconns + m.nhandshakes + (zf_http_cfg.listen.n == 0 ? zf__http1_active() : 0);
}

static void stats(struct zf_server *srv, struct evbuffer *out)
{
    (void)srv;
    evbuffer_add_printf(out,
                        "h2.connections: %zu\nh2.streams: %zu\nh2.abusive_dropped: %llu\n"
                        "h2.shed: %llu\n",
                        zf__h2_nconns, zf__h2_nstreams, (unsigned long long)zf__h2_abusive,
                        (unsigned long long)zf__h2_shed_count);
    if (zf_h2_cfg.https.n)
        evbuffer_add_printf(out,
                            "tls.handshaking: %zu\ntls.handshakes: %llu\ntls.failed: %llu\n"
                            "tls.resumed: %llu\ntls.alpn_h2: %llu\ntls.shed: %llu\n",
                            m.nhandshakes, (unsigned long long)m.tls_ok,
                            (unsigned long long)m.tls_failed, (unsigned long long)m.tls_resumed,
                            (unsigned long long)m.alpn_h2, (unsigned long long)m.tls_shed);
}

static void reload(struct zf_server *srv)
{
    (void)srv;
    if (zf_h2_cfg.https.n)
        zf_tls_reload();
}

const struct zf_module zf_h2_module = {
    .name = "h2",
    .keys = keys,
    .configure = configure,
    .start = start,
    .stop = stop,
    .active = active,
    .stats = stats,
    .reload = reload,
    .shed = shed,
};
