/* The static module registry: every protocol module compiled into this
 * build, in start order. A meson feature option decides which are in. */
#include "server.h"

extern const struct zf_module zf_http_module;

const struct zf_module *const zf_modules[] = {
    &zf_http_module,
};

const size_t zf_nmodules = ZF_ARRAY_LEN(zf_modules);
