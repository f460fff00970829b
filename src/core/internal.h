/* The internal protocol: requests that zfront makes itself (the clock, queued
 * tasks) and runs through the worker pool like any other, with no client
 * connection behind them.
 *
 * An internal request is an ordinary exchange (exchange.h) whose "protocol"
 * is this file: it consumes the response as the worker produces it (the body
 * is counted and dropped), writes one access-log line (remote address
 * "internal", protocol "INTERNAL") and an error-log line for a status >= 500,
 * then tells its owner through a callback. Everything here runs on the loop
 * thread. */
#ifndef ZF_INTERNAL_H
#define ZF_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "exchange.h"

/* Called once on the loop thread when the internal request ended: status is
 * the response status, or 0 when the application gave no complete response
 * (it failed mid-body or the server dropped it). */
typedef void (*zf_internal_done_fn)(void *arg, int status, uint64_t body_bytes);

struct zf_internal_req {
    const char *channel; /* zfront.channel: "clock", "task" (static string) */
    const char *method;
    const char *target;        /* "/path?query" */
    struct zf_headers headers; /* taken: emptied by zf_internal_submit */
    const void *body;          /* copied */
    size_t body_len;
    const char *label; /* for log lines: "clock /tick" (copied) */
};

/* Builds the exchange and dispatches it (zf_exchange_dispatch: it may be
 * answered 503 by the server when the queue is full or the server stops;
 * done then sees 503). Returns ZF_OK (done will be called exactly once,
 * on a later loop turn) or ZF_ERROR (out of memory or a bad target: done is
 * not called; logged). */
int zf_internal_submit(struct zf_internal_req *req, zf_internal_done_fn done, void *arg);

/* Internal requests in flight (submitted, done not yet called). */
size_t zf_internal_active(void);

#endif
