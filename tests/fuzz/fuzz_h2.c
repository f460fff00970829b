/* libFuzzer target: zfront's HTTP/2 server connection (src/proto/http/h2/:
 * conn.c, stream.c, response.c, tunnel.c) with its real nghttp2 callbacks,
 * fed the input as client bytes. No socket and no Python: the connection's
 * bufferevent is one end of a libevent bufferevent pair on a private
 * event_base, the harness writes client bytes into the other end and drains
 * what the server sends; the worker pool is replaced by a queue that the
 * harness runs on its own thread between input chunks (an app that answers
 * from the request path: small bodies, a 200 KB one that waits for flow
 * control, a failed one, 204).
 *
 * Input layout: byte 0 picks the settings (bit 0: small limits, bit 1: no
 * client preface added, bit 2: requests are answered only at the end, bit
 * 3: extended CONNECT announced, bit 4: h2c upgrade), byte 1 the chunk size
 * the rest is fed in (1 + byte1 * 4 bytes); with bit 4, byte 2 is the length
 * k of the HTTP2-Settings value that follows (k bytes): an HTTP/1.1 GET with
 * Upgrade: h2c and that value goes through upgrade.c (zf__h2c_ops: the
 * header checks, the base64url decoding, nghttp2_session_upgrade2, stream 1)
 * when it asks for a valid upgrade, else the session starts by prior
 * knowledge. The rest is what the client sends after the connection preface
 * "PRI * HTTP/2.0..." that the harness sends first.
 *
 * Checks, beyond the sanitizers (ASan, UBSan, LeakSanitizer):
 *   out-framing   what the server sends is the SETTINGS frame (after the
 *                 101 of an h2c upgrade), then whole
 *                 frames only (9-byte header + length), none longer than
 *                 64 KiB (read_length_cb's cap)
 *   leak-exchange every exchange, stream and connection is gone after the
 *                 connection is closed (the loop ran its deferred frees) */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/core/exchange.h"
#include "../../src/core/pool.h"
#include "../../src/proto/http/h2/h2.h"

struct zf_h2_config zf_h2_cfg;
static int announce_connect;

/* What conn.c takes from outside h2/ and http_util.c (tls.c, server.c). */
void zf_tls_close_notify(struct bufferevent *bev)
{
    (void)bev;
}

int zf_upgrade_pipes(void)
{
    return announce_connect;
}

int zf__h2_enabled(void)
{
    return 1;
}

/* ------------------------------------------------------------- the checks */

static const uint8_t *cur_data;
static size_t cur_len;

static void fail(const char *id, const char *what)
{
    fprintf(stderr, "\n==== zfront fuzz_h2: invariant [%s] violated: %s\ninput: %zu bytes\n", id,
            what, cur_len);
    abort();
}

/* The server's output, checked frame by frame as it arrives. */
static const char switching[] = "HTTP/1.1 101 Switching Protocols\r\n"
                                "Connection: Upgrade\r\n"
                                "Upgrade: h2c\r\n"
                                "\r\n";

static struct {
    size_t skip_101; /* bytes of the 101 still to come before the frames */
    uint8_t hd[9];
    size_t hd_have;
    size_t payload_left;
    unsigned long frames;
} out;

static void check_output(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    if (out.skip_101 > 0 && n > 0) {
        size_t k = n < out.skip_101 ? n : out.skip_101;
        const char *p = (const char *)evbuffer_pullup(b, (ev_ssize_t)k);
        size_t at = sizeof switching - 1 - out.skip_101;
        if (memcmp(p, switching + at, k) != 0)
            fail("out-framing", "the h2c upgrade's 101 is not what was sent");
        evbuffer_drain(b, k);
        out.skip_101 -= k;
        n -= k;
    }
    while (n > 0) {
        if (out.payload_left > 0) {
            size_t k = n < out.payload_left ? n : out.payload_left;
            evbuffer_drain(b, k);
            out.payload_left -= k;
            n -= k;
            continue;
        }
        size_t k = 9 - out.hd_have;
        if (k > n)
            k = n;
        evbuffer_remove(b, out.hd + out.hd_have, k);
        out.hd_have += k;
        n -= k;
        if (out.hd_have < 9)
            break;
        size_t len = (size_t)out.hd[0] << 16 | (size_t)out.hd[1] << 8 | out.hd[2];
        if (out.frames == 0 && out.hd[3] != NGHTTP2_SETTINGS)
            fail("out-framing", "the first frame is not SETTINGS");
        if (len > 65536)
            fail("out-framing", "a frame longer than 64 KiB");
        out.frames++;
        out.payload_left = len;
        out.hd_have = 0;
    }
}

#include "fuzz_app.h"

/* --------------------------------------------------------------- driving */

static struct event_base *base;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    base = fuzz_app_init();
    zf_cfg.input_spool = 1 << 20;
    zf_http_cfg.send_timeout_ms = 60000;
    zf_http_cfg.body_timeout_ms = 60000;
    return 0;
}

static void settings(int small)
{
    zf_h2_cfg.enable = 1;
    zf_h2_cfg.max_concurrent_streams = small ? 4 : 128;
    zf_h2_cfg.max_header_list_size = small ? 256 : 65536;
    zf_h2_cfg.initial_window_size = small ? 100 : 1 << 20;
    zf_h2_cfg.connection_window_size = small ? 65535 : 16 << 20;
    zf_h2_cfg.idle_timeout_ms = 60000;
    zf_h2_cfg.max_resets = small ? 3 : 200;
    zf_h2_cfg.max_control_frames = small ? 5 : 1000;
    zf_h2_cfg.max_refused_headers = small ? 2 : 20;
    zf_h2_cfg.max_header_bytes = small ? 4096 : 128 << 20;
    zf_h2_cfg.limit_window_ms = 10000;
    zf_http_cfg.max_headers = small ? 4 : 100;
    zf_http_cfg.max_body_size = small ? 64 : 1 << 30;
    zf_cfg.input_spool = small ? 16 : 1 << 20;
}

/* Lets the loop run what is pending (pair transfers, deferred callbacks,
 * posted worker output, deferred frees), draining the server's output. */
static void turn(struct bufferevent *client)
{
    for (int i = 0; i < 4; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        check_output(bufferevent_get_input(client));
    }
}

static const struct zf_exchange_ops h1_ops = {NULL, NULL};

/* The HTTP/1.1 request that asks for h2c, as http1.c hands it over. */
static struct zf_exchange *upgrade_request(struct zf_conn *conn, const char *settings, size_t len)
{
    struct zf_exchange *ex = zf_exchange_new(&h1_ops, NULL, conn);
    if (!ex || zf_exchange_set_target(ex, "GET", 3, "/up?x=1", 7) != ZF_OK)
        abort();
    ex->protocol = "HTTP/1.1";
    ex->scheme = "http";
    ex->channel = "http";
    zf_headers_add(&ex->req_headers, "Host", 4, "localhost", 9);
    zf_headers_add(&ex->req_headers, "Connection", 10, "Upgrade, HTTP2-Settings", 23);
    zf_headers_add(&ex->req_headers, "Upgrade", 7, "h2c", 3);
    zf_headers_add(&ex->req_headers, "HTTP2-Settings", 14, settings, len);
    return ex;
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
    settings(flags & 1);
    announce_connect = (flags & 8) != 0;

    struct bufferevent *pair[2];
    if (bufferevent_pair_new(base, 0, pair) != 0)
        abort();
    struct zf_http_endpoint ep = {.scheme = "http", .channel = "http", .tls = 0};
    struct zf_conn conn = {
        .id = 1, .peer = "127.0.0.1:1", .peer_addr = "127.0.0.1", .peer_port = 1, .proto = "h2c"};
    struct zf_exchange *up = NULL;
    if ((flags & 16) && n > 0) {
        size_t k = data[0] < n - 1 ? data[0] : n - 1;
        up = upgrade_request(&conn, (const char *)data + 1, k);
        data += 1 + k;
        n -= 1 + k;
    }
    if (up && zf__h2c_ops.upgrade_wanted(up)) {
        out.skip_101 = sizeof switching - 1;
        zf__h2c_ops.start(&ep, pair[0], &conn, up);
    } else {
        if (up)
            zf_exchange_release(up);
        if (zf__h2_start(&ep, pair[0], &conn, NULL, 0, NULL) != ZF_OK)
            abort();
    }
    bufferevent_enable(pair[1], EV_READ | EV_WRITE);
    if (!(flags & 2))
        bufferevent_write(pair[1], NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN);
    turn(pair[1]);
    for (size_t off = 0; off < n; off += chunk) {
        size_t k = n - off < chunk ? n - off : chunk;
        bufferevent_write(pair[1], data + off, k);
        turn(pair[1]);
        if (!(flags & 4))
            run_jobs();
        turn(pair[1]);
    }
    run_jobs();
    turn(pair[1]);

    zf__h2_stop_all(0);
    turn(pair[1]);
    run_jobs(); /* what a worker still had: finished against aborted exchanges */
    turn(pair[1]);
    bufferevent_free(pair[1]);
    if (verbose)
        fprintf(stderr, "fuzz_h2: the server sent %lu frames\n", out.frames);
    if (zf__h2_nconns != 0 || zf__h2_nstreams != 0)
        fail("leak-exchange", "a connection or stream outlived the close");
    if (zf_exchange_count() != 0)
        fail("leak-exchange", "an exchange outlived its connection");
    return 0;
}
