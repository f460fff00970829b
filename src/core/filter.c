/* The request-filter chain (filter.h). */
#include "filter.h"

static const struct zf_filter *filters[ZF_MAX_FILTERS];
static size_t nfilters;

int zf_filter_register(const struct zf_filter *f)
{
    for (size_t i = 0; i < nfilters; i++)
        if (filters[i] == f)
            return ZF_OK; /* a module configured twice (tests) registers once */
    if (nfilters == ZF_MAX_FILTERS) {
        zf_log(ZF_LOG_ERROR, NULL, "%s: too many request filters (at most %d)", f->name,
               ZF_MAX_FILTERS);
        return ZF_ERROR;
    }
    filters[nfilters++] = f;
    return ZF_OK;
}

int zf__filters_request(struct zf_exchange *ex)
{
    for (size_t i = 0; i < nfilters; i++)
        if (filters[i]->on_request && filters[i]->on_request(ex) == ZF_DONE)
            return ZF_DONE;
    return ZF_OK;
}

void zf__filters_response(struct zf_exchange *ex, int status, struct zf_headers *headers)
{
    for (size_t i = 0; i < nfilters; i++)
        if (filters[i]->on_response)
            filters[i]->on_response(ex, status, headers);
}
