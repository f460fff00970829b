/* The topic hub: delivery to exact and prefix subscribers, audiences,
 * per-topic ids counting by one, resume from the history and gaps, resume
 * with one position per origin when instances hold events in different
 * orders (and a gap exactly when an event is lost), unsubscribing during a
 * delivery, topic eviction, publishing from another thread through the
 * loop, and nothing left alive at the end. */
#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <string.h>

#include "../../src/core/config.h"
#include "../../src/core/hub.h"
#include "../../src/core/server.h"
#include "check.h"

struct rec {
    struct zf_hub_subscriber sub;
    int n;
    char last_topic[64];
    char last_data[64];
    uint64_t ids[64];
    int gaps;
    struct zf_hub_pos gap_first;
    int unsub_on_deliver;
};

static void on_event(struct zf_hub_subscriber *s, struct zf_hub_event *ev)
{
    struct rec *r = (struct rec *)s;
    if (r->n < 64)
        r->ids[r->n] = ev->id;
    r->n++;
    snprintf(r->last_topic, sizeof r->last_topic, "%s", ev->topic);
    snprintf(r->last_data, sizeof r->last_data, "%s", ev->data);
    if (r->unsub_on_deliver)
        zf_hub_unsubscribe_all(s);
}

static void on_gap(struct zf_hub_subscriber *s, const char *topic, const struct zf_hub_pos *since,
                   const struct zf_hub_pos *first, const struct zf_hub_pos *last)
{
    struct rec *r = (struct rec *)s;
    r->gaps++;
    r->gap_first = *first;
}

static void rec_init(struct rec *r)
{
    memset(r, 0, sizeof *r);
    zf_hub_subscriber_init(&r->sub, on_event, on_gap);
}

static int pub(const char *topic, const char *data, const char *const *aud, struct zf_hub_pos *p)
{
    return zf_hub_publish_local(topic, data, strlen(data), aud, p);
}

static void *thread_publish(void *arg)
{
    for (int i = 0; i < 10; i++)
        zf_hub_publish("t/thread", "1", 1, NULL);
    return arg;
}

int main(void)
{
    zf_hub_config_register();
    CHECK_EQ_INT(zf_config_set("hub.history", "3", "test"), ZF_OK);
    CHECK_EQ_INT(zf_config_set("hub.max_topics", "4", "test"), ZF_OK);
    CHECK_EQ_INT(zf_hub_init(), ZF_OK);
    CHECK(zf_hub_epoch() != 0);

    /* exact and prefix subscriptions; ids increase */
    struct rec a, b, all;
    rec_init(&a);
    rec_init(&b);
    rec_init(&all);
    all.sub.all_audiences = 1;
    CHECK_EQ_INT(zf_hub_subscribe(&a.sub, "news/a", NULL), ZF_OK);
    CHECK_EQ_INT(zf_hub_subscribe(&b.sub, "news/*", NULL), ZF_OK);
    CHECK_EQ_INT(zf_hub_subscribe(&all.sub, "*", NULL), ZF_OK);
    CHECK_EQ_INT(zf_hub_subscribe(&a.sub, "", NULL), ZF_ERROR);
    struct zf_hub_pos p1, p2, p3, p4;
    CHECK_EQ_INT(pub("news/a", "1", NULL, &p1), ZF_OK);
    CHECK_EQ_INT(pub("news/b", "2", NULL, &p2), ZF_OK);
    CHECK_EQ_INT(pub("other", "3", NULL, &p3), ZF_OK);
    CHECK_EQ_INT(a.n, 1);
    CHECK_EQ_INT(b.n, 2);
    CHECK_EQ_INT(all.n, 3);
    CHECK(strcmp(b.last_topic, "news/b") == 0);
    CHECK(p1.origin == zf_hub_epoch());
    /* ids count by one per topic */
    CHECK(p1.id == 1 && p2.id == 1 && p3.id == 1);

    /* audiences: only holders of a token (or all_audiences) */
    char *tok_bob[] = {"user:bob", NULL};
    char *tok_ed[] = {"role:Editor", "user:x", NULL};
    a.sub.tokens = tok_bob;
    b.sub.tokens = tok_ed;
    const char *aud[] = {"role:Editor", "role:Manager", NULL};
    a.n = b.n = all.n = 0;
    CHECK_EQ_INT(pub("news/a", "secret", aud, NULL), ZF_OK);
    CHECK_EQ_INT(a.n, 0);
    CHECK_EQ_INT(b.n, 1);
    CHECK_EQ_INT(all.n, 1);
    a.sub.tokens = NULL;
    b.sub.tokens = NULL;

    /* resume: a new subscriber that saw p1 gets what came after it */
    CHECK_EQ_INT(pub("news/a", "x2", NULL, &p2), ZF_OK);
    struct rec r;
    rec_init(&r);
    CHECK_EQ_INT(zf_hub_subscribe(&r.sub, "news/a", &p1), ZF_OK);
    CHECK_EQ_INT(r.n, 1); /* x2; "secret" is not for r (no tokens) */
    CHECK_EQ_INT(r.gaps, 0);
    zf_hub_unsubscribe_all(&r.sub);

    /* history of 3: after 3 more events p1 is gone: a gap */
    pub("news/a", "x3", NULL, NULL);
    pub("news/a", "x4", NULL, NULL);
    CHECK_EQ_INT(pub("news/a", "x5", NULL, &p4), ZF_OK);
    rec_init(&r);
    CHECK_EQ_INT(zf_hub_subscribe(&r.sub, "news/a", &p1), ZF_OK);
    CHECK_EQ_INT(r.n, 0);
    CHECK_EQ_INT(r.gaps, 1);
    CHECK(r.gap_first.id > p2.id);
    zf_hub_unsubscribe_all(&r.sub);
    /* resuming from the newest: nothing missed, no gap */
    rec_init(&r);
    CHECK_EQ_INT(zf_hub_subscribe(&r.sub, "news/a", &p4), ZF_OK);
    CHECK_EQ_INT(r.n, 0);
    CHECK_EQ_INT(r.gaps, 0);
    /* a position of another epoch: gap */
    struct zf_hub_pos foreign = {zf_hub_epoch() + 1, p4.id};
    CHECK_EQ_INT(zf_hub_subscribe(&r.sub, "news/a", &foreign), ZF_OK);
    CHECK_EQ_INT(r.gaps, 1);
    zf_hub_unsubscribe_all(&r.sub);

    /* unsubscribing inside a delivery is safe and takes effect */
    a.unsub_on_deliver = 1;
    a.n = 0;
    pub("news/a", "y", NULL, NULL);
    pub("news/a", "z", NULL, NULL);
    CHECK_EQ_INT(a.n, 1);
    CHECK_EQ_INT(a.sub.nsubs, 0);
    CHECK_EQ_INT(zf_hub_unsubscribe(&a.sub, "news/a"), ZF_DECLINED);

    /* eviction: at most 4 topics; a subscribed topic is never evicted */
    CHECK_EQ_INT(zf_hub_subscribe(&a.sub, "keep", NULL), ZF_OK);
    for (int i = 0; i < 10; i++) {
        char t[16];
        snprintf(t, sizeof t, "e/%d", i);
        pub(t, "0", NULL, NULL);
    }
    CHECK(zf_hub_topic_count() <= 4);
    a.unsub_on_deliver = 0;
    a.n = 0;
    pub("keep", "k", NULL, NULL);
    CHECK_EQ_INT(a.n, 1);
    /* a forgotten topic's old position resumes as a gap, not silently */
    rec_init(&r);
    CHECK_EQ_INT(zf_hub_subscribe(&r.sub, "news/b", &p3), ZF_OK);
    CHECK_EQ_INT(r.gaps, 1);
    zf_hub_unsubscribe_all(&r.sub);

    /* all histories together stay within hub.history_memory: the least
     * recently published topic loses its oldest events first */
    CHECK_EQ_INT(zf_config_set("hub.history_memory", "1k", "test"), ZF_OK);
    char payload[101];
    memset(payload, 'p', 100);
    payload[100] = 0;
    struct zf_hub_pos pa[10], last_b, prev_b = {0, 0};
    for (int i = 0; i < 10; i++) {
        pub("mem/a", payload, NULL, &pa[i]);
        prev_b = last_b;
        pub("mem/b", payload, NULL, &last_b);
    }
    CHECK(zf_hub_history_bytes() <= 1024);
    CHECK(zf_hub_history_bytes() > 0);
    /* mem/a lost its oldest events: resuming from the position just before
     * the oldest kept replays the rest; from one before that, a gap */
    int kept = 0;
    for (int i = 0; i < 10; i++) {
        rec_init(&r);
        CHECK_EQ_INT(zf_hub_subscribe(&r.sub, "mem/a", &pa[i]), ZF_OK);
        if (r.gaps == 0 && !kept) {
            kept = 1;
            CHECK(i >= 1 && i < 9); /* some trimmed, some kept */
            CHECK_EQ_INT(r.n, 9 - i);
            zf_hub_unsubscribe_all(&r.sub);
            rec_init(&r);
            CHECK_EQ_INT(zf_hub_subscribe(&r.sub, "mem/a", &pa[i - 1]), ZF_OK);
            CHECK_EQ_INT(r.gaps, 1);
            CHECK_EQ_INT(r.n, 0);
            CHECK(r.gap_first.id == pa[i + 1].id);
        }
        zf_hub_unsubscribe_all(&r.sub);
    }
    CHECK(kept);
    rec_init(&r);
    CHECK_EQ_INT(zf_hub_subscribe(&r.sub, "mem/a", &pa[0]), ZF_OK); /* trimmed: gap */
    CHECK_EQ_INT(r.gaps, 1);
    CHECK_EQ_INT(zf_hub_subscribe(&r.sub, "mem/b", &prev_b), ZF_OK); /* kept */
    CHECK_EQ_INT(r.gaps, 1);
    CHECK_EQ_INT(r.n, 1);
    zf_hub_unsubscribe_all(&r.sub);

    /* events of other instances (the bus): their position is kept, a
     * duplicate is declined, and a resume works from a position of any
     * origin, replaying what came after it whatever its origin */
    CHECK_EQ_INT(zf_config_set("hub.history_memory", "64m", "test"), ZF_OK);
    rec_init(&r);
    CHECK_EQ_INT(zf_hub_subscribe(&r.sub, "bus/t", NULL), ZF_OK);
    struct zf_hub_event *f1 = zf_hub_event_new("bus/t", "1", 1, NULL);
    f1->origin = 0xf00;
    f1->id = 41;
    CHECK_EQ_INT(zf_hub_inject(f1), ZF_OK);
    CHECK_EQ_INT(zf_hub_inject(f1), ZF_DECLINED);
    CHECK(f1->origin == 0xf00 && f1->id == 41);
    CHECK_EQ_INT(r.n, 1);
    CHECK(r.ids[0] == 41);
    struct zf_hub_pos own;
    CHECK_EQ_INT(pub("bus/t", "2", NULL, &own), ZF_OK);
    struct zf_hub_event *f2 = zf_hub_event_new("bus/t", "3", 1, NULL);
    f2->origin = 0xf00;
    f2->id = 42;
    CHECK_EQ_INT(zf_hub_inject(f2), ZF_OK);
    CHECK_EQ_INT(r.n, 3);
    struct rec q;
    rec_init(&q);
    struct zf_hub_pos p41 = {0xf00, 41}, p42 = {0xf00, 42}, p7 = {0xf00, 7};
    CHECK_EQ_INT(zf_hub_subscribe(&q.sub, "bus/t", &p41), ZF_OK);
    CHECK_EQ_INT(q.n, 2);
    CHECK(q.ids[0] == own.id && q.ids[1] == 42);
    CHECK_EQ_INT(q.gaps, 0);
    zf_hub_unsubscribe_all(&q.sub);
    rec_init(&q); /* from our own position: the foreign event after it */
    CHECK_EQ_INT(zf_hub_subscribe(&q.sub, "bus/t", &own), ZF_OK);
    CHECK_EQ_INT(q.n, 1);
    CHECK(q.ids[0] == 42);
    zf_hub_unsubscribe_all(&q.sub);
    rec_init(&q); /* the newest position, foreign: nothing missed */
    CHECK_EQ_INT(zf_hub_subscribe(&q.sub, "bus/t", &p42), ZF_OK);
    CHECK_EQ_INT(q.n + q.gaps, 0);
    zf_hub_unsubscribe_all(&q.sub);
    rec_init(&q); /* a foreign position not kept: a gap */
    CHECK_EQ_INT(zf_hub_subscribe(&q.sub, "bus/t", &p7), ZF_OK);
    CHECK_EQ_INT(q.n, 0);
    CHECK_EQ_INT(q.gaps, 1);
    CHECK(q.gap_first.origin == 0xf00 && q.gap_first.id == 41);
    zf_hub_unsubscribe_all(&q.sub);
    zf_hub_unsubscribe_all(&r.sub);
    zf_hub_event_unref(f1);
    zf_hub_event_unref(f2);

    /* two instances may receive a pair published at the same moment in
     * different orders. Instance A (where the client was) got X1 Y1 X2 Y2
     * and the client saw up to X2, then moved here; this instance got them
     * as X1 Y1 Y2 X2. One position (X2) misses Y2; the per-origin list
     * [X2, Y1] gets exactly Y2, without a gap. */
    struct rec v;
    rec_init(&v);
    CHECK_EQ_INT(zf_hub_subscribe(&v.sub, "pair/t", NULL), ZF_OK); /* keeps the topic */
    const uint64_t X = 0xa1, Y = 0xb2;
    const struct {
        uint64_t origin, id;
    } order[] = {{X, 1}, {Y, 1}, {Y, 2}, {X, 2}, {Y, 3}, {Y, 4}, {X, 3}};
    for (int i = 0; i < 4; i++) {
        struct zf_hub_event *e = zf_hub_event_new("pair/t", "0", 1, NULL);
        e->origin = order[i].origin;
        e->id = order[i].id;
        CHECK_EQ_INT(zf_hub_inject(e), ZF_OK);
        zf_hub_event_unref(e);
    }
    /* history of 3 holds Y1 Y2 X2 (X1 evicted: the client saw it) */
    struct zf_hub_pos seen[] = {{X, 2}, {Y, 1}};
    rec_init(&q);
    CHECK_EQ_INT(zf_hub_subscribe_since(&q.sub, "pair/t", seen, 2, NULL), ZF_OK);
    CHECK_EQ_INT(q.gaps, 0);
    CHECK_EQ_INT(q.n, 1);
    CHECK(q.ids[0] == 2 && strcmp(q.last_data, "0") == 0);
    zf_hub_unsubscribe_all(&q.sub);
    /* the list in the other order is the same position */
    struct zf_hub_pos seen_r[] = {{Y, 1}, {X, 2}};
    rec_init(&q);
    CHECK_EQ_INT(zf_hub_subscribe_since(&q.sub, "pair/t", seen_r, 2, NULL), ZF_OK);
    CHECK_EQ_INT(q.gaps, 0);
    CHECK_EQ_INT(q.n, 1);
    zf_hub_unsubscribe_all(&q.sub);
    /* X1 was evicted but the client that saw only X1 loses nothing: X2 and
     * the Y events after the oldest listed position... X1 is not kept, so
     * every kept event of the unlisted Y comes */
    struct zf_hub_pos x1 = {X, 1};
    rec_init(&q);
    CHECK_EQ_INT(zf_hub_subscribe_since(&q.sub, "pair/t", &x1, 1, NULL), ZF_OK);
    CHECK_EQ_INT(q.gaps, 0);
    CHECK_EQ_INT(q.n, 3);
    zf_hub_unsubscribe_all(&q.sub);
    /* one more pair: Y3 Y4 evict Y1 Y2; a client that saw Y1 lost Y2: gap,
     * one that saw Y2 lost nothing */
    for (int i = 4; i < 6; i++) {
        struct zf_hub_event *e = zf_hub_event_new("pair/t", "1", 1, NULL);
        e->origin = order[i].origin;
        e->id = order[i].id;
        CHECK_EQ_INT(zf_hub_inject(e), ZF_OK);
        zf_hub_event_unref(e);
    }
    rec_init(&q);
    CHECK_EQ_INT(zf_hub_subscribe_since(&q.sub, "pair/t", seen, 2, NULL), ZF_OK);
    CHECK_EQ_INT(q.gaps, 1);
    CHECK_EQ_INT(q.n, 0);
    CHECK(q.gap_first.origin == X && q.gap_first.id == 2);
    zf_hub_unsubscribe_all(&q.sub);
    struct zf_hub_pos seen2[] = {{X, 2}, {Y, 2}};
    rec_init(&q);
    CHECK_EQ_INT(zf_hub_subscribe_since(&q.sub, "pair/t", seen2, 2, NULL), ZF_OK);
    CHECK_EQ_INT(q.gaps, 0);
    CHECK_EQ_INT(q.n, 2);
    CHECK(q.ids[0] == 3 && q.ids[1] == 4);
    zf_hub_unsubscribe_all(&q.sub);
    /* an event of X that never arrived here (X4 lost on the way, X5 came):
     * a client at X3 gets a gap, not X5 alone */
    struct zf_hub_event *x5 = zf_hub_event_new("pair/t", "5", 1, NULL);
    x5->origin = X;
    x5->id = 5;
    struct zf_hub_event *x3 = zf_hub_event_new("pair/t", "3", 1, NULL);
    x3->origin = X;
    x3->id = 3;
    CHECK_EQ_INT(zf_hub_inject(x3), ZF_OK);
    CHECK_EQ_INT(zf_hub_inject(x5), ZF_OK);
    struct zf_hub_pos seen3[] = {{X, 3}, {Y, 4}};
    rec_init(&q);
    CHECK_EQ_INT(zf_hub_subscribe_since(&q.sub, "pair/t", seen3, 2, NULL), ZF_OK);
    CHECK_EQ_INT(q.gaps, 1);
    CHECK_EQ_INT(q.n, 0);
    zf_hub_unsubscribe_all(&q.sub);
    /* a position newer than heard here is still on its way: no gap, and
     * nothing of that origin is replayed */
    struct zf_hub_pos ahead[] = {{X, 9}, {Y, 3}};
    rec_init(&q);
    CHECK_EQ_INT(zf_hub_subscribe_since(&q.sub, "pair/t", ahead, 2, NULL), ZF_OK);
    CHECK_EQ_INT(q.gaps, 0);
    CHECK_EQ_INT(q.n, 1); /* Y4 */
    zf_hub_unsubscribe_all(&q.sub);
    /* an origin this topic never heard, or one of ours newer than we gave:
     * gap */
    struct zf_hub_pos unknown[] = {{Y, 4}, {0xc3, 1}};
    rec_init(&q);
    CHECK_EQ_INT(zf_hub_subscribe_since(&q.sub, "pair/t", unknown, 2, NULL), ZF_OK);
    CHECK_EQ_INT(q.gaps, 1);
    zf_hub_unsubscribe_all(&q.sub);
    struct zf_hub_pos future = {zf_hub_epoch(), 1000000};
    rec_init(&q);
    CHECK_EQ_INT(zf_hub_subscribe_since(&q.sub, "pair/t", &future, 1, NULL), ZF_OK);
    CHECK_EQ_INT(q.gaps, 1);
    zf_hub_unsubscribe_all(&q.sub);
    /* bad lists: origin 0, an origin twice, more than hub.max_origins */
    struct zf_hub_pos twice[] = {{X, 1}, {X, 2}}, zero = {0, 1}, many[17];
    for (int i = 0; i < 17; i++)
        many[i] = (struct zf_hub_pos){0x100 + (uint64_t)i, 1};
    rec_init(&q);
    CHECK_EQ_INT(zf_hub_subscribe_since(&q.sub, "pair/t", twice, 2, NULL), ZF_ERROR);
    CHECK_EQ_INT(zf_hub_subscribe_since(&q.sub, "pair/t", &zero, 1, NULL), ZF_ERROR);
    CHECK_EQ_INT(zf_hub_subscribe_since(&q.sub, "pair/t", many, 17, NULL), ZF_ERROR);
    CHECK_EQ_INT(q.sub.nsubs, 0);
    CHECK_EQ_INT(zf_hub_subscribe_since(&q.sub, "pair/t", many, 16, NULL),
                 ZF_OK); /* unknown: gap */
    CHECK_EQ_INT(q.gaps, 1);
    zf_hub_unsubscribe_all(&q.sub);
    /* where a client that got a gap resumes next: the newest of each origin */
    struct zf_hub_pos newest[4];
    CHECK_EQ_INT((int)zf_hub_positions("pair/t", newest, 4), 2);
    CHECK(newest[0].origin == X && newest[0].id == 5);
    CHECK(newest[1].origin == Y && newest[1].id == 4);
    zf_hub_event_unref(x3);
    zf_hub_event_unref(x5);
    zf_hub_unsubscribe_all(&v.sub);

    /* an origin the client saw nothing of is placed by `from`, the first
     * event it saw: a client saw X1 X2 on instance A, where U1 came later;
     * here U1 came between them. After the oldest listed position (X2) U1
     * would be missed; after `from` (X1) it is not */
    rec_init(&v);
    CHECK_EQ_INT(zf_hub_subscribe(&v.sub, "from/t", NULL), ZF_OK);
    const uint64_t U = 0xe5;
    const struct {
        uint64_t origin, id;
    } forder[] = {{X, 1}, {U, 1}, {X, 2}};
    for (int i = 0; i < 3; i++) {
        struct zf_hub_event *e = zf_hub_event_new("from/t", "1", 1, NULL);
        e->origin = forder[i].origin;
        e->id = forder[i].id;
        CHECK_EQ_INT(zf_hub_inject(e), ZF_OK);
        zf_hub_event_unref(e);
    }
    struct zf_hub_pos x2 = {X, 2}, fx1 = {X, 1}, fu = {0xf1, 1}, fold = {X, 1};
    rec_init(&q);
    CHECK_EQ_INT(zf_hub_subscribe_since(&q.sub, "from/t", &x2, 1, &fx1), ZF_OK);
    CHECK_EQ_INT(q.gaps, 0);
    CHECK_EQ_INT(q.n, 1);
    CHECK(q.ids[0] == 1);
    zf_hub_unsubscribe_all(&q.sub);
    /* `from` that cannot be placed here: after the oldest listed position */
    rec_init(&q);
    CHECK_EQ_INT(zf_hub_subscribe_since(&q.sub, "from/t", &x2, 1, &fu), ZF_OK);
    CHECK_EQ_INT(q.n + q.gaps, 0);
    zf_hub_unsubscribe_all(&q.sub);
    /* `from` older than the history (U2 X3 arrive; with a history of 3, X1
     * is evicted): every kept event of U, here U2, which came before X3 */
    const struct {
        uint64_t origin, id;
    } more[] = {{U, 2}, {X, 3}};
    for (int i = 0; i < 2; i++) {
        struct zf_hub_event *e = zf_hub_event_new("from/t", "1", 1, NULL);
        e->origin = more[i].origin;
        e->id = more[i].id;
        CHECK_EQ_INT(zf_hub_inject(e), ZF_OK);
        zf_hub_event_unref(e);
    }
    struct zf_hub_pos px3 = {X, 3};
    rec_init(&q);
    CHECK_EQ_INT(zf_hub_subscribe_since(&q.sub, "from/t", &px3, 1, &fold), ZF_OK);
    CHECK_EQ_INT(q.gaps, 0);
    CHECK_EQ_INT(q.n, 1);
    CHECK(q.ids[0] == 2);
    zf_hub_unsubscribe_all(&q.sub);
    zf_hub_unsubscribe_all(&v.sub);

    /* a peer whose ids on a topic do not increase (Z1 Z3 Z2): continuity
     * from Z1 cannot be proven (a client would drop Z2 as older than Z3) */
    rec_init(&v);
    CHECK_EQ_INT(zf_hub_subscribe(&v.sub, "order/t", NULL), ZF_OK);
    const uint64_t zids[] = {1, 3, 2};
    for (int i = 0; i < 3; i++) {
        struct zf_hub_event *e = zf_hub_event_new("order/t", "1", 1, NULL);
        e->origin = 0xd4;
        e->id = zids[i];
        CHECK_EQ_INT(zf_hub_inject(e), ZF_OK);
        zf_hub_event_unref(e);
    }
    struct zf_hub_pos z1 = {0xd4, 1};
    rec_init(&q);
    CHECK_EQ_INT(zf_hub_subscribe_since(&q.sub, "order/t", &z1, 1, NULL), ZF_OK);
    CHECK_EQ_INT(q.gaps, 1);
    CHECK_EQ_INT(q.n, 0);
    zf_hub_unsubscribe_all(&q.sub);
    zf_hub_unsubscribe_all(&v.sub);

    /* a local topic's ids count by one, so the list proves continuity for
     * this instance's own events too: with a history of 3, resuming from
     * the 1st of 5 is a gap, from the 2nd is not */
    struct zf_hub_pos lp[5];
    rec_init(&v);
    CHECK_EQ_INT(zf_hub_subscribe(&v.sub, "local/t", NULL), ZF_OK);
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(pub("local/t", "1", NULL, &lp[i]), ZF_OK);
    CHECK(lp[4].id == lp[0].id + 4);
    rec_init(&q);
    CHECK_EQ_INT(zf_hub_subscribe_since(&q.sub, "local/t", &lp[0], 1, NULL), ZF_OK);
    CHECK_EQ_INT(q.gaps, 1);
    zf_hub_unsubscribe_all(&q.sub);
    rec_init(&q);
    CHECK_EQ_INT(zf_hub_subscribe_since(&q.sub, "local/t", &lp[1], 1, NULL), ZF_OK);
    CHECK_EQ_INT(q.gaps, 0);
    CHECK_EQ_INT(q.n, 3);
    zf_hub_unsubscribe_all(&q.sub);
    zf_hub_unsubscribe_all(&v.sub);

    /* publishing from another thread goes through the loop */
    evthread_use_pthreads();
    static struct zf_server srv;
    srv.base = event_base_new();
    zf_srv = &srv;
    CHECK_EQ_INT(zf__server_init_loop(&srv), ZF_OK);
    all.n = 0;
    pthread_t th;
    pthread_create(&th, NULL, thread_publish, NULL);
    pthread_join(th, NULL);
    CHECK_EQ_INT(all.n, 0); /* nothing delivered off the loop */
    event_base_loop(srv.base, EVLOOP_NONBLOCK);
    CHECK_EQ_INT(all.n, 10);
    CHECK(strcmp(all.last_topic, "t/thread") == 0);
    /* too large */
    CHECK_EQ_INT(zf_config_set("hub.max_event", "4", "test"), ZF_OK);
    CHECK_EQ_INT(zf_hub_publish("t", "12345", 5, NULL), ZF_ERROR);

    zf_hub_unsubscribe_all(&a.sub);
    zf_hub_unsubscribe_all(&b.sub);
    zf_hub_unsubscribe_all(&all.sub);
    CHECK_EQ_INT(zf_hub_sub_count(), 0);
    zf_hub_free();
    CHECK_EQ_INT(zf_hub_event_count(), 0);
    zf__server_free_loop();
    event_base_free(srv.base);
    zf_config_free();
    return zf_test_done("hub");
}
