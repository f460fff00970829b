/* The WebDAV module: DAV policy on top of whatever protocol carried the
 * request (HTTP/1.1, HTTP/2), through the core's request filters
 * (src/core/filter.h), and the "WebDAV source server" listeners, opened
 * through the core's "http" service (src/core/server.h). It knows no other
 * module. See docs/protocols/webdav.md. */
#ifndef ZF_WEBDAV_H
#define ZF_WEBDAV_H

#include "../../core/config.h"
#include "../../core/filter.h"
#include "../../core/server.h"

/* The [webdav] settings (module.c). Read-only once the loop runs. */
struct zf_webdav_config {
    struct zf_strlist source_listen; /* source server addresses */
    char *source_suffix;             /* GET on the source port: path + this ("" = off) */
    int dav_channel;                 /* zfront.channel "webdav" for DAV methods */
    int options_headers;             /* DAV / MS-Author-Via on OPTIONS answers */
    int options_star;                /* answer "OPTIONS *" ourselves */
    int answer_root;                 /* answer Microsoft's OPTIONS/PROPFIND-0 on "/" */
    int trailing_dot;                /* strip Microsoft clients' trailing dots */
    int quiet_probes;                /* macOS ._* / .DS_Store: wsgi.errors at debug */
    int fix_destination;             /* Destination of another scheme/host -> ours */
};
extern struct zf_webdav_config zf_webdav_cfg;

/* The source port a Zope app was told at start (before the loop runs), 0
 * when the app is not Zope: requests on that port are marked and rewritten
 * by Zope itself, not by zfront. */
extern int zf__webdav_zope_port;

/* The DAV policy (policy.c), registered by the module's configure. */
extern const struct zf_filter zf__webdav_filter;

#endif
