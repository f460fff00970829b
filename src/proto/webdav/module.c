/* The WebDAV module: its [webdav] settings, the request filter it
 * registers, and the source-server listeners. */
#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/python.h"
#include "webdav.h"

struct zf_webdav_config zf_webdav_cfg;
int zf__webdav_zope_port;

static const struct zf_cfg_key webdav_keys[] = {
    {"webdav.source_listen", ZF_CFG_LIST, &zf_webdav_cfg.source_listen, NULL, "--webdav-source",
     "WebDAV source server address (plain HTTP, h2c too): its requests carry "
     "zfront.channel=webdav-source; repeat for several."},
    {"webdav.source_suffix", ZF_CFG_STR, &zf_webdav_cfg.source_suffix, NULL,
     "--webdav-source-suffix",
     "For an app that is not Zope: a GET on the source server is passed on as PATH<suffix> "
     "(e.g. /manage_DAVget). Empty: no rewrite."},
    {"webdav.dav_channel", ZF_CFG_BOOL, &zf_webdav_cfg.dav_channel, "true", NULL,
     "Give DAV methods (PROPFIND, PROPPATCH, MKCOL, COPY, MOVE, LOCK, UNLOCK) "
     "zfront.channel=webdav."},
    {"webdav.options_headers", ZF_CFG_BOOL, &zf_webdav_cfg.options_headers, "true", NULL,
     "Add DAV and MS-Author-Via to a 2xx OPTIONS answer whose Allow or DAV header shows "
     "WebDAV, when the app did not set them."},
    {"webdav.options_star", ZF_CFG_BOOL, &zf_webdav_cfg.options_star, "true", NULL,
     "Answer \"OPTIONS *\" (the server's own capabilities) without the app."},
    {"webdav.answer_root", ZF_CFG_BOOL, &zf_webdav_cfg.answer_root, "false", NULL,
     "For an app that serves WebDAV only below /: answer Microsoft clients' OPTIONS / and "
     "PROPFIND / (Depth 0) with an empty collection, so Windows goes on to the real folder."},
    {"webdav.trailing_dot", ZF_CFG_BOOL, &zf_webdav_cfg.trailing_dot, "true", NULL,
     "Strip trailing dots of the last path segment (and of Destination) for Microsoft "
     "clients: index_html. is index_html."},
    {"webdav.quiet_probes", ZF_CFG_BOOL, &zf_webdav_cfg.quiet_probes, "true", NULL,
     "Log what the app writes to wsgi.errors for macOS Finder probes (._*, .DS_Store, ...) "
     "at debug level."},
    {"webdav.fix_destination", ZF_CFG_BOOL, &zf_webdav_cfg.fix_destination, "true", NULL,
     "Rewrite a Destination URL naming this site by another scheme/host (request Host, or "
     "X-Forwarded-Host of a trusted proxy) to the scheme and Host the app sees."},
    {NULL},
};

/* Registers the DAV filter (every request of every protocol goes through
 * it) and asks the core for the "http" service when there are source
 * addresses. Returns ZF_OK (source listeners to open), ZF_DECLINED (the
 * filter alone: nothing to start or stop), or ZF_ERROR. */
static int webdav_configure(struct zf_server *srv)
{
    (void)srv;
    const char *suffix = zf_webdav_cfg.source_suffix;
    if (suffix && *suffix && (strchr(suffix, '?') || strchr(suffix, '#') || strchr(suffix, ' '))) {
        zf_log(ZF_LOG_ERROR, NULL,
               "webdav.source_suffix \"%s\" must be a path piece (no '?', '#' or space)", suffix);
        return ZF_ERROR;
    }
    if (zf_filter_register(&zf__webdav_filter) != ZF_OK)
        return ZF_ERROR;
    if (zf_webdav_cfg.source_listen.n == 0)
        return ZF_DECLINED;
    if (zf_service_need("http", "webdav") != ZF_OK)
        return ZF_ERROR;
    return ZF_OK;
}

/* Opens the source listeners (the HTTP module owns and closes them), then
 * tells a Zope app the port, so that Zope's own source handling (the
 * WEBDAV_SOURCE_PORT mark, GET to manage_DAVget) applies, once. Zope knows
 * a single port: the first address's. Runs before the loop does, so no
 * request is served before the mode is known. Returns ZF_OK or ZF_ERROR. */
static int webdav_start(struct zf_server *srv)
{
    int first = 0;
    for (size_t i = 0; i < zf_webdav_cfg.source_listen.n; i++) {
        int port = 0;
        if (zf_service_listen(srv, "http", zf_webdav_cfg.source_listen.v[i], "webdav-source",
                              &port) != ZF_OK)
            return ZF_ERROR;
        if (i == 0)
            first = port;
        else if (port != first)
            zf_log(ZF_LOG_WARN, NULL,
                   "webdav: source port %d differs from the first (%d): a Zope app knows only "
                   "the first; zfront marks requests on the others itself",
                   port, first);
    }
    int rc = zf_py_startup_call("zope_webdav_source_port", first);
    if (rc < 0)
        return ZF_ERROR;
    zf__webdav_zope_port = rc ? first : 0;
    zf_log(ZF_LOG_INFO, NULL, "webdav: source port %d handled by %s", first,
           rc ? "Zope (set_webdav_source_port)" : "zfront (WEBDAV_SOURCE_PORT=1)");
    return ZF_OK;
}

static void webdav_stats(struct zf_server *srv, struct evbuffer *out)
{
    (void)srv;
    evbuffer_add_printf(out, "webdav.source_listeners: %zu\n", zf_webdav_cfg.source_listen.n);
}

const struct zf_module zf_webdav_module = {
    .name = "webdav",
    .keys = webdav_keys,
    .configure = webdav_configure,
    .start = webdav_start,
    .stats = webdav_stats,
};
