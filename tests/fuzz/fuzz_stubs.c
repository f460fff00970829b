/* What the HTTP/1.1 fuzz target links instead of the server, the worker
 * pool and Python: the parser never reaches them, so each stub either does
 * nothing harmful or aborts (which the fuzzer reports as a crash, with the
 * stack that got there). When the core starts calling something new, the
 * link fails with an undefined reference: add its stub here. */
#include <stdio.h>
#include <stdlib.h>

#include "../../src/core/exchange.h"
#include "../../src/core/filter.h"
#include "../../src/core/metrics.h"
#include "../../src/core/pool.h"
#include "../../src/core/server.h"
#include "../../src/proto/http/http.h"

struct zf_server *zf_srv; /* NULL: no server running */
struct zf_http_config zf_http_cfg;
const struct zf_h2c_ops *zf_h2c; /* NULL: no HTTP/2 hand-off */

static void unreachable(const char *what)
{
    fprintf(stderr, "fuzz stub reached: %s\n", what);
    abort();
}

void zf_server_check_idle(void)
{
}

uint64_t zf_conn_init(struct zf_conn *c, const char *proto, const struct sockaddr *sa,
                      socklen_t salen)
{
    (void)sa;
    (void)salen;
    c->id = 1;
    c->proto = proto;
    return c->id;
}

void zf_pool_push(struct zf_job *job)
{
    (void)job;
    unreachable("zf_pool_push");
}

void zf_pool_push_to(struct zf_job *job, int worker_index)
{
    (void)job;
    (void)worker_index;
    unreachable("zf_pool_push_to");
}

struct zf_pool_config zf_pool_cfg;

/* weak: a target that runs requests (fuzz_h2.c) brings its own queue */
__attribute__((weak)) int zf_pool_admit(struct zf_job *job)
{
    (void)job;
    unreachable("zf_pool_admit");
    return ZF_ERROR;
}

int zf_pool_withdraw(struct zf_job *job)
{
    (void)job;
    return ZF_DECLINED; /* nothing is ever queued here */
}

/* No filter module, no upgrade handler: requests go on unchanged. */
int zf__filters_request(struct zf_exchange *ex)
{
    (void)ex;
    return ZF_OK;
}

void zf__filters_response(struct zf_exchange *ex, int status, struct zf_headers *headers)
{
    (void)ex;
    (void)status;
    (void)headers;
}

const struct zf_upgrade *zf_upgrade_find(const char *token, size_t len)
{
    (void)token;
    (void)len;
    return NULL;
}

/* The connection count (server.max_connections) is the server's business. */
void zf_conn_opened(void)
{
}

void zf_conn_closed(void)
{
}

/* ---- metrics (src/core/metrics.h): a fuzz target collects nothing ---- */

void zf_metrics_add(struct zf_metrics *m, enum zf_metric_type type, const char *name,
                    const char *help, const char *labels, double value)
{
    (void)m, (void)type, (void)name, (void)help, (void)labels, (void)value;
}

void zf_metrics_connections(struct zf_metrics *m, const char *protocol, size_t open,
                            uint64_t accepted)
{
    (void)m, (void)protocol, (void)open, (void)accepted;
}

int zf_metrics_register(zf_metrics_fn fn, void *arg)
{
    (void)fn, (void)arg;
    return ZF_OK;
}

void zf_metrics_request(const char *channel, int status, uint64_t duration_us)
{
    (void)channel, (void)status, (void)duration_us;
}
