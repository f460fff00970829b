/* WebSocket sessions: wslay over the connection (HTTP/1.1 bufferevent) or an HTTP/2 stream (a
 * zf_pipe, RFC 8441), the JSON subscription protocol (libjansson), hub delivery with a send limit,
 * keepalive, and closing (1001 on shutdown after what is queued).
 *
 * A session's phase is told by two flags: `closing` (our close frame is
 * queued or sent: nothing more is queued) and `finishing` (the WebSocket
 * conversation is over: the socket closes once the output is flushed). */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <wslay/wslay.h>
#ifdef ZF_WITH_HTTP2
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#endif

#include "../../core/hub.h"
#include "../../core/metrics.h"
#include "timers.h"
#include "ws.h"

#define WS_OUT_HIGH (64 * 1024) /* bytes in the socket output before wslay waits */
#define WS_WRITE_ROUNDS 16      /* refills of the output per writable event */
/* A session whose wslay context sent or received nothing for one to two of
 * these periods gives the context back (see maybe_release) */
#define WS_IDLE_SWEEP_MS 1000
#define WS_MAX_TOPIC 1024
#define WS_READ_MAX (64 * 1024) /* bytes read from the socket (or OpenSSL) per pass */
#define WS_TLS_RECORD 16384     /* wss://: bytes per SSL_write (one full TLS record) */

struct ws_session {
    struct zf_hub_subscriber sub; /* first: the hub hands it back */
    struct zf_conn conn;
    struct ws_session *prev, *next;
    /* The transport. ws:// and wss:// over HTTP/1.1: the socket, taken out
     * of the HTTP/1.1 bufferevent and driven directly (fd, io, iow; in and
     * out are the session's own): a bufferevent, its buffers and callbacks
     * cost ~1 KiB per idle connection (~6 KiB with OpenSSL's). wss:// keeps
     * the connection's SSL (ssl) and reads and writes through it. HTTP/2
     * (RFC 8441): the stream (pipe). */
    evutil_socket_t fd; /* the socket, or -1 */
    struct event *io;   /* reading (added until the conversation ends) */
    /* writing, only while `out` holds bytes (made then, freed once `out` is
     * empty: an idle session keeps none) */
    struct event *iow;
    struct zf_pipe *pipe; /* HTTP/2 (RFC 8441): the stream, or NULL */
    /* the transport's buffers: ws:// and wss:// only while bytes are in
     * flight (NULL while idle: buf_get, bufs_release); HTTP/2: the pipe's */
    struct evbuffer *in, *out;
    struct ws_session *reap_next; /* dead, waiting to be freed from the loop */
    void *ssl;                    /* wss://: the connection's SSL, or NULL */
    /* wss://: SSL_read wants the socket writable (a TLS 1.3 KeyUpdate to
     * answer), SSL_write wants it readable; records left in OpenSSL after a
     * pass reached WS_READ_MAX; a fatal TLS error (no close_notify then) */
    unsigned tls_read_wants_write : 1, tls_write_wants_read : 1, tls_more : 1, tls_failed : 1;
    unsigned tls_ended : 1; /* wss://: the client closed or the connection was lost after a
                               read that returned bytes: they are handled, then the end */
    /* wslay's context (~8.5 KiB: two 4 KiB buffers), only while something is
     * in flight: NULL while the session is idle (ctx_get makes it again).
     * What tells that wslay holds no byte: every byte given to it (fed) is
     * part of a frame whose start it parsed, counted whole (framed), and no
     * fragmented message is open. */
    wslay_event_context_ptr ctx;
    uint64_t fed, framed;
    unsigned in_fragmented : 1, touched : 1;
    unsigned awaiting_pong : 1, closing : 1, finishing : 1, going_away : 1, dead : 1;
    unsigned reading : 1, writing : 1; /* io / iow added now */
    struct zf__ws_timer timer;         /* keepalive, then the close deadline (timers.h) */
    struct event_base *base;
    struct zf_ws_grant grant;
    uint64_t recv_seq, ping_seq; /* reads so far / at the last ping */
    /* a client message being answered by the app (one at a time) */
    struct zf_exchange *ex;
    json_t *ref; /* the message's "ref", echoed in the reply */
    char *req_topic;
    struct evbuffer *reply; /* the app's response body so far */
};

static struct {
    struct ws_session *head;
    size_t open;
    uint64_t accepted, events, slow_consumers, dead_peers, bad_messages;
    uint64_t read_ahead;             /* read events re-activated for records OpenSSL read ahead */
    uint64_t ctx_made, ctx_released; /* wslay contexts made, and given back while idle */
    size_t ctx_live;                 /* sessions holding a context now */
    size_t iow_live;                 /* ws:// sessions holding a write event now */
    size_t bufs_live;                /* ws:// buffers (`in`, `out`) held now */
    struct event *sweep;             /* gives back contexts and buffers idle for a period */
    struct event *reaper;            /* frees dead sessions from the loop */
    struct ws_session *reap;         /* the dead sessions it frees */
} ws;

static const struct wslay_event_callbacks ws_callbacks;

static void session_free(struct ws_session *s);
static void flush(struct ws_session *s);
static void sweep_cb(evutil_socket_t fd, short what, void *arg);
static void raw_cb(evutil_socket_t fd, short what, void *arg);
static void write_cb(struct bufferevent *bev, void *arg);
static void tls_end(struct ws_session *s);

/* ------------------------------------------------------------ the buffers */

/* Bytes in b, which may be NULL (an idle ws:// session holds no buffer). */
static size_t blen(const struct evbuffer *b)
{
    return b ? evbuffer_get_length(b) : 0;
}

/* Makes the ws:// buffer *b (s->in or s->out) if the session has none: an
 * idle session holds none. A busy one keeps them as long as its wslay
 * context (a subscriber that events keep busy makes and frees none per
 * event); bufs_release gives them back. HTTP/2 sessions use the pipe's,
 * always there. Returns ZF_OK, or ZF_ERROR (out of memory, logged:
 * the caller kills the session). */
static int buf_get(struct ws_session *s, struct evbuffer **b)
{
    s->touched = 1;
    if (*b)
        return ZF_OK;
    if (!(*b = evbuffer_new())) {
        zf_log(ZF_LOG_ERROR, &s->conn, "out of memory while making a WebSocket buffer");
        return ZF_ERROR;
    }
    ws.bufs_live++;
    return ZF_OK;
}

/* Frees the ws:// buffer *b when it is empty, or always when `all`. */
static void buf_put(struct evbuffer **b, int all)
{
    if (*b && (all || !evbuffer_get_length(*b))) {
        evbuffer_free(*b);
        *b = NULL;
        ws.bufs_live--;
    }
}

/* Gives back the ws:// buffers that hold nothing (the pipe's stay): from
 * the idle sweep, and as soon as the wslay context is gone (nothing in
 * flight: buffers kept until the sweep would be freed among younger
 * allocations and leave the RSS as high as if they were kept). */
static void bufs_release(struct ws_session *s)
{
    if (s->pipe || s->dead)
        return;
    buf_put(&s->in, 0);
    buf_put(&s->out, 0);
}

/* ------------------------------------------------------------ the wslay context */

/* Makes the session's wslay context if it has none (idle sessions hold
 * none). Returns ZF_OK, or ZF_ERROR (out of memory, logged: the caller
 * kills the session). */
static int ctx_get(struct ws_session *s, struct event_base *base)
{
    s->touched = 1;
    if (s->ctx)
        return ZF_OK;
    if (wslay_event_context_server_init(&s->ctx, &ws_callbacks, s) != 0) {
        s->ctx = NULL;
        zf_log(ZF_LOG_ERROR, &s->conn, "out of memory while making a WebSocket context");
        return ZF_ERROR;
    }
    wslay_event_config_set_max_recv_msg_length(s->ctx, zf_ws_cfg.max_message);
    ws.ctx_made++;
    ws.ctx_live++;
    return ZF_OK;
}

/* Gives the wslay context back when it holds nothing: an open conversation
 * (no close sent, queued or received), nothing queued or half sent, and no
 * byte of a partial frame or of an open fragmented message. A fresh context
 * then continues exactly where this one stopped. */
static void maybe_release(struct ws_session *s)
{
    wslay_event_context_ptr c = s->ctx;
    if (!c || s->dead || s->closing || s->finishing || s->going_away || s->in_fragmented ||
        s->fed != s->framed || blen(s->in) || !wslay_event_get_read_enabled(c) ||
        !wslay_event_get_write_enabled(c) || wslay_event_want_write(c) ||
        wslay_event_get_queued_msg_count(c) || wslay_event_get_close_received(c) ||
        wslay_event_get_close_sent(c))
        return;
    wslay_event_context_free(c);
    s->ctx = NULL;
    ws.ctx_released++;
    ws.ctx_live--;
}

/* Every WS_IDLE_SWEEP_MS while sessions exist: a session that sent and
 * received nothing since the last pass gives back its wslay context and
 * its empty buffers (sessions that only receive events keep them while
 * events come, and lose them once they stop). */
static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    for (struct ws_session *s = ws.head; s; s = s->next) {
        if (s->touched) {
            s->touched = 0;
            continue;
        }
        maybe_release(s);
        bufs_release(s);
    }
}
static void do_send(struct ws_session *s, const char *topic, json_t *msg);

/* ------------------------------------------------------------ closing */

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    struct ws_session *s;
    while ((s = ws.reap)) {
        ws.reap = s->reap_next;
        session_free(s);
    }
}

static void raw_update(struct ws_session *s);
static void timer_cb(struct zf__ws_timer *t);
static void kill_session(struct ws_session *s);

/* Waits for the session's next deadline of `kind` in ms milliseconds, in
 * place of the one it waited for (ms 0: none). */
static void set_timer(struct ws_session *s, enum zf__ws_timer_kind kind, uint64_t ms)
{
    if (zf__ws_timer_set(&s->timer, s->base, timer_cb, kind, ms) != ZF_OK) {
        zf_log(ZF_LOG_ERROR, &s->conn, "out of memory while setting a WebSocket timer: closing");
        kill_session(s);
    }
}

/* Frees the session from the loop (never inside a callback chain). */
static void kill_session(struct ws_session *s)
{
    if (s->dead)
        return;
    s->dead = 1;
    zf_hub_unsubscribe_all(&s->sub);
    if (s->io)
        raw_update(s);
    if (s->pipe) {
        struct zf_pipe *p = s->pipe;
        s->pipe = NULL;
        p->ops->close(p); /* the transport sends what is left, ends the stream */
        s->in = s->out = NULL;
    }
    set_timer(s, ZF_WS_TIMER_NONE, 0);
    s->reap_next = ws.reap;
    ws.reap = s;
    event_active(ws.reaper, EV_TIMEOUT, 0);
}

/* Queues our close frame (code, reason) after what is being sent; the
 * session ends when the client answers or ws.close_timeout passes. */
static void start_close(struct ws_session *s, uint16_t code, const char *reason)
{
    if (s->closing || s->dead)
        return;
    if (ctx_get(s, s->base) != ZF_OK) {
        kill_session(s);
        return;
    }
    s->closing = 1;
    zf_hub_unsubscribe_all(&s->sub);
    wslay_event_queue_close(s->ctx, code, (const uint8_t *)reason, strlen(reason));
    set_timer(s, ZF_WS_TIMER_CLOSE, zf_ws_cfg.close_timeout_ms);
    flush(s);
}

/* ------------------------------------------------------------ sending */

static size_t queued_bytes(struct ws_session *s)
{
    return (s->ctx ? wslay_event_get_queued_msg_length(s->ctx) : 0) + blen(s->out);
}

/* Queues one text message, unless the client is not reading: everything
 * queued for it (events, replies, errors) counts against
 * ws.max_send_buffer, and beyond it the client is closed with 1008. Returns
 * ZF_OK, or ZF_ERROR when the message was dropped. */
static int send_text(struct ws_session *s, const char *text, size_t len)
{
    if (s->closing || s->dead)
        return ZF_ERROR;
    if (queued_bytes(s) + len > zf_ws_cfg.max_send_buffer) {
        ws.slow_consumers++;
        zf_log(ZF_LOG_WARN, &s->conn,
               "slow consumer: more than %llu bytes queued (ws.max_send_buffer): closing with "
               "1008",
               (unsigned long long)zf_ws_cfg.max_send_buffer);
        start_close(s, 1008, "slow consumer: send buffer full");
        return ZF_ERROR;
    }
    struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *)text, len};
    if (ctx_get(s, s->base) != ZF_OK) {
        kill_session(s);
        return ZF_ERROR;
    }
    if (wslay_event_queue_msg(s->ctx, &m) != 0) {
        zf_log(ZF_LOG_ERROR, &s->conn, "cannot queue a WebSocket message: closing");
        kill_session(s);
        return ZF_ERROR;
    }
    return ZF_OK;
}

/* Sends a JSON object (consumed). */
static void send_json(struct ws_session *s, json_t *o)
{
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text) {
        kill_session(s);
        return;
    }
    send_text(s, text, strlen(text));
    free(text);
}

static void send_error(struct ws_session *s, int code, const char *topic, const char *message)
{
    ws.bad_messages++;
    json_t *o = json_pack("{s:s,s:i,s:s}", "type", "error", "code", code, "message", message);
    if (o && topic)
        json_object_set_new(o, "topic", json_string(topic));
    send_json(s, o);
}

static void pos_text(char *out, size_t n, uint64_t origin, uint64_t id)
{
    snprintf(out, n, "%" PRIx64 "-%" PRIu64, origin, id);
}

/* The JSON text of an event, made once per event for all sessions. */
static int encode_event(struct zf_hub_event *ev)
{
    if (ev->encoded)
        return ZF_OK;
    char pos[48];
    pos_text(pos, sizeof pos, ev->origin, ev->id);
    json_t *o = json_pack("{s:s,s:s,s:I,s:s}", "type", "event", "topic", ev->topic, "id",
                          (json_int_t)ev->id, "pos", pos);
    char *head = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    if (!head)
        return ZF_ERROR;
    size_t hlen = strlen(head) - 1; /* without the closing brace */
    char *text = malloc(hlen + 8 + ev->len + 2);
    if (!text) {
        free(head);
        return ZF_ERROR;
    }
    memcpy(text, head, hlen);
    memcpy(text + hlen, ",\"data\":", 8);
    memcpy(text + hlen + 8, ev->data, ev->len);
    text[hlen + 8 + ev->len] = '}';
    text[hlen + 9 + ev->len] = 0;
    free(head);
    ev->encoded = text;
    ev->encoded_len = hlen + 9 + ev->len;
    return ZF_OK;
}

static void on_event(struct zf_hub_subscriber *sub, struct zf_hub_event *ev)
{
    struct ws_session *s = (struct ws_session *)sub;
    if (s->closing || s->dead)
        return;
    if (encode_event(ev) != ZF_OK) {
        zf_log(ZF_LOG_ERROR, &s->conn, "out of memory while encoding an event: closing");
        kill_session(s);
        return;
    }
    if (send_text(s, ev->encoded, ev->encoded_len) != ZF_OK)
        return;
    ws.events++;
    flush(s);
}

static void on_gap(struct zf_hub_subscriber *sub, const char *topic, const struct zf_hub_pos *since,
                   const struct zf_hub_pos *first, const struct zf_hub_pos *last)
{
    struct ws_session *s = (struct ws_session *)sub;
    char a[48], b[48], c[48];
    pos_text(a, sizeof a, since->origin, since->id);
    pos_text(b, sizeof b, first->origin, first->id);
    pos_text(c, sizeof c, last->origin, last->id);
    json_t *o = json_pack("{s:s,s:s,s:s}", "type", "gap", "topic", topic, "since", a);
    if (o && first->origin) {
        json_object_set_new(o, "first", json_string(b));
        json_object_set_new(o, "last", json_string(c));
    }
    /* where to resume from next time: the newest of each origin heard here */
    size_t cap = zf_hub_cfg.max_origins > 0 ? (size_t)zf_hub_cfg.max_origins : 1;
    struct zf_hub_pos *pos = calloc(cap, sizeof *pos);
    json_t *list = json_array();
    size_t n = pos ? zf_hub_positions(topic, pos, cap) : 0;
    for (size_t i = 0; list && i < n; i++) {
        pos_text(a, sizeof a, pos[i].origin, pos[i].id);
        json_array_append_new(list, json_string(a));
    }
    free(pos);
    if (o && list)
        json_object_set_new(o, "positions", list);
    else
        json_decref(list);
    send_json(s, o);
}

/* ------------------------------------------------------------ the protocol */

/* One position: "EPOCH-ID" as sent in events, or a bare id of this
 * instance's epoch. Returns ZF_OK or ZF_ERROR. */
static int parse_pos(json_t *v, struct zf_hub_pos *pos)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        pos->origin = zf_hub_epoch();
        pos->id = (uint64_t)json_integer_value(v);
        return ZF_OK;
    }
    const char *t = json_string_value(v);
    char *end;
    if (!t)
        return ZF_ERROR;
    pos->origin = strtoull(t, &end, 16);
    if (end == t || *end != '-' || !pos->origin)
        return ZF_ERROR;
    const char *idp = end + 1;
    pos->id = strtoull(idp, &end, 10);
    return end != idp && *end == 0 ? ZF_OK : ZF_ERROR;
}

/* "since": one position (the last event seen), or a list of positions, the
 * newest seen of each origin (docs/protocols/websocket.md). Fills since
 * (room for hub.max_origins) and *n. Returns NULL, or what is wrong. */
static const char *parse_since(json_t *v, struct zf_hub_pos *since, size_t *n)
{
    *n = 0;
    if (!v || json_is_null(v))
        return NULL;
    if (!json_is_array(v)) {
        if (parse_pos(v, &since[0]) != ZF_OK)
            return "invalid \"since\" position";
        *n = 1;
        return NULL;
    }
    if (json_array_size(v) > (size_t)zf_hub_cfg.max_origins)
        return "too many positions in \"since\" (hub.max_origins)";
    size_t i;
    json_t *p;
    json_array_foreach(v, i, p)
    {
        if (!json_is_string(p) || parse_pos(p, &since[i]) != ZF_OK)
            return "invalid \"since\" position";
        for (size_t j = 0; j < i; j++)
            if (since[j].origin == since[i].origin)
                return "two \"since\" positions of one origin";
    }
    *n = json_array_size(v);
    return NULL;
}

static void do_subscribe(struct ws_session *s, const char *topic, json_t *msg)
{
    size_t cap = zf_hub_cfg.max_origins > 0 ? (size_t)zf_hub_cfg.max_origins : 1, n;
    struct zf_hub_pos *since = calloc(cap, sizeof *since);
    json_t *sv = json_object_get(msg, "since"), *fv = json_object_get(msg, "from");
    struct zf_hub_pos from = {0, 0};
    const char *bad = since ? parse_since(sv, since, &n) : "out of memory";
    if (!bad && fv && !json_is_null(fv) && (!json_is_string(fv) || parse_pos(fv, &from) != ZF_OK))
        bad = "invalid \"from\" position";
    if (bad) {
        send_error(s, since ? 400 : 500, topic, bad);
        free(since);
        return;
    }
    if (!zf__ws_allowed(s->grant.topics, topic)) {
        send_error(s, 403, topic, "not allowed to subscribe to this topic");
    } else if (zf_ws_cfg.max_subscriptions > 0 &&
               s->sub.nsubs >= (size_t)zf_ws_cfg.max_subscriptions) {
        send_error(s, 429, topic, "too many subscriptions (ws.max_subscriptions)");
    } else {
        send_json(s, json_pack("{s:s,s:s}", "type", "subscribed", "topic", topic));
        /* one position is a list of one (hub.h) */
        int rc = ZF_OK;
        if (!s->dead && !s->closing) /* else the client stopped reading: being closed */
            rc = zf_hub_subscribe_since(&s->sub, topic, since, n, from.origin ? &from : NULL);
        if (rc != ZF_OK)
            send_error(s, 500, topic, "cannot subscribe");
    }
    free(since);
}

static void do_publish(struct ws_session *s, const char *topic, json_t *msg)
{
    json_t *data = json_object_get(msg, "data");
    if (!data) {
        send_error(s, 400, topic, "publish without \"data\"");
        return;
    }
    if (!zf__ws_allowed(s->grant.publish, topic) || topic[strlen(topic) - 1] == '*') {
        send_error(s, 403, topic, "not allowed to publish on this topic");
        return;
    }
    char *text = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
    struct zf_hub_pos pos;
    if (!text || zf_hub_publish_local(topic, text, strlen(text), NULL, &pos) != ZF_OK) {
        free(text);
        send_error(s, 500, topic, "cannot publish");
        return;
    }
    free(text);
    if (s->dead || s->closing)
        return;
    char p[48];
    pos_text(p, sizeof p, pos.origin, pos.id);
    send_json(s, json_pack("{s:s,s:s,s:I,s:s}", "type", "published", "topic", topic, "id",
                           (json_int_t)pos.id, "pos", p));
}

static void on_text(struct ws_session *s, const uint8_t *msg, size_t len)
{
    json_error_t err;
    json_t *o = json_loadb((const char *)msg, len, JSON_REJECT_DUPLICATES, &err);
    const char *type = json_string_value(json_object_get(o, "type"));
    const char *topic = json_string_value(json_object_get(o, "topic"));
    if (!json_is_object(o) || !type) {
        send_error(s, 400, NULL, "expected a JSON object with a \"type\"");
    } else if (!topic || !*topic || strlen(topic) > WS_MAX_TOPIC) {
        send_error(s, 400, NULL, "missing or invalid \"topic\"");
    } else if (strcmp(type, "subscribe") == 0) {
        do_subscribe(s, topic, o);
    } else if (strcmp(type, "unsubscribe") == 0) {
        if (zf_hub_unsubscribe(&s->sub, topic) == ZF_OK)
            send_json(s, json_pack("{s:s,s:s}", "type", "unsubscribed", "topic", topic));
        else
            send_error(s, 404, topic, "not subscribed to this topic");
    } else if (strcmp(type, "publish") == 0) {
        do_publish(s, topic, o);
    } else if (strcmp(type, "send") == 0) {
        do_send(s, topic, o);
    } else {
        send_error(s, 400, topic, "unknown message type");
    }
    json_decref(o);
}

/* ------------------------------------------------------------ to the app */

static void end_request(struct ws_session *s)
{
    s->ex = NULL;
    json_decref(s->ref);
    s->ref = NULL;
    free(s->req_topic);
    s->req_topic = NULL;
    if (s->reply)
        evbuffer_free(s->reply);
    s->reply = NULL;
}

/* The app's answer, as a "reply" message: its status, and its body as JSON
 * when it is JSON, else as a string. */
static void send_reply(struct ws_session *s, struct zf_exchange *ex, int failed)
{
    size_t len = evbuffer_get_length(s->reply);
    const char *body = (const char *)evbuffer_pullup(s->reply, -1);
    json_t *data = len ? json_loadb(body, len, JSON_DECODE_ANY, NULL) : json_null();
    if (!data)
        data = json_stringn(body, len); /* NULL when not UTF-8: left out */
    json_t *o = json_pack("{s:s,s:s,s:i}", "type", "reply", "topic", s->req_topic, "status",
                          failed ? 500 : ex->status);
    if (o && s->ref)
        json_object_set(o, "ref", s->ref);
    if (o && data)
        json_object_set(o, "data", data);
    json_decref(data);
    send_json(s, o);
}

static void on_app_output(struct zf_exchange *ex)
{
    struct ws_session *s = ex->proto;
    if (!s || s->ex != ex || s->dead)
        return;
    int finished = 0, failed = 0;
    int have_headers = zf_exchange_take_headers(ex);
    struct zf_segment *seg;
    while ((seg = zf_exchange_take(ex, &finished, &failed))) {
        if (seg->type == ZF_SEG_DATA)
            evbuffer_add(s->reply, seg->data, seg->len);
        else
            failed = 1; /* a file answer to a message: not supported */
        zf_segment_free(seg);
        if (evbuffer_get_length(s->reply) > zf_ws_cfg.max_message) {
            zf_exchange_abort(ex);
            send_error(s, 500, s->req_topic, "the app's reply is larger than ws.max_message");
            end_request(s);
            flush(s);
            return;
        }
    }
    if (!finished)
        return;
    if (!have_headers)
        failed = 1;
    send_reply(s, ex, failed);
    zf_exchange_release(ex);
    end_request(s);
    flush(s);
}

static const struct zf_exchange_ops app_ops = {on_app_output};

/* A client message for the app: a POST to ws.app_path with the handshake's
 * headers and query, the message's data as a JSON body, and the topic in
 * Zfront-Topic. */
static void do_send(struct ws_session *s, const char *topic, json_t *msg)
{
    const struct zf_ws_request *rq = s->grant.request;
    if (!rq || !zf__ws_allowed(s->grant.send, topic) || topic[strlen(topic) - 1] == '*') {
        send_error(s, 403, topic, "not allowed to send to the app on this topic");
        return;
    }
    if (s->ex) {
        send_error(s, 429, topic, "the app is still answering the previous message");
        return;
    }
    json_t *data = json_object_get(msg, "data");
    char *body = json_dumps(data ? data : json_null(), JSON_COMPACT | JSON_ENCODE_ANY);
    char *target = NULL;
    struct zf_exchange *ex = zf_exchange_new(&app_ops, s, &s->conn);
    int ok = body && ex &&
             asprintf(&target, "%s%s%s", zf_ws_cfg.app_path, *rq->query ? "?" : "", rq->query) >= 0;
    ok = ok && zf_exchange_set_target(ex, "POST", 4, target, strlen(target)) == ZF_OK;
    for (size_t i = 0; ok && i < rq->headers.n; i++) {
        const struct zf_header *h = &rq->headers.v[i];
        ok =
            zf_headers_add(&ex->req_headers, h->name, h->name_len, h->value, h->value_len) == ZF_OK;
    }
    char clen[24];
    snprintf(clen, sizeof clen, "%zu", body ? strlen(body) : 0);
    ok =
        ok && zf_headers_add(&ex->req_headers, "Content-Type", 12, "application/json", 16) == ZF_OK;
    ok = ok && zf_headers_add(&ex->req_headers, "Content-Length", 14, clen, strlen(clen)) == ZF_OK;
    ok = ok && zf_headers_add(&ex->req_headers, "Zfront-Topic", 12, topic, strlen(topic)) == ZF_OK;
    ok = ok && (s->reply = evbuffer_new()) && (s->req_topic = strdup(topic));
    free(target);
    if (!ok) {
        free(body);
        if (ex)
            zf_exchange_abort(ex);
        end_request(s);
        send_error(s, 500, topic, "cannot pass the message to the app");
        return;
    }
    ex->protocol = "HTTP/1.1";
    ex->scheme = rq->scheme ? rq->scheme : "http";
    ex->channel = "websocket";
    memcpy(ex->server_host, rq->server_host, sizeof ex->server_host);
    ex->server_port = rq->server_port;
    ex->body.mem = body;
    ex->body.len = strlen(body);
    ex->start_us = 0;
    s->ex = ex;
    s->ref = json_incref(json_object_get(msg, "ref"));
    zf_exchange_dispatch(ex);
}

/* ------------------------------------------------------------ wslay */

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    struct ws_session *s = user;
    int n = s->in ? evbuffer_remove(s->in, buf, len) : 0;
    if (n <= 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    s->fed += (uint64_t)n;
    return n;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    struct ws_session *s = user;
    if (buf_get(s, &s->out) != ZF_OK) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    struct evbuffer *out = s->out;
    if (evbuffer_get_length(out) >= WS_OUT_HIGH) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (evbuffer_add(out, data, len) != 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *user)
{
    struct ws_session *s = user;
    switch (arg->opcode) {
    case WSLAY_TEXT_FRAME:
        if (!s->closing)
            on_text(s, arg->msg, arg->msg_length);
        break;
    case WSLAY_BINARY_FRAME:
        zf_log(ZF_LOG_INFO, &s->conn, "binary WebSocket message: closing with 1003");
        start_close(s, 1003, "binary messages are not supported");
        break;
    case WSLAY_CONNECTION_CLOSE:
        zf_hub_unsubscribe_all(&s->sub);
        s->closing = 1;
        break;
    default:
        break;
    }
}

/* A 1-byte close payload is a protocol error (RFC 6455 5.5.1), but wslay
 * would answer it with an empty close: queue our 1002 first, as the frame
 * starts (wslay then sends no close of its own). */
static void on_frame_start(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *arg, void *user)
{
    struct ws_session *s = user;
    /* the frame's bytes: a client frame's header is 2 bytes, the shortest
     * length encoding (wslay refuses longer ones) and a 4-byte mask (wslay
     * closes on an unmasked client frame) */
    uint64_t n = arg->payload_length;
    s->framed += 2 + (n < 126 ? 0 : n < 65536 ? 2 : 8) + 4 + n;
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME)
        s->in_fragmented = !arg->fin;
    else if (arg->opcode == WSLAY_CONTINUATION_FRAME && arg->fin)
        s->in_fragmented = 0;
    if (arg->opcode == WSLAY_CONNECTION_CLOSE && arg->payload_length == 1 && !s->closing) {
        s->closing = 1;
        zf_hub_unsubscribe_all(&s->sub);
        wslay_event_queue_close(ctx, 1002, (const uint8_t *)"invalid close frame", 19);
    }
}

static const struct wslay_event_callbacks ws_callbacks = {
    recv_cb, send_cb, NULL, on_frame_start, NULL, NULL, on_msg,
};

/* Ends the session once the WebSocket conversation is over and the output
 * is flushed. */
static void check_done(struct ws_session *s)
{
    if (s->dead)
        return;
    if (!s->finishing && s->ctx && !wslay_event_want_read(s->ctx) &&
        !wslay_event_want_write(s->ctx)) {
        s->finishing = 1;
        if (s->pipe) {
            kill_session(s); /* the transport flushes the pipe, then ends the stream */
            return;
        }
        raw_update(s);
    }
    if (s->finishing && blen(s->out) == 0)
        kill_session(s);
}

/* Moves what wslay has queued to the socket output, as room allows; a
 * session going away closes with 1001 once its queue is empty. */
static void flush(struct ws_session *s)
{
    if (s->dead || s->finishing)
        return;
    if (!s->ctx) { /* idle: nothing queued */
        if (s->going_away && !s->closing)
            start_close(s, 1001, "server shutting down");
        return;
    }
    size_t before = blen(s->out);
    if (wslay_event_send(s->ctx) != 0) {
        kill_session(s);
        return;
    }
    if (blen(s->out) != before) {
        if (s->pipe)
            s->pipe->ops->wrote(s->pipe);
        else if (s->io)
            raw_update(s);
    }
    if (s->going_away && !s->closing && wslay_event_get_queued_msg_count(s->ctx) == 0) {
        start_close(s, 1001, "server shutting down");
        return;
    }
    check_done(s);
}

/* wss://: the session's SSL reads ahead (whole socket reads into OpenSSL's
 * buffer). A pass that stopped at WS_READ_MAX with records still buffered
 * there makes the read event active again, so they are read in this loop
 * pass: the socket may not be readable any more, and its event would not
 * come back for them. */
static void read_more(struct ws_session *s)
{
    if (s->tls_more && !s->dead && !s->finishing) {
        s->tls_more = 0;
        ws.read_ahead++;
        event_active(s->io, EV_READ, 1);
    }
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct ws_session *s = arg;
    s->recv_seq++;
    if (s->dead || s->finishing)
        return;
    if (ctx_get(s, s->base) != ZF_OK || wslay_event_recv(s->ctx) != 0) {
        kill_session(s);
        return;
    }
    flush(s);
    read_more(s);
    maybe_release(s);
    if (!s->ctx)
        bufs_release(s); /* nothing in flight: idle from now on */
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    struct ws_session *s = arg;
    flush(s);
    if (!s->dead)
        check_done(s);
}

/* ------------------------------------------------------------ the socket (ws://, wss://) */

/* Watches the socket for what the session wants now: reading until the
 * conversation is over, writing while `out` holds bytes; nothing once dead.
 * wss:// adds what OpenSSL asks for: the other direction while a read needs
 * to write (a KeyUpdate answered) or a write needs to read (and not the
 * write side then, which would only fire again and again).
 * The write waits for the next loop pass, so what the events of this pass
 * queued for the session goes out in one write. Two events on one socket,
 * as a bufferevent has: adding and removing the write side is then one
 * EPOLL_CTL_MOD, where one event changing its flags is a DEL and an ADD. */
static void raw_update(struct ws_session *s)
{
    unsigned out = blen(s->out) > 0;
    unsigned want_read = !s->dead && (!s->finishing || s->tls_write_wants_read);
    unsigned want_write =
        !s->dead && ((out && !s->tls_write_wants_read) || s->tls_read_wants_write);
    int bad = 0;
    if (want_read != s->reading) {
        bad |= (want_read ? event_add(s->io, NULL) : event_del(s->io)) != 0;
        s->reading = want_read;
    }
    if (want_write != s->writing) {
        if (want_write && !s->iow) {
            s->iow = event_new(s->base, s->fd, EV_WRITE | EV_PERSIST, raw_cb, s);
            if (s->iow)
                ws.iow_live++;
        }
        if (!want_write) {      /* an idle session keeps no write event */
            event_free(s->iow); /* may be the running callback: libevent allows it */
            s->iow = NULL;
            ws.iow_live--;
        } else if (!s->iow || event_add(s->iow, NULL) != 0) {
            bad = 1;
        }
        s->writing = want_write;
    }
    s->touched = 1;
    if (!s->ctx && !s->dead)
        bufs_release(s); /* the last bytes went and nothing is in flight */
    if (bad && !s->dead) {
        zf_log(ZF_LOG_ERROR, &s->conn, "cannot watch the WebSocket connection: closing");
        kill_session(s);
    }
}

/* A read or write that returned -1 only because it would block. */
static int retriable(void)
{
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

#ifdef ZF_WITH_HTTP2
/* A fatal TLS error (SSL_ERROR_SYSCALL or SSL_ERROR_SSL) or the client's
 * close_notify (SSL_ERROR_ZERO_RETURN; also a plain EOF, as the context
 * sets SSL_OP_IGNORE_UNEXPECTED_EOF): logged, the error queue cleared. */
static void tls_lost(struct ws_session *s, int err, int saved_errno, const char *doing)
{
    char reason[160];
    unsigned long e = ERR_peek_error();
    if (err == SSL_ERROR_ZERO_RETURN) {
        if (!s->closing)
            zf_log(ZF_LOG_DEBUG, &s->conn, "client closed the WebSocket connection");
        ERR_clear_error();
        return;
    }
    if (e)
        ERR_error_string_n(e, reason, sizeof reason);
    else
        snprintf(reason, sizeof reason, "%s",
                 saved_errno ? strerror(saved_errno) : "connection closed");
    ERR_clear_error();
    s->tls_failed = 1; /* OpenSSL: no SSL_shutdown after a fatal error */
    zf_log(ZF_LOG_DEBUG, &s->conn, "WebSocket TLS connection lost while %s: %s", doing, reason);
}

/* Writes `out` through the SSL, one full record (WS_TLS_RECORD bytes, made
 * contiguous) per SSL_write, until it is empty or the socket is full. A
 * write that would block is retried later with the same bytes at the front
 * of `out` and at least as many of them (only more can be added), as
 * OpenSSL requires; the buffer may move (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER).
 * Returns ZF_OK (all written), ZF_AGAIN (would block) or ZF_ERROR (lost:
 * logged). */
static int tls_write(struct ws_session *s)
{
    SSL *ssl = s->ssl;
    s->tls_write_wants_read = 0;
    size_t len;
    while ((len = blen(s->out)) > 0) {
        int n = len < WS_TLS_RECORD ? (int)len : WS_TLS_RECORD;
        unsigned char *p = evbuffer_pullup(s->out, n);
        if (!p) {
            zf_log(ZF_LOG_ERROR, &s->conn, "out of memory while writing: closing");
            return ZF_ERROR;
        }
        ERR_clear_error();
        int r = SSL_write(ssl, p, n);
        if (r > 0) {
            evbuffer_drain(s->out, (size_t)r);
            continue;
        }
        int saved = errno, err = SSL_get_error(ssl, r);
        if (err == SSL_ERROR_WANT_WRITE)
            return ZF_AGAIN;
        if (err == SSL_ERROR_WANT_READ) {
            s->tls_write_wants_read = 1;
            return ZF_AGAIN;
        }
        tls_lost(s, err, saved, "writing");
        return ZF_ERROR;
    }
    return ZF_OK;
}

/* Reads through the SSL into `in`, until OpenSSL wants more from the socket
 * or WS_READ_MAX bytes were read (then, when records are left in OpenSSL's
 * buffer, tls_more asks read_more to come back in this loop pass). Returns
 * the bytes read, 0 (would block), or -1 (closed or lost: logged). When the
 * end comes after some bytes (a close frame, then close_notify), those are
 * returned and tls_ended set. */
static int tls_read(struct ws_session *s)
{
    SSL *ssl = s->ssl;
    char buf[WS_TLS_RECORD];
    int total = 0;
    s->tls_read_wants_write = 0;
    while (total < WS_READ_MAX) {
        ERR_clear_error();
        int r = SSL_read(ssl, buf, sizeof buf);
        if (r > 0) {
            if (evbuffer_add(s->in, buf, (size_t)r) != 0) {
                zf_log(ZF_LOG_ERROR, &s->conn, "out of memory while reading: closing");
                return -1;
            }
            total += r;
            continue;
        }
        int saved = errno, err = SSL_get_error(ssl, r);
        if (err == SSL_ERROR_WANT_READ)
            return total;
        if (err == SSL_ERROR_WANT_WRITE) {
            s->tls_read_wants_write = 1;
            return total;
        }
        tls_lost(s, err, saved, "reading");
        s->tls_ended = 1;
        return total ? total : -1;
    }
    s->tls_more = SSL_has_pending(ssl) != 0;
    return total;
}

/* The end of a wss:// session: one non-blocking close_notify, best effort
 * (as nginx: the client's is not waited for), unless the connection failed;
 * then the session's reference to the SSL goes. */
static void tls_end(struct ws_session *s)
{
    if (!s->ssl)
        return;
    if (!s->tls_failed) {
        ERR_clear_error();
        SSL_shutdown(s->ssl);
        ERR_clear_error();
    }
    SSL_free(s->ssl);
    s->ssl = NULL;
}
#else
static int tls_write(struct ws_session *s)
{
    (void)s;
    return ZF_ERROR;
}
static int tls_read(struct ws_session *s)
{
    (void)s;
    return -1;
}
static void tls_end(struct ws_session *s)
{
    (void)s;
}
#endif

/* Writes what `out` holds to the socket. Returns ZF_OK (written, maybe only
 * in part), ZF_AGAIN (would block) or ZF_ERROR (lost: logged). */
static int out_write(struct ws_session *s)
{
    if (s->ssl)
        return tls_write(s);
    if (evbuffer_write(s->out, s->fd) >= 0)
        return ZF_OK;
    if (retriable())
        return ZF_AGAIN;
    zf_log(ZF_LOG_DEBUG, &s->conn, "WebSocket connection lost while writing: %s", strerror(errno));
    return ZF_ERROR;
}

/* Reads from the socket into `in`. Returns the bytes read, 0 (would block)
 * or -1 (closed or lost: logged). */
static int in_read(struct ws_session *s)
{
    if (buf_get(s, &s->in) != ZF_OK)
        return -1;
    if (s->ssl)
        return tls_read(s);
    int n = evbuffer_read(s->in, s->fd, WS_READ_MAX);
    if (n > 0 || (n < 0 && retriable()))
        return n > 0 ? n : 0;
    if (!s->closing)
        zf_log(ZF_LOG_DEBUG, &s->conn, "client closed the WebSocket connection");
    return -1;
}

static void raw_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    struct ws_session *s = arg;
    if (s->dead)
        return;
    /* wss://: a write waiting for the socket to be readable, a read for it
     * to be writable */
    int writing = (what & EV_WRITE) || ((what & EV_READ) && s->tls_write_wants_read);
    int reading = (what & EV_READ) || ((what & EV_WRITE) && s->tls_read_wants_write);
    if (writing) {
        /* Writes, refilling from what wslay holds back, until the socket
         * is full or nothing is left (at most WS_WRITE_ROUNDS refills per
         * pass, fair to the other sessions): a pass that queued more than
         * WS_OUT_HIGH (a burst from the bus) then leaves at the socket's
         * pace, not one WS_OUT_HIGH per loop pass. */
        for (int round = 0; round < WS_WRITE_ROUNDS; round++) {
            if (blen(s->out)) {
                int rc = out_write(s);
                if (rc == ZF_ERROR) {
                    kill_session(s);
                    return;
                }
                if (rc == ZF_AGAIN)
                    break; /* the socket is full */
            }
            if (blen(s->out) > WS_OUT_HIGH / 2)
                break;         /* it took only part: full */
            write_cb(NULL, s); /* room for what wslay holds back */
            if (s->dead)
                return;
            if (blen(s->out) == 0)
                break;
        }
        raw_update(s);
    }
    if (reading && !s->finishing) {
        int n = in_read(s);
        if (n < 0) {
            kill_session(s);
            return;
        }
        if (n > 0)
            read_cb(NULL, s);
        if (s->tls_ended && !s->dead) {
            /* after the bytes that came before the end, and what they
             * queued (a close frame answered): one try, best effort */
            if (!s->tls_failed && blen(s->out))
                out_write(s);
            kill_session(s);
        } else if (!s->dead && s->ssl)
            raw_update(s); /* what OpenSSL wants next */
    }
}

/* Takes the socket out of the HTTP/1.1 bufferevent (which is freed without
 * closing it): what the client sent after the request and anything still
 * unsent move to the session's own buffers. Over TLS the session keeps the
 * SSL (its own reference), read ahead on, with a BIO of its own on the
 * socket (tls_bio.c says why). Returns ZF_OK or ZF_ERROR (bev is then kept:
 * the caller frees it). */
static int raw_take(struct ws_session *s, struct bufferevent *bev)
{
    evutil_socket_t fd = bufferevent_getfd(bev);
    void *bio = NULL;
    (void)bio;
#ifdef ZF_WITH_HTTP2
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    if (ssl && !(bio = zf__ws_bio_new(fd)))
        return ZF_ERROR;
#endif
    struct evbuffer *bin = bufferevent_get_input(bev), *bout = bufferevent_get_output(bev);
    s->io = event_new(s->base, fd, EV_READ | EV_PERSIST, raw_cb, s);
    if (!s->io ||
        (evbuffer_get_length(bin) &&
         (buf_get(s, &s->in) != ZF_OK || evbuffer_add_buffer(s->in, bin) != 0)) ||
        buf_get(s, &s->out) != ZF_OK || evbuffer_add_buffer(s->out, bout) != 0) {
        buf_put(&s->in, 1);
        buf_put(&s->out, 1);
        if (s->io)
            event_free(s->io);
        s->io = NULL;
#ifdef ZF_WITH_HTTP2
        BIO_free(bio);
#endif
        return ZF_ERROR;
    }
    s->fd = fd;
    bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
    bufferevent_disable(bev, EV_READ | EV_WRITE);
#ifdef ZF_WITH_HTTP2
    if (ssl) {
        /* the bufferevent's destructor SSL_free()s it: keep a reference,
         * and close what it would close (the fd of the SSL's BIO): none */
        SSL_up_ref(ssl);
        SSL_set_bio(ssl, bio, bio); /* libevent's socket BIO goes (it never closes) */
        SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        SSL_set_read_ahead(ssl, 1);
        s->ssl = ssl;
        bufferevent_free(bev);
        return ZF_OK;
    }
#endif
    bufferevent_setfd(bev, -1);
    bufferevent_free(bev); /* the socket stays open: it has no fd now */
    return ZF_OK;
}

static void pipe_read(struct zf_pipe *p)
{
    read_cb(NULL, p->proto);
}

static void pipe_drain(struct zf_pipe *p)
{
    write_cb(NULL, p->proto);
}

static void pipe_closed(struct zf_pipe *p)
{
    struct ws_session *s = p->proto;
    s->pipe = NULL;
    s->in = s->out = NULL;
    kill_session(s);
}

/* A deadline reached (timers.h): the close handshake's end, a dead peer,
 * or the next ping. */
static void timer_cb(struct zf__ws_timer *t)
{
    struct ws_session *s = (struct ws_session *)((char *)t - offsetof(struct ws_session, timer));
    if (s->dead)
        return;
    if (s->closing || s->finishing) {
        zf_log(ZF_LOG_INFO, &s->conn, "WebSocket close handshake timed out (ws.close_timeout)");
        kill_session(s);
        return;
    }
    if (s->awaiting_pong) {
        if (s->recv_seq == s->ping_seq) {
            ws.dead_peers++;
            zf_log(ZF_LOG_INFO, &s->conn, "WebSocket peer is dead (no pong): closing");
            kill_session(s);
            return;
        }
        s->awaiting_pong = 0;
        set_timer(s, ZF_WS_TIMER_PING, zf_ws_cfg.ping_interval_ms);
        return;
    }
    struct wslay_event_msg m = {WSLAY_PING, (const uint8_t *)"", 0};
    if (ctx_get(s, s->base) != ZF_OK) {
        kill_session(s);
        return;
    }
    wslay_event_queue_msg(s->ctx, &m);
    s->awaiting_pong = 1;
    s->ping_seq = s->recv_seq;
    set_timer(s, ZF_WS_TIMER_PONG, zf_ws_cfg.pong_timeout_ms ? zf_ws_cfg.pong_timeout_ms : 1000);
    flush(s);
}

/* ------------------------------------------------------------ life */

static void session_free(struct ws_session *s)
{
    zf_hub_unsubscribe_all(&s->sub);
    if (s->ex)
        zf_exchange_abort(s->ex); /* the app's answer is not wanted any more */
    end_request(s);
    if (s->prev)
        s->prev->next = s->next;
    else if (ws.head == s)
        ws.head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    ws.open--;
    if (s->ctx) {
        wslay_event_context_free(s->ctx);
        ws.ctx_live--;
    }
    if (!ws.open && ws.sweep) {
        event_free(ws.sweep);
        ws.sweep = NULL;
    }
    if (s->iow) {
        event_free(s->iow);
        ws.iow_live--;
    }
    if (!ws.open && ws.reaper && !ws.reap) {
        event_free(ws.reaper); /* may be the running callback: libevent allows it */
        ws.reaper = NULL;
    }
    if (s->io)
        event_free(s->io);
    if (!s->pipe) { /* the session's own buffers */
        buf_put(&s->in, 1);
        buf_put(&s->out, 1);
    }
    tls_end(s); /* close_notify, before the socket closes */
    if (s->fd >= 0) {
        evutil_closesocket(s->fd);
        zf_conn_closed();
    }
    zf__ws_timer_set(&s->timer, NULL, NULL, ZF_WS_TIMER_NONE, 0);
    if (!ws.open)
        zf__ws_timers_idle();
    zf__ws_grant_free(&s->grant);
    free(s);
    if (zf_srv && zf_srv->state == ZF_STOPPING)
        zf_server_check_idle();
}

/* The part of starting a session common to both transports. Returns the
 * session, or NULL (logged; g freed). */
static struct ws_session *session_new(struct event_base *base, const struct zf_conn *conn,
                                      struct zf_ws_grant *g)
{
    struct ws_session *s = calloc(1, sizeof *s);
    if (!ws.reaper)
        ws.reaper = event_new(base, -1, 0, reap_cb, NULL);
    if (!ws.sweep && (ws.sweep = event_new(base, -1, EV_PERSIST, sweep_cb, NULL))) {
        struct timeval tv = {WS_IDLE_SWEEP_MS / 1000, (WS_IDLE_SWEEP_MS % 1000) * 1000};
        evtimer_add(ws.sweep, &tv);
    }
    if (!s || !ws.reaper || !ws.sweep) {
        zf_log(ZF_LOG_ERROR, conn, "out of memory while starting a WebSocket session");
        free(s);
        zf__ws_grant_free(g);
        return NULL;
    }
    zf_hub_subscriber_init(&s->sub, on_event, on_gap);
    s->conn = *conn;
    s->conn.action = "WebSocket";
    s->grant = *g;
    memset(g, 0, sizeof *g);
    s->sub.tokens = s->grant.audience;
    s->base = base;
    s->fd = -1;
    s->next = ws.head;
    if (ws.head)
        ws.head->prev = s;
    ws.head = s;
    ws.open++;
    ws.accepted++;
    return s;
}

/* Keepalive, frames that came with the handshake, and a server that began
 * to stop while the app allowed this session. */
static void session_go(struct ws_session *s)
{
    set_timer(s, ZF_WS_TIMER_PING, zf_ws_cfg.ping_interval_ms);
    if (!s->dead && blen(s->in))
        read_cb(NULL, s); /* frames sent right after the handshake */
    if (!s->dead && zf_srv && zf_srv->state != ZF_RUNNING) {
        s->going_away = 1;
        flush(s);
    }
}

int zf__ws_session_start(struct bufferevent *bev, const struct zf_conn *conn, const char *accept,
                         struct zf_ws_grant *g)
{
    struct ws_session *s = session_new(bufferevent_get_base(bev), conn, g);
    if (!s) {
        bufferevent_free(bev);
        zf_conn_closed();
        return ZF_ERROR;
    }
    /* events are small and latency matters: no Nagle delay (as asyncio and
     * most WebSocket servers do) */
    int one = 1;
    evutil_socket_t fd = bufferevent_getfd(bev);
    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (raw_take(s, bev) != ZF_OK) {
        zf_log(ZF_LOG_ERROR, &s->conn, "out of memory while starting a WebSocket session");
        bufferevent_free(bev); /* closes the socket */
        zf_conn_closed();
        kill_session(s);
        return ZF_OK; /* the session goes away */
    }
    evbuffer_add_printf(s->out,
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n",
                        accept);
    if (s->grant.protocol)
        evbuffer_add_printf(s->out, "Sec-WebSocket-Protocol: %s\r\n", s->grant.protocol);
    evbuffer_add(s->out, "\r\n", 2);
    zf_log(ZF_LOG_DEBUG, &s->conn, "WebSocket session started%s", s->ssl ? " (TLS)" : "");
    /* HTTP's send timeout does not apply: a WebSocket that waits is watched
     * by ping/pong (ws.ping_interval) and ws.max_send_buffer */
    raw_update(s);
#ifdef ZF_WITH_HTTP2
    if (s->ssl && SSL_has_pending(s->ssl))
        event_active(s->io, EV_READ, 1); /* bytes OpenSSL read before the hand-over */
#endif
    session_go(s);
    return ZF_OK;
}

int zf__ws_session_start_pipe(struct zf_pipe *p, struct event_base *base,
                              const struct zf_conn *conn, struct zf_ws_grant *g)
{
    struct ws_session *s = session_new(base, conn, g);
    if (!s)
        return ZF_ERROR;
    s->pipe = p;
    s->in = p->in;
    s->out = p->out;
    p->proto = s;
    p->on_read = pipe_read;
    p->on_drain = pipe_drain;
    p->on_closed = pipe_closed;
    if (s->grant.protocol) {
        p->reply_name = "sec-websocket-protocol";
        p->reply_value = s->grant.protocol;
    }
    zf_log(ZF_LOG_DEBUG, &s->conn, "WebSocket session started (HTTP/2 stream)");
    session_go(s);
    return ZF_OK;
}

void zf__ws_stop(int graceful)
{
    for (struct ws_session *s = ws.head; s; s = s->next) {
        if (!graceful) {
            kill_session(s);
            continue;
        }
        s->going_away = 1;
        flush(s);
    }
}

size_t zf__ws_active(void)
{
    return ws.open;
}

void zf__ws_metrics(struct zf_metrics *m, void *arg)
{
    (void)arg;
    zf_metrics_connections(m, "websocket", ws.open, ws.accepted);
    size_t subs = 0;
    for (struct ws_session *s = ws.head; s; s = s->next)
        subs += s->sub.nsubs;
    zf_metrics_gauge(m, "zfront_ws_subscriptions", "Topic subscriptions of WebSocket sessions.",
                     NULL, (double)subs);
    zf_metrics_counter(m, "zfront_ws_events_sent_total", "Hub events sent to WebSocket clients.",
                       NULL, ws.events);
    zf_metrics_counter(m, "zfront_ws_slow_consumers_total",
                       "WebSocket sessions cut (1008) because they did not read fast enough "
                       "(ws.max_send_buffer).",
                       NULL, ws.slow_consumers);
    zf_metrics_counter(m, "zfront_ws_dead_peers_total",
                       "WebSocket sessions closed after an unanswered ping.", NULL, ws.dead_peers);
    zf_metrics_counter(m, "zfront_ws_bad_messages_total",
                       "Client messages refused (bad JSON, unknown type, over ws.max_message).",
                       NULL, ws.bad_messages);
}

void zf__ws_stats(struct evbuffer *out)
{
    evbuffer_add_printf(out,
                        "ws.open: %zu\nws.accepted: %llu\nws.events_sent: %llu\n"
                        "ws.slow_consumers: %llu\nws.dead_peers: %llu\nws.bad_messages: %llu\n",
                        ws.open, (unsigned long long)ws.accepted, (unsigned long long)ws.events,
                        (unsigned long long)ws.slow_consumers, (unsigned long long)ws.dead_peers,
                        (unsigned long long)ws.bad_messages);
    evbuffer_add_printf(out,
                        "ws.tls_read_ahead: %llu\nws.contexts_made: %llu\n"
                        "ws.contexts_released: %llu\nws.contexts_live: %zu\n"
                        "ws.write_events_live: %zu\nws.buffers_live: %zu\n"
                        "ws.timers_waiting: %zu\n",
                        (unsigned long long)ws.read_ahead, (unsigned long long)ws.ctx_made,
                        (unsigned long long)ws.ctx_released, ws.ctx_live, ws.iow_live, ws.bufs_live,
                        zf__ws_timers_waiting());
}
