/* The WebSocket module descriptor: [ws] keys, the upgrade handler that
 * http1.c finds in the core's registry (handshake checks, the app's
 * answer, Sec-WebSocket-Accept), stop and stats. */
#include <event2/buffer.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../../core/exchange.h"
#include "../../core/hub.h"
#include "../../core/metrics.h"
#include "ws.h"

struct zf_ws_config zf_ws_cfg;

static const struct zf_cfg_key ws_keys[] = {
    {"ws.path", ZF_CFG_STR, &zf_ws_cfg.path, "/ws", "--ws-path",
     "Path where HTTP/1.1 clients upgrade to WebSocket notifications. Empty: no WebSocket."},
    {"ws.app_auth", ZF_CFG_BOOL, &zf_ws_cfg.app_auth, "true", "--ws-app-auth",
     "Ask the application about each handshake (a WSGI request with "
     "zfront.channel=websocket; a 2xx allows it, its Zfront-Topics / Zfront-Publish / "
     "Zfront-Audience headers say what the client may do). Off: only ws.public_topics."},
    {"ws.public_topics", ZF_CFG_LIST, &zf_ws_cfg.public_topics, NULL, "--ws-public-topic",
     "Topics every client may subscribe to (exact, or a prefix ending in '/' or '*')."},
    {"ws.origins", ZF_CFG_LIST, &zf_ws_cfg.origins, NULL, "--ws-origin",
     "Origin values allowed to connect (\"https://site.example\", \"*\" for any). Empty: "
     "a browser's Origin must name the Host it connects to; clients without Origin pass."},
    {"ws.max_message", ZF_CFG_SIZE, &zf_ws_cfg.max_message, "64k", "--ws-max-message",
     "Largest message a client may send; beyond it the connection is closed with 1009."},
    {"ws.max_send_buffer", ZF_CFG_SIZE, &zf_ws_cfg.max_send_buffer, "1m", "--ws-max-send-buffer",
     "Bytes queued for one client that does not read; beyond it the client is a slow "
     "consumer and is closed with 1008."},
    {"ws.ping_interval", ZF_CFG_MSEC, &zf_ws_cfg.ping_interval_ms, "30s", "--ws-ping-interval",
     "Idle time before the server pings a client. 0: no keepalive."},
    {"ws.pong_timeout", ZF_CFG_MSEC, &zf_ws_cfg.pong_timeout_ms, "10s", "--ws-pong-timeout",
     "A client that sends nothing (not even the pong) this long after a ping is dead: "
     "its connection is dropped."},
    {"ws.close_timeout", ZF_CFG_MSEC, &zf_ws_cfg.close_timeout_ms, "5s", NULL,
     "How long to wait for the client's close frame (and the flush of ours) before "
     "dropping the connection."},
    {"ws.max_subscriptions", ZF_CFG_INT, &zf_ws_cfg.max_subscriptions, "100", NULL,
     "Subscriptions one connection may hold."},
    {"ws.max_connections", ZF_CFG_INT, &zf_ws_cfg.max_connections, "20000", NULL,
     "WebSocket sessions at once; handshakes beyond it get 503."},
    {"ws.app_path", ZF_CFG_STR, &zf_ws_cfg.app_path, "", "--ws-app-path",
     "Path where client `send` messages reach the app, as POST requests with "
     "zfront.channel=websocket and the handshake's headers. Empty: no client-to-app "
     "messages."},
    {NULL, 0, NULL, NULL, NULL, NULL},
};

/* ------------------------------------------------------------ grants */

static void strv_free(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

void zf__ws_grant_free(struct zf_ws_grant *g)
{
    strv_free(g->topics);
    strv_free(g->publish);
    strv_free(g->audience);
    strv_free(g->send);
    if (g->request) {
        zf_headers_free(&g->request->headers);
        free(g->request->query);
        free(g->request);
    }
    free(g->protocol);
    memset(g, 0, sizeof *g);
}

/* Appends the space-separated words of `text` to *v (NULL-terminated,
 * grown). Returns ZF_OK or ZF_ERROR (out of memory). */
static int strv_add_words(char ***v, const char *text)
{
    size_t n = 0;
    while (*v && (*v)[n])
        n++;
    while (text && *text) {
        text += strspn(text, " \t,");
        size_t len = strcspn(text, " \t,");
        if (!len)
            break;
        char **nv = realloc(*v, (n + 2) * sizeof *nv);
        if (!nv)
            return ZF_ERROR;
        *v = nv;
        if (!(nv[n] = strndup(text, len)))
            return ZF_ERROR;
        nv[++n] = NULL;
        text += len;
    }
    if (!*v && !(*v = calloc(1, sizeof **v)))
        return ZF_ERROR;
    return ZF_OK;
}

int zf__ws_allowed(char *const *rules, const char *topic)
{
    size_t tlen = strlen(topic);
    int pattern = tlen && topic[tlen - 1] == '*';
    if (pattern)
        tlen--;
    for (; rules && *rules; rules++) {
        const char *r = *rules;
        size_t rlen = strlen(r);
        int prefix = rlen && (r[rlen - 1] == '*' || r[rlen - 1] == '/');
        if (rlen && r[rlen - 1] == '*')
            rlen--;
        if (prefix) {
            if (tlen >= rlen && strncmp(r, topic, rlen) == 0)
                return 1;
        } else if (!pattern && strcmp(r, topic) == 0) {
            return 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------ the handshake */

static const char *const ws_guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

static int token_in_list(const char *list, const char *token)
{
    size_t n = strlen(token);
    while (list && *list) {
        list += strspn(list, " \t,");
        size_t len = strcspn(list, " \t,");
        if (len == n && strncasecmp(list, token, n) == 0)
            return 1;
        list += len;
    }
    return 0;
}

/* The Origin rule: the allow-list, or (empty list) the same host. */
static int origin_ok(struct zf_exchange *ex)
{
    const char *origin = zf_headers_get(&ex->req_headers, "Origin");
    if (!origin)
        return 1; /* not a browser: the app's authorisation still applies */
    if (zf_ws_cfg.origins.n) {
        for (size_t i = 0; i < zf_ws_cfg.origins.n; i++)
            if (strcmp(zf_ws_cfg.origins.v[i], "*") == 0 ||
                strcasecmp(zf_ws_cfg.origins.v[i], origin) == 0)
                return 1;
        return 0;
    }
    const char *host = zf_headers_get(&ex->req_headers, "Host");
    const char *p = strstr(origin, "://");
    return host && p && strcasecmp(p + 3, host) == 0;
}

static int check(struct zf_exchange *ex, const char **why)
{
    if (!zf_ws_cfg.path || strcmp(ex->path, zf_ws_cfg.path) != 0)
        return ZF_DECLINED;
    const char *key = zf_headers_get(&ex->req_headers, "Sec-WebSocket-Key");
    const char *version = zf_headers_get(&ex->req_headers, "Sec-WebSocket-Version");
    const char *conn = zf_headers_get(&ex->req_headers, "Connection");
    int h2 = strcmp(ex->method, "CONNECT") == 0; /* RFC 8441: no key, no Connection */
    unsigned char raw[32];
    if (!h2 && strcmp(ex->method, "GET") != 0) {
        *why = "a WebSocket handshake must be a GET";
        return 400;
    }
    if (!h2 && (!conn || !token_in_list(conn, "upgrade"))) {
        *why = "WebSocket handshake without Connection: upgrade";
        return 400;
    }
    if (!version || strcmp(version, "13") != 0) {
        *why = "unsupported Sec-WebSocket-Version (only 13 is)";
        return 400;
    }
    if (!h2 &&
        (!key || strlen(key) != 24 || EVP_DecodeBlock(raw, (const unsigned char *)key, 24) != 18 ||
         key[22] != '=' || key[23] != '=')) {
        *why = "invalid Sec-WebSocket-Key";
        return 400;
    }
    const char *protos = zf_headers_get(&ex->req_headers, "Sec-WebSocket-Protocol");
    if (protos && !token_in_list(protos, "zfront.v1")) {
        *why = "no supported WebSocket subprotocol (zfront.v1 is)";
        return 400;
    }
    if (!origin_ok(ex)) {
        *why = "WebSocket Origin not allowed (ws.origins)";
        return 403;
    }
    if (zf_srv && zf_srv->state != ZF_RUNNING) {
        *why = "the server is shutting down";
        return 503;
    }
    if (zf_ws_cfg.max_connections > 0 && zf__ws_active() >= (size_t)zf_ws_cfg.max_connections) {
        *why = "too many WebSocket connections (ws.max_connections)";
        return 503;
    }
    ex->channel = "websocket";
    return zf_ws_cfg.app_auth ? ZF_OK : ZF_AGAIN;
}

/* Sec-WebSocket-Accept for key (RFC 6455 4.2.2) into out[29]. */
static void accept_key(const char *key, char out[29])
{
    unsigned char md[SHA_DIGEST_LENGTH];
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%s%s", key, ws_guid);
    SHA1((const unsigned char *)buf, (size_t)n, md);
    EVP_EncodeBlock((unsigned char *)out, md, SHA_DIGEST_LENGTH);
}

/* Keeps what the app's requests for this client's messages repeat: the
 * handshake's headers (but not its upgrade fields), query and addresses. */
static int keep_request(struct zf_ws_grant *g0, struct zf_exchange *ex)
{
    struct zf_ws_request *g = g0->request = calloc(1, sizeof *g);
    if (!g)
        return ZF_ERROR;
    static const char *const skip[] = {"Upgrade",      "Connection",        "Content-Length",
                                       "Content-Type", "Transfer-Encoding", NULL};
    for (size_t i = 0; i < ex->req_headers.n; i++) {
        const struct zf_header *h = &ex->req_headers.v[i];
        int drop = h->name_len > 14 && strncasecmp(h->name, "Sec-WebSocket-", 14) == 0;
        for (const char *const *k = skip; *k && !drop; k++)
            drop = strlen(*k) == h->name_len && strncasecmp(*k, h->name, h->name_len) == 0;
        if (!drop &&
            zf_headers_add(&g->headers, h->name, h->name_len, h->value, h->value_len) != ZF_OK)
            return ZF_ERROR;
    }
    if (!(g->query = strdup(ex->query ? ex->query : "")))
        return ZF_ERROR;
    g->scheme = ex->scheme;
    memcpy(g->server_host, ex->server_host, sizeof g->server_host);
    g->server_port = ex->server_port;
    return ZF_OK;
}

/* What the handshake grants (public topics, the app's answer). Returns
 * ZF_OK or ZF_ERROR (out of memory; nothing kept). */
static int make_grant(struct zf_ws_grant *g0, struct zf_exchange *ex)
{
    struct zf_ws_grant g = {0};
    int rc = ZF_OK;
    for (size_t i = 0; i < zf_ws_cfg.public_topics.n && rc == ZF_OK; i++)
        rc = strv_add_words(&g.topics, zf_ws_cfg.public_topics.v[i]);
    if (rc == ZF_OK)
        rc = strv_add_words(&g.topics, NULL);
    if (rc == ZF_OK && ex->status) { /* the app's answer (2xx) */
        rc = strv_add_words(&g.topics, zf_headers_get(&ex->resp_headers, "Zfront-Topics"));
        if (rc == ZF_OK)
            rc = strv_add_words(&g.publish, zf_headers_get(&ex->resp_headers, "Zfront-Publish"));
        if (rc == ZF_OK)
            rc = strv_add_words(&g.audience, zf_headers_get(&ex->resp_headers, "Zfront-Audience"));
    }
    if (rc == ZF_OK && ex->status && zf_ws_cfg.app_path && *zf_ws_cfg.app_path)
        rc = strv_add_words(&g.send, zf_headers_get(&ex->resp_headers, "Zfront-Send"));
    if (rc == ZF_OK && !g.publish)
        rc = strv_add_words(&g.publish, NULL);
    if (rc == ZF_OK && g.send && g.send[0])
        rc = keep_request(&g, ex);
    if (rc == ZF_OK && zf_headers_get(&ex->req_headers, "Sec-WebSocket-Protocol") &&
        !(g.protocol = strdup("zfront.v1")))
        rc = ZF_ERROR;
    if (rc != ZF_OK)
        zf__ws_grant_free(&g);
    *g0 = g;
    return rc;
}

static int start_session(struct bufferevent *bev, const struct zf_conn *conn,
                         struct zf_exchange *ex)
{
    struct zf_ws_grant g;
    char acc[29];
    accept_key(zf_headers_get(&ex->req_headers, "Sec-WebSocket-Key"), acc);
    if (make_grant(&g, ex) != ZF_OK) {
        zf_log(ZF_LOG_ERROR, conn, "out of memory while starting a WebSocket session");
        bufferevent_free(bev);
        zf_conn_closed();
        return ZF_ERROR;
    }
    return zf__ws_session_start(bev, conn, acc, &g);
}

static int start_pipe(struct zf_pipe *p, const struct zf_conn *conn, struct zf_exchange *ex)
{
    struct zf_ws_grant g;
    if (make_grant(&g, ex) != ZF_OK) {
        zf_log(ZF_LOG_ERROR, conn, "out of memory while starting a WebSocket session");
        return ZF_ERROR;
    }
    return zf__ws_session_start_pipe(p, zf_srv->base, conn, &g);
}

static const struct zf_upgrade ws_upgrade = {"websocket", check, start_session, start_pipe};

/* ------------------------------------------------------------ module hooks */

static int ws_configure(struct zf_server *srv)
{
    if (!zf_ws_cfg.path || !*zf_ws_cfg.path)
        return ZF_DECLINED;
    if (zf_ws_cfg.path[0] != '/') {
        zf_log(ZF_LOG_ERROR, NULL, "ws.path must start with '/': \"%s\"", zf_ws_cfg.path);
        return ZF_ERROR;
    }
    if (zf_upgrade_register(&ws_upgrade) != ZF_OK) {
        zf_log(ZF_LOG_ERROR, NULL, "ws: cannot register the websocket upgrade");
        return ZF_ERROR;
    }
    zf_metrics_register(zf__ws_metrics, NULL);
    return ZF_OK;
}

static void ws_stop(struct zf_server *srv, int graceful)
{
    zf__ws_stop(graceful);
}

static size_t ws_active(struct zf_server *srv)
{
    return zf__ws_active();
}

static void ws_stats(struct zf_server *srv, struct evbuffer *out)
{
    zf__ws_stats(out);
    zf_hub_stats(out);
}

const struct zf_module zf_ws_module = {
    .name = "ws",
    .keys = ws_keys,
    .configure = ws_configure,
    .stop = ws_stop,
    .active = ws_active,
    .stats = ws_stats,
};
