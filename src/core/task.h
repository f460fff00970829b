/* Task requests: internal requests (channel "task") that the application
 * queues with zfront.enqueue(), as collective.taskqueue needed from ZServer.
 *
 * A task is queued from any thread and returns at once. Queued from a worker
 * while it runs a request, it is held until that request's application call
 * returned (Zope's transaction is over), then handed to the loop; from any
 * other thread it goes to the loop at once. On the loop each named queue
 * runs at most tasks.concurrency tasks at a time (per-queue overrides in
 * tasks.queue_concurrency), in order. Tasks still queued when the server
 * stops are written to <server.state_dir>/tasks.queue and queued again at
 * the next start. */
#ifndef ZF_TASK_H
#define ZF_TASK_H

#include <stddef.h>

struct zf_task;

/* Allocates a task (copies every argument). NULL when out of memory. */
struct zf_task *zf_task_new(const char *queue, const char *method, const char *target,
                            const void *body, size_t body_len);
/* Adds a request header (copied). Returns ZF_OK or ZF_ERROR (out of memory). */
int zf_task_add_header(struct zf_task *t, const char *name, size_t nlen, const char *value,
                       size_t vlen);
void zf_task_free(struct zf_task *t);
/* Queues the task (takes ownership). Any thread; never blocks on the
 * network. Deferred while the calling thread is inside
 * zf_task_defer_begin/end. */
void zf_task_submit(struct zf_task *t);

/* Worker thread, around one application call: tasks submitted meanwhile by
 * this thread are held, and handed to the loop by zf_task_defer_end. */
void zf_task_defer_begin(void);
void zf_task_defer_end(void);

#endif
