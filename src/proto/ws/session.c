/* WebSocket sessions: wslay over the connection (HTTP/1.1 bufferevent) or an HTTP/2 stream (a
 * zf_pipe, RFC 8441), the JSON subscription protocol (libjansson), hub delivery with a send limit,
 * keepalive, and closing (1001 on shutdown after what is queued).
 *
 * A session's phase is told by two flags: `closing` (our close frame is
 * queued or sent: nothing more is queued) and `finishing` (the WebSocket
 * conversation is over: the socket closes once the output is flushed). */
#include <event2/buffer.h>
#include <event2/event.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <wslay/wslay.h>

#include "../../core/hub.h"
#include "../../core/metrics.h"
#include "ws.h"

#define WS_OUT_HIGH (64 * 1024) /* bytes in the socket output before wslay waits */
#define WS_MAX_TOPIC 1024

struct ws_session {
    struct zf_hub_subscriber sub; /* first: the hub hands it back */
    struct zf_conn conn;
    struct ws_session *prev, *next;
    struct bufferevent *bev;   /* HTTP/1.1: the socket; NULL over HTTP/2 */
    struct zf_pipe *pipe;      /* HTTP/2 (RFC 8441): the stream; NULL otherwise */
    struct evbuffer *in, *out; /* the transport's buffers */
    wslay_event_context_ptr ctx;
    struct event *timer;  /* keepalive, then the close deadline */
    struct event *reaper; /* frees the session from the loop */
    struct zf_ws_grant grant;
    uint64_t recv_seq, ping_seq; /* reads so far / at the last ping */
    int awaiting_pong;
    int closing, finishing, going_away, dead;
    uint64_t events_sent;
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
} ws;

static void session_free(struct ws_session *s);
static void flush(struct ws_session *s);
static void do_send(struct ws_session *s, const char *topic, json_t *msg);

/* ------------------------------------------------------------ closing */

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    session_free(arg);
}

/* Frees the session from the loop (never inside a callback chain). */
static void kill_session(struct ws_session *s)
{
    if (s->dead)
        return;
    s->dead = 1;
    zf_hub_unsubscribe_all(&s->sub);
    if (s->bev)
        bufferevent_disable(s->bev, EV_READ | EV_WRITE);
    if (s->pipe) {
        struct zf_pipe *p = s->pipe;
        s->pipe = NULL;
        p->ops->close(p); /* the transport sends what is left, ends the stream */
        s->in = s->out = NULL;
    }
    event_del(s->timer);
    event_active(s->reaper, EV_TIMEOUT, 0);
}

static void set_timer(struct ws_session *s, uint64_t ms)
{
    if (!ms) {
        event_del(s->timer);
        return;
    }
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    event_add(s->timer, &tv);
}

/* Queues our close frame (code, reason) after what is being sent; the
 * session ends when the client answers or ws.close_timeout passes. */
static void start_close(struct ws_session *s, uint16_t code, const char *reason)
{
    if (s->closing || s->dead)
        return;
    s->closing = 1;
    zf_hub_unsubscribe_all(&s->sub);
    wslay_event_queue_close(s->ctx, code, (const uint8_t *)reason, strlen(reason));
    set_timer(s, zf_ws_cfg.close_timeout_ms);
    flush(s);
}

/* ------------------------------------------------------------ sending */

static size_t queued_bytes(struct ws_session *s)
{
    return wslay_event_get_queued_msg_length(s->ctx) + evbuffer_get_length(s->out);
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
    s->events_sent++;
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
    if (!zf__ws_allowed(s->grant.send, topic) || topic[strlen(topic) - 1] == '*') {
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
             asprintf(&target, "%s%s%s", zf_ws_cfg.app_path, *s->grant.query ? "?" : "",
                      s->grant.query) >= 0;
    ok = ok && zf_exchange_set_target(ex, "POST", 4, target, strlen(target)) == ZF_OK;
    for (size_t i = 0; ok && i < s->grant.headers.n; i++) {
        const struct zf_header *h = &s->grant.headers.v[i];
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
    ex->scheme = s->grant.scheme ? s->grant.scheme : "http";
    ex->channel = "websocket";
    memcpy(ex->server_host, s->grant.server_host, sizeof ex->server_host);
    ex->server_port = s->grant.server_port;
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
    int n = evbuffer_remove(s->in, buf, len);
    if (n <= 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    return n;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    struct ws_session *s = user;
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
    if (!s->finishing && !wslay_event_want_read(s->ctx) && !wslay_event_want_write(s->ctx)) {
        s->finishing = 1;
        if (s->pipe) {
            kill_session(s); /* the transport flushes the pipe, then ends the stream */
            return;
        }
        bufferevent_disable(s->bev, EV_READ);
        bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);
    }
    if (s->finishing && evbuffer_get_length(s->out) == 0)
        kill_session(s);
}

/* Moves what wslay has queued to the socket output, as room allows; a
 * session going away closes with 1001 once its queue is empty. */
static void flush(struct ws_session *s)
{
    if (s->dead || s->finishing)
        return;
    size_t before = evbuffer_get_length(s->out);
    if (wslay_event_send(s->ctx) != 0) {
        kill_session(s);
        return;
    }
    if (s->pipe && evbuffer_get_length(s->out) != before)
        s->pipe->ops->wrote(s->pipe);
    if (s->going_away && !s->closing && wslay_event_get_queued_msg_count(s->ctx) == 0) {
        start_close(s, 1001, "server shutting down");
        return;
    }
    check_done(s);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct ws_session *s = arg;
    s->recv_seq++;
    if (wslay_event_recv(s->ctx) != 0) {
        kill_session(s);
        return;
    }
    flush(s);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    struct ws_session *s = arg;
    flush(s);
    if (!s->dead)
        check_done(s);
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

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct ws_session *s = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        if (!s->closing)
            zf_log(ZF_LOG_DEBUG, &s->conn, "client closed the WebSocket connection");
        kill_session(s);
    }
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct ws_session *s = arg;
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
        set_timer(s, zf_ws_cfg.ping_interval_ms);
        return;
    }
    struct wslay_event_msg m = {WSLAY_PING, (const uint8_t *)"", 0};
    wslay_event_queue_msg(s->ctx, &m);
    s->awaiting_pong = 1;
    s->ping_seq = s->recv_seq;
    set_timer(s, zf_ws_cfg.pong_timeout_ms ? zf_ws_cfg.pong_timeout_ms : 1000);
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
    if (s->ctx)
        wslay_event_context_free(s->ctx);
    if (s->bev) {
        bufferevent_free(s->bev);
        zf_conn_closed(); /* the socket's count came with it (server.h) */
    }
    event_free(s->timer);
    event_free(s->reaper);
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
    if (!s || wslay_event_context_server_init(&s->ctx, &ws_callbacks, s) != 0 ||
        !(s->timer = evtimer_new(base, timer_cb, s)) ||
        !(s->reaper = event_new(base, -1, 0, reap_cb, s))) {
        zf_log(ZF_LOG_ERROR, conn, "out of memory while starting a WebSocket session");
        if (s) {
            if (s->ctx)
                wslay_event_context_free(s->ctx);
            if (s->timer)
                event_free(s->timer);
            free(s);
        }
        zf__ws_grant_free(g);
        return NULL;
    }
    zf_hub_subscriber_init(&s->sub, on_event, on_gap);
    s->conn = *conn;
    s->conn.action = "WebSocket";
    s->grant = *g;
    memset(g, 0, sizeof *g);
    s->sub.tokens = s->grant.audience;
    wslay_event_config_set_max_recv_msg_length(s->ctx, zf_ws_cfg.max_message);
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
    set_timer(s, zf_ws_cfg.ping_interval_ms);
    if (evbuffer_get_length(s->in))
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
    s->bev = bev;
    s->in = bufferevent_get_input(bev);
    s->out = bufferevent_get_output(bev);
    struct evbuffer *out = s->out;
    evbuffer_add_printf(out,
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n",
                        accept);
    if (s->grant.protocol)
        evbuffer_add_printf(out, "Sec-WebSocket-Protocol: %s\r\n", s->grant.protocol);
    evbuffer_add(out, "\r\n", 2);
    zf_log(ZF_LOG_DEBUG, &s->conn, "WebSocket session started");

    /* events are small and latency matters: no Nagle delay (as asyncio and
     * most WebSocket servers do) */
    int one = 1;
    evutil_socket_t fd = bufferevent_getfd(bev);
    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    bufferevent_setcb(bev, read_cb, write_cb, event_cb, s);
    bufferevent_setwatermark(bev, EV_READ, 0, 0);
    bufferevent_setwatermark(bev, EV_WRITE, WS_OUT_HIGH / 2, 0);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
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
}
