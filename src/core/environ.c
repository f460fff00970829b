/* The WSGI environ (PEP 3333) built from an exchange, and the trusted
 * proxy rules that may rewrite REMOTE_ADDR, wsgi.url_scheme, HTTP_HOST,
 * SERVER_NAME and SERVER_PORT from X-Forwarded-For/-Proto/-Host/-Port.
 * Worker thread, GIL held. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "filter.h"
#include "pyint.h"

/* ======================================================== trusted proxies */

struct netmask {
    int family; /* 4 or 6 */
    unsigned char addr[16];
    int bits;
};

static struct netmask *proxies;
static size_t nproxies;

/* Parses an IPv4/IPv6 address, tolerating "[v6]", "[v6]:port" and
 * "v4:port" (some proxies add the port). IPv4-mapped IPv6 addresses count as
 * IPv4. Returns 4 or 6, or 0 when s is not an address. */
static int parse_ip(const char *s, size_t n, unsigned char out[16])
{
    char buf[64];
    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n == 0 || n >= sizeof buf)
        return 0;
    if (s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close)
            return 0;
        n = (size_t)(close - s - 1);
        s++;
    } else {
        const char *colon = memchr(s, ':', n);
        if (colon && !memchr(colon + 1, ':', n - (size_t)(colon - s) - 1))
            n = (size_t)(colon - s); /* a.b.c.d:port */
    }
    memcpy(buf, s, n);
    buf[n] = 0;
    if (inet_pton(AF_INET, buf, out) == 1)
        return 4;
    struct in6_addr a6;
    if (inet_pton(AF_INET6, buf, &a6) != 1)
        return 0;
    if (IN6_IS_ADDR_V4MAPPED(&a6)) {
        memcpy(out, a6.s6_addr + 12, 4);
        return 4;
    }
    memcpy(out, a6.s6_addr, 16);
    return 6;
}

static int mask_match(const struct netmask *m, int family, const unsigned char *a)
{
    if (m->family != family)
        return 0;
    int full = m->bits / 8, rest = m->bits % 8;
    if (memcmp(m->addr, a, (size_t)full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (m->addr[full] & mask) == (a[full] & mask);
}

static int is_trusted(const char *s, size_t n)
{
    unsigned char a[16];
    int family = parse_ip(s, n, a);
    if (!family)
        return 0;
    for (size_t i = 0; i < nproxies; i++)
        if (mask_match(&proxies[i], family, a))
            return 1;
    return 0;
}

int zf_proxy_trusted(const char *addr)
{
    return nproxies > 0 && is_trusted(addr, strlen(addr));
}

int zf__wsgi_setup(void)
{
    free(proxies);
    proxies = NULL;
    nproxies = 0;
    size_t n = zf_cfg.trusted_proxies.n;
    if (n == 0)
        return ZF_OK;
    proxies = zf_xcalloc(n, sizeof *proxies);
    for (size_t i = 0; i < n; i++) {
        const char *e = zf_cfg.trusted_proxies.v[i];
        const char *slash = strchr(e, '/');
        size_t alen = slash ? (size_t)(slash - e) : strlen(e);
        struct netmask *m = &proxies[nproxies];
        m->family = parse_ip(e, alen, m->addr);
        int max = m->family == 4 ? 32 : 128;
        m->bits = max;
        char *end = NULL;
        if (slash) {
            long b = strtol(slash + 1, &end, 10);
            m->bits = slash[1] && !*end && b >= 0 && b <= max ? (int)b : -1;
        }
        if (!m->family || m->bits < 0) {
            zf_log(ZF_LOG_ERROR, NULL,
                   "server.trusted_proxies: \"%s\" is not an IP address or address/prefix", e);
            return ZF_ERROR;
        }
        nproxies++;
    }
    return ZF_OK;
}

/* ================================================================ environ */

static int set_item(PyObject *d, const char *key, PyObject *v)
{
    if (!v)
        return -1;
    int rc = PyDict_SetItemString(d, key, v);
    Py_DECREF(v);
    return rc;
}

/* Sets key to the bytes decoded as latin-1 (PEP 3333 "native strings"). */
static int set_latin1(PyObject *d, const char *key, const char *s, size_t n)
{
    return set_item(d, key, PyUnicode_DecodeLatin1(s, (Py_ssize_t)n, NULL));
}

static int set_str(PyObject *d, const char *key, const char *s)
{
    return set_latin1(d, key, s, strlen(s));
}

static int set_int_str(PyObject *d, const char *key, long long v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", v);
    return set_str(d, key, buf);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* PATH_INFO: the path with every %XX decoded (invalid escapes kept). */
static int set_path_info(PyObject *d, const char *path)
{
    size_t n = strlen(path), o = 0;
    char *buf = PyMem_Malloc(n + 1);
    if (!buf) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        int h, l;
        if (path[i] == '%' && i + 2 < n && (h = hexval((unsigned char)path[i + 1])) >= 0 &&
            (l = hexval((unsigned char)path[i + 2])) >= 0) {
            buf[o++] = (char)(h * 16 + l);
            i += 2;
        } else {
            buf[o++] = path[i];
        }
    }
    int rc = set_latin1(d, "PATH_INFO", buf, o);
    PyMem_Free(buf);
    return rc;
}

static int name_has(const struct zf_header *h, char c)
{
    return memchr(h->name, c, h->name_len) != NULL;
}

/* HTTP_* keys for every request header: upper case, '-' to '_', repeated
 * fields joined with ", " ("; " for Cookie). Names containing '_' are
 * dropped as ZServer did, so "X_Forwarded_For" can never pose as
 * X-Forwarded-For. Content-Type/-Length become CONTENT_*; Transfer-Encoding
 * is dropped: the app gets the body de-chunked with CONTENT_LENGTH. */
static int set_http_headers(PyObject *d, const struct zf_exchange *ex, const struct zf_conn *c)
{
    char key[256];
    for (size_t i = 0; i < ex->req_headers.n; i++) {
        const struct zf_header *h = &ex->req_headers.v[i];
        if (h->name_len == 0 || h->name[0] == ':')
            continue;
        if (name_has(h, '_')) {
            zf_log(ZF_LOG_DEBUG, c, "dropped request header \"%s\": its name contains '_'",
                   h->name);
            continue;
        }
        if (strcasecmp(h->name, "content-type") == 0 ||
            strcasecmp(h->name, "content-length") == 0 ||
            strcasecmp(h->name, "transfer-encoding") == 0)
            continue;
        if (h->name_len + 6 > sizeof key)
            continue;
        memcpy(key, "HTTP_", 5);
        for (size_t k = 0; k < h->name_len; k++) {
            char ch = h->name[k];
            key[5 + k] = ch == '-' ? '_' : (ch >= 'a' && ch <= 'z') ? (char)(ch - 32) : ch;
        }
        key[5 + h->name_len] = 0;
        PyObject *v = PyUnicode_DecodeLatin1(h->value, (Py_ssize_t)h->value_len, NULL);
        if (!v)
            return -1;
        PyObject *old = PyDict_GetItemString(d, key); /* borrowed */
        if (old) {
            const char *sep = strcmp(key, "HTTP_COOKIE") == 0 ? "; " : ", ";
            PyObject *joined = PyUnicode_FromFormat("%U%s%U", old, sep, v);
            Py_DECREF(v);
            v = joined;
        }
        if (set_item(d, key, v) < 0)
            return -1;
    }
    return 0;
}

/* All values of a request header joined with ",", in a PyMem buffer the
 * caller frees; NULL when absent. */
static char *header_all(const struct zf_exchange *ex, const char *name)
{
    size_t total = 0;
    for (size_t i = 0; i < ex->req_headers.n; i++)
        if (strcasecmp(ex->req_headers.v[i].name, name) == 0)
            total += ex->req_headers.v[i].value_len + 1;
    if (total == 0)
        return NULL;
    char *buf = PyMem_Malloc(total), *p = buf;
    if (!buf)
        return NULL;
    for (size_t i = 0; i < ex->req_headers.n; i++) {
        const struct zf_header *h = &ex->req_headers.v[i];
        if (strcasecmp(h->name, name) == 0) {
            if (p != buf)
                *p++ = ',';
            memcpy(p, h->value, h->value_len);
            p += h->value_len;
        }
    }
    *p = 0;
    return buf;
}

/* The rightmost value of a header (all its fields joined with ","): the
 * one the proxy in front of us set. *val and *len get it, trimmed; the return
 * value is the PyMem buffer holding it (the caller frees it), NULL when the
 * header is absent. */
static char *header_last(const struct zf_exchange *ex, const char *name, const char **val,
                         size_t *len)
{
    char *all = header_all(ex, name);
    if (!all)
        return NULL;
    char *v = strrchr(all, ',');
    v = v ? v + 1 : all;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strlen(v);
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    *val = v;
    *len = n;
    return all;
}

/* A port number 1-65535 in s[0..n); 0 when it is not one. */
static int parse_port(const char *s, size_t n)
{
    if (n == 0 || n > 5)
        return 0;
    int port = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        port = port * 10 + (s[i] - '0');
    }
    return port <= 65535 ? port : 0;
}

/* Checks a forwarded host "name", "name:port", "[v6]" or "[v6]:port" (host
 * characters only: letters, digits, ".-_~", an IPv6 literal in brackets).
 * Sets *name_len to the length without the port and *port to the port (0
 * when none). Returns 1 when valid. */
static int parse_host(const char *s, size_t n, size_t *name_len, int *port)
{
    size_t i = 0;
    if (n == 0 || n > 255)
        return 0;
    if (s[0] == '[') {
        for (i = 1; i < n && s[i] != ']'; i++)
            if (!((s[i] >= '0' && s[i] <= '9') || ((s[i] | 0x20) >= 'a' && (s[i] | 0x20) <= 'f') ||
                  s[i] == ':' || s[i] == '.'))
                return 0;
        if (i == n || i == 1)
            return 0;
        i++; /* past ']' */
    } else {
        for (; i < n && s[i] != ':'; i++) {
            unsigned char c = (unsigned char)s[i];
            if (!((c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || c == '.' ||
                  c == '-' || c == '_' || c == '~'))
                return 0;
        }
        if (i == 0)
            return 0;
    }
    *name_len = i;
    *port = 0;
    if (i == n)
        return 1;
    if (s[i] != ':')
        return 0;
    *port = parse_port(s + i + 1, n - i - 1);
    return *port != 0;
}

/* X-Forwarded-For: walks it from the right past trusted addresses; the
 * first other address is the client. A non-address entry stops the walk
 * (the last trusted hop stays REMOTE_ADDR). Returns 0 or -1. */
static int forwarded_for(PyObject *d, const struct zf_exchange *ex)
{
    char *xff = header_all(ex, "X-Forwarded-For");
    if (!xff)
        return 0;
    char client[INET6_ADDRSTRLEN] = "";
    char *end = xff + strlen(xff);
    while (end > xff) {
        char *start = end;
        while (start > xff && start[-1] != ',')
            start--;
        unsigned char a[16];
        int fam = parse_ip(start, (size_t)(end - start), a);
        if (!fam)
            break;
        inet_ntop(fam == 4 ? AF_INET : AF_INET6, a, client, sizeof client);
        if (!is_trusted(start, (size_t)(end - start)))
            break;
        end = start > xff ? start - 1 : xff;
    }
    PyMem_Free(xff);
    if (client[0] && (set_str(d, "REMOTE_ADDR", client) < 0 || set_str(d, "REMOTE_PORT", "0") < 0))
        return -1;
    return 0;
}

/* server.clear_untrusted_proxy_headers: the proxy headers of a request from
 * a peer that is not a trusted proxy are removed, as waitress does. Returns
 * 0 or -1. */
static int clear_proxy_headers(PyObject *d)
{
    static const char *const keys[] = {"HTTP_X_FORWARDED_FOR",  "HTTP_X_FORWARDED_HOST",
                                       "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_PORT",
                                       "HTTP_X_FORWARDED_BY",   "HTTP_FORWARDED"};
    for (size_t i = 0; i < ZF_ARRAY_LEN(keys); i++) {
        PyObject *v = PyDict_GetItemString(d, keys[i]); /* borrowed */
        if (v && PyDict_DelItemString(d, keys[i]) < 0)
            return -1;
    }
    return 0;
}

/* Honours the X-Forwarded-* headers when the peer is a trusted proxy, as
 * waitress does with trusted_proxy_headers (for, host, proto, port; one
 * proxy's values: the rightmost of Host/Proto/Port):
 *  - X-Forwarded-For -> REMOTE_ADDR (forwarded_for);
 *  - X-Forwarded-Proto http|https -> wsgi.url_scheme, HTTPS, and the
 *    scheme's default port unless a port is forwarded;
 *  - X-Forwarded-Port -> SERVER_PORT;
 *  - X-Forwarded-Host -> HTTP_HOST and SERVER_NAME; a port in it wins over
 *    X-Forwarded-Port; a forwarded port that is not the scheme's default is
 *    added to HTTP_HOST, so the app builds URLs with the public address.
 * A malformed value is ignored with a warning (it is the proxy's
 * configuration that is wrong). Peers that are not trusted proxies: all
 * X-Forwarded-* stay plain HTTP_X_FORWARDED_* headers. Returns 0 or -1. */
static int apply_proxy_headers(PyObject *d, const struct zf_exchange *ex, const struct zf_conn *c)
{
    if (nproxies == 0)
        return 0;
    if (!is_trusted(ex->remote_addr, strlen(ex->remote_addr)))
        return zf_cfg.clear_untrusted_proxy_headers ? clear_proxy_headers(d) : 0;
    if (forwarded_for(d, ex) < 0)
        return -1;
    int https = ex->scheme && strcmp(ex->scheme, "https") == 0;
    int port = 0, rc = 0;
    const char *v;
    size_t n;
    char *buf = header_last(ex, "X-Forwarded-Proto", &v, &n);
    if (buf) {
        if ((n == 5 && strncasecmp(v, "https", 5) == 0) ||
            (n == 4 && strncasecmp(v, "http", 4) == 0)) {
            https = n == 5;
            port = https ? 443 : 80;
            rc = set_str(d, "wsgi.url_scheme", https ? "https" : "http") < 0 ||
                 (https ? set_str(d, "HTTPS", "on") < 0
                        : PyDict_GetItemString(d, "HTTPS") && PyDict_DelItemString(d, "HTTPS") < 0);
        } else {
            zf_log(ZF_LOG_WARN, c,
                   "ignored X-Forwarded-Proto \"%.*s\" from a trusted proxy: "
                   "not http or https",
                   (int)(n > 100 ? 100 : n), v);
        }
        PyMem_Free(buf);
        if (rc)
            return -1;
    }
    if ((buf = header_last(ex, "X-Forwarded-Port", &v, &n))) {
        int p = parse_port(v, n);
        if (p)
            port = p;
        else
            zf_log(ZF_LOG_WARN, c,
                   "ignored X-Forwarded-Port \"%.*s\" from a trusted proxy: "
                   "not a port number",
                   (int)(n > 100 ? 100 : n), v);
        PyMem_Free(buf);
    }
    if ((buf = header_last(ex, "X-Forwarded-Host", &v, &n))) {
        size_t name_len;
        int host_port;
        if (parse_host(v, n, &name_len, &host_port)) {
            if (host_port)
                port = host_port;
            char *host = PyMem_Malloc(n + 8);
            if (!host) {
                PyMem_Free(buf);
                PyErr_NoMemory();
                return -1;
            }
            memcpy(host, v, n);
            host[n] = 0;
            if (!host_port && port && port != (https ? 443 : 80))
                snprintf(host + n, 8, ":%d", port);
            rc = set_latin1(d, "SERVER_NAME", v, name_len) < 0 || set_str(d, "HTTP_HOST", host) < 0;
            PyMem_Free(host);
        } else {
            zf_log(ZF_LOG_WARN, c,
                   "ignored X-Forwarded-Host \"%.*s\" from a trusted proxy: "
                   "not a host[:port]",
                   (int)(n > 100 ? 100 : n), v);
        }
        PyMem_Free(buf);
        if (rc)
            return -1;
    }
    if (port && set_int_str(d, "SERVER_PORT", port) < 0)
        return -1;
    return 0;
}

/* The variables request filters added (ex->env_extra), last: they may
 * override what zfront derived. */
static int set_extra(PyObject *d, const struct zf_exchange *ex)
{
    for (size_t i = 0; i < ex->env_extra.n; i++) {
        const struct zf_header *h = &ex->env_extra.v[i];
        if (set_latin1(d, h->name, h->value, h->value_len) < 0)
            return -1;
    }
    return 0;
}

/* Builds the environ for ex. Returns a new reference or NULL. */
PyObject *zf__wsgi_environ(struct zf_exchange *ex, const struct zf_conn *c, PyObject *input,
                           PyObject *errors)
{
    PyObject *d = PyDict_New();
    if (!d)
        return NULL;
    const char *ctype = zf_headers_get(&ex->req_headers, "Content-Type");
    int has_body = ex->body.len > 0 || zf_headers_get(&ex->req_headers, "Content-Length") ||
                   zf_headers_get(&ex->req_headers, "Transfer-Encoding");
    int https = ex->scheme && strcmp(ex->scheme, "https") == 0;
    const char *server_name =
        zf_cfg.server_name && *zf_cfg.server_name ? zf_cfg.server_name : ex->server_host;
    if (set_str(d, "REQUEST_METHOD", ex->method) < 0 || set_str(d, "SCRIPT_NAME", "") < 0 ||
        set_path_info(d, ex->path) < 0 || set_str(d, "QUERY_STRING", ex->query) < 0 ||
        set_str(d, "REQUEST_URI", ex->target) < 0 ||
        (ctype && set_str(d, "CONTENT_TYPE", ctype) < 0) ||
        (has_body && set_int_str(d, "CONTENT_LENGTH", (long long)ex->body.len) < 0) ||
        set_str(d, "SERVER_NAME", server_name) < 0 ||
        set_int_str(d, "SERVER_PORT", ex->server_port) < 0 ||
        set_str(d, "SERVER_PROTOCOL", ex->protocol ? ex->protocol : "HTTP/1.1") < 0 ||
        set_str(d, "SERVER_SOFTWARE", ZF_SERVER_NAME "/" ZF_VERSION) < 0 ||
        set_str(d, "REMOTE_ADDR", ex->remote_addr) < 0 ||
        set_int_str(d, "REMOTE_PORT", ex->remote_port) < 0 ||
        (https && set_str(d, "HTTPS", "on") < 0) || set_http_headers(d, ex, c) < 0 ||
        set_item(d, "wsgi.version", Py_BuildValue("(ii)", 1, 0)) < 0 ||
        set_str(d, "wsgi.url_scheme",
                zf_cfg.url_scheme && *zf_cfg.url_scheme ? zf_cfg.url_scheme
                : https                                 ? "https"
                                                        : "http") < 0 ||
        PyDict_SetItemString(d, "wsgi.input", input) < 0 ||
        PyDict_SetItemString(d, "wsgi.errors", errors) < 0 ||
        PyDict_SetItemString(d, "wsgi.multithread", Py_True) < 0 ||
        PyDict_SetItemString(d, "wsgi.multiprocess", Py_False) < 0 ||
        PyDict_SetItemString(d, "wsgi.run_once", Py_False) < 0 ||
        PyDict_SetItemString(d, "wsgi.input_terminated", Py_True) < 0 ||
        PyDict_SetItemString(d, "wsgi.file_wrapper", (PyObject *)&zf__FileWrapperType) < 0 ||
        set_str(d, "zfront.channel", ex->channel ? ex->channel : "http") < 0 ||
        apply_proxy_headers(d, ex, c) < 0 || set_extra(d, ex) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}
