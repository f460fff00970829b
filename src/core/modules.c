/* The static module registry: every protocol module compiled into this
 * build, in start order. A meson feature option decides which are in. */
#include "server.h"

extern const struct zf_module zf_http_module;
#ifdef ZF_WITH_HTTP2
extern const struct zf_module zf_h2_module; /* https listeners, TLS, HTTP/2 */
#endif
#ifdef ZF_WITH_WS
extern const struct zf_module zf_ws_module; /* WebSocket notifications (HTTP/1.1 upgrade) */
#endif
#ifdef ZF_WITH_BUS
extern const struct zf_module zf_bus_module; /* instances joined over ZeroMQ (src/bus) */
#endif
#ifdef ZF_WITH_SSH
extern const struct zf_module zf_ssh_module;
#endif
#ifdef ZF_WITH_WEBDAV
extern const struct zf_module zf_webdav_module; /* DAV policy (a request filter), source port */
#endif
/* internal services: after the listeners, which they need (clock.c, task.c) */
extern const struct zf_module zf_clock_module;
extern const struct zf_module zf_task_module;
extern const struct zf_module zf_trim_module;

const struct zf_module *const zf_modules[] = {
    &zf_http_module,
#ifdef ZF_WITH_HTTP2
    &zf_h2_module,
#endif
#ifdef ZF_WITH_WS
    &zf_ws_module,
#endif
#ifdef ZF_WITH_BUS
    &zf_bus_module,
#endif
#ifdef ZF_WITH_SSH
    &zf_ssh_module,
#endif
#ifdef ZF_WITH_WEBDAV
    &zf_webdav_module,
#endif
    &zf_clock_module,
    &zf_task_module,
    &zf_trim_module,
};

const size_t zf_nmodules = ZF_ARRAY_LEN(zf_modules);
