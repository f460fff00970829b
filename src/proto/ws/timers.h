/* WebSocket session deadlines without a timer event per session (internal
 * to the ws module).
 *
 * A session waits for at most one deadline at a time: the next ping
 * (ws.ping_interval of silence), the pong (ws.pong_timeout) or the end of
 * the close handshake (ws.close_timeout). Each kind has one duration for all
 * sessions, so deadlines of one kind set one after the other come in
 * deadline order: one FIFO list per kind, each session's link embedded in
 * it, and one libevent timer for the earliest head of all lists. A deadline
 * set out of order (a duration that changed) is inserted in order from the
 * tail, which is O(1) when it belongs there.
 *
 * Loop thread only. */
#ifndef ZF_WS_TIMERS_H
#define ZF_WS_TIMERS_H

#include <event2/event.h>
#include <stdint.h>

enum zf__ws_timer_kind {
    ZF_WS_TIMER_NONE,
    ZF_WS_TIMER_PING,  /* ping after silence */
    ZF_WS_TIMER_PONG,  /* the ping's answer */
    ZF_WS_TIMER_CLOSE, /* the close handshake */
    ZF_WS_TIMER_KINDS
};

/* One session's deadline: embedded in the session, zeroed when made. */
struct zf__ws_timer {
    struct zf__ws_timer *prev, *next;
    uint64_t due_us;    /* CLOCK_MONOTONIC */
    unsigned char kind; /* ZF_WS_TIMER_NONE: in no list */
};

/* Called for each deadline reached, already out of its list: it may set the
 * timer again (any kind) or drop the session. */
typedef void (*zf__ws_timer_fn)(struct zf__ws_timer *t);

/* Sets t to fire in ms milliseconds as `kind`, replacing what it waited
 * for; ms 0 or ZF_WS_TIMER_NONE takes it out of its list. The first call
 * makes the module's libevent timer on base, calling fn. Returns ZF_OK, or
 * ZF_ERROR (out of memory, logged by the caller: t is then in no list). */
int zf__ws_timer_set(struct zf__ws_timer *t, struct event_base *base, zf__ws_timer_fn fn,
                     enum zf__ws_timer_kind kind, uint64_t ms);
/* Frees the libevent timer once no deadline is left (the last session
 * went); harmless otherwise. */
void zf__ws_timers_idle(void);
/* Deadlines waiting now (all kinds), for the stats. */
size_t zf__ws_timers_waiting(void);

#endif
