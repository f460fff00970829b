/* RFC 8441: an HTTP/2 stream opened with extended CONNECT (:protocol) is
 * handed, as a byte pipe (struct zf_pipe, core/server.h), to the module the
 * core's upgrade registry names for that protocol. HTTP/2 knows no
 * WebSocket: DATA frames in go to the pipe's `in`, the pipe's `out` goes
 * out as DATA through a deferred data provider.
 *
 * Everything the protocol is told (on_read, on_drain) and every send that
 * follows its writes happens from a `kick` event on the loop, never inside
 * an nghttp2 callback. What the protocol writes waits for the next loop pass
 * (a zero timeout on that event, not an activation in this pass): a
 * WebSocket fan-out writes one event to thousands of pipes per message read,
 * and a publisher's burst read in one pass must leave each pipe as one DATA
 * frame, one TLS record and one write, not one of each per event. */
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "h2.h"

struct zf_h2_tunnel {
    struct zf_pipe pipe;     /* first: the protocol hands it back */
    struct zf_h2_stream *st; /* NULL once the stream is gone */
    struct event *kick;
    int proto_closed; /* the protocol called close: send the rest, then EOF */
    int deferred;     /* the data provider waits for bytes */
    int drained;      /* `out` was taken from since the last kick */
    int read_pending; /* `in` grew since the last kick */
};

static void tunnel_free(struct zf_h2_tunnel *t)
{
    event_free(t->kick);
    evbuffer_free(t->pipe.in);
    evbuffer_free(t->pipe.out);
    free(t);
}

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct zf_h2_tunnel *t = arg;
    struct zf_h2_stream *st = t->st;
    if (!st) {
        tunnel_free(t); /* stream gone and protocol closed */
        return;
    }
    struct zf_h2_conn *c = st->c;
    if (!t->proto_closed && t->read_pending) {
        t->read_pending = 0;
        t->pipe.on_read(&t->pipe);
    }
    if (!t->proto_closed && t->drained) {
        t->drained = 0;
        t->pipe.on_drain(&t->pipe);
    }
    if (t->st && t->deferred && (evbuffer_get_length(t->pipe.out) || t->proto_closed)) {
        t->deferred = 0;
        nghttp2_session_resume_data(c->session, st->id);
    }
    zf__h2_flush(c);
}

static void kick(struct zf_h2_tunnel *t)
{
    event_active(t->kick, EV_TIMEOUT, 0);
}

static void pipe_wrote(struct zf_pipe *p)
{
    static const struct timeval next_pass = {0, 0};
    struct zf_h2_tunnel *t = (struct zf_h2_tunnel *)p;
    if (!event_pending(t->kick, EV_TIMEOUT, NULL))
        event_add(t->kick, &next_pass);
}

static void pipe_close(struct zf_pipe *p)
{
    struct zf_h2_tunnel *t = (struct zf_h2_tunnel *)p;
    t->proto_closed = 1;
    kick(t); /* sends the rest and END_STREAM; frees t if the stream is gone */
}

static const struct zf_pipe_ops tunnel_ops = {pipe_wrote, pipe_close};

static ssize_t read_tunnel(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                           uint32_t *flags, nghttp2_data_source *source, void *user_data)
{
    struct zf_h2_tunnel *t = source->ptr;
    int n = evbuffer_remove(t->pipe.out, buf, length);
    if (n > 0) {
        t->drained = 1;
        kick(t);
        return n;
    }
    if (t->proto_closed) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    t->deferred = 1;
    return NGHTTP2_ERR_DEFERRED;
}

int zf__h2_tunnel_open(struct zf_h2_stream *st)
{
    struct zf_h2_conn *c = st->c;
    struct zf_h2_tunnel *t = calloc(1, sizeof *t);
    if (t) {
        t->pipe.in = evbuffer_new();
        t->pipe.out = evbuffer_new();
        t->kick = event_new(bufferevent_get_base(c->bev), -1, 0, kick_cb, t);
    }
    st->submitted = 1;
    if (!t || !t->pipe.in || !t->pipe.out || !t->kick) {
        if (t) {
            if (t->kick)
                event_free(t->kick);
            if (t->pipe.in)
                evbuffer_free(t->pipe.in);
            if (t->pipe.out)
                evbuffer_free(t->pipe.out);
            free(t);
        }
        nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
        return ZF_ERROR;
    }
    t->pipe.ops = &tunnel_ops;
    t->st = st;
    if (st->upgrade->start_pipe(&t->pipe, &c->conn, st->ex) != ZF_OK) {
        tunnel_free(t);
        nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
        return ZF_ERROR;
    }
    st->tunnel = t;
    nghttp2_nv nv[4] = {NV(":status", "200"), NV("server", ZF_SERVER_NAME),
                        NV("date", zf_http_date())};
    size_t n = 3;
    if (t->pipe.reply_name && t->pipe.reply_value)
        nv[n++] = (nghttp2_nv){(uint8_t *)t->pipe.reply_name, (uint8_t *)t->pipe.reply_value,
                               strlen(t->pipe.reply_name), strlen(t->pipe.reply_value),
                               NGHTTP2_NV_FLAG_NONE};
    nghttp2_data_provider prd = {.source.ptr = t, .read_callback = read_tunnel};
    if (nghttp2_submit_response(c->session, st->id, nv, n, &prd) != 0)
        nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    st->status = 200;
    st->finished = 1;
    zf__h2_access_log(st);
    if (st->ex) {
        zf_exchange_abort(st->ex); /* the app's body, if any, is not wanted */
        st->ex = NULL;
    }
    st->state = ZF_H2_APP;
    kick(t);
    return ZF_OK;
}

int zf__h2_tunnel_check(struct zf_h2_stream *st)
{
    struct zf_h2_conn *c = st->c;
    const struct zf_upgrade *u = zf_upgrade_find(st->protocol, strlen(st->protocol));
    if (!u || !u->start_pipe) {
        zf_log(ZF_LOG_INFO, &c->conn, "http2: stream %d: extended CONNECT for \"%.40s\": 501",
               st->id, st->protocol);
        zf__h2_respond_error(st, 501);
        return ZF_ERROR;
    }
    const char *why = "bad extended CONNECT";
    int rc = u->check(st->ex, &why);
    if (rc == ZF_DECLINED) {
        zf__h2_respond_error(st, 404);
        return ZF_ERROR;
    }
    if (rc != ZF_OK && rc != ZF_AGAIN) {
        zf_log(ZF_LOG_WARN, &c->conn, "http2: stream %d: %s", st->id, why);
        zf__h2_respond_error(st, rc >= 400 && rc < 600 ? rc : 400);
        return ZF_ERROR;
    }
    st->upgrade = u;
    if (rc == ZF_OK)
        return ZF_OK;
    zf__h2_tunnel_open(st);
    return ZF_AGAIN;
}

void zf__h2_tunnel_data(struct zf_h2_tunnel *t, const uint8_t *data, size_t len)
{
    if (t->proto_closed)
        return;
    evbuffer_add(t->pipe.in, data, len);
    t->read_pending = 1;
    kick(t);
}

void zf__h2_tunnel_stream_gone(struct zf_h2_tunnel *t)
{
    t->st->tunnel = NULL;
    t->st = NULL;
    if (!t->proto_closed) {
        t->proto_closed = 1;
        t->pipe.on_closed(&t->pipe);
    }
    kick(t); /* frees it from the loop */
}
