/* The topic hub (hub.h): a hash table of topics, each with its exact
 * subscriptions, a bounded ring of past events and the newest id heard from
 * each origin; one list of prefix subscriptions. Local ids count by one per
 * topic; a topic evicted and made again starts after the newest id of any
 * topic forgotten, so it never reuses an id. */
#include "hub.h"
#include "metrics.h"

#include <event2/buffer.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "server.h"

struct zf_hub_config zf_hub_cfg;

static const struct zf_cfg_key hub_keys[] = {
    {"hub.history", ZF_CFG_INT, &zf_hub_cfg.history, "100", "--hub-history",
     "Events kept per topic so that a reconnecting client resumes without loss; older "
     "positions get a `gap` message. 0: no history."},
    {"hub.max_topics", ZF_CFG_INT, &zf_hub_cfg.max_topics, "10000", NULL,
     "Topics kept at once (with their history); beyond it the least recently published "
     "topic without subscribers is forgotten."},
    {"hub.history_memory", ZF_CFG_SIZE, &zf_hub_cfg.history_memory, "64m", NULL,
     "Bytes of event payload kept in all histories together; beyond it the oldest events of "
     "the least recently published topics are dropped (a resume from them gets a gap)."},
    {"hub.max_origins", ZF_CFG_INT, &zf_hub_cfg.max_origins, "16", NULL,
     "Origins (instance starts) per topic whose newest id the hub keeps, so that a resume "
     "can prove it missed nothing; also the most positions one resume (`since` list) may "
     "name. A resume naming an origin the topic no longer follows gets a `gap`."},
    {"hub.max_event", ZF_CFG_SIZE, &zf_hub_cfg.max_event, "1m", NULL,
     "Largest event payload (JSON text) that may be published."},
    {NULL, 0, NULL, NULL, NULL, NULL},
};

void zf_hub_config_register(void)
{
    zf_config_register(hub_keys);
}

/* The newest id of one origin heard on a topic. */
struct origin_rec {
    uint64_t origin;
    uint64_t newest;
    uint64_t heard; /* hub.published when last heard: the least recent is forgotten */
};

struct topic {
    char *name;
    struct topic *hnext;         /* hash chain */
    struct topic *lprev, *lnext; /* most recently published first */
    uint64_t last_id;            /* newest local id given here */
    struct zf_hub_event **hist;  /* ring of hcap */
    size_t hcap, hstart, hn;
    struct zf_hub_sub *subs; /* exact subscriptions */
    size_t nsubs;
    struct origin_rec *origins; /* up to hub.max_origins */
    size_t norigins;
};

struct zf_hub_sub {
    struct zf_hub_subscriber *who;
    struct topic *topic;            /* exact subscription, or NULL for a pattern */
    char *pattern;                  /* prefix patterns (with the '*'); NULL when exact */
    struct zf_hub_sub *prev, *next; /* on the topic's list or the pattern list */
    struct zf_hub_sub *snext;       /* the subscriber's list, then the garbage list */
    int dead;
};

static struct {
    int ready;
    uint64_t epoch;
    uint64_t hist_bytes;   /* payload bytes held by the histories */
    uint64_t evicted_upto; /* newest id of any topic forgotten */
    struct topic **table;
    size_t nbuckets, ntopics;
    struct topic *lru_head, *lru_tail;
    struct zf_hub_sub *patterns;
    size_t nsubs;
    int delivering;             /* depth of deliveries in progress */
    struct zf_hub_sub *garbage; /* unsubscribed during a delivery */
    uint64_t published, delivered, gaps, evicted, dropped;
} hub;

static atomic_size_t events_alive;

/* ------------------------------------------------------------ events */

static void free_audience(char **a)
{
    if (!a)
        return;
    for (char **p = a; *p; p++)
        free(*p);
    free(a);
}

struct zf_hub_event *zf_hub_event_new(const char *topic, const char *data, size_t len,
                                      const char *const *audience)
{
    struct zf_hub_event *ev = calloc(1, sizeof *ev);
    if (!ev)
        return NULL;
    ev->refs = 1;
    ev->topic = strdup(topic);
    ev->data = malloc(len + 1);
    if (!ev->topic || !ev->data)
        goto fail;
    memcpy(ev->data, data, len);
    ev->data[len] = 0;
    ev->len = len;
    if (audience && audience[0]) {
        size_t n = 0;
        while (audience[n])
            n++;
        ev->audience = calloc(n + 1, sizeof *ev->audience);
        if (!ev->audience)
            goto fail;
        for (size_t i = 0; i < n; i++)
            if (!(ev->audience[i] = strdup(audience[i])))
                goto fail;
    }
    atomic_fetch_add(&events_alive, 1);
    return ev;
fail:
    free(ev->topic);
    free(ev->data);
    free_audience(ev->audience);
    free(ev);
    return NULL;
}

void zf_hub_event_ref(struct zf_hub_event *ev)
{
    ev->refs++;
}

void zf_hub_event_unref(struct zf_hub_event *ev)
{
    if (!ev || --ev->refs > 0)
        return;
    free(ev->topic);
    free(ev->data);
    free(ev->encoded);
    free_audience(ev->audience);
    free(ev);
    atomic_fetch_sub(&events_alive, 1);
}

int zf_hub_audience_match(const struct zf_hub_event *ev, char *const *tokens, int all)
{
    if (!ev->audience || all)
        return 1;
    if (!tokens)
        return 0;
    for (char *const *a = ev->audience; *a; a++)
        for (char *const *t = tokens; *t; t++)
            if (strcmp(*a, *t) == 0)
                return 1;
    return 0;
}

int zf_hub_topic_is_local(const char *topic)
{
    return strncmp(topic, ZF_HUB_LOCAL_PREFIX, sizeof ZF_HUB_LOCAL_PREFIX - 1) == 0;
}

int zf_hub_pattern_match(const char *pattern, const char *topic)
{
    size_t n = strlen(pattern);
    if (n && pattern[n - 1] == '*')
        return strncmp(pattern, topic, n - 1) == 0;
    return strcmp(pattern, topic) == 0;
}

static int is_prefix_pattern(const char *pattern)
{
    size_t n = strlen(pattern);
    return n && pattern[n - 1] == '*';
}

/* ------------------------------------------------------------ topics */

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static struct topic *find_topic(const char *name)
{
    if (!hub.nbuckets)
        return NULL;
    for (struct topic *t = hub.table[hash(name) % hub.nbuckets]; t; t = t->hnext)
        if (strcmp(t->name, name) == 0)
            return t;
    return NULL;
}

static void lru_unlink(struct topic *t)
{
    if (t->lprev)
        t->lprev->lnext = t->lnext;
    else
        hub.lru_head = t->lnext;
    if (t->lnext)
        t->lnext->lprev = t->lprev;
    else
        hub.lru_tail = t->lprev;
    t->lprev = t->lnext = NULL;
}

static void lru_push(struct topic *t)
{
    t->lnext = hub.lru_head;
    t->lprev = NULL;
    if (hub.lru_head)
        hub.lru_head->lprev = t;
    hub.lru_head = t;
    if (!hub.lru_tail)
        hub.lru_tail = t;
}

static size_t event_size(const struct zf_hub_event *ev)
{
    return ev->len + strlen(ev->topic) + sizeof *ev;
}

static void topic_free(struct topic *t)
{
    for (size_t i = 0; i < t->hn; i++) {
        hub.hist_bytes -= event_size(t->hist[(t->hstart + i) % t->hcap]);
        zf_hub_event_unref(t->hist[(t->hstart + i) % t->hcap]);
    }
    free(t->hist);
    free(t->origins);
    free(t->name);
    free(t);
}

static void topic_remove(struct topic *t)
{
    struct topic **pp = &hub.table[hash(t->name) % hub.nbuckets];
    while (*pp != t)
        pp = &(*pp)->hnext;
    *pp = t->hnext;
    lru_unlink(t);
    hub.ntopics--;
    if (t->last_id > hub.evicted_upto)
        hub.evicted_upto = t->last_id;
    topic_free(t);
}

/* Forgets the least recently published topic nobody subscribes to, to stay
 * within hub.max_topics. */
static void evict_one(void)
{
    for (struct topic *t = hub.lru_tail; t; t = t->lprev) {
        if (t->nsubs == 0) {
            hub.evicted++;
            topic_remove(t);
            return;
        }
    }
}

static int grow_table(void)
{
    size_t n = hub.nbuckets ? hub.nbuckets * 2 : 64;
    struct topic **table = calloc(n, sizeof *table);
    if (!table)
        return ZF_ERROR;
    for (size_t i = 0; i < hub.nbuckets; i++) {
        struct topic *t = hub.table[i];
        while (t) {
            struct topic *next = t->hnext;
            size_t b = hash(t->name) % n;
            t->hnext = table[b];
            table[b] = t;
            t = next;
        }
    }
    free(hub.table);
    hub.table = table;
    hub.nbuckets = n;
    return ZF_OK;
}

/* Returns the topic, made when missing; NULL when out of memory. */
static struct topic *get_topic(const char *name)
{
    struct topic *t = find_topic(name);
    if (t)
        return t;
    if (zf_hub_cfg.max_topics > 0 && hub.ntopics >= (size_t)zf_hub_cfg.max_topics)
        evict_one();
    if (hub.ntopics >= hub.nbuckets && grow_table() != ZF_OK)
        return NULL;
    t = calloc(1, sizeof *t);
    if (!t || !(t->name = strdup(name))) {
        free(t);
        return NULL;
    }
    /* a topic forgotten earlier may have had events: positions before
     * this point must resume as a gap, never as "nothing missed" */
    t->last_id = hub.evicted_upto;
    size_t b = hash(name) % hub.nbuckets;
    t->hnext = hub.table[b];
    hub.table[b] = t;
    hub.ntopics++;
    lru_push(t);
    return t;
}

static void history_drop_oldest(struct topic *t)
{
    struct zf_hub_event *ev = t->hist[t->hstart];
    hub.hist_bytes -= event_size(ev);
    zf_hub_event_unref(ev);
    t->hstart = (t->hstart + 1) % t->hcap;
    t->hn--;
}

/* Keeps the histories within hub.history_memory: drops the oldest events
 * of the least recently published topics first. */
static void history_trim(void)
{
    struct topic *t = hub.lru_tail;
    while (zf_hub_cfg.history_memory && hub.hist_bytes > zf_hub_cfg.history_memory && t) {
        if (t->hn)
            history_drop_oldest(t);
        else
            t = t->lprev;
    }
}

static void history_add(struct topic *t, struct zf_hub_event *ev)
{
    size_t cap = zf_hub_cfg.history > 0 ? (size_t)zf_hub_cfg.history : 0;
    if (cap == 0)
        return;
    if (!t->hist) {
        t->hist = calloc(cap, sizeof *t->hist);
        if (!t->hist)
            return; /* no history for this topic: resumers get a gap */
        t->hcap = cap;
    }
    if (t->hn == t->hcap)
        history_drop_oldest(t);
    zf_hub_event_ref(ev);
    t->hist[(t->hstart + t->hn) % t->hcap] = ev;
    t->hn++;
    hub.hist_bytes += event_size(ev);
    history_trim();
}

static struct zf_hub_event *hist_at(struct topic *t, size_t i)
{
    return t->hist[(t->hstart + i) % t->hcap];
}

/* ------------------------------------------------------------ delivery */

static void deliver_to(struct zf_hub_sub *sub, struct zf_hub_event *ev)
{
    struct zf_hub_subscriber *s = sub->who;
    if (sub->dead || !zf_hub_audience_match(ev, s->tokens, s->all_audiences))
        return;
    hub.delivered++;
    s->deliver(s, ev);
}

static void unlink_sub(struct zf_hub_sub *sub)
{
    struct zf_hub_sub **head = sub->topic ? &sub->topic->subs : &hub.patterns;
    if (sub->prev)
        sub->prev->next = sub->next;
    else
        *head = sub->next;
    if (sub->next)
        sub->next->prev = sub->prev;
    if (sub->topic)
        sub->topic->nsubs--;
    hub.nsubs--;
    free(sub->pattern);
    free(sub);
}

static void end_delivery(void)
{
    if (--hub.delivering > 0)
        return;
    while (hub.garbage) {
        struct zf_hub_sub *sub = hub.garbage;
        hub.garbage = sub->snext;
        unlink_sub(sub);
    }
}

static void deliver(struct topic *t, struct zf_hub_event *ev)
{
    hub.delivering++;
    for (struct zf_hub_sub *sub = t->subs; sub; sub = sub->next)
        deliver_to(sub, ev);
    for (struct zf_hub_sub *sub = hub.patterns; sub; sub = sub->next)
        if (zf_hub_pattern_match(sub->pattern, ev->topic))
            deliver_to(sub, ev);
    end_delivery();
}

static size_t max_origins(void)
{
    return zf_hub_cfg.max_origins > 0 ? (size_t)zf_hub_cfg.max_origins : 1;
}

static struct origin_rec *find_origin(struct topic *t, uint64_t origin)
{
    for (size_t i = 0; i < t->norigins; i++)
        if (t->origins[i].origin == origin)
            return &t->origins[i];
    return NULL;
}

/* Notes that the topic heard `id` of `origin`. Beyond hub.max_origins the
 * least recently heard other origin is forgotten (never this instance's own:
 * its newest id is t->last_id anyway): a resume naming it then gets a gap. */
static void origin_heard(struct topic *t, uint64_t origin, uint64_t id)
{
    struct origin_rec *r = find_origin(t, origin);
    if (!r) {
        if (t->norigins < max_origins()) {
            struct origin_rec *o = realloc(t->origins, (t->norigins + 1) * sizeof *o);
            if (!o) {
                /* cannot follow it: forget the least recent below, as when full */
                if (!t->norigins)
                    return;
            } else {
                t->origins = o;
                r = &t->origins[t->norigins++];
            }
        }
        if (!r) {
            for (size_t i = 0; i < t->norigins; i++)
                if (t->origins[i].origin != hub.epoch && (!r || t->origins[i].heard < r->heard))
                    r = &t->origins[i];
            if (!r)
                return;
        }
        r->origin = origin;
        r->newest = 0;
    }
    if (id > r->newest)
        r->newest = id;
    r->heard = hub.published;
}

/* Records and delivers ev. An event without origin is this instance's: it
 * gets the next id of its topic here. Takes no reference. */
static int publish_event(struct zf_hub_event *ev)
{
    struct topic *t = get_topic(ev->topic);
    if (!t)
        return ZF_ERROR;
    if (!ev->origin) {
        ev->origin = hub.epoch;
        ev->id = ++t->last_id;
    }
    if (hub.lru_head != t) {
        lru_unlink(t);
        lru_push(t);
    }
    hub.published++;
    origin_heard(t, ev->origin, ev->id);
    history_add(t, ev);
    deliver(t, ev);
    return ZF_OK;
}

int zf_hub_publish_local(const char *topic, const char *data, size_t len,
                         const char *const *audience, struct zf_hub_pos *pos)
{
    if (!topic || !*topic || (zf_hub_cfg.max_event && len > zf_hub_cfg.max_event))
        return ZF_ERROR;
    struct zf_hub_event *ev = zf_hub_event_new(topic, data, len, audience);
    if (!ev)
        return ZF_ERROR;
    int rc = publish_event(ev);
    if (rc == ZF_OK && pos) {
        pos->origin = ev->origin;
        pos->id = ev->id;
    }
    zf_hub_event_unref(ev);
    return rc;
}

int zf_hub_inject(struct zf_hub_event *ev)
{
    if (!ev->origin || ev->origin == hub.epoch)
        return ZF_DECLINED; /* ours came back, or no position: never a second id */
    struct topic *t = find_topic(ev->topic);
    for (size_t i = 0; t && i < t->hn; i++) {
        struct zf_hub_event *h = hist_at(t, i);
        if (h->origin == ev->origin && h->id == ev->id)
            return ZF_DECLINED;
    }
    return publish_event(ev);
}

size_t zf_hub_positions(const char *topic, struct zf_hub_pos *out, size_t max)
{
    struct topic *t = find_topic(topic);
    size_t n = 0;
    for (size_t i = 0; t && i < t->norigins && n < max; i++) {
        out[n].origin = t->origins[i].origin;
        out[n].id = t->origins[i].newest;
        n++;
    }
    return n;
}

/* ------------------------------------------------------------ subscriptions */

void zf_hub_subscriber_init(struct zf_hub_subscriber *s, zf_hub_deliver_fn deliver,
                            zf_hub_gap_fn gap)
{
    memset(s, 0, sizeof *s);
    s->deliver = deliver;
    s->gap = gap;
}

static struct zf_hub_sub *find_sub(struct zf_hub_subscriber *s, const char *pattern)
{
    for (struct zf_hub_sub *sub = s->subs; sub; sub = sub->snext) {
        const char *p = sub->topic ? sub->topic->name : sub->pattern;
        if (strcmp(p, pattern) == 0)
            return sub;
    }
    return NULL;
}

static void pos_of(struct zf_hub_event *ev, struct zf_hub_pos *p)
{
    p->origin = ev ? ev->origin : 0;
    p->id = ev ? ev->id : 0;
}

/* The position `since` lists for ev's origin, or NULL. */
static const struct zf_hub_pos *listed(const struct zf_hub_pos *since, size_t n,
                                       const struct zf_hub_event *ev)
{
    for (size_t i = 0; i < n; i++)
        if (since[i].origin == ev->origin)
            return &since[i];
    return NULL;
}

/* Whether the history of t holds every event of p's origin after p: the
 * origin's ids on a topic count by one and the history keeps each origin's
 * events in order, so they must be p->id + 1, p->id + 2, ... up to the
 * newest id heard from it. An origin the topic does not follow (never heard,
 * or forgotten) cannot be proven; a position of ours newer than any id we
 * gave is not one of ours. Also sets *anchor to the index of the newest kept
 * event of that origin at or before p (-1 when none: p is older than the
 * history). */
static int continuous(struct topic *t, const struct zf_hub_pos *p, long *anchor)
{
    struct origin_rec *r = find_origin(t, p->origin);
    uint64_t newest = r ? r->newest : 0;
    *anchor = -1;
    if (p->origin == hub.epoch) {
        if (p->id > t->last_id)
            return 0;
        newest = t->last_id;
    } else if (!r) {
        return 0;
    }
    uint64_t next = p->id + 1;
    for (size_t i = 0; i < t->hn; i++) {
        struct zf_hub_event *ev = hist_at(t, i);
        if (ev->origin != p->origin)
            continue;
        if (ev->id <= p->id)
            *anchor = (long)i;
        else if (ev->id != next++)
            return 0;
    }
    /* a newer position than heard here is one still on its way (the client
     * saw it elsewhere first): nothing of it to replay yet */
    return next > newest;
}

/* Where p is in the history of t: its index; -1 when it is older than the
 * history (of this instance or an origin t follows, not newer than the
 * newest id heard, and not kept: evicted, or lost on the way, where
 * replaying more is the safe side); -2 when it cannot be placed (an origin
 * t does not follow, or an event not arrived yet). */
static long locate(struct topic *t, const struct zf_hub_pos *p)
{
    for (size_t i = 0; i < t->hn; i++) {
        struct zf_hub_event *ev = hist_at(t, i);
        if (ev->origin == p->origin && ev->id == p->id)
            return (long)i;
    }
    struct origin_rec *r = find_origin(t, p->origin);
    if (p->origin == hub.epoch)
        return p->id <= t->last_id ? -1 : -2;
    return r && p->id <= r->newest ? -1 : -2;
}

/* Replays the history of t after the positions `since` (at most one per
 * origin) to s, or reports a gap. Of a listed origin, the events after its
 * position; of the others, the events kept after `from` (the first event
 * the subscriber saw) or, when that cannot be placed here, after the oldest
 * listed position. O(history x n). */
static void replay(struct zf_hub_subscriber *s, struct zf_hub_sub *sub, struct topic *t,
                   const char *name, const struct zf_hub_pos *since, size_t n,
                   const struct zf_hub_pos *from)
{
    long start = LONG_MAX;
    for (size_t i = 0; i < n; i++) {
        long anchor;
        if (!continuous(t, &since[i], &anchor)) {
            hub.gaps++;
            if (s->gap) {
                struct zf_hub_pos first, last;
                pos_of(t->hn ? hist_at(t, 0) : NULL, &first);
                pos_of(t->hn ? hist_at(t, t->hn - 1) : NULL, &last);
                s->gap(s, name, &since[i], &first, &last);
            }
            return;
        }
        if (anchor < start)
            start = anchor;
    }
    long f = from ? locate(t, from) : -2;
    if (f >= -1 && f < start)
        start = f;
    hub.delivering++;
    for (size_t i = 0; i < t->hn; i++) {
        struct zf_hub_event *ev = hist_at(t, i);
        const struct zf_hub_pos *p = listed(since, n, ev);
        if (p ? ev->id > p->id : (long)i > start)
            deliver_to(sub, ev);
    }
    end_delivery();
}

int zf_hub_subscribe_since(struct zf_hub_subscriber *s, const char *pattern,
                           const struct zf_hub_pos *since, size_t n, const struct zf_hub_pos *from)
{
    if (!pattern || !*pattern || (n && !since) || n > max_origins() || (from && !from->origin))
        return ZF_ERROR;
    for (size_t i = 0; i < n; i++)
        if (!since[i].origin)
            return ZF_ERROR;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (since[i].origin == since[j].origin)
                return ZF_ERROR;
    int prefix = is_prefix_pattern(pattern);
    struct zf_hub_sub *sub = find_sub(s, pattern);
    if (!sub) {
        sub = calloc(1, sizeof *sub);
        if (!sub)
            return ZF_ERROR;
        struct zf_hub_sub **head = &hub.patterns;
        if (prefix) {
            if (!(sub->pattern = strdup(pattern))) {
                free(sub);
                return ZF_ERROR;
            }
        } else {
            if (!(sub->topic = get_topic(pattern))) {
                free(sub);
                return ZF_ERROR;
            }
            head = &sub->topic->subs;
            sub->topic->nsubs++;
        }
        sub->who = s;
        sub->next = *head;
        if (*head)
            (*head)->prev = sub;
        *head = sub;
        sub->snext = s->subs;
        s->subs = sub;
        s->nsubs++;
        hub.nsubs++;
    }
    if ((n || from) && !prefix)
        replay(s, sub, sub->topic, pattern, since, n, from);
    return ZF_OK;
}

int zf_hub_subscribe(struct zf_hub_subscriber *s, const char *pattern,
                     const struct zf_hub_pos *since)
{
    return zf_hub_subscribe_since(s, pattern, since, since && since->origin ? 1 : 0, NULL);
}

/* Takes sub off its subscriber's list (done by the caller) and unlinks it
 * now, or after the delivery in progress. */
static void drop_sub(struct zf_hub_sub *sub)
{
    if (hub.delivering) {
        sub->dead = 1;
        sub->snext = hub.garbage;
        hub.garbage = sub;
    } else {
        unlink_sub(sub);
    }
}

int zf_hub_unsubscribe(struct zf_hub_subscriber *s, const char *pattern)
{
    for (struct zf_hub_sub **pp = &s->subs; *pp; pp = &(*pp)->snext) {
        struct zf_hub_sub *sub = *pp;
        const char *p = sub->topic ? sub->topic->name : sub->pattern;
        if (strcmp(p, pattern) == 0) {
            *pp = sub->snext;
            s->nsubs--;
            drop_sub(sub);
            return ZF_OK;
        }
    }
    return ZF_DECLINED;
}

void zf_hub_unsubscribe_all(struct zf_hub_subscriber *s)
{
    while (s->subs) {
        struct zf_hub_sub *sub = s->subs;
        s->subs = sub->snext;
        drop_sub(sub);
    }
    s->nsubs = 0;
}

/* ------------------------------------------------------------ life, stats */

int zf_hub_init(void)
{
    if (hub.ready)
        return ZF_OK;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    /* microseconds since 1970 mixed with the pid: distinct per start, even
     * for several instances started in the same microsecond */
    hub.epoch =
        ((uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec) ^ ((uint64_t)getpid() << 48);
    if (hub.epoch == 0)
        hub.epoch = 1;
    hub.ready = 1;
    return grow_table();
}

uint64_t zf_hub_epoch(void)
{
    return hub.epoch;
}

void zf_hub_free(void)
{
    while (hub.patterns)
        unlink_sub(hub.patterns);
    for (size_t i = 0; i < hub.nbuckets; i++) {
        while (hub.table[i]) {
            struct topic *t = hub.table[i];
            hub.table[i] = t->hnext;
            while (t->subs)
                unlink_sub(t->subs);
            topic_free(t);
        }
    }
    free(hub.table);
    memset(&hub, 0, sizeof hub);
}

size_t zf_hub_topic_count(void)
{
    return hub.ntopics;
}

size_t zf_hub_sub_count(void)
{
    return hub.nsubs;
}

uint64_t zf_hub_history_bytes(void)
{
    return hub.hist_bytes;
}

size_t zf_hub_event_count(void)
{
    return atomic_load(&events_alive);
}

void zf_hub_stats(struct evbuffer *out)
{
    evbuffer_add_printf(out,
                        "hub.topics: %zu\nhub.subscriptions: %zu\nhub.published: %llu\n"
                        "hub.delivered: %llu\nhub.gaps: %llu\nhub.topics_evicted: %llu\n"
                        "hub.dropped: %llu\nhub.history_bytes: %llu\n",
                        hub.ntopics, hub.nsubs, (unsigned long long)hub.published,
                        (unsigned long long)hub.delivered, (unsigned long long)hub.gaps,
                        (unsigned long long)hub.evicted, (unsigned long long)hub.dropped,
                        (unsigned long long)hub.hist_bytes);
}

void zf_hub_metrics(struct zf_metrics *m)
{
    zf_metrics_gauge(m, "zfront_hub_topics", "Topics the hub knows.", NULL, (double)hub.ntopics);
    zf_metrics_gauge(m, "zfront_hub_subscriptions",
                     "Subscriptions of every kind (WebSocket, Python, bus, status page).", NULL,
                     (double)hub.nsubs);
    zf_metrics_counter(m, "zfront_hub_events_published_total", "Events published on this instance.",
                       NULL, hub.published);
    zf_metrics_counter(m, "zfront_hub_deliveries_total", "Events delivered to subscribers.", NULL,
                       hub.delivered);
    zf_metrics_counter(m, "zfront_hub_gaps_total",
                       "Resumes that could not replay every missed event.", NULL, hub.gaps);
    zf_metrics_counter(m, "zfront_hub_topics_evicted_total",
                       "Unsubscribed topics forgotten beyond hub.max_topics.", NULL, hub.evicted);
    zf_metrics_counter(m, "zfront_hub_events_dropped_total",
                       "Events queued from another thread that could not be published.", NULL,
                       hub.dropped);
    zf_metrics_gauge(m, "zfront_hub_history_bytes", "Payload bytes the histories hold.", NULL,
                     (double)hub.hist_bytes);
}

/* ------------------------------------------------------------ any thread */

static void publish_queued(void *arg)
{
    struct zf_hub_event *ev = arg;
    if (!hub.ready) {
        zf_hub_event_unref(ev);
        return;
    }
    if (publish_event(ev) != ZF_OK) {
        hub.dropped++;
        zf_log(ZF_LOG_ERROR, NULL, "hub: out of memory: event on \"%s\" dropped", ev->topic);
    }
    zf_hub_event_unref(ev);
}

int zf_hub_publish(const char *topic, const char *data, size_t len, const char *const *audience)
{
    if (!topic || !*topic || (zf_hub_cfg.max_event && len > zf_hub_cfg.max_event))
        return ZF_ERROR;
    struct zf_hub_event *ev = zf_hub_event_new(topic, data, len, audience);
    if (!ev)
        return ZF_ERROR;
    if (zf_loop_call(publish_queued, ev) != ZF_OK) {
        zf_hub_event_unref(ev);
        return ZF_ERROR;
    }
    return ZF_OK;
}
