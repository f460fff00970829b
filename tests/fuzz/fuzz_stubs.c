/* What the HTTP/1.1 fuzz target links instead of the server, the worker
 * pool and Python: the parser never reaches them, so each stub either does
 * nothing harmful or aborts (which the fuzzer reports as a crash, with the
 * stack that got there). When the core starts calling something new, the
 * link fails with an undefined reference: add its stub here. */
#include <stdio.h>
#include <stdlib.h>

#include "../../src/core/exchange.h"
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

void zf_py_run_exchange(struct zf_job *job, struct zf_worker *w)
{
    (void)job;
    (void)w;
    unreachable("zf_py_run_exchange");
}
