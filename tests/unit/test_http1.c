/* HTTP/1.1: the request parser fed raw bytes (every split, from one byte at a
 * time to all at once), the checks against request smuggling, the limits,
 * and whole connections over a socketpair with the test playing the worker:
 * response framing, pipelining order, 100-continue, errors and closes, and
 * nothing leaked (exchanges, descriptors). */
#include <event2/event.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* The files are included for their static functions; their public names
 * are renamed so they cannot clash with the copy in the core library. */
#define zf_http1_start test_http1_start
#define zf_http_accept test_http_accept
#define zf__http1_stop test_http1_stop
#define zf__http1_active test_http1_active
#define zf__http1_stats test_http1_stats
#define zf__http1_metrics test_http1_metrics
#define zf__http1_shed test_http1_shed
#define zf__h1_init_settings test_h1_init_settings
#define zf__h1_reset_message test_h1_reset_message
#define zf__h1_parse_some test_h1_parse_some
#define zf__h1_fail test_h1_fail
#define zf__h1_buf_free test_h1_buf_free
#define zf__h1_ops test_h1_ops
#define zf__h1_drop_file test_h1_drop_file
/* The test plays the worker pool: dispatch only takes the worker's
 * reference, as zf_exchange_dispatch does before queueing the job. */
#define zf_exchange_dispatch test_dispatch
#include "../../src/proto/http/h1_parse.c"
#include "../../src/proto/http/http1.c"

#include "check.h"

extern const struct zf_module zf_http_module;

void test_dispatch(struct zf_exchange *ex)
{
    ex->refs++;
    ex->worker_holds = 1;
}

/* ================================================================ parser level */

static struct h1conn *tc_new(void)
{
    zf__h1_init_settings();
    struct h1conn *c = calloc(1, sizeof *c);
    c->conn.id = 1;
    c->conn.proto = "http";
    snprintf(c->conn.peer_addr, sizeof c->conn.peer_addr, "127.0.0.1");
    c->scheme = "http";
    c->channel = "http";
    zf_spool_init(&c->spool, 0, NULL);
    zf__h1_reset_message(c);
    return c;
}

static void tc_next(struct h1conn *c)
{
    if (c->ex)
        zf_exchange_abort(c->ex);
    c->ex = NULL;
    zf__h1_reset_message(c);
}

static void tc_free(struct h1conn *c)
{
    tc_next(c);
    zf_spool_free(&c->spool);
    zf__h1_buf_free(&c->url);
    zf__h1_buf_free(&c->name);
    zf__h1_buf_free(&c->value);
    free(c);
}

/* Feeds data in pieces of `step` bytes the way process_input does, keeping
 * unconsumed bytes as the input buffer would. Returns ZF_OK when a request
 * is complete (its body moved into the exchange), ZF_AGAIN when the bytes
 * ran out first, ZF_ERROR with c->error_status set. *left: bytes not
 * consumed (the next pipelined request). */
static int tc_feed(struct h1conn *c, const char *data, size_t len, size_t step, size_t *left)
{
    char *pending = malloc(len + 1);
    size_t plen = 0, off = 0;
    int rc = ZF_AGAIN;
    for (;;) {
        if (off < len) {
            size_t k = len - off < step ? len - off : step;
            memcpy(pending + plen, data + off, k);
            plen += k;
            off += k;
        }
        while (plen > 0) {
            size_t used = 0;
            int r = zf__h1_parse_some(c, pending, plen, &used);
            memmove(pending, pending + used, plen - used);
            plen -= used;
            if (r == ZF_ERROR) {
                rc = ZF_ERROR;
                goto out;
            }
            if (c->msg_done) {
                zf_spool_take(&c->spool, &c->ex->body);
                rc = ZF_OK;
                goto out;
            }
            if (r == ZF_AGAIN)
                break;
        }
        if (off >= len)
            break;
    }
out:
    if (left)
        *left = plen + (len - off);
    free(pending);
    return rc;
}

static const size_t steps[] = {1, 2, 3, 7, 64, 100000};

/* Parses one complete request with every split; runs check() on each. */
static void parse_ok(const char *req, void (*check)(struct h1conn *c))
{
    for (size_t i = 0; i < ZF_ARRAY_LEN(steps); i++) {
        struct h1conn *c = tc_new();
        size_t left = 99;
        int rc = tc_feed(c, req, strlen(req), steps[i], &left);
        if (rc != ZF_OK)
            fprintf(stderr, "step %zu: rc %d status %d (%s) for:\n%s\n", steps[i], rc,
                    c->error_status, c->error_text, req);
        CHECK_EQ_INT(rc, ZF_OK);
        CHECK_EQ_INT(left, 0);
        if (rc == ZF_OK && check)
            check(c);
        tc_free(c);
    }
}

/* Parses a request that must be refused with `status`, with every split. */
static void parse_err(const char *req, size_t len, int status)
{
    for (size_t i = 0; i < ZF_ARRAY_LEN(steps); i++) {
        struct h1conn *c = tc_new();
        int rc = tc_feed(c, req, len, steps[i], NULL);
        if (rc != ZF_ERROR || c->error_status != status)
            fprintf(stderr, "step %zu: rc %d status %d (%s), expected %d, for:\n%s\n", steps[i], rc,
                    c->error_status, c->error_text, status, req);
        CHECK_EQ_INT(rc, ZF_ERROR);
        CHECK_EQ_INT(c->error_status, status);
        tc_free(c);
    }
}
#define PARSE_ERR(req, status) parse_err(req, sizeof(req) - 1, status)

static void check_simple(struct h1conn *c)
{
    struct zf_exchange *ex = c->ex;
    CHECK(strcmp(ex->method, "GET") == 0);
    CHECK(strcmp(ex->target, "/a%20b?x=1&y") == 0);
    CHECK(strcmp(ex->path, "/a%20b") == 0);
    CHECK(strcmp(ex->query, "x=1&y") == 0);
    CHECK(strcmp(ex->protocol, "HTTP/1.1") == 0);
    CHECK_EQ_INT(ex->req_headers.n, 4);
    CHECK(strcmp(zf_headers_get(&ex->req_headers, "host"), "example.org") == 0);
    /* optional whitespace around the value is trimmed, inner kept */
    CHECK(strcmp(zf_headers_get(&ex->req_headers, "X-Thing"), "v a  l") == 0);
    CHECK(strcmp(zf_headers_get(&ex->req_headers, "X-Empty"), "") == 0);
    /* names keep their case; repeated fields stay separate, in order */
    CHECK(strcmp(ex->req_headers.v[1].name, "X-Thing") == 0);
    CHECK(strcmp(ex->req_headers.v[3].value, "two") == 0);
    CHECK_EQ_INT(ex->body.len, 0);
    CHECK(c->req_keep_alive);
    CHECK(!c->http10);
}

static const char *cur_method;
static void check_method(struct h1conn *c)
{
    CHECK(strcmp(c->ex->method, cur_method) == 0);
    CHECK(strcmp(c->ex->path, "/dav/x") == 0);
    CHECK_EQ_INT(c->ex->body.len, 5);
}

static void test_parse_basic(void)
{
    parse_ok("GET /a%20b?x=1&y HTTP/1.1\r\nHost: example.org\r\nX-Thing: \t v a  l \t \r\n"
             "X-Empty:\r\nX-Thing: two\r\n\r\n",
             check_simple);
    /* empty lines before a request are skipped */
    parse_ok("\r\n\r\nGET /a%20b?x=1&y HTTP/1.1\r\nHost: example.org\r\nX-Thing: v a  l\r\n"
             "X-Empty: \r\nX-Thing: two\r\n\r\n",
             check_simple);
}

static void test_methods(void)
{
    /* RFC 4918 (WebDAV), RFC 3253 (DeltaV), RFC 5789, extension tokens:
     * http-parser knows only some; all must reach the application. */
    static const char *methods[] = {
        "GET",
        "POST",
        "PUT",
        "DELETE",
        "OPTIONS",
        "PATCH",
        "PROPFIND",
        "PROPPATCH",
        "MKCOL",
        "COPY",
        "MOVE",
        "LOCK",
        "UNLOCK",
        "VERSION-CONTROL",
        "REPORT",
        "CHECKOUT",
        "CHECKIN",
        "UNCHECKOUT",
        "MKWORKSPACE",
        "UPDATE",
        "LABEL",
        "MERGE",
        "MKACTIVITY",
        "BASELINE-CONTROL",
        "ORDERPATCH",
        "ACL",
        "SEARCH",
        "BIND",
        "MKCALENDAR",
        "M-SEARCH",
        "FOO_BAR",
        "get",
        "X",
        "PROPFINDX",
        "A!#$%&'*+-.^_`|~9",
    };
    for (size_t i = 0; i < ZF_ARRAY_LEN(methods); i++) {
        char req[256];
        snprintf(req, sizeof req,
                 "%s /dav/x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n"
                 "hello",
                 methods[i]);
        cur_method = methods[i];
        parse_ok(req, check_method);
    }
    PARSE_ERR("GE(T / HTTP/1.1\r\n\r\n", 400);
    PARSE_ERR(" GET / HTTP/1.1\r\n\r\n", 400);
    PARSE_ERR("ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJ / HTTP/1.1\r\n\r\n", 400);
    PARSE_ERR("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 400); /* a TLS hello */
}

static void check_hello_world(struct h1conn *c)
{
    CHECK_EQ_INT(c->ex->body.len, 11);
    CHECK(c->ex->body.fd < 0);
    CHECK(c->ex->body.mem && memcmp(c->ex->body.mem, "hello world", 11) == 0);
    /* trailers are checked, not added to the request */
    CHECK(zf_headers_get(&c->ex->req_headers, "X-Trailer") == NULL);
}

static void check_spooled(struct h1conn *c)
{
    CHECK_EQ_INT(c->ex->body.len, 11);
    CHECK(c->ex->body.fd >= 0);
    char buf[16] = {0};
    CHECK_EQ_INT(pread(c->ex->body.fd, buf, sizeof buf, 0), 11);
    CHECK(memcmp(buf, "hello world", 11) == 0);
}

static void test_bodies(void)
{
    parse_ok("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world",
             check_hello_world);
    parse_ok("POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
             "5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
             check_hello_world);
    /* chunk data may hold CR and LF freely */
    parse_ok("POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
             "3\r\n\n\r\n\r\n0\r\n\r\n",
             NULL);
    /* above input_spool the body goes to an unlinked temp file */
    zf_cfg.input_spool = 4;
    parse_ok("PUT /p HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world", check_spooled);
    zf_cfg.input_spool = 1 << 20;
}

static void test_pipelining(void)
{
    const char *two = "GET /one HTTP/1.1\r\nHost: h\r\n\r\n"
                      "POST /two HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
                      "GET /three HTTP/1.0\r\n\r\n";
    size_t len = strlen(two), left;
    struct h1conn *c = tc_new();
    CHECK_EQ_INT(tc_feed(c, two, len, len, &left), ZF_OK);
    CHECK(strcmp(c->ex->path, "/one") == 0);
    const char *rest = two + (len - left);
    CHECK(strncmp(rest, "POST /two", 9) == 0);
    tc_next(c);
    CHECK_EQ_INT(tc_feed(c, rest, left, left, &left), ZF_OK);
    CHECK(strcmp(c->ex->path, "/two") == 0);
    CHECK_EQ_INT(c->ex->body.len, 3);
    rest = two + (len - left);
    tc_next(c);
    CHECK_EQ_INT(tc_feed(c, rest, left, 1, &left), ZF_OK);
    CHECK(strcmp(c->ex->path, "/three") == 0);
    CHECK(strcmp(c->ex->protocol, "HTTP/1.0") == 0);
    CHECK(!c->req_keep_alive);
    CHECK_EQ_INT(left, 0);
    tc_free(c);
}

static void check_ka10(struct h1conn *c)
{
    CHECK(c->http10);
    CHECK(c->req_keep_alive);
}
static void check_close11(struct h1conn *c)
{
    CHECK(!c->req_keep_alive);
}
static void check_continue(struct h1conn *c)
{
    CHECK_EQ_INT(c->expect_continue, 1);
}
static void check_no_expect(struct h1conn *c)
{
    CHECK_EQ_INT(c->expect_continue, 0);
}

static void test_connection_and_expect(void)
{
    parse_ok("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", check_ka10);
    parse_ok("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", check_close11);
    parse_ok("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\nx",
             check_continue);
    /* HTTP/1.0 expectations are ignored (RFC 9110 10.1.1) */
    parse_ok("PUT / HTTP/1.0\r\nExpect: something\r\nContent-Length: 1\r\n\r\nx", check_no_expect);
    PARSE_ERR("PUT / HTTP/1.1\r\nHost: h\r\nExpect: something\r\nContent-Length: 1\r\n\r\nx", 417);
}

/* Everything Debian's non-strict http-parser accepts that could smuggle a
 * request past a front-end that reads it differently. */
static void test_smuggling(void)
{
    /* whitespace between the field name and the colon */
    PARSE_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400);
    PARSE_ERR("POST / HTTP/1.1\r\nHost: h\r\nContent-Length\t: 1\r\n\r\nx", 400);
    /* other non-token characters in a field name */
    PARSE_ERR("GET / HTTP/1.1\r\nHost: h\r\nX(y): 1\r\n\r\n", 400);
    PARSE_ERR("GET / HTTP/1.1\r\nHost: h\r\nX\"y: 1\r\n\r\n", 400);
    PARSE_ERR("GET / HTTP/1.1\r\nHost: h\r\nX\xc3\xa9: 1\r\n\r\n", 400);
    /* bare LF: request line, field line, end of header section */
    PARSE_ERR("GET / HTTP/1.1\nHost: h\r\n\r\n", 400);
    PARSE_ERR("GET / HTTP/1.1\r\nHost: h\nX: 1\r\n\r\n", 400);
    PARSE_ERR("GET / HTTP/1.1\r\nHost: h\r\n\n", 400);
    PARSE_ERR("\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    /* bare CR */
    PARSE_ERR("GET / HTTP/1.1\r\nHost: h\rX: 1\r\n\r\n", 400);
    /* bare LF in chunk framing and trailers, but not in chunk data */
    PARSE_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
              "5\nhello\r\n0\r\n\r\n",
              400);
    PARSE_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
              "5\r\nhello\n0\r\n\r\n",
              400);
    PARSE_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
              "5\r\nhello\r\n0\n\r\n",
              400);
    PARSE_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
              "5\r\nhello\r\n0\r\nX: t\n\r\n",
              400);
    PARSE_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
              "5\r\nhello\r\n0\r\n\n",
              400);
    /* obs-fold continuation lines, in headers and trailers */
    PARSE_ERR("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400);
    PARSE_ERR("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n", 400);
    PARSE_ERR("GET / HTTP/1.1\r\n Host: h\r\n\r\n", 400);
    PARSE_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
              "0\r\nX: t\r\n u\r\n\r\n",
              400);
    /* versions other than 1.0 and 1.1 */
    PARSE_ERR("GET / HTTP/1.2\r\nHost: h\r\n\r\n", 400);
    PARSE_ERR("GET / HTTP/2.0\r\nHost: h\r\n\r\n", 400);
    PARSE_ERR("GET / HTTP/0.9\r\nHost: h\r\n\r\n", 400);
    PARSE_ERR("GET /\r\n\r\n", 400);
    PARSE_ERR("GET / HTTP/1.x\r\n\r\n", 400);
    PARSE_ERR("GET / XTTP/1.1\r\n\r\n", 400);
    /* framing conflicts http-parser rejects itself */
    PARSE_ERR("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400);
    PARSE_ERR("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
              "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
              400);
    PARSE_ERR("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\nx", 400);
    PARSE_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400);
    PARSE_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400);
    /* control characters in a value or the target */
    PARSE_ERR("GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n", 400);
    PARSE_ERR("GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    /* two Host fields */
    PARSE_ERR("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
    /* RFC 9112 3.2: HTTP/1.1 requires Host (HTTP/1.0 does not) */
    PARSE_ERR("GET / HTTP/1.1\r\nX: y\r\n\r\n", 400);
    parse_ok("GET / HTTP/1.0\r\n\r\n", NULL);
}

static void test_limits(void)
{
    zf_http_cfg.max_request_line = 100;
    zf_http_cfg.max_header_size = 200;
    zf_http_cfg.max_headers = 5;
    zf_http_cfg.max_body_size = 10;
    http_parser_set_max_header_size(
        (uint32_t)(zf_http_cfg.max_request_line + zf_http_cfg.max_header_size + 4096));
    char req[8192];
    char fill[4096];
    memset(fill, 'a', sizeof fill);
    fill[sizeof fill - 1] = 0;

    snprintf(req, sizeof req, "GET /%.100s HTTP/1.1\r\nHost: h\r\n\r\n", fill);
    parse_err(req, strlen(req), 414);
    snprintf(req, sizeof req, "GET /%.99s HTTP/1.1\r\nHost: h\r\n\r\n", fill);
    parse_ok(req, NULL);
    /* a request line much longer than http-parser's own limit: still 414 */
    snprintf(req, sizeof req, "GET /%.4000s", fill);
    parse_err(req, strlen(req), 414);

    snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: h\r\nX: %.200s\r\n\r\n", fill);
    parse_err(req, strlen(req), 431);
    snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: h\r\nX: %.4000s", fill);
    parse_err(req, strlen(req), 431);
    PARSE_ERR("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\n\r\n",
              431);
    parse_ok("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n", NULL);
    /* trailers count too */
    PARSE_ERR("POST / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
              "0\r\nD: 1\r\nE: 1\r\n\r\n",
              431);

    /* body: declared, chunk announced, chunks received */
    PARSE_ERR("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world", 413);
    parse_ok("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhelloworld", NULL);
    PARSE_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n", 413);
    PARSE_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
              "5\r\nhello\r\n5\r\nworld\r\n1\r\n!\r\n0\r\n\r\n",
              413);
    parse_ok("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
             "5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n",
             NULL);
    /* Expect: 100-continue with too large a body: 413 before any body byte */
    PARSE_ERR("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n",
              413);
    zf_http_cfg.max_body_size = 0; /* unlimited */
    parse_ok("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world", NULL);

    zf_http_cfg.max_request_line = 8192;
    zf_http_cfg.max_header_size = 65536;
    zf_http_cfg.max_headers = 100;
    zf_http_cfg.max_body_size = 1 << 20;
    http_parser_set_max_header_size(80 * 1024);
}

/* ================================================================ whole connections */

static struct event_base *base;
static int peer = -1; /* the client's end of the socketpair */

static void spin(int n)
{
    for (int i = 0; i < n; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
}

/* Starts a connection on a socketpair and returns it. */
static struct h1conn *open_conn(void)
{
    int sv[2];
    CHECK_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    peer = sv[1];
    struct bufferevent *bev =
        bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    struct zf_conn conn = {0};
    conn.id = 7;
    conn.proto = "http";
    snprintf(conn.peer_addr, sizeof conn.peer_addr, "127.0.0.1");
    snprintf(conn.peer, sizeof conn.peer, "127.0.0.1:1");
    CHECK_EQ_INT(zf_http1_start(NULL, bev, &conn), ZF_OK);
    return h1.head;
}

static void client_send(const char *s)
{
    size_t n = strlen(s);
    CHECK_EQ_INT(write(peer, s, n), (ssize_t)n);
    spin(10);
}

/* Reads what the server wrote so far (runs the loop a little first).
 * Returns a malloc'd string; *eof set when the server closed. */
static char *client_read(int *eof)
{
    static char buf[1 << 20];
    size_t n = 0;
    *eof = 0;
    for (int round = 0; round < 200; round++) {
        spin(5);
        ssize_t r = read(peer, buf + n, sizeof buf - 1 - n);
        if (r > 0) {
            n += (size_t)r;
            round = 150; /* got something: a few more rounds for the rest */
            continue;
        }
        if (r == 0) {
            *eof = 1;
            break;
        }
        usleep(1000);
    }
    buf[n] = 0;
    return strdup(buf);
}

static void client_close(void)
{
    if (peer >= 0)
        close(peer);
    peer = -1;
    spin(20);
}

/* Plays the worker: answers the dispatched exchange. */
static void respond(struct h1conn *c, int status, const char *sl, int64_t clen,
                    const char *const *body, int ok)
{
    CHECK(c->state == H1_APP);
    struct zf_exchange *ex = c->ex;
    CHECK(ex != NULL);
    if (!ex)
        return;
    struct zf_headers h = {0};
    zf_headers_add(&h, "Content-Type", 12, "text/plain", 10);
    zf_headers_add(&h, "Connection", 10, "bogus", 5); /* hop-by-hop: dropped */
    zf_exchange_send_headers(ex, status, strdup(sl), &h, clen);
    for (; body && *body; body++)
        zf_exchange_send_data(ex, *body, strlen(*body));
    zf_exchange_finish(ex, ok);
}

static void test_conn_responses(void)
{
    int eof;
    char *r;
    struct h1conn *c = open_conn();

    /* chunked when the app gives no length on HTTP/1.1 */
    client_send("GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(c->state == H1_APP);
    CHECK(strcmp(c->conn.action, "waiting for the application") == 0);
    const char *b1[] = {"hello ", "world", NULL};
    respond(c, 200, "200 OK", -1, b1, 1);
    r = client_read(&eof);
    CHECK(!eof);
    CHECK(strncmp(r, "HTTP/1.1 200 OK\r\nDate: ", 23) == 0);
    CHECK(strstr(r, "\r\nServer: zfront\r\n") != NULL);
    CHECK(strstr(r, "\r\nContent-Type: text/plain\r\n") != NULL);
    CHECK(strstr(r, "bogus") == NULL);
    CHECK(strstr(r, "\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n"
                    "0\r\n\r\n") != NULL);
    CHECK(strstr(r, "Connection:") == NULL);
    free(r);
    CHECK(c->state == H1_IDLE);
    CHECK(strcmp(c->conn.action, "keep-alive") == 0);

    /* Content-Length enforced: never more than announced */
    client_send("GET /b HTTP/1.1\r\nHost: h\r\n\r\n");
    const char *b2[] = {"abc", "defgh", NULL};
    respond(c, 200, "200 OK", 5, b2, 1);
    r = client_read(&eof);
    CHECK(strstr(r, "\r\nContent-Length: 5\r\n\r\nabcde") != NULL);
    CHECK(strstr(r, "fgh") == NULL);
    free(r);
    CHECK(c->state == H1_IDLE);

    /* HEAD: headers only, the app's length kept */
    client_send("HEAD /c HTTP/1.1\r\nHost: h\r\n\r\n");
    const char *b3[] = {"body!", NULL};
    respond(c, 200, "200 OK", 5, b3, 1);
    r = client_read(&eof);
    CHECK(strstr(r, "\r\nContent-Length: 5\r\n\r\n") != NULL);
    CHECK(strstr(r, "body!") == NULL);
    free(r);

    /* 204 and 304: no body, no chunking */
    client_send("GET /d HTTP/1.1\r\nHost: h\r\n\r\n");
    respond(c, 204, "204 No Content", -1, b3, 1);
    r = client_read(&eof);
    CHECK(strncmp(r, "HTTP/1.1 204 No Content\r\n", 25) == 0);
    CHECK(strstr(r, "Transfer-Encoding") == NULL && strstr(r, "body!") == NULL);
    free(r);

    /* pipelining: the second request waits for the first response */
    client_send("GET /p1 HTTP/1.1\r\nHost: h\r\n\r\nGET /p2 HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(c->state == H1_APP && strcmp(c->ex->path, "/p1") == 0);
    const char *bp1[] = {"one", NULL};
    respond(c, 200, "200 OK", 3, bp1, 1);
    spin(10);
    CHECK(c->state == H1_APP && c->ex && strcmp(c->ex->path, "/p2") == 0);
    const char *bp2[] = {"two", NULL};
    respond(c, 201, "201 Created", 3, bp2, 1);
    r = client_read(&eof);
    char *one = strstr(r, "one"), *two = strstr(r, "two");
    CHECK(one && two && one < two);
    CHECK(strstr(r, "HTTP/1.1 201 Created\r\n") != NULL);
    free(r);

    /* an application error after the headers: no terminating chunk, close */
    client_send("GET /e HTTP/1.1\r\nHost: h\r\n\r\n");
    const char *b4[] = {"part", NULL};
    respond(c, 200, "200 OK", -1, b4, 0);
    r = client_read(&eof);
    CHECK(eof);
    CHECK(strstr(r, "4\r\npart\r\n") != NULL);
    CHECK(strstr(r, "0\r\n\r\n") == NULL);
    free(r);
    client_close();
    CHECK_EQ_INT(h1.open, 0);
}

static void test_conn_http10(void)
{
    int eof;
    char *r;
    struct h1conn *c = open_conn();
    /* HTTP/1.0 keep-alive needs a known length */
    client_send("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    const char *b[] = {"x", NULL};
    respond(c, 200, "200 OK", 1, b, 1);
    r = client_read(&eof);
    CHECK(!eof);
    CHECK(strstr(r, "\r\nConnection: keep-alive\r\n") != NULL);
    free(r);
    /* ... without one the body is close-delimited */
    client_send("GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    respond(c, 200, "200 OK", -1, b, 1);
    r = client_read(&eof);
    CHECK(eof);
    CHECK(strstr(r, "\r\nConnection: close\r\n\r\nx") != NULL);
    CHECK(strstr(r, "chunked") == NULL);
    free(r);
    client_close();

    /* Connection: close from an HTTP/1.1 client */
    c = open_conn();
    client_send("GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    respond(c, 200, "200 OK", 1, b, 1);
    r = client_read(&eof);
    CHECK(eof);
    CHECK(strstr(r, "\r\nConnection: close\r\n") != NULL);
    free(r);
    client_close();
    CHECK_EQ_INT(h1.open, 0);
}

static void test_conn_errors(void)
{
    int eof;
    char *r;
    /* a refused request: text/plain body saying why, then close */
    open_conn();
    client_send("GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n");
    r = client_read(&eof);
    CHECK(eof);
    CHECK(strncmp(r, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
    CHECK(strstr(r, "Content-Type: text/plain") != NULL);
    CHECK(strstr(r, "Connection: close\r\n") != NULL);
    CHECK(strstr(r, "header field name") != NULL);
    free(r);
    client_close();

    /* many empty lines before a request (more than one look at the input) */
    struct h1conn *c0 = open_conn();
    char lead[300 + 64];
    memset(lead, 0, sizeof lead);
    for (int i = 0; i < 150; i++)
        memcpy(lead + 2 * i, "\r\n", 2);
    strcat(lead, "GET /late HTTP/1.1\r\nHost: h\r\n\r\n");
    client_send(lead);
    CHECK(c0->state == H1_APP && c0->ex && strcmp(c0->ex->path, "/late") == 0);
    respond(c0, 200, "200 OK", 0, NULL, 1);
    r = client_read(&eof);
    CHECK(strncmp(r, "HTTP/1.1 200 OK", 15) == 0);
    free(r);
    client_close();

    /* 100-continue, then the body, then the request goes to the worker */
    struct h1conn *c = open_conn();
    client_send("PUT /u HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    r = client_read(&eof);
    CHECK(strcmp(r, "HTTP/1.1 100 Continue\r\n\r\n") == 0);
    free(r);
    CHECK(c->state == H1_BODY);
    CHECK(strcmp(c->conn.action, "reading request body") == 0);
    client_send("data");
    CHECK(c->state == H1_APP);
    CHECK(c->ex && c->ex->body.len == 4 && memcmp(c->ex->body.mem, "data", 4) == 0);
    const char *b[] = {"ok", NULL};
    respond(c, 201, "201 Created", 2, b, 1);
    r = client_read(&eof);
    CHECK(strstr(r, "201 Created") != NULL);
    free(r);
    client_close();

    /* a client gone mid-upload: the exchange is freed, never dispatched */
    c = open_conn();
    client_send("PUT /u HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nabc");
    CHECK(c->state == H1_BODY);
    CHECK_EQ_INT(zf_exchange_count(), 1);
    client_close();
    CHECK_EQ_INT(zf_exchange_count(), 0);
    CHECK_EQ_INT(h1.open, 0);

    /* a client gone while the worker runs: the exchange is aborted */
    c = open_conn();
    client_send("GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    struct zf_exchange *ex = c->ex;
    CHECK(ex && c->state == H1_APP);
    shutdown(peer, SHUT_RDWR);
    spin(10);
    /* a half-close alone is allowed; the write error on the response aborts */
    struct zf_headers h = {0};
    zf_exchange_send_headers(ex, 200, strdup("200 OK"), &h, -1);
    for (int i = 0; i < 50 && !zf_exchange_aborted(ex); i++) {
        zf_exchange_send_data(ex, "0123456789", 10);
        spin(5);
    }
    CHECK(zf_exchange_aborted(ex));
    zf_exchange_finish(ex, 0);
    client_close();
    CHECK_EQ_INT(h1.open, 0);
    CHECK_EQ_INT(zf_exchange_count(), 0);

    /* deferred callbacks merge a read EOF with a write error into one
     * event: that is a lost client, not a half-close */
    c = open_conn();
    client_send("GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
    ex = c->ex;
    struct zf_headers h2 = {0};
    zf_exchange_send_headers(ex, 200, strdup("200 OK"), &h2, -1);
    spin(5);
    CHECK(c->state == H1_SEND);
    event_cb(c->bev, BEV_EVENT_READING | BEV_EVENT_WRITING | BEV_EVENT_EOF | BEV_EVENT_ERROR, c);
    CHECK(c->state == H1_DEAD);
    CHECK(zf_exchange_aborted(ex));
    zf_exchange_finish(ex, 0);
    client_close();
    CHECK_EQ_INT(h1.open, 0);
    CHECK_EQ_INT(zf_exchange_count(), 0);
}

static void test_conn_timeouts(void)
{
    int eof;
    char *r;
    zf_http_cfg.header_timeout_ms = 30;
    zf_http_cfg.body_timeout_ms = 30;
    zf_http_cfg.keepalive_timeout_ms = 30;

    open_conn();
    client_send("GET / HTTP/1.1\r\nHost:");
    r = client_read(&eof);
    CHECK(eof);
    CHECK(strncmp(r, "HTTP/1.1 408 Request Timeout\r\n", 30) == 0);
    CHECK(strstr(r, "http.header_timeout") != NULL);
    free(r);
    client_close();

    open_conn();
    client_send("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc");
    r = client_read(&eof);
    CHECK(eof);
    CHECK(strncmp(r, "HTTP/1.1 408 Request Timeout\r\n", 30) == 0);
    CHECK(strstr(r, "http.body_timeout") != NULL);
    free(r);
    client_close();

    /* keep-alive idle: closed without a word */
    struct h1conn *c = open_conn();
    client_send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    const char *b[] = {"x", NULL};
    respond(c, 200, "200 OK", 1, b, 1);
    r = client_read(&eof);
    CHECK(strncmp(r, "HTTP/1.1 200 OK", 15) == 0);
    free(r);
    r = client_read(&eof);
    CHECK(eof);
    CHECK_EQ_INT(strlen(r), 0);
    free(r);
    client_close();
    CHECK_EQ_INT(h1.open, 0);

    zf_http_cfg.header_timeout_ms = 30000;
    zf_http_cfg.body_timeout_ms = 30000;
    zf_http_cfg.keepalive_timeout_ms = 30000;
}

/* A big file body reaches the output a slice at a time while the client
 * does not read: the output never holds more than the high mark plus one
 * slice (so one sendfile() never sends more than a slice), and the whole
 * file still arrives, in order, once the client reads. */
static void test_conn_file_slices(void)
{
    enum { SIZE = 5 * H1_FILE_SLICE + 12345 };
    int fd = zf_tmpfile("/tmp");
    CHECK(fd >= 0);
    static char data[SIZE];
    for (size_t i = 0; i < SIZE; i++)
        data[i] = (char)('a' + i % 23);
    CHECK_EQ_INT(zf_pwrite_all(fd, data, SIZE, 0), ZF_OK);

    struct h1conn *c = open_conn();
    client_send("GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
    struct zf_exchange *ex = c->ex;
    struct zf_headers h = {0};
    zf_exchange_send_headers(ex, 200, strdup("200 OK"), &h, SIZE);
    zf_exchange_send_file(ex, fd, 0, SIZE);
    zf_exchange_finish(ex, 1);
    spin(20);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    CHECK(c->file != NULL);
    CHECK(evbuffer_get_length(out) <= H1_OUT_HIGH + H1_FILE_SLICE);

    size_t got = 0, head = 0;
    static char buf[1 << 16];
    int ok = 1;
    for (int round = 0; round < 100000 && got < SIZE; round++) {
        spin(1);
        CHECK(evbuffer_get_length(out) <= H1_OUT_HIGH + H1_FILE_SLICE);
        ssize_t r = read(peer, buf, sizeof buf);
        if (r <= 0)
            continue;
        size_t off = 0;
        if (!head) {
            char *end = memmem(buf, (size_t)r, "\r\n\r\n", 4);
            CHECK(end != NULL);
            if (!end)
                break;
            head = 1;
            off = (size_t)(end + 4 - buf);
        }
        if (got + ((size_t)r - off) > SIZE || memcmp(buf + off, data + got, (size_t)r - off) != 0)
            ok = 0;
        got += (size_t)r - off;
    }
    CHECK(ok);
    CHECK_EQ_INT(got, SIZE);
    CHECK(c->file == NULL);
    client_close();
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as zfront's main does */
    zf_core_config_register();
    zf_config_register(zf_http_module.keys);
    int fds = zf_test_count_fds();

    test_parse_basic();
    test_methods();
    test_bodies();
    test_pipelining();
    test_connection_and_expect();
    test_smuggling();
    test_limits();
    CHECK_EQ_INT(zf_exchange_count(), 0);

    evthread_use_pthreads();
    base = event_base_new();
    CHECK_EQ_INT(zf_exchange_init_loop(base), ZF_OK);
    test_conn_responses();
    test_conn_http10();
    test_conn_errors();
    test_conn_timeouts();
    test_conn_file_slices();
    spin(10);
    CHECK_EQ_INT(zf_exchange_count(), 0);
    CHECK_EQ_INT(h1.open, 0);
    zf_exchange_free_loop();
    event_base_free(base);
    CHECK_EQ_INT(zf_test_count_fds(), fds);
    return zf_test_done("http1");
}
