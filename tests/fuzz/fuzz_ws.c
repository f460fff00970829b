/* libFuzzer target: zfront's WebSocket session (src/proto/ws/session.c:
 * wslay with zfront's callbacks, the JSON message protocol, the hub, and
 * messages passed to the app), fed the input as the client's bytes after
 * the handshake. No socket and no Python: the session's bufferevent is one
 * end of a bufferevent pair on a private event_base; the real hub
 * (src/core/hub.c) delivers what the client publishes; "send" messages go
 * to the stand-in app of fuzz_app.h, run between input chunks.
 *
 * Input layout: byte 0 picks the settings (bit 0: small limits, bit 1: the
 * app answers only at the end, bit 2: graceful stop instead of a hard one
 * at the end), byte 1 the chunk size the rest is fed in (1 + byte1 * 4
 * bytes), the rest is what the client sends: frames, which a client must
 * mask (a zero mask key leaves the payload readable: the seeds use it).
 *
 * The session is granted: subscribe "pub/" "a*" "x"; publish "pub/" "x";
 * send "app/"; audience "role:A"; the handshake headers a cookie and a
 * query "q=1".
 *
 * Checks, beyond the sanitizers (ASan, UBSan, LeakSanitizer):
 *   out-framing   the server's bytes are the 101 response, then unmasked
 *                 frames with a valid opcode, control frames of at most
 *                 125 bytes with FIN set
 *   leak          after the session is stopped and the loop ran, no
 *                 session, exchange or hub subscription is left */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/core/hub.h"
#include "../../src/proto/ws/ws.h"

static const uint8_t *cur_data;
static size_t cur_len;

static void fail(const char *id, const char *what)
{
    fprintf(stderr, "\n==== zfront fuzz_ws: invariant [%s] violated: %s\ninput: %zu bytes\n", id,
            what, cur_len);
    abort();
}

#include "fuzz_app.h"

/* What session.c and module.c take from the server (server.c). */
int zf_upgrade_register(const struct zf_upgrade *u)
{
    (void)u;
    return ZF_OK;
}

/* zf_loop_call from the loop itself (the hub's zf_hub_publish): run at the
 * next turn, in order. */
struct call {
    zf_loop_fn fn;
    void *arg;
    struct call *next;
};
static struct call *calls, **calls_tail = &calls;

int zf_loop_call(zf_loop_fn fn, void *arg)
{
    struct call *c = malloc(sizeof *c);
    if (!c)
        return ZF_ERROR;
    c->fn = fn;
    c->arg = arg;
    c->next = NULL;
    *calls_tail = c;
    calls_tail = &c->next;
    return ZF_OK;
}

static void run_calls(void)
{
    while (calls) {
        struct call *c = calls;
        calls = c->next;
        if (!calls)
            calls_tail = &calls;
        c->fn(c->arg);
        free(c);
    }
}

/* ------------------------------------------------------------- the checks */

static struct {
    int past_101;
    char head[4];
    size_t frames;
} out;

/* Checks and drains what the server sent; partial frames stay in b. */
static void check_output(struct evbuffer *b)
{
    if (!out.past_101) {
        struct evbuffer_ptr e = evbuffer_search(b, "\r\n\r\n", 4, NULL);
        if (e.pos < 0)
            return;
        const char *p = (const char *)evbuffer_pullup(b, e.pos + 4);
        if (strncmp(p, "HTTP/1.1 101 ", 13) != 0)
            fail("out-framing", "the output does not start with the 101");
        evbuffer_drain(b, (size_t)e.pos + 4);
        out.past_101 = 1;
    }
    for (;;) {
        size_t n = evbuffer_get_length(b);
        if (n < 2)
            return;
        const uint8_t *h = evbuffer_pullup(b, n < 10 ? (ev_ssize_t)n : 10);
        int op = h[0] & 15;
        if (h[1] & 0x80)
            fail("out-framing", "a masked frame from the server");
        if (h[0] & 0x70)
            fail("out-framing", "RSV bits set");
        if (!(op <= 2 || (op >= 8 && op <= 10)))
            fail("out-framing", "invalid opcode");
        uint64_t len = h[1] & 127;
        size_t hl = 2;
        if (len == 126) {
            if (n < 4)
                return;
            len = (uint64_t)h[2] << 8 | h[3];
            hl = 4;
        } else if (len == 127) {
            if (n < 10)
                return;
            len = 0;
            for (int i = 2; i < 10; i++)
                len = len << 8 | h[i];
            hl = 10;
        }
        if (op >= 8 && (len > 125 || !(h[0] & 0x80)))
            fail("out-framing", "a control frame longer than 125 bytes or fragmented");
        if (n < hl + len)
            return;
        evbuffer_drain(b, hl + (size_t)len);
        out.frames++;
    }
}

/* --------------------------------------------------------------- driving */

static struct event_base *base;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    base = fuzz_app_init();
    zf_ws_cfg.app_path = "/ws-app";
    zf_ws_cfg.close_timeout_ms = 5000;
    zf_hub_cfg.history = 16;
    zf_hub_cfg.max_topics = 100;
    zf_hub_cfg.history_memory = 1 << 20;
    zf_hub_cfg.max_event = 64 * 1024;
    return 0;
}

static char **words(const char *const *w)
{
    size_t n = 0;
    while (w[n])
        n++;
    char **v = calloc(n + 1, sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = strdup(w[i]);
    return v;
}

static void turn(struct bufferevent *client)
{
    for (int i = 0; i < 4; i++) {
        run_calls();
        event_base_loop(base, EVLOOP_NONBLOCK);
        check_output(bufferevent_get_input(client));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (n < 2)
        return 0;
    cur_data = data;
    cur_len = n;
    memset(&out, 0, sizeof out);
    int flags = data[0];
    size_t chunk = 1 + (size_t)data[1] * 4;
    data += 2;
    n -= 2;
    int small = flags & 1;
    zf_ws_cfg.max_message = small ? 64 : 1 << 20;
    zf_ws_cfg.max_send_buffer = small ? 256 : 1 << 20;
    zf_ws_cfg.max_subscriptions = small ? 2 : 100;
    if (zf_hub_init() != ZF_OK)
        abort();

    struct zf_ws_grant g = {0};
    g.topics = words((const char *[]){"pub/", "a*", "x", NULL});
    g.publish = words((const char *[]){"pub/", "x", NULL});
    g.send = words((const char *[]){"app/", NULL});
    g.audience = words((const char *[]){"role:A", NULL});
    g.request = calloc(1, sizeof *g.request);
    g.request->query = strdup("q=1");
    g.request->scheme = "http";
    zf_headers_add(&g.request->headers, "Cookie", 6, "s=1", 3);

    struct bufferevent *pair[2];
    if (bufferevent_pair_new(base, 0, pair) != 0)
        abort();
    struct zf_conn conn = {
        .id = 1, .peer = "127.0.0.1:1", .peer_addr = "127.0.0.1", .peer_port = 1, .proto = "ws"};
    if (zf__ws_session_start(pair[0], &conn, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", &g) != ZF_OK)
        abort();
    bufferevent_enable(pair[1], EV_READ | EV_WRITE);
    turn(pair[1]);
    for (size_t off = 0; off < n; off += chunk) {
        size_t k = n - off < chunk ? n - off : chunk;
        bufferevent_write(pair[1], data + off, k);
        turn(pair[1]);
        if (!(flags & 2))
            run_jobs();
        turn(pair[1]);
    }
    run_jobs();
    turn(pair[1]);
    if (flags & 4) {
        zf__ws_stop(1);
        turn(pair[1]);
    }
    zf__ws_stop(0);
    turn(pair[1]);
    run_jobs();
    turn(pair[1]);
    bufferevent_free(pair[1]);
    if (verbose)
        fprintf(stderr, "fuzz_ws: the server sent %zu frames\n", out.frames);
    if (zf__ws_active() != 0)
        fail("leak", "a session outlived zf__ws_stop");
    if (zf_exchange_count() != 0)
        fail("leak", "an exchange outlived its session");
    if (zf_hub_sub_count() != 0)
        fail("leak", "a hub subscription outlived its session");
    run_calls();
    zf_hub_free();
    return 0;
}
