/* The topic hub: topics, per-topic history, audiences and subscribers of any
 * kind (WebSocket sessions, Python listeners, later the bus).
 *
 * Threads: everything here runs on the loop thread, except zf_hub_publish,
 * which any thread may call (it queues the event for the loop with
 * zf_loop_call and never blocks on the network).
 *
 * Events: a published event is immutable and reference counted (loop thread
 * only). Its payload is opaque bytes to the hub; zfront's subscribers agree
 * that it is one JSON value as text (the WebSocket module embeds it, the
 * Python side json.loads it).
 *
 * Positions (resume): every event carries the epoch of the instance that
 * gave it its id (`origin`, chosen at start-up) and an id that counts by one
 * per event that origin publishes on that topic (1, 2, 3...; a topic this
 * instance forgot and made again continues after the newest id of any
 * forgotten topic, so an id is never reused). The history keeps the events
 * of every origin in arrival order, and the bus keeps each origin's order,
 * so two instances may hold the same events interleaved differently but
 * each origin's events in the same order. What a client has seen of a topic
 * is therefore, per origin, the newest id: a resume names one position per
 * origin (up to hub.max_origins) and gets, in this history's order, every
 * kept event of a named origin after its position, and the events of the
 * origins it does not name that are kept after the first event it saw
 * (or the oldest named position).
 * The hub keeps per topic the newest id heard from each origin (up to
 * hub.max_origins, least recently heard forgotten first), so it can prove
 * that nothing was missed: for each named (origin, id) the history must hold
 * id + 1, id + 2, ... up to the newest heard. When it cannot (evicted, never
 * arrived here, an origin it does not follow, or a position of ours newer
 * than any we gave) the subscriber gets a gap instead of a replay. A
 * position newer than this instance heard of a foreign origin is one still
 * on its way: nothing of that origin is replayed, and events up to it may
 * be delivered again live (clients drop ids they already have).
 *
 * Topics and patterns: a subscription is either an exact topic ("a/b") or a
 * prefix pattern ending in '*' ("a/" + "*" is every topic under "a/"; a lone "*" is
 * every topic). Only exact
 * subscriptions can resume.
 *
 * Audiences: an event may carry audience tokens ("role:Editor",
 * "user:bob"); it then reaches only subscribers holding at least one of
 * them, or subscribers that see every audience (Python listeners, the
 * bus). An event without audience reaches every subscriber of its topic. */
#ifndef ZF_HUB_H
#define ZF_HUB_H

#include <stddef.h>
#include <stdint.h>

#include "zfront.h"

struct evbuffer;

/* ---- configuration ([hub] section) ---- */
struct zf_hub_config {
    long history;            /* events kept per topic for resume (0: none) */
    long max_topics;         /* topics kept at once; unsubscribed ones are evicted */
    uint64_t history_memory; /* payload bytes kept in all histories together */
    uint64_t max_event;      /* largest payload accepted by zf_hub_publish */
    long max_origins;        /* origins followed per topic; positions per resume */
};
extern struct zf_hub_config zf_hub_cfg;

/* Registers the [hub] keys (main.c, before the config is read). */
void zf_hub_config_register(void);

/* One published event. Read-only for everyone after publishing. */
struct zf_hub_event {
    int refs;
    uint64_t origin; /* epoch of the instance that assigned `id` */
    uint64_t id;     /* per-topic, per-origin sequence: 1, 2, 3... */
    char *topic;
    char **audience; /* NULL-terminated tokens; NULL: everyone */
    size_t len;
    char *data; /* payload (a JSON value as text), NUL-terminated */
    /* A subscriber kind may cache its wire encoding here (the WebSocket
     * module's JSON text), built by the first delivery that needs it and
     * freed with the event. */
    char *encoded;
    size_t encoded_len;
};

/* A resume position. origin 0 means "none". */
struct zf_hub_pos {
    uint64_t origin;
    uint64_t id;
};

struct zf_hub_sub;
struct zf_hub_subscriber;

/* Delivers one event to a subscriber (loop thread). The event is borrowed:
 * take a reference with zf_hub_event_ref to keep it. The callback may call
 * zf_hub_unsubscribe_all (the hub defers the unlinking) but must not free
 * the subscriber before that delivery returned. */
typedef void (*zf_hub_deliver_fn)(struct zf_hub_subscriber *s, struct zf_hub_event *ev);
/* Tells an exact subscriber that events after `since` are no longer kept
 * (resume impossible): `first` is the oldest position still in the history
 * (origin 0 when the history is empty) and `last` the newest. */
typedef void (*zf_hub_gap_fn)(struct zf_hub_subscriber *s, const char *topic,
                              const struct zf_hub_pos *since, const struct zf_hub_pos *first,
                              const struct zf_hub_pos *last);

/* Anyone who receives events. Embedded in its owner (a WebSocket session,
 * a Python listener, the bus); set up with zf_hub_subscriber_init. */
struct zf_hub_subscriber {
    zf_hub_deliver_fn deliver;
    zf_hub_gap_fn gap; /* may be NULL */
    /* audience tokens it holds (NULL-terminated, owned by the owner and
     * kept alive while subscribed), or NULL */
    char *const *tokens;
    int all_audiences;       /* sees every event whatever its audience */
    struct zf_hub_sub *subs; /* its subscriptions (hub-owned) */
    size_t nsubs;
};

void zf_hub_subscriber_init(struct zf_hub_subscriber *s, zf_hub_deliver_fn deliver,
                            zf_hub_gap_fn gap);

/* ---- loop thread ---- */

/* Sets up the hub (epoch, tables). Returns ZF_OK or ZF_ERROR. */
int zf_hub_init(void);
/* Frees every topic, event and subscription (subscribers are left as they
 * are: their owners must not use them with the hub afterwards). */
void zf_hub_free(void);
/* This instance's epoch (non-zero). */
uint64_t zf_hub_epoch(void);

/* Subscribes s to `pattern` (exact topic or prefix ending in '*'). With
 * `since` (exact topics only, may be NULL) the events of the history after
 * that position are delivered right away, in order, or s->gap is called
 * when they are not all kept. Subscribing twice to the same pattern is a
 * no-op that still replays. Returns ZF_OK, or ZF_ERROR (out of memory, or
 * an empty pattern). Same as zf_hub_subscribe_since with one position. */
int zf_hub_subscribe(struct zf_hub_subscriber *s, const char *pattern,
                     const struct zf_hub_pos *since);
/* The same with `n` positions (borrowed), at most one per origin: what the
 * subscriber has seen of the topic (see "Positions" above), and `from` (may
 * be NULL): the first event it saw there, which places the origins it does
 * not list (their kept events after `from` are replayed; when `from` is
 * NULL or cannot be placed here, after the oldest listed position; when it
 * is older than the history, all). Replays in this history's order, or
 * calls s->gap once (its `since`: the first position whose continuity
 * cannot be proven) and replays nothing. Returns ZF_OK, or ZF_ERROR (out of
 * memory, an empty pattern, a position with origin 0, two of one origin, or
 * n over hub.max_origins). O(history x n). */
int zf_hub_subscribe_since(struct zf_hub_subscriber *s, const char *pattern,
                           const struct zf_hub_pos *since, size_t n, const struct zf_hub_pos *from);
/* Copies into out (up to max) the newest position heard from each origin
 * the topic follows: where a subscriber that just got a gap can resume
 * from next time. Returns how many. */
size_t zf_hub_positions(const char *topic, struct zf_hub_pos *out, size_t max);
/* Removes one subscription. Returns ZF_OK, or ZF_DECLINED when s had none
 * for that pattern. */
int zf_hub_unsubscribe(struct zf_hub_subscriber *s, const char *pattern);
/* Removes every subscription of s (before its owner frees it). */
void zf_hub_unsubscribe_all(struct zf_hub_subscriber *s);

/* Publishes an event with a new local id and delivers it now. topic and
 * audience are copied; data (len bytes, a JSON value) is copied. audience
 * is NULL-terminated or NULL. *pos (may be NULL) receives its position.
 * Returns ZF_OK or ZF_ERROR (out of memory, empty topic). */
int zf_hub_publish_local(const char *topic, const char *data, size_t len,
                         const char *const *audience, struct zf_hub_pos *pos);
/* Delivers an event that already has its position (from the bus: another
 * instance's origin and id). Takes a reference. Returns ZF_OK, or
 * ZF_DECLINED when that position was already seen (duplicate) or is not
 * another origin's (origin 0 or this instance's epoch). The origin's ids on
 * a topic must count by one for resumes to prove continuity. */
int zf_hub_inject(struct zf_hub_event *ev);

/* Builds an event (one reference, owned by the caller); NULL when out of
 * memory. Copies everything. */
struct zf_hub_event *zf_hub_event_new(const char *topic, const char *data, size_t len,
                                      const char *const *audience);
void zf_hub_event_ref(struct zf_hub_event *ev);
void zf_hub_event_unref(struct zf_hub_event *ev);

/* True when a subscriber holding `tokens` (or all_audiences) may see ev. */
int zf_hub_audience_match(const struct zf_hub_event *ev, char *const *tokens, int all);
/* True when pattern (exact or prefix*) matches topic. */
int zf_hub_pattern_match(const char *pattern, const char *topic);
/* Topics under "zfront/" (ZF_HUB_LOCAL_PREFIX) are zfront's own and
 * describe this instance (the admin status page's "zfront/status"): they
 * are delivered here only, and the bus never carries them. True for such a
 * topic. */
#define ZF_HUB_LOCAL_PREFIX "zfront/"
int zf_hub_topic_is_local(const char *topic);

/* Appends "hub.NAME: VALUE" lines. */
void zf_hub_stats(struct evbuffer *out);
/* Adds the hub's samples (zfront_hub_*) to a metrics collection. */
struct zf_metrics;
void zf_hub_metrics(struct zf_metrics *m);
/* Counters, for tests and stats. */
size_t zf_hub_topic_count(void);
size_t zf_hub_sub_count(void);
size_t zf_hub_event_count(void);     /* events alive */
uint64_t zf_hub_history_bytes(void); /* held by the histories */

/* ---- any thread ---- */

/* Queues an event for the loop, which publishes it with zf_hub_publish_local.
 * Copies everything; never blocks. Returns ZF_OK, or ZF_ERROR (payload over
 * hub.max_event, empty topic, out of memory, or the loop is gone). */
int zf_hub_publish(const char *topic, const char *data, size_t len, const char *const *audience);

#endif
