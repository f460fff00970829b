/* The internal protocol: an exchange with no connection, whose response is
 * consumed and logged on the loop thread (see internal.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "internal.h"
#include "log.h"
#include "metrics.h"

struct internal {
    struct zf_exchange *ex;
    zf_internal_done_fn done;
    void *arg;
    char *label;
    uint64_t start_ms;
    uint64_t bytes;
};

static size_t in_flight;

static void access_log(struct zf_exchange *ex, int status, uint64_t bytes, uint64_t ms)
{
    zf_metrics_request(ex->channel, status, ms * 1000);
    if (!zf_access_log_enabled())
        return;
    struct zf_access_entry e = {0};
    e.remote_addr = "internal";
    e.method = ex->method;
    e.target = ex->target;
    e.protocol = "INTERNAL";
    e.status = status;
    e.bytes_sent = bytes;
    e.user_agent = ex->channel;
    e.remote_user = zf_exchange_remote_user(ex);
    e.duration_us = ms * 1000;
    zf_access_log(&e);
}

/* Loop thread: drains what the worker produced; at the end logs, releases
 * the exchange and calls the owner back. */
static void on_output(struct zf_exchange *ex)
{
    struct internal *in = ex->proto;
    int finished = 0, failed = 0;
    /* the body is dropped as it comes; a worker that finished without
     * headers (no response at all) ends the request too */
    int have_headers = zf_exchange_take_headers(ex);
    struct zf_segment *s;
    while ((s = zf_exchange_take(ex, &finished, &failed)) != NULL) {
        in->bytes += s->len;
        zf_segment_free(s);
    }
    if (!finished)
        return;
    if (!have_headers) /* they may have come with the end, after the first look */
        have_headers = zf_exchange_take_headers(ex);
    int status = failed || !have_headers ? 0 : ex->status;
    uint64_t ms = zf_now_ms() - in->start_ms;
    access_log(ex, have_headers ? ex->status : 0, in->bytes, ms);
    if (status == 0 || status >= 500)
        zf_log(ZF_LOG_WARN, NULL, "%s: %s %s answered %d%s after %.1f s", in->label, ex->method,
               ex->target, have_headers ? ex->status : 0, failed ? " (incomplete response)" : "",
               (double)ms / 1000.0);
    else
        zf_log(ZF_LOG_INFO, NULL, "%s: %s %s answered %d after %.1f s", in->label, ex->method,
               ex->target, status, (double)ms / 1000.0);
    zf_exchange_release(ex);
    in_flight--;
    zf_internal_done_fn done = in->done;
    void *arg = in->arg;
    uint64_t bytes = in->bytes;
    free(in->label);
    free(in);
    done(arg, status, bytes);
}

static const struct zf_exchange_ops internal_ops = {.on_output = on_output};

int zf_internal_submit(struct zf_internal_req *req, zf_internal_done_fn done, void *arg)
{
    struct internal *in = calloc(1, sizeof *in);
    struct zf_exchange *ex = in ? zf_exchange_new(&internal_ops, in, NULL) : NULL;
    if (!ex) {
        free(in);
        zf_log(ZF_LOG_ERROR, NULL, "%s: out of memory", req->label);
        return ZF_ERROR;
    }
    in->ex = ex;
    in->done = done;
    in->arg = arg;
    in->label = strdup(req->label ? req->label : req->channel);
    ex->channel = req->channel;
    ex->protocol = "HTTP/1.1";
    snprintf(ex->remote_addr, sizeof ex->remote_addr, "127.0.0.1");
    snprintf(ex->server_host, sizeof ex->server_host, "127.0.0.1");
    ex->server_port = 0;
    int ok = in->label && zf_exchange_set_target(ex, req->method, strlen(req->method), req->target,
                                                 strlen(req->target)) == ZF_OK;
    if (ok && req->body_len > 0) {
        ex->body.mem = malloc(req->body_len);
        ok = ex->body.mem != NULL;
        if (ok) {
            memcpy(ex->body.mem, req->body, req->body_len);
            ex->body.len = req->body_len;
        }
    }
    if (!ok) {
        zf_log(ZF_LOG_ERROR, NULL, "%s: out of memory", req->label ? req->label : "internal");
        zf_exchange_release(ex);
        free(in->label);
        free(in);
        return ZF_ERROR;
    }
    ex->req_headers = req->headers;
    memset(&req->headers, 0, sizeof req->headers);
    in->start_ms = zf_now_ms();
    ex->start_us = in->start_ms * 1000;
    in_flight++;
    zf_exchange_dispatch(ex);
    return ZF_OK;
}

size_t zf_internal_active(void)
{
    return in_flight;
}
