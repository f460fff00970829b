/* Request filters: the one way a module that builds no exchanges of its own
 * (the WebDAV policy, for instance) reaches the requests every protocol
 * builds. The core calls every registered filter, in registration order:
 *
 *  - on_request(ex): loop thread, in zf_exchange_dispatch, just before the
 *    exchange goes to the worker pool. The request part is still writable:
 *    a filter may set ex->channel (a static string), replace the path the
 *    app sees (zf_exchange_set_path), edit ex->req_headers, add environ
 *    variables (ex->env_extra), or lower ex->errors_level. It may also
 *    answer the request itself: it then queues a complete response with
 *    zf_exchange_send_headers / zf_exchange_send_data / zf_exchange_finish
 *    (they only queue and post; the protocol sees the output on a later
 *    loop turn) and returns ZF_DONE, and neither the later filters nor the
 *    app see the request. Otherwise it returns ZF_OK. It must not block
 *    and never takes the GIL.
 *  - on_response(ex, status, headers): the thread that publishes the
 *    response headers (a worker, GIL held or not; the loop thread for a
 *    filter's own answer), in zf_exchange_send_headers, before the headers
 *    are visible to the protocol. It may add fields to *headers (the
 *    exchange takes them over with the rest). It must not block.
 *
 * Filters are registered at start-up (a module's configure or start, on
 * the main thread) and never removed; the list is read-only once the loop
 * runs, so readers take no lock. Either hook may be NULL. */
#ifndef ZF_FILTER_H
#define ZF_FILTER_H

#include "exchange.h"

/* on_request: the filter answered the request itself. */
#define ZF_DONE 1

struct zf_filter {
    const char *name;
    int (*on_request)(struct zf_exchange *ex);
    void (*on_response)(struct zf_exchange *ex, int status, struct zf_headers *headers);
};

/* Adds f (kept by pointer: a static struct) to the chain. Start-up only.
 * Returns ZF_OK, or ZF_ERROR when the chain is full (ZF_MAX_FILTERS). */
#define ZF_MAX_FILTERS 8
int zf_filter_register(const struct zf_filter *f);

/* exchange.c: runs the chain. zf__filters_request returns ZF_DONE when a
 * filter answered, else ZF_OK. */
int zf__filters_request(struct zf_exchange *ex);
void zf__filters_response(struct zf_exchange *ex, int status, struct zf_headers *headers);

/* Helpers for filters. True when addr (a numeric peer address) is one of
 * server.trusted_proxies, whose X-Forwarded-* headers the environ honours.
 * The list is set up before the loop starts: safe on the loop thread. */
int zf_proxy_trusted(const char *addr);

#endif
