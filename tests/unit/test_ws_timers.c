/* The WebSocket sessions' deadline lists (src/proto/ws/timers.c): deadlines
 * set out of order within a kind fire in deadline order (inserted from the
 * tail), none fires early, one taken out never fires, a callback may set its
 * timer again as another kind, and the module's libevent timer is freed once
 * nothing waits. */
#include <time.h>

#include "../../src/core/zfront.h"
#include "../../src/proto/ws/timers.h"
#include "check.h"

#define N 7

static struct zf__ws_timer t[N];
static uint64_t due[N];  /* when each was set to fire (CLOCK_MONOTONIC µs) */
static int fired[2 * N]; /* indexes, in the order they fired, per kind below */
static int kinds[2 * N];
static size_t nfired;
static int early;
static struct event_base *base;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void fire(struct zf__ws_timer *x)
{
    int i = (int)(x - t);
    if (now_us() < due[i])
        early++;
    static int rearmed;
    if (nfired == 2 * N)
        return; /* fired too often: the checks below fail */
    fired[nfired] = i;
    kinds[nfired++] = x->kind;  /* already out of its list: NONE */
    if (i == 1 && !rearmed++) { /* the first ping: now wait for the pong */
        due[i] = now_us() + 5000;
        CHECK_EQ_INT(zf__ws_timer_set(x, base, fire, ZF_WS_TIMER_PONG, 5), ZF_OK);
    }
}

static void set(int i, enum zf__ws_timer_kind kind, uint64_t ms)
{
    due[i] = now_us() + ms * 1000;
    CHECK_EQ_INT(zf__ws_timer_set(&t[i], base, fire, kind, ms), ZF_OK);
}

int main(void)
{
    base = event_base_new();
    CHECK(base != NULL);
    /* one kind, durations out of order (as after a changed duration) */
    set(0, ZF_WS_TIMER_PING, 60);
    set(1, ZF_WS_TIMER_PING, 20);
    set(2, ZF_WS_TIMER_PING, 40);
    set(3, ZF_WS_TIMER_PING, 20);
    set(4, ZF_WS_TIMER_PING, 80);
    set(5, ZF_WS_TIMER_CLOSE, 30);
    set(6, ZF_WS_TIMER_PONG, 10);
    CHECK_EQ_INT(zf__ws_timers_waiting(), 7);
    set(2, ZF_WS_TIMER_NONE, 0); /* taken out: never fires */
    CHECK_EQ_INT(zf__ws_timers_waiting(), 6);
    set(6, ZF_WS_TIMER_PONG, 0); /* ms 0 takes it out too */
    set(6, ZF_WS_TIMER_PONG, 10);
    CHECK_EQ_INT(zf__ws_timers_waiting(), 6);

    event_base_dispatch(base); /* returns when no deadline is left */

    CHECK_EQ_INT(zf__ws_timers_waiting(), 0);
    CHECK_EQ_INT(early, 0);
    CHECK_EQ_INT(nfired, 7); /* six, and 1 again as a pong */
    /* the pings in deadline order (ties in the order they were set) */
    int pings[4], np = 0, one = 0;
    for (size_t k = 0; k < nfired; k++) {
        CHECK_EQ_INT(kinds[k], ZF_WS_TIMER_NONE);
        CHECK(fired[k] != 2);
        if (fired[k] == 1 && one++)
            continue; /* its pong */
        if (fired[k] != 5 && fired[k] != 6 && np < 4)
            pings[np++] = fired[k];
    }
    CHECK_EQ_INT(np, 4);
    CHECK_EQ_INT(one, 2);
    CHECK_EQ_INT(pings[0], 1);
    CHECK_EQ_INT(pings[1], 3);
    CHECK_EQ_INT(pings[2], 0);
    CHECK_EQ_INT(pings[3], 4);

    zf__ws_timers_idle(); /* frees the libevent timer (LeakSanitizer) */
    event_base_free(base);
    return zf_test_done("ws_timers");
}
