/* The WebDAV policy's pure parts (src/proto/webdav/policy.c, included to
 * reach its static helpers) and its request filter on hand-made exchanges:
 * trailing dots, Finder probe names, Allow tokens, Destination mapping,
 * the channel and the source-server markers. No loop, no Python. */
#include <string.h>

#include "../../src/proto/webdav/policy.c"
#include "check.h"

static size_t strip(const char *p)
{
    return strip_dots(p, strlen(p));
}

static struct zf_exchange *request(const char *method, const char *target)
{
    struct zf_exchange *ex = zf_exchange_new(NULL, NULL, NULL);
    CHECK(ex != NULL);
    CHECK_EQ_INT(zf_exchange_set_target(ex, method, strlen(method), target, strlen(target)), ZF_OK);
    snprintf(ex->remote_addr, sizeof ex->remote_addr, "192.0.2.7");
    snprintf(ex->server_host, sizeof ex->server_host, "127.0.0.1");
    ex->server_port = 8080;
    return ex;
}

static void header(struct zf_exchange *ex, const char *name, const char *value)
{
    CHECK_EQ_INT(zf_headers_add(&ex->req_headers, name, strlen(name), value, strlen(value)), ZF_OK);
}

int main(void)
{
    zf_webdav_cfg.dav_channel = zf_webdav_cfg.trailing_dot = zf_webdav_cfg.fix_destination = 1;
    zf_webdav_cfg.quiet_probes = zf_webdav_cfg.options_headers = 1;

    CHECK_EQ_INT(strip("/a/index_html."), strlen("/a/index_html"));
    CHECK_EQ_INT(strip("/a/index_html..."), strlen("/a/index_html"));
    CHECK_EQ_INT(strip("/a/index_html%2e"), strlen("/a/index_html"));
    CHECK_EQ_INT(strip("/a/b.%2E."), strlen("/a/b"));
    CHECK_EQ_INT(strip("/a/.."), strlen("/a/..")); /* dots only: kept */
    CHECK_EQ_INT(strip("/a/."), strlen("/a/."));
    CHECK_EQ_INT(strip("/a/b./"), strlen("/a/b./")); /* not the last segment */
    CHECK_EQ_INT(strip("/a.b"), strlen("/a.b"));
    CHECK_EQ_INT(strip(""), 0);

    CHECK(is_probe("/x/._report.pdf"));
    CHECK(is_probe("/.DS_Store"));
    CHECK(is_probe("/x/.Spotlight-V100/"));
    CHECK(!is_probe("/x/._"));
    CHECK(!is_probe("/x/.DS_Store.txt"));
    CHECK(!is_probe("/x/a._b"));
    CHECK(!is_probe("/"));

    CHECK(has_token("GET, PROPFIND,LOCK", "propfind"));
    CHECK(has_token("GET, PROPFIND,LOCK", "LOCK"));
    CHECK(!has_token("GET, PROPFINDX", "PROPFIND"));
    CHECK(!has_token("", "GET"));

    /* DAV channel, and OPTIONS kept as http */
    struct zf_exchange *ex = request("PROPFIND", "/a");
    CHECK_EQ_INT(webdav_on_request(ex), ZF_OK);
    CHECK(strcmp(ex->channel, "webdav") == 0);
    zf_exchange_release(ex);
    ex = request("OPTIONS", "/a");
    webdav_on_request(ex);
    CHECK(strcmp(ex->channel, "http") == 0);
    zf_exchange_release(ex);

    /* Microsoft trailing dot: path and Destination; target kept */
    ex = request("MOVE", "/f/a.?q=1");
    header(ex, "User-Agent", "Microsoft-WebDAV-MiniRedir/10.0");
    header(ex, "Host", "h.example:8080");
    header(ex, "Destination", "http://h.example:8080/f/b.?x");
    webdav_on_request(ex);
    CHECK(strcmp(ex->path, "/f/a") == 0);
    CHECK(strcmp(ex->target, "/f/a.?q=1") == 0);
    CHECK(strcmp(zf_headers_get(&ex->req_headers, "Destination"), "http://h.example:8080/f/b?x") ==
          0);
    zf_exchange_release(ex);

    /* Destination: own host under another scheme -> ours; other site and
     * an untrusted X-Forwarded-Host left alone; relative kept */
    ex = request("COPY", "/a");
    header(ex, "Host", "h.example");
    header(ex, "Destination", "https://H.EXAMPLE/b%20c");
    webdav_on_request(ex);
    CHECK(strcmp(zf_headers_get(&ex->req_headers, "Destination"), "http://h.example/b%20c") == 0);
    zf_exchange_release(ex);
    ex = request("COPY", "/a");
    header(ex, "Host", "h.example");
    header(ex, "X-Forwarded-Host", "public.example");
    header(ex, "Destination", "https://public.example/b");
    webdav_on_request(ex);
    CHECK(strcmp(zf_headers_get(&ex->req_headers, "Destination"), "https://public.example/b") == 0);
    zf_exchange_release(ex);
    ex = request("COPY", "/a");
    header(ex, "Destination", "/b.");
    webdav_on_request(ex);
    CHECK(strcmp(zf_headers_get(&ex->req_headers, "Destination"), "/b.") == 0);
    zf_exchange_release(ex);

    /* probes: the app's wsgi.errors lines at debug */
    ex = request("GET", "/x/.DS_Store");
    webdav_on_request(ex);
    CHECK_EQ_INT(ex->errors_level, ZF_LOG_DEBUG);
    zf_exchange_release(ex);
    ex = request("GET", "/x/report.pdf");
    webdav_on_request(ex);
    CHECK_EQ_INT(ex->errors_level, ZF_LOG_ERROR);
    zf_exchange_release(ex);

    /* source server, not Zope: marker and suffix on GET only */
    zf_webdav_cfg.source_suffix = "/manage_DAVget";
    ex = request("GET", "/doc?x=1");
    ex->channel = "webdav-source";
    webdav_on_request(ex);
    CHECK(strcmp(ex->channel, "webdav-source") == 0);
    CHECK(strcmp(ex->path, "/doc/manage_DAVget") == 0 && strcmp(ex->query, "x=1") == 0);
    CHECK(strcmp(zf_headers_get(&ex->env_extra, "WEBDAV_SOURCE_PORT"), "1") == 0);
    zf_exchange_release(ex);
    ex = request("PROPFIND", "/doc");
    ex->channel = "webdav-source";
    webdav_on_request(ex);
    CHECK(strcmp(ex->channel, "webdav-source") == 0 && strcmp(ex->path, "/doc") == 0);
    zf_exchange_release(ex);
    /* the port Zope was told: Zope does it, zfront adds nothing */
    zf__webdav_zope_port = 8080;
    ex = request("GET", "/doc");
    ex->channel = "webdav-source";
    webdav_on_request(ex);
    CHECK(strcmp(ex->path, "/doc") == 0 && ex->env_extra.n == 0);
    zf_exchange_release(ex);
    zf_webdav_cfg.source_suffix = NULL;

    /* OPTIONS answers: DAV/MS-Author-Via only when the app shows DAV */
    struct zf_headers h = {0};
    ex = request("OPTIONS", "/a");
    zf_headers_add(&h, "Allow", 5, "GET, PROPFIND", 13);
    webdav_on_response(ex, 200, &h);
    CHECK(strcmp(zf_headers_get(&h, "DAV"), "1") == 0);
    CHECK(strcmp(zf_headers_get(&h, "MS-Author-Via"), "DAV") == 0);
    zf_headers_free(&h);
    zf_headers_add(&h, "Allow", 5, "GET, HEAD", 9);
    webdav_on_response(ex, 200, &h);
    CHECK(zf_headers_get(&h, "DAV") == NULL && zf_headers_get(&h, "MS-Author-Via") == NULL);
    zf_headers_free(&h);
    zf_headers_add(&h, "Allow", 5, "PROPFIND, LOCK", 14);
    webdav_on_response(ex, 404, &h);
    CHECK(zf_headers_get(&h, "DAV") == NULL);
    zf_headers_free(&h);
    zf_exchange_release(ex);

    CHECK_EQ_INT(zf_exchange_count(), 0);
    return zf_test_done("webdav_policy");
}
