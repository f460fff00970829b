/* WebSocket session deadlines: one list per kind, one libevent timer for
 * all (timers.h says why). */
#include "timers.h"

#include <time.h>

#include "../../core/zfront.h"

static struct {
    struct zf__ws_timer *head[ZF_WS_TIMER_KINDS], *tail[ZF_WS_TIMER_KINDS];
    size_t waiting;
    struct event *ev;  /* fires for the earliest head */
    uint64_t armed_us; /* when ev is set to fire; 0: not set */
    zf__ws_timer_fn fn;
} tq;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void unlink_timer(struct zf__ws_timer *t)
{
    if (t->kind == ZF_WS_TIMER_NONE)
        return;
    if (t->prev)
        t->prev->next = t->next;
    else
        tq.head[t->kind] = t->next;
    if (t->next)
        t->next->prev = t->prev;
    else
        tq.tail[t->kind] = t->prev;
    t->prev = t->next = NULL;
    t->kind = ZF_WS_TIMER_NONE;
    tq.waiting--;
}

/* Inserts t in its list in deadline order, searching from the tail: a
 * deadline set now with the list's one duration belongs there. */
static void link_timer(struct zf__ws_timer *t)
{
    struct zf__ws_timer *after = tq.tail[t->kind];
    while (after && after->due_us > t->due_us)
        after = after->prev;
    t->prev = after;
    t->next = after ? after->next : tq.head[t->kind];
    if (t->next)
        t->next->prev = t;
    else
        tq.tail[t->kind] = t;
    if (after)
        after->next = t;
    else
        tq.head[t->kind] = t;
    tq.waiting++;
}

/* Sets the libevent timer for the earliest head, unless it already fires
 * at or before it (firing early is harmless: the callback sets it again). */
static void arm(void)
{
    uint64_t first = 0;
    for (int k = 1; k < ZF_WS_TIMER_KINDS; k++)
        if (tq.head[k] && (!first || tq.head[k]->due_us < first))
            first = tq.head[k]->due_us;
    if (!first || (tq.armed_us && tq.armed_us <= first))
        return;
    uint64_t now = now_us(), wait = first > now ? first - now : 0;
    struct timeval tv = {(time_t)(wait / 1000000u), (suseconds_t)(wait % 1000000u)};
    if (evtimer_add(tq.ev, &tv) == 0)
        tq.armed_us = first;
}

static void fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    tq.armed_us = 0;
    uint64_t now = now_us();
    for (int k = 1; k < ZF_WS_TIMER_KINDS; k++) {
        /* what the callback sets again lands after now: not seen here */
        struct zf__ws_timer *t;
        while ((t = tq.head[k]) && t->due_us <= now) {
            unlink_timer(t);
            tq.fn(t);
        }
    }
    arm();
}

int zf__ws_timer_set(struct zf__ws_timer *t, struct event_base *base, zf__ws_timer_fn fn,
                     enum zf__ws_timer_kind kind, uint64_t ms)
{
    unlink_timer(t);
    if (!ms || kind == ZF_WS_TIMER_NONE)
        return ZF_OK;
    if (!tq.ev) {
        if (!(tq.ev = evtimer_new(base, fire, NULL)))
            return ZF_ERROR;
        tq.fn = fn;
        tq.armed_us = 0;
    }
    t->kind = (unsigned char)kind;
    t->due_us = now_us() + ms * 1000u;
    link_timer(t);
    arm();
    return ZF_OK;
}

void zf__ws_timers_idle(void)
{
    if (tq.ev && !tq.waiting) {
        event_free(tq.ev); /* may be the running callback: libevent allows it */
        tq.ev = NULL;
        tq.armed_us = 0;
    }
}

size_t zf__ws_timers_waiting(void)
{
    return tq.waiting;
}
