/* The WSGI bridge without a network: exchanges are built by hand, run
 * through zf_wsgi_ops.handle with the GIL held, and what the bridge
 * produced (status, headers, Content-Length, DATA and FILE segments) is
 * checked: environ, proxies, start_response validation, hop-by-hop
 * headers, Content-Length rules, HEAD, close(), the file fast path with
 * Range, wsgi.input over memory and spooled bodies. Ends by checking that
 * no exchange and no descriptor leaked. */
#include <event2/event.h>
#include <event2/thread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/core/config.h"
#include "../../src/core/exchange.h"
#include "../../src/core/pyint.h"
#include "../../src/core/python.h"
#include "check.h"

static const char app_source[] =
    "closed = []\n"
    "class Body:\n"
    "    def __init__(self, chunks): self.chunks = chunks\n"
    "    def __iter__(self): return iter(self.chunks)\n"
    "    def close(self): closed.append(1)\n"
    "def app(environ, start_response):\n"
    "    p, q = environ['PATH_INFO'], environ['QUERY_STRING']\n"
    "    if p.startswith('/environ'):\n"
    "        start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "        return [('|'.join('%s=%s' % (k, environ.get(k)) for k in q.split(',')))"
    ".encode('latin-1')]\n"
    "    if p == '/user':\n"
    "        environ['REMOTE_USER'] = q\n"
    "        start_response('200 OK', [])\n"
    "        return [b'']\n"
    "    if p == '/echo':\n"
    "        i = environ['wsgi.input']; a = i.read(); i.seek(0); n = len(i.readlines())\n"
    "        start_response('200 OK', [])\n"
    "        return [b'%d:%d:' % (len(a), n) + a]\n"
    "    if p == '/status':\n"
    "        start_response(q.replace('_', ' '), [])\n"
    "        return [b'']\n"
    "    if p == '/hop':\n"
    "        start_response('200 OK', [('Connection', 'close'), ('X-Ok', '1'),"
    " ('Content-Length', '2')])\n"
    "        return Body([b'ok'])\n"
    "    if p == '/badheader':\n"
    "        start_response('200 OK', [('X-Bad', 'a\\nb')])\n"
    "        return [b'x']\n"
    "    if p == '/gen':\n"
    "        def g():\n"
    "            start_response('200 OK', [])\n"
    "            yield b'ab'; yield b''; yield b'cd'\n"
    "        return g()\n"
    "    if p == '/late':\n"
    "        def g():\n"
    "            start_response('200 OK', [])\n"
    "            yield b'ab'\n"
    "            raise ValueError('late')\n"
    "        return Body(g())\n"
    "    if p == '/file':\n"
    "        f = open(FILE, 'rb'); f.seek(int(q or 0))\n"
    "        start_response('200 OK', [('Accept-Ranges', 'bytes'), ('ETag', '\"t\"')])\n"
    "        return environ['wsgi.file_wrapper'](f)\n"
    "    if p == '/write':\n"
    "        w = start_response('200 OK', [('Content-Length', '6')])\n"
    "        w(b'abc')\n"
    "        return [b'def']\n"
    "    if p == '/notmod':\n"
    "        start_response(q.replace('_', ' '), [('Content-Length', '0'), ('ETag', 'x')])\n"
    "        return [b'']\n"
    "    if p == '/closeraise':\n"
    "        class R(Body):\n"
    "            def close(self): raise OSError('close fails')\n"
    "        start_response('200 OK', [])\n"
    "        return R([b'ab', b'cd'])\n"
    "    if p == '/closed':\n"
    "        start_response('200 OK', [])\n"
    "        return [str(len(closed)).encode()]\n"
    "    start_response('404 Not Found', [])\n"
    "    return []\n";

static struct event_base *base;
static char file_path[64];
static char pattern[1000];

static void on_output(struct zf_exchange *ex)
{
    (void)ex;
}
static const struct zf_exchange_ops ops = {on_output};

struct result {
    int status;
    int64_t cl;
    char headers[2048];
    char body[4096];
    size_t body_len;
    int files;
    off_t file_off;
    size_t file_len;
    int failed;
    char user[64]; /* zf_exchange_remote_user once finished */
};

/* Runs one request through the bridge and collects the response. headers
 * is a NULL-ended list of "Name: value"; spool puts the body in a file. */
static void run(const char *method, const char *target, const char *remote,
                const char *const *headers, const char *body, int spool, struct result *out)
{
    static struct zf_conn conn = {.id = 1, .proto = "http", .peer = "test"};
    memset(out, 0, sizeof *out);
    struct zf_exchange *ex = zf_exchange_new(&ops, NULL, &conn);
    CHECK(ex != NULL);
    zf_exchange_set_target(ex, method, strlen(method), target, strlen(target));
    snprintf(ex->server_host, sizeof ex->server_host, "127.0.0.1");
    ex->server_port = 8080;
    snprintf(ex->remote_addr, sizeof ex->remote_addr, "%s", remote);
    ex->remote_port = 4000;
    for (size_t i = 0; headers && headers[i]; i++) {
        const char *c = strchr(headers[i], ':');
        zf_headers_add(&ex->req_headers, headers[i], (size_t)(c - headers[i]), c + 2,
                       strlen(c + 2));
    }
    if (body) {
        size_t n = strlen(body);
        ex->body.len = n;
        if (spool) {
            ex->body.fd = zf_tmpfile("/tmp");
            CHECK(zf_pwrite_all(ex->body.fd, body, n, 0) == ZF_OK);
        } else {
            ex->body.mem = strdup(body);
        }
    }
    ex->refs++; /* the worker's reference, as zf_exchange_dispatch takes it */
    ex->worker_holds = 1;
    zf_wsgi_ops.handle(ex, NULL);

    CHECK(zf_exchange_take_headers(ex));
    out->status = ex->status;
    out->cl = ex->content_length;
    for (size_t i = 0; i < ex->resp_headers.n; i++) {
        size_t len = strlen(out->headers);
        snprintf(out->headers + len, sizeof out->headers - len, "%s: %s\n",
                 ex->resp_headers.v[i].name, ex->resp_headers.v[i].value);
    }
    int finished = 0, failed = 0;
    struct zf_segment *s;
    while ((s = zf_exchange_take(ex, &finished, &failed)) != NULL) {
        if (s->type == ZF_SEG_FILE) {
            out->files++;
            out->file_off = s->offset;
            out->file_len = s->len;
            if (s->len <= sizeof out->body - out->body_len)
                CHECK_EQ_INT(pread(s->fd, out->body + out->body_len, s->len, s->offset), s->len);
        } else if (s->len <= sizeof out->body - out->body_len) {
            memcpy(out->body + out->body_len, s->data, s->len);
        }
        out->body_len += s->len;
        zf_segment_free(s);
    }
    zf_exchange_take(ex, &finished, &failed);
    CHECK(finished);
    out->failed = failed;
    const char *user = zf_exchange_remote_user(ex);
    snprintf(out->user, sizeof out->user, "%s", user ? user : "(none)");
    zf_exchange_release(ex);
    event_base_loop(base, EVLOOP_NONBLOCK); /* drops the worker's reference */
}

static void check_body(const struct result *r, const char *expect)
{
    CHECK_EQ_INT(r->body_len, strlen(expect));
    CHECK(r->body_len == strlen(expect) && memcmp(r->body, expect, r->body_len) == 0);
    if (r->body_len != strlen(expect) || memcmp(r->body, expect, r->body_len) != 0)
        fprintf(stderr, "  body: %.*s\n  want: %s\n", (int)r->body_len, r->body, expect);
}

static void test_environ(void)
{
    struct result r;
    const char *h[] = {"Host: example.org", "Cookie: a=1",       "cookie: b=2",
                       "Accept: a",         "Accept: b",         "X_Forwarded_For: 6.6.6.6",
                       "Content-Length: 0", "Content-Type: x/y", NULL};
    run("POST",
        "/environ%20x/%2F?PATH_INFO,HTTP_COOKIE,HTTP_ACCEPT,HTTP_X_FORWARDED_FOR,"
        "CONTENT_LENGTH,CONTENT_TYPE,HTTP_CONTENT_LENGTH,REMOTE_ADDR,wsgi.url_scheme,"
        "zfront.channel,SERVER_NAME,SERVER_PORT,SCRIPT_NAME,wsgi.multithread",
        "127.0.0.1", h, NULL, 0, &r);
    CHECK_EQ_INT(r.status, 200);
    check_body(&r, "PATH_INFO=/environ x//|HTTP_COOKIE=a=1; b=2|HTTP_ACCEPT=a, b|"
                   "HTTP_X_FORWARDED_FOR=None|CONTENT_LENGTH=0|CONTENT_TYPE=x/y|"
                   "HTTP_CONTENT_LENGTH=None|REMOTE_ADDR=127.0.0.1|wsgi.url_scheme=http|"
                   "zfront.channel=http|SERVER_NAME=127.0.0.1|SERVER_PORT=8080|SCRIPT_NAME=|"
                   "wsgi.multithread=True");
    CHECK_EQ_INT(r.cl, (int64_t)r.body_len); /* one chunk: its length */
}

static void test_proxies(void)
{
    struct result r;
    const char *h[] = {"X-Forwarded-For: 1.2.3.4, 10.9.9.9", "X-Forwarded-Proto: https", NULL};
    const char *q = "/environ?REMOTE_ADDR,wsgi.url_scheme,HTTPS";
    run("GET", q, "10.0.0.5", h, NULL, 0, &r);
    check_body(&r, "REMOTE_ADDR=1.2.3.4|wsgi.url_scheme=https|HTTPS=on");
    run("GET", q, "192.0.2.1", h, NULL, 0, &r); /* not a trusted proxy */
    check_body(&r, "REMOTE_ADDR=192.0.2.1|wsgi.url_scheme=http|HTTPS=None");

    /* X-Forwarded-Host/-Port: the rightmost value; a non-default port goes
     * into HTTP_HOST */
    const char *hp[] = {"Host: backend:8080", "X-Forwarded-Host: evil.example, www.example.org",
                        "X-Forwarded-Proto: https", "X-Forwarded-Port: 8443", NULL};
    q = "/environ?HTTP_HOST,SERVER_NAME,SERVER_PORT";
    run("GET", q, "10.0.0.5", hp, NULL, 0, &r);
    check_body(&r, "HTTP_HOST=www.example.org:8443|SERVER_NAME=www.example.org|SERVER_PORT=8443");
    run("GET", q, "192.0.2.1", hp, NULL, 0, &r);
    check_body(&r, "HTTP_HOST=backend:8080|SERVER_NAME=127.0.0.1|SERVER_PORT=8080");
    const char *dflt[] = {"X-Forwarded-Host: [2001:db8::1]", "X-Forwarded-Proto: https", NULL};
    run("GET", q, "10.0.0.5", dflt, NULL, 0, &r);
    check_body(&r, "HTTP_HOST=[2001:db8::1]|SERVER_NAME=[2001:db8::1]|SERVER_PORT=443");
    const char *bad[] = {"Host: backend", "X-Forwarded-Host: a b", "X-Forwarded-Port: 0", NULL};
    run("GET", q, "10.0.0.5", bad, NULL, 0, &r);
    check_body(&r, "HTTP_HOST=backend|SERVER_NAME=127.0.0.1|SERVER_PORT=8080");
    const char *bad2[] = {"Host: backend", "X-Forwarded-Host: [::1", "X-Forwarded-Port: 65536",
                          NULL};
    run("GET", q, "10.0.0.5", bad2, NULL, 0, &r);
    check_body(&r, "HTTP_HOST=backend|SERVER_NAME=127.0.0.1|SERVER_PORT=8080");
}

/* The user the app left in environ["REMOTE_USER"] is kept for the access
 * log; none when unset or empty. */
static void test_remote_user(void)
{
    struct result r;
    run("GET", "/user?zope-admin", "127.0.0.1", NULL, NULL, 0, &r);
    CHECK(strcmp(r.user, "zope-admin") == 0);
    run("GET", "/user", "127.0.0.1", NULL, NULL, 0, &r);
    CHECK(strcmp(r.user, "(none)") == 0);
    run("GET", "/gen", "127.0.0.1", NULL, NULL, 0, &r);
    CHECK(strcmp(r.user, "(none)") == 0);
}

static void test_input(void)
{
    struct result r;
    run("POST", "/echo", "127.0.0.1", NULL, "l1\nl2\nl3", 0, &r);
    check_body(&r, "8:3:l1\nl2\nl3");
    run("POST", "/echo", "127.0.0.1", NULL, "l1\nl2\nl3", 1, &r);
    check_body(&r, "8:3:l1\nl2\nl3");
}

static void test_start_response(void)
{
    struct result r;
    run("GET", "/status?200_Fine", "127.0.0.1", NULL, NULL, 0, &r);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.cl, 0);
    run("GET", "/status?abc", "127.0.0.1", NULL, NULL, 0, &r);
    CHECK_EQ_INT(r.status, 500);
    run("GET", "/status?099_Early", "127.0.0.1", NULL, NULL, 0, &r);
    CHECK_EQ_INT(r.status, 500);
    run("GET", "/badheader", "127.0.0.1", NULL, NULL, 0, &r);
    CHECK_EQ_INT(r.status, 500);
    CHECK(!r.failed);
    run("GET", "/hop", "127.0.0.1", NULL, NULL, 0, &r);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strstr(r.headers, "X-Ok: 1") != NULL);
    CHECK(strstr(r.headers, "Connection") == NULL);
    CHECK(strstr(r.headers, "Content-Length") == NULL); /* carried by ex->content_length */
    CHECK_EQ_INT(r.cl, 2);
    check_body(&r, "ok");
}

static void test_bodies(void)
{
    struct result r;
    run("GET", "/gen", "127.0.0.1", NULL, NULL, 0, &r);
    CHECK_EQ_INT(r.cl, -1);
    check_body(&r, "abcd");
    run("HEAD", "/gen", "127.0.0.1", NULL, NULL, 0, &r);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.body_len, 0);
    run("GET", "/late", "127.0.0.1", NULL, NULL, 0, &r);
    CHECK(r.failed); /* error after the headers: the body is incomplete */
    check_body(&r, "ab");
    run("GET", "/write", "127.0.0.1", NULL, NULL, 0, &r);
    CHECK_EQ_INT(r.cl, 6);
    check_body(&r, "abcdef");
    /* a close() that raises after a complete body: logged, the body is
     * still complete */
    run("GET", "/closeraise", "127.0.0.1", NULL, NULL, 0, &r);
    CHECK(!r.failed);
    check_body(&r, "abcd");
    run("GET", "/closed", "127.0.0.1", NULL, NULL, 0, &r);
    check_body(&r, "2"); /* /hop and /late */
    /* no Content-Length on 304 and 204, whatever the app said */
    run("GET", "/notmod?304_Not_Modified", "127.0.0.1", NULL, NULL, 0, &r);
    CHECK_EQ_INT(r.status, 304);
    CHECK_EQ_INT(r.cl, -1);
    run("GET", "/notmod?204_No_Content", "127.0.0.1", NULL, NULL, 0, &r);
    CHECK_EQ_INT(r.status, 204);
    CHECK_EQ_INT(r.cl, -1);
    run("GET", "/notmod?200_OK", "127.0.0.1", NULL, NULL, 0, &r);
    CHECK_EQ_INT(r.cl, 0);
}

static void test_file(void)
{
    struct result r;
    run("GET", "/file?10", "127.0.0.1", NULL, NULL, 0, &r);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.files, 1);
    CHECK_EQ_INT(r.file_off, 10);
    CHECK_EQ_INT(r.cl, 990);
    CHECK(r.body_len == 990 && memcmp(r.body, pattern + 10, 990) == 0);

    const char *range[] = {"Range: bytes=0-9", NULL};
    run("GET", "/file?10", "127.0.0.1", range, NULL, 0, &r);
    CHECK_EQ_INT(r.status, 206);
    CHECK(strstr(r.headers, "Content-Range: bytes 0-9/990\n") != NULL);
    CHECK_EQ_INT(r.file_off, 10);
    CHECK_EQ_INT(r.cl, 10);

    const char *bad[] = {"Range: bytes=2000-", NULL};
    run("GET", "/file", "127.0.0.1", bad, NULL, 0, &r);
    CHECK_EQ_INT(r.status, 416);
    CHECK(strstr(r.headers, "Content-Range: bytes */1000\n") != NULL);
    CHECK_EQ_INT(r.files, 0);
    CHECK_EQ_INT(r.cl, 0);

    const char *if_range[] = {"Range: bytes=0-9", "If-Range: \"other\"", NULL};
    run("GET", "/file", "127.0.0.1", if_range, NULL, 0, &r);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.file_len, 1000);
    const char *if_range_ok[] = {"Range: bytes=-5", "If-Range: \"t\"", NULL};
    run("GET", "/file", "127.0.0.1", if_range_ok, NULL, 0, &r);
    CHECK_EQ_INT(r.status, 206);
    CHECK_EQ_INT(r.file_off, 995);

    run("HEAD", "/file", "127.0.0.1", range, NULL, 0, &r);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.cl, 1000);
    CHECK_EQ_INT(r.files, 0);
}

int main(void)
{
    evthread_use_pthreads();
    base = event_base_new();
    CHECK(zf_exchange_init_loop(base) == ZF_OK);
    zf_core_config_register();
    zf_config_begin_source();
    zf_config_set("server.trusted_proxies", "10.0.0.0/8", "test");
    zf_log_open("/dev/null", "error"); /* the expected tracebacks */

    for (size_t i = 0; i < sizeof pattern; i++)
        pattern[i] = (char)('a' + i % 26);
    snprintf(file_path, sizeof file_path, "/tmp/zf-test-wsgi-XXXXXX");
    int fd = mkstemp(file_path);
    CHECK(fd >= 0 && write(fd, pattern, sizeof pattern) == (ssize_t)sizeof pattern);
    close(fd);

    CHECK(zf_py_init("test_wsgi") == ZF_OK);
    CHECK(zf__wsgi_setup() == ZF_OK);
    int fds = zf_test_count_fds();
    PyObject *globals = PyDict_New();
    PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins());
    PyObject *path = PyUnicode_FromString(file_path);
    PyDict_SetItemString(globals, "FILE", path);
    Py_XDECREF(path);
    PyObject *r = PyRun_String(app_source, Py_file_input, globals, globals);
    if (!r)
        PyErr_Print();
    Py_XDECREF(r);
    zf__py_app = PyDict_GetItemString(globals, "app");
    Py_XINCREF(zf__py_app);
    CHECK(zf__py_app != NULL);

    if (zf__py_app) {
        test_environ();
        test_proxies();
        test_remote_user();
        test_input();
        test_start_response();
        test_bodies();
        test_file();
    }
    CHECK_EQ_INT(zf_exchange_count(), 0);
    CHECK_EQ_INT(zf_test_count_fds(), fds);
    Py_DECREF(globals);
    zf_py_finalize();
    unlink(file_path);
    zf_exchange_free_loop();
    event_base_free(base);
    return zf_test_done("wsgi");
}
