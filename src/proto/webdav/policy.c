/* The DAV policy: one request filter (src/core/filter.h) that every
 * request of every protocol passes through on the loop thread, plus a
 * response hook for OPTIONS. What it decides, and why, is in
 * docs/protocols/webdav.md:
 *  - zfront.channel "webdav" for the DAV methods (OPTIONS stays "http": it
 *    is also the browsers' CORS preflight);
 *  - the source server's requests: WEBDAV_SOURCE_PORT=1 and the GET suffix
 *    for apps that are not Zope;
 *  - "OPTIONS *" answered here (it asks about the server, not the app),
 *    and, when configured, the mini-redirector's OPTIONS/PROPFIND on "/";
 *  - Microsoft clients' trailing dots stripped (index_html. -> index_html);
 *  - Destination URLs of this site under another scheme/host rewritten to
 *    what the app sees, so Zope's "same server" check passes;
 *  - macOS Finder's probes (._*, .DS_Store, ...) logged quietly. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "webdav.h"

static const char *const dav_methods[] = {"PROPFIND", "PROPPATCH", "MKCOL", "COPY",
                                          "MOVE",     "LOCK",      "UNLOCK"};

/* Names macOS Finder asks for in every folder it opens (and the AppleDouble
 * "._name" companions of every file). */
static const char *const probe_names[] = {
    ".DS_Store",        ".localized",       ".hidden",
    ".Trashes",         ".Spotlight-V100",  ".metadata_never_index",
    ".TemporaryItems",  ".fseventsd",       ".ql_disablethumbnails",
    ".ql_disablecache", ".VolumeIcon.icns", ".metadata_never_index_unless_rootfs",
    "Backups.backupdb",
};

static const char star_allow[] =
    "OPTIONS, GET, HEAD, POST, PUT, DELETE, PROPFIND, PROPPATCH, MKCOL, COPY, MOVE, LOCK, UNLOCK";

static int is_dav_method(const char *m)
{
    for (size_t i = 0; i < ZF_ARRAY_LEN(dav_methods); i++)
        if (strcmp(m, dav_methods[i]) == 0)
            return 1;
    return 0;
}

/* Windows' mini-redirector ("Microsoft-WebDAV-MiniRedir/10.0") and Office
 * ("Microsoft Office Word ...", "Microsoft Data Access Internet Publishing
 * Provider ...") all say Microsoft. */
static int is_microsoft(const struct zf_exchange *ex)
{
    const char *ua = zf_headers_get(&ex->req_headers, "User-Agent");
    return ua && strstr(ua, "Microsoft") != NULL;
}

/* The length of path p[0..n) without the trailing dots ('.' or "%2E") of
 * its last segment. A segment of dots only ("." "..") and a path ending
 * in '/' keep their length. */
static size_t strip_dots(const char *p, size_t n)
{
    size_t seg = n;
    while (seg > 0 && p[seg - 1] != '/')
        seg--;
    size_t end = n;
    for (;;) {
        if (end > seg && p[end - 1] == '.')
            end--;
        else if (end >= seg + 3 && p[end - 3] == '%' && p[end - 2] == '2' &&
                 (p[end - 1] == 'e' || p[end - 1] == 'E'))
            end -= 3;
        else
            break;
    }
    return end == seg ? n : end;
}

/* True when the last segment of path (a trailing '/' ignored) is a Finder
 * probe. */
static int is_probe(const char *path)
{
    size_t n = strlen(path);
    if (n > 1 && path[n - 1] == '/')
        n--;
    size_t seg = n;
    while (seg > 0 && path[seg - 1] != '/')
        seg--;
    const char *s = path + seg;
    size_t len = n - seg;
    if (len > 2 && s[0] == '.' && s[1] == '_')
        return 1;
    for (size_t i = 0; i < ZF_ARRAY_LEN(probe_names); i++)
        if (strlen(probe_names[i]) == len && memcmp(probe_names[i], s, len) == 0)
            return 1;
    return 0;
}

/* Trims spaces and tabs around s[0..*n); returns the new start. */
static const char *trim(const char *s, size_t *n)
{
    while (*n && (*s == ' ' || *s == '\t'))
        s++, (*n)--;
    while (*n && (s[*n - 1] == ' ' || s[*n - 1] == '\t'))
        (*n)--;
    return s;
}

/* True when any comma-separated value of any `name` header equals
 * p[0..n) (case-insensitive, as host names are). */
static int header_lists(const struct zf_exchange *ex, const char *name, const char *p, size_t n)
{
    for (size_t i = 0; i < ex->req_headers.n; i++) {
        const struct zf_header *h = &ex->req_headers.v[i];
        if (strcasecmp(h->name, name) != 0)
            continue;
        const char *v = h->value, *end = h->value + h->value_len;
        while (v < end) {
            const char *comma = memchr(v, ',', (size_t)(end - v));
            size_t len = (size_t)((comma ? comma : end) - v);
            const char *t = trim(v, &len);
            if (len == n && strncasecmp(t, p, n) == 0)
                return 1;
            v = comma ? comma + 1 : end;
        }
    }
    return 0;
}

/* The scheme the app sees: X-Forwarded-Proto's last value from a trusted
 * proxy (as the environ builder does), else the connection's. */
static const char *app_scheme(const struct zf_exchange *ex, int trusted)
{
    const char *proto = NULL;
    if (trusted)
        for (size_t i = 0; i < ex->req_headers.n; i++)
            if (strcasecmp(ex->req_headers.v[i].name, "X-Forwarded-Proto") == 0)
                proto = ex->req_headers.v[i].value;
    if (proto) {
        const char *last = strrchr(proto, ',');
        last = last ? last + 1 : proto;
        size_t n = strlen(last);
        last = trim(last, &n);
        if (n == 5 && strncasecmp(last, "https", 5) == 0)
            return "https";
        if (n == 4 && strncasecmp(last, "http", 4) == 0)
            return "http";
    }
    return ex->scheme ? ex->scheme : "http";
}

/* Replaces a request header's value (copies). Returns ZF_OK or ZF_ERROR. */
static int set_value(struct zf_header *h, const char *v, size_t n)
{
    char *copy = malloc(n + 1);
    if (!copy)
        return ZF_ERROR;
    memcpy(copy, v, n);
    copy[n] = 0;
    free(h->value);
    h->value = copy;
    h->value_len = n;
    return ZF_OK;
}

/* Destination (RFC 4918 10.3) is an absolute URL. Behind a TLS-terminating
 * proxy the client names https://public.example/a while the app sees
 * http://127.0.0.1:8080: Zope then refuses the COPY/MOVE as going to
 * another server. When the URL's host is this request's Host, or (from a
 * trusted proxy) one of its X-Forwarded-Host values, the scheme and host
 * are replaced by those the app sees (its SERVER_URL). A Destination on
 * another site is left alone. For Microsoft clients the trailing dots of
 * its last segment go too. Returns ZF_OK or ZF_ERROR (out of memory). */
static int fix_destination(struct zf_exchange *ex, int microsoft)
{
    struct zf_header *h = NULL;
    for (size_t i = 0; i < ex->req_headers.n && !h; i++)
        if (strcasecmp(ex->req_headers.v[i].name, "Destination") == 0)
            h = &ex->req_headers.v[i];
    if (!h)
        return ZF_OK;
    const char *v = h->value;
    size_t skip = strncasecmp(v, "http://", 7) == 0    ? 7
                  : strncasecmp(v, "https://", 8) == 0 ? 8
                                                       : 0;
    const char *auth = v + skip;
    const char *path = skip ? auth + strcspn(auth, "/?#") : v;
    size_t alen = (size_t)(path - auth);
    size_t plen = strcspn(path, "?#");
    size_t keep = microsoft && zf_webdav_cfg.trailing_dot ? strip_dots(path, plen) : plen;
    const char *host = zf_headers_get(&ex->req_headers, "Host");
    int trusted = zf_proxy_trusted(ex->remote_addr);
    int ours = skip && zf_webdav_cfg.fix_destination && alen > 0 &&
               ((host && strlen(host) == alen && strncasecmp(host, auth, alen) == 0) ||
                (trusted && header_lists(ex, "X-Forwarded-Host", auth, alen)));
    if (!ours && keep == plen)
        return ZF_OK;
    char self[96];
    if (!host) {
        snprintf(self, sizeof self, strchr(ex->server_host, ':') ? "[%s]:%d" : "%s:%d",
                 ex->server_host, ex->server_port);
        host = self;
    }
    const char *scheme = ours ? app_scheme(ex, trusted) : NULL;
    size_t n = strlen(v) + strlen(host) + 16;
    char *out = malloc(n);
    if (!out)
        return ZF_ERROR;
    int len;
    if (ours)
        len = snprintf(out, n, "%s://%s%.*s%s", scheme, host, (int)keep, path, path + plen);
    else
        len = snprintf(out, n, "%.*s%s", (int)(path - v + (ptrdiff_t)keep), v, path + plen);
    int rc = ZF_OK;
    if (len < 0 || (size_t)len >= n || strcmp(out, v) == 0)
        ;
    else {
        zf_log(ZF_LOG_DEBUG, ex->conn, "webdav: Destination \"%s\" -> \"%s\"", v, out);
        rc = set_value(h, out, (size_t)len);
    }
    free(out);
    return rc;
}

/* Queues a complete answer of zfront's own (no worker runs): status, the
 * WebDAV headers (Allow, DAV: 1,2, MS-Author-Via: DAV), and an XML body
 * when body is not NULL. Returns ZF_DONE, or ZF_OK when out of memory (the
 * app answers instead). */
static int answer(struct zf_exchange *ex, int status, const char *line, const char *body)
{
    struct zf_headers h = {0};
    static const char xml[] = "application/xml; charset=\"utf-8\"";
    size_t blen = body ? strlen(body) : 0;
    char *sl = strdup(line);
    if (!sl || zf_headers_add(&h, "Allow", 5, star_allow, sizeof star_allow - 1) != ZF_OK ||
        zf_headers_add(&h, "DAV", 3, "1,2", 3) != ZF_OK ||
        zf_headers_add(&h, "MS-Author-Via", 13, "DAV", 3) != ZF_OK ||
        (body && zf_headers_add(&h, "Content-Type", 12, xml, sizeof xml - 1) != ZF_OK)) {
        free(sl);
        zf_headers_free(&h);
        return ZF_OK;
    }
    zf_log(ZF_LOG_DEBUG, ex->conn, "webdav: %s %s answered by zfront", ex->method, ex->target);
    int ok = zf_exchange_send_headers(ex, status, sl, &h, (int64_t)blen) == ZF_OK &&
             (!body || ex->is_head || zf_exchange_send_data(ex, body, blen) == ZF_OK);
    zf_exchange_finish(ex, ok);
    return ZF_DONE;
}

/* "OPTIONS *" asks what the server can do, not what a resource allows
 * (RFC 9110 9.3.7): Office and the Windows mini-redirector send it before
 * they look at the real path, and an app that serves only a sub-tree
 * answers it 404. Answered here with the methods zfront passes on. */
static int answer_options_star(struct zf_exchange *ex)
{
    return answer(ex, 200, "200 OK", NULL);
}

/* webdav.answer_root: the mini-redirector's first look at "/" (OPTIONS,
 * and PROPFIND with Depth 0) before the folder it was given, answered for
 * an app that serves WebDAV only below the root (it would say 404 and
 * Windows would give up). "/" is presented as an empty collection; its
 * listing (Depth 1) still goes to the app. Returns ZF_DONE, or ZF_OK when
 * the request is not such a probe. */
static int answer_root(struct zf_exchange *ex)
{
    static const char propfind[] =
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
        "<D:multistatus xmlns:D=\"DAV:\"><D:response><D:href>/</D:href><D:propstat><D:prop>"
        "<D:resourcetype><D:collection/></D:resourcetype></D:prop>"
        "<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>\n";
    if (strcmp(ex->path, "/") != 0)
        return ZF_OK;
    if (strcmp(ex->method, "OPTIONS") == 0)
        return answer(ex, 200, "200 OK", NULL);
    const char *depth = zf_headers_get(&ex->req_headers, "Depth");
    if (strcmp(ex->method, "PROPFIND") == 0 && depth && strcmp(depth, "0") == 0)
        return answer(ex, 207, "207 Multi-Status", propfind);
    return ZF_OK;
}

/* The source server: for an app that is not Zope (or a port Zope was not
 * told), WEBDAV_SOURCE_PORT=1 and the optional GET suffix, as Zope does
 * for its own source port. Returns ZF_OK or ZF_ERROR (out of memory). */
static int source_request(struct zf_exchange *ex)
{
    if (zf__webdav_zope_port && ex->server_port == zf__webdav_zope_port)
        return ZF_OK; /* Zope marks and rewrites it itself: once */
    if (zf_headers_add(&ex->env_extra, "WEBDAV_SOURCE_PORT", 18, "1", 1) != ZF_OK)
        return ZF_ERROR;
    const char *suffix = zf_webdav_cfg.source_suffix;
    if (!suffix || !*suffix || strcmp(ex->method, "GET") != 0)
        return ZF_OK;
    size_t pn = strlen(ex->path), sn = strlen(suffix);
    char *p = malloc(pn + sn + 1);
    if (!p)
        return ZF_ERROR;
    memcpy(p, ex->path, pn);
    memcpy(p + pn, suffix, sn + 1);
    int rc = zf_exchange_set_path(ex, p, pn + sn);
    free(p);
    return rc;
}

/* Methods that change or remove a resource (RFC 9110 PUT/DELETE, RFC 4918). */
static int changes_content(const char *m)
{
    static const char *const v[] = {"DELETE", "PUT",  "MKCOL",  "COPY",
                                    "MOVE",   "LOCK", "UNLOCK", "PROPPATCH"};
    for (size_t i = 0; i < ZF_ARRAY_LEN(v); i++)
        if (strcmp(m, v[i]) == 0)
            return 1;
    return 0;
}

/* Loop thread, before dispatch: see the file comment. Returns ZF_DONE when
 * the request was answered here, else ZF_OK. */
static int webdav_on_request(struct zf_exchange *ex)
{
    const struct zf_webdav_config *c = &zf_webdav_cfg;
    if (ex->fragment && changes_content(ex->method)) {
        /* The core drops a fragment (GET /a#b is /a, as waitress does); a
         * method that changes or removes content gets no such guess: did
         * "DELETE /dir/#x" mean /dir/? (litmus's delete_fragment) */
        zf_log(ZF_LOG_INFO, ex->conn, "webdav: %s with a #fragment in its target: 400", ex->method);
        zf_exchange_respond(ex, 400, NULL,
                            "400 Bad Request\n\nA request that changes content may not carry a "
                            "#fragment in its target.\n");
        return ZF_DONE;
    }
    if (c->options_star && strcmp(ex->method, "OPTIONS") == 0 && strcmp(ex->target, "*") == 0)
        return answer_options_star(ex);
    int microsoft = is_microsoft(ex);
    if (c->answer_root && microsoft && answer_root(ex) == ZF_DONE)
        return ZF_DONE;
    int ok = 1;
    if (c->trailing_dot && microsoft) {
        size_t n = strlen(ex->path), keep = strip_dots(ex->path, n);
        if (keep != n) {
            zf_log(ZF_LOG_DEBUG, ex->conn, "webdav: trailing dot of \"%s\" stripped", ex->path);
            ok &= zf_exchange_set_path(ex, ex->path, keep) == ZF_OK;
        }
    }
    ok &= fix_destination(ex, microsoft) == ZF_OK;
    if (c->quiet_probes && is_probe(ex->path))
        ex->errors_level = ZF_LOG_DEBUG;
    if (ex->channel && strcmp(ex->channel, "webdav-source") == 0)
        ok &= source_request(ex) == ZF_OK;
    else if (c->dav_channel && is_dav_method(ex->method))
        ex->channel = "webdav";
    if (!ok)
        zf_log(ZF_LOG_ERROR, ex->conn, "webdav: out of memory adjusting %s %s: passed on as is",
               ex->method, ex->target);
    return ZF_OK;
}

/* True when the comma-separated list has token t (case-insensitive). */
static int has_token(const char *list, const char *t)
{
    size_t tn = strlen(t);
    const char *p = list;
    while (*p) {
        size_t n = strcspn(p, ",");
        size_t len = n;
        const char *s = trim(p, &len);
        if (len == tn && strncasecmp(s, t, tn) == 0)
            return 1;
        p += n;
        if (*p == ',')
            p++;
    }
    return 0;
}

/* Any thread, before the headers are published: a 2xx OPTIONS answer that
 * shows WebDAV (an Allow listing PROPFIND, or a DAV header) gets the
 * headers Windows clients look for: DAV (class 1, or 1,2 when Allow lists
 * LOCK) and MS-Author-Via: DAV, unless the app set them. An app that does
 * not show WebDAV is never advertised as doing it. */
static void webdav_on_response(struct zf_exchange *ex, int status, struct zf_headers *headers)
{
    if (!zf_webdav_cfg.options_headers || status < 200 || status > 299 ||
        strcmp(ex->method, "OPTIONS") != 0)
        return;
    const char *dav = zf_headers_get(headers, "DAV");
    const char *allow = zf_headers_get(headers, "Allow");
    int propfind = allow && has_token(allow, "PROPFIND");
    if (!dav && propfind) {
        const char *cls = has_token(allow, "LOCK") ? "1,2" : "1";
        zf_headers_add(headers, "DAV", 3, cls, strlen(cls));
    }
    if ((dav || propfind) && !zf_headers_get(headers, "MS-Author-Via"))
        zf_headers_add(headers, "MS-Author-Via", 13, "DAV", 3);
}

const struct zf_filter zf__webdav_filter = {
    .name = "webdav",
    .on_request = webdav_on_request,
    .on_response = webdav_on_response,
};
