/* Task requests (task.h): the inbox filled from any thread, the named
 * queues and their concurrency on the loop thread, and the queue file that
 * keeps tasks across a restart. */
#include <errno.h>
#include <event2/buffer.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "internal.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "task.h"

struct zf_task {
    struct zf_task *next;
    char *queue;
    char *method;
    char *target;
    struct zf_headers headers;
    char *body;
    size_t body_len;
};

struct queue {
    char *name;
    struct zf_task *head, *tail;
    size_t pending;
    long running;
    long limit;
    struct queue *next;
};

static struct {
    long concurrency;
    struct zf_strlist queue_concurrency;
} task_cfg;

static const struct zf_cfg_key task_keys[] = {
    {"tasks.concurrency", ZF_CFG_INT, &task_cfg.concurrency, "1", "--task-concurrency",
     "Tasks (zfront.enqueue) of one queue that run at the same time; the others wait in "
     "order (0: no limit)."},
    {"tasks.queue_concurrency", ZF_CFG_LIST, &task_cfg.queue_concurrency, NULL, NULL,
     "Per-queue override of tasks.concurrency, as NAME=N."},
    {NULL},
};

/* the inbox: tasks submitted from any thread, not yet on the loop */
static struct {
    pthread_mutex_t lock;
    struct zf_task *head, *tail;
} inbox = {.lock = PTHREAD_MUTEX_INITIALIZER};

static __thread int deferring;
static __thread struct zf_task *defer_head, *defer_tail;

/* loop thread only */
static struct queue *queues;
static long running_total;
static int started;
static int load_pending = 1; /* the queue file is read at start */

static void drain_inbox(void *arg);

/* ------------------------------------------------------------- tasks */

struct zf_task *zf_task_new(const char *queue, const char *method, const char *target,
                            const void *body, size_t body_len)
{
    struct zf_task *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->queue = strdup(queue);
    t->method = strdup(method);
    t->target = strdup(target);
    t->body = malloc(body_len ? body_len : 1);
    if (!t->queue || !t->method || !t->target || !t->body) {
        zf_task_free(t);
        return NULL;
    }
    if (body_len)
        memcpy(t->body, body, body_len);
    t->body_len = body_len;
    return t;
}

int zf_task_add_header(struct zf_task *t, const char *name, size_t nlen, const char *value,
                       size_t vlen)
{
    return zf_headers_add(&t->headers, name, nlen, value, vlen);
}

void zf_task_free(struct zf_task *t)
{
    if (!t)
        return;
    free(t->queue);
    free(t->method);
    free(t->target);
    zf_headers_free(&t->headers);
    free(t->body);
    free(t);
}

/* Appends a list (linked by next) to the inbox and wakes the loop. */
static void to_inbox(struct zf_task *head, struct zf_task *tail)
{
    pthread_mutex_lock(&inbox.lock);
    if (inbox.tail)
        inbox.tail->next = head;
    else
        inbox.head = head;
    inbox.tail = tail;
    pthread_mutex_unlock(&inbox.lock);
    /* before the loop runs (the app queues at import) or after it ended the
     * tasks wait in the inbox: start() takes them, or the queue file */
    zf_loop_call(drain_inbox, NULL);
}

void zf_task_submit(struct zf_task *t)
{
    t->next = NULL;
    if (deferring) {
        if (defer_tail)
            defer_tail->next = t;
        else
            defer_head = t;
        defer_tail = t;
        return;
    }
    to_inbox(t, t);
}

void zf_task_defer_begin(void)
{
    deferring = 1;
}

void zf_task_defer_end(void)
{
    deferring = 0;
    if (defer_head)
        to_inbox(defer_head, defer_tail);
    defer_head = defer_tail = NULL;
}

/* ------------------------------------------------------------ queues */

static long limit_for(const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < task_cfg.queue_concurrency.n; i++) {
        const char *e = task_cfg.queue_concurrency.v[i];
        if (strncmp(e, name, n) == 0 && e[n] == '=')
            return strtol(e + n + 1, NULL, 10);
    }
    return task_cfg.concurrency;
}

static struct queue *queue_get(const char *name)
{
    for (struct queue *q = queues; q; q = q->next)
        if (strcmp(q->name, name) == 0)
            return q;
    struct queue *q = zf_xcalloc(1, sizeof *q);
    q->name = zf_xstrdup(name);
    q->limit = limit_for(name);
    q->next = queues;
    queues = q;
    return q;
}

static void queue_push(struct queue *q, struct zf_task *t, int front)
{
    if (front) {
        t->next = q->head;
        q->head = t;
        if (!q->tail)
            q->tail = t;
    } else {
        t->next = NULL;
        if (q->tail)
            q->tail->next = t;
        else
            q->head = t;
        q->tail = t;
    }
    q->pending++;
}

static size_t pending_total(void)
{
    size_t n = 0;
    for (struct queue *q = queues; q; q = q->next)
        n += q->pending;
    return n;
}

/* ------------------------------------------------------- the queue file */

static int queue_path(char *buf, size_t cap)
{
    if (!zf_cfg.state_dir || !*zf_cfg.state_dir)
        return ZF_ERROR;
    int n = snprintf(buf, cap, "%s/tasks.queue", zf_cfg.state_dir);
    return n > 0 && (size_t)n < cap ? ZF_OK : ZF_ERROR;
}

static void put_field(FILE *f, const char *p, size_t n)
{
    fprintf(f, "%zu\n", n);
    fwrite(p, 1, n, f);
    fputc('\n', f);
}

/* Writes every queued task to <state_dir>/tasks.queue (through a temp file
 * and rename), or removes the file when none is left. Loop thread. */
static void save_queue(void)
{
    char path[4096], tmp[4200];
    size_t n = pending_total();
    if (queue_path(path, sizeof path) != ZF_OK) {
        if (n > 0)
            zf_log(ZF_LOG_WARN, NULL,
                   "tasks: %zu queued task(s) will be lost at exit: set server.state_dir to keep "
                   "them across a restart",
                   n);
        return;
    }
    if (n == 0) {
        if (unlink(path) != 0 && errno != ENOENT)
            zf_log(ZF_LOG_ERROR, NULL, "tasks: cannot remove %s: %s", path, strerror(errno));
        return;
    }
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        zf_log(ZF_LOG_ERROR, NULL, "tasks: cannot write %s: %s: %zu queued task(s) lost", tmp,
               strerror(errno), n);
        return;
    }
    fprintf(f, "zfront-tasks 1\n");
    for (struct queue *q = queues; q; q = q->next) {
        for (struct zf_task *t = q->head; t; t = t->next) {
            fprintf(f, "task %zu\n", t->headers.n);
            put_field(f, t->queue, strlen(t->queue));
            put_field(f, t->method, strlen(t->method));
            put_field(f, t->target, strlen(t->target));
            for (size_t i = 0; i < t->headers.n; i++) {
                put_field(f, t->headers.v[i].name, t->headers.v[i].name_len);
                put_field(f, t->headers.v[i].value, t->headers.v[i].value_len);
            }
            put_field(f, t->body, t->body_len);
        }
    }
    int bad = ferror(f);
    if (fclose(f) != 0 || bad || rename(tmp, path) != 0) {
        zf_log(ZF_LOG_ERROR, NULL, "tasks: cannot write %s: %s: %zu queued task(s) lost", path,
               strerror(errno), n);
        unlink(tmp);
        return;
    }
    zf_log(ZF_LOG_INFO, NULL, "tasks: %zu queued task(s) kept in %s for the next start", n, path);
}

/* Reads one "<len>\n<bytes>\n" field at *p. Returns a malloc'd string (NUL
 * terminated; *len its length) or NULL when the file is malformed. */
static char *get_field(const char **p, const char *end, size_t *len)
{
    char *num_end;
    errno = 0;
    unsigned long long n = strtoull(*p, &num_end, 10);
    if (errno || num_end == *p || num_end >= end || *num_end != '\n' ||
        n > (unsigned long long)(end - num_end - 1) || num_end[1 + n] != '\n')
        return NULL;
    char *s = malloc(n + 1);
    if (!s)
        return NULL;
    memcpy(s, num_end + 1, n);
    s[n] = 0;
    *len = n;
    *p = num_end + 2 + n;
    return s;
}

/* Parses the file's content [p, end); *end must be a readable NUL (the
 * number parsers stop there). Returns how many tasks it queued, or -1 when
 * it is malformed (the tasks read until then are kept). */
static long parse_queue(const char *p, const char *end)
{
    static const char magic[] = "zfront-tasks 1\n";
    if ((size_t)(end - p) < sizeof magic - 1 || memcmp(p, magic, sizeof magic - 1) != 0)
        return -1;
    p += sizeof magic - 1;
    long count = 0;
    while (p < end) {
        size_t nh, len;
        if (end - p < 6 || memcmp(p, "task ", 5) != 0)
            return -1;
        char *e;
        nh = strtoul(p + 5, &e, 10);
        if (e >= end || *e != '\n' || nh > 10000)
            return -1;
        p = e + 1;
        char *fields[3] = {0};
        int ok = 1;
        for (int i = 0; i < 3 && ok; i++)
            ok = (fields[i] = get_field(&p, end, &len)) != NULL;
        struct zf_task *t = NULL;
        if (ok)
            t = calloc(1, sizeof *t);
        if (t) {
            t->queue = fields[0];
            t->method = fields[1];
            t->target = fields[2];
        } else {
            for (int i = 0; i < 3; i++)
                free(fields[i]);
            return -1;
        }
        for (size_t i = 0; i < nh && ok; i++) {
            size_t nl, vl;
            char *name = get_field(&p, end, &nl);
            char *value = name ? get_field(&p, end, &vl) : NULL;
            ok = value && zf_headers_add(&t->headers, name, nl, value, vl) == ZF_OK;
            free(name);
            free(value);
        }
        if (ok)
            ok = (t->body = get_field(&p, end, &t->body_len)) != NULL;
        if (!ok) {
            zf_task_free(t);
            return -1;
        }
        queue_push(queue_get(t->queue), t, 0);
        count++;
    }
    return count;
}

/* Start: queues the tasks a previous run left, and removes the file (the
 * tasks are then in memory; a later stop writes the file again). */
static void load_queue(void)
{
    char path[4096];
    if (queue_path(path, sizeof path) != ZF_OK)
        return;
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno != ENOENT)
            zf_log(ZF_LOG_ERROR, NULL, "tasks: cannot read %s: %s", path, strerror(errno));
        return;
    }
    struct evbuffer *buf = evbuffer_new();
    char chunk[65536];
    size_t n;
    while (buf && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        evbuffer_add(buf, chunk, n);
    fclose(f);
    if (!buf)
        return;
    size_t len = evbuffer_get_length(buf);
    evbuffer_add(buf, "", 1); /* parse_queue's terminator */
    const char *p = (const char *)evbuffer_pullup(buf, -1);
    long count = p ? parse_queue(p, p + len) : 0;
    evbuffer_free(buf);
    if (count < 0) {
        char bad[4200];
        snprintf(bad, sizeof bad, "%s.bad", path);
        rename(path, bad);
        zf_log(ZF_LOG_ERROR, NULL, "tasks: %s is malformed: moved to %s (%zu task(s) read)", path,
               bad, pending_total());
        return;
    }
    unlink(path);
    zf_log(ZF_LOG_INFO, NULL, "tasks: %ld task(s) queued again from %s", count, path);
}

/* ------------------------------------------------------------- running */

static void schedule(struct queue *q);

struct run {
    struct queue *q;
    struct zf_task *t;
};

static void on_done(void *arg, int status, uint64_t bytes)
{
    (void)bytes;
    struct run *r = arg;
    r->q->running--;
    running_total--;
    if (zf_srv->state != ZF_RUNNING && (status == 503 || status == 0)) {
        /* the stopping server did not run it (or not to the end): keep it */
        queue_push(r->q, r->t, 1);
        save_queue();
    } else {
        zf_task_free(r->t);
    }
    struct queue *q = r->q;
    free(r);
    schedule(q);
    zf_server_check_idle();
}

/* Starts the queue's next tasks while it has room. Loop thread. */
static void schedule(struct queue *q)
{
    while (started && zf_srv->state == ZF_RUNNING && q->head &&
           (q->limit <= 0 || q->running < q->limit)) {
        struct zf_task *t = q->head;
        q->head = t->next;
        if (!q->head)
            q->tail = NULL;
        q->pending--;
        t->next = NULL;
        char label[96];
        snprintf(label, sizeof label, "task [%.40s]", q->name);
        struct run *r = malloc(sizeof *r);
        struct zf_internal_req req = {.channel = "task",
                                      .method = t->method,
                                      .target = t->target,
                                      .body = t->body,
                                      .body_len = t->body_len,
                                      .label = label};
        int ok = r != NULL;
        for (size_t i = 0; ok && i < t->headers.n; i++)
            ok = zf_headers_add(&req.headers, t->headers.v[i].name, t->headers.v[i].name_len,
                                t->headers.v[i].value, t->headers.v[i].value_len) == ZF_OK;
        if (ok && !zf_headers_get(&req.headers, "Host"))
            ok = zf_headers_add(&req.headers, "Host", 4, "localhost", 9) == ZF_OK;
        if (ok) {
            r->q = q;
            r->t = t;
            ok = zf_internal_submit(&req, on_done, r) == ZF_OK;
        }
        if (!ok) {
            zf_headers_free(&req.headers);
            free(r);
            queue_push(q, t, 1); /* out of memory: try again with the next event */
            return;
        }
        q->running++;
        running_total++;
    }
}

/* Loop thread: moves the inbox into the queues. Returns how many tasks. */
static size_t take_inbox(void)
{
    pthread_mutex_lock(&inbox.lock);
    struct zf_task *t = inbox.head;
    inbox.head = inbox.tail = NULL;
    pthread_mutex_unlock(&inbox.lock);
    size_t n = 0;
    while (t) {
        struct zf_task *next = t->next;
        struct queue *q = queue_get(t->queue);
        queue_push(q, t, 0);
        zf_log(ZF_LOG_DEBUG, NULL, "task [%s]: %s %s queued", q->name, t->method, t->target);
        t = next;
        n++;
    }
    return n;
}

/* Loop thread (zf_loop_call): queues what arrived and runs what has room;
 * a stopping server keeps it in the queue file instead. */
static void drain_inbox(void *arg)
{
    (void)arg;
    if (take_inbox() == 0 || !started)
        return;
    if (zf_srv->state != ZF_RUNNING) {
        save_queue();
        return;
    }
    for (struct queue *q = queues; q; q = q->next)
        schedule(q);
}

/* ------------------------------------------------------------- module */

static int task_configure(struct zf_server *srv)
{
    if (task_cfg.concurrency < 0) {
        zf_log(ZF_LOG_ERROR, NULL, "tasks.concurrency must not be negative");
        return ZF_ERROR;
    }
    for (size_t i = 0; i < task_cfg.queue_concurrency.n; i++) {
        const char *e = task_cfg.queue_concurrency.v[i];
        const char *eq = strchr(e, '=');
        char *end;
        long v = eq ? strtol(eq + 1, &end, 10) : -1;
        if (!eq || eq == e || end == eq + 1 || *end || v < 0) {
            zf_log(ZF_LOG_ERROR, NULL, "tasks.queue_concurrency: \"%s\": expected NAME=N", e);
            return ZF_ERROR;
        }
    }
    return srv->nactive > 0 ? ZF_OK : ZF_DECLINED;
}

static void task_metrics(struct zf_metrics *m, void *arg)
{
    (void)arg;
    char name[128], labels[160];
    for (struct queue *q = queues; q; q = q->next) {
        snprintf(labels, sizeof labels, "queue=\"%s\"",
                 zf_metrics_escape(name, sizeof name, q->name));
        zf_metrics_gauge(m, "zfront_tasks_queued", "Tasks (zfront.enqueue) waiting, by queue.",
                         labels, (double)q->pending);
        zf_metrics_gauge(m, "zfront_tasks_running", "Tasks running, by queue.", labels,
                         (double)q->running);
    }
}

static int task_start(struct zf_server *srv)
{
    (void)srv;
    zf_metrics_register(task_metrics, NULL);
    if (load_pending) {
        load_pending = 0;
        load_queue();
    }
    started = 1;
    take_inbox(); /* tasks queued while the app loaded */
    for (struct queue *q = queues; q; q = q->next)
        schedule(q);
    return ZF_OK;
}

static void task_stop(struct zf_server *srv, int graceful)
{
    (void)srv;
    (void)graceful;
    take_inbox();
    save_queue();
}

static size_t task_active(struct zf_server *srv)
{
    (void)srv;
    return (size_t)running_total;
}

static void task_stats(struct zf_server *srv, struct evbuffer *out)
{
    (void)srv;
    for (struct queue *q = queues; q; q = q->next)
        evbuffer_add_printf(out, "task [%s]: %zu queued, %ld running\n", q->name, q->pending,
                            q->running);
}

const struct zf_module zf_task_module = {
    .name = "tasks",
    .keys = task_keys,
    .configure = task_configure,
    .start = task_start,
    .stop = task_stop,
    .active = task_active,
    .stats = task_stats,
};
