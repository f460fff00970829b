/* The topic hub: delivery to exact and prefix subscribers, audiences,
 * increasing ids, resume from the history and gaps, unsubscribing during a
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
    CHECK(p2.id > p1.id && p3.id > p2.id);

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
    struct zf_hub_pos first_a, last_b, prev_b = {0, 0};
    for (int i = 0; i < 10; i++) {
        struct zf_hub_pos pa;
        pub("mem/a", payload, NULL, &pa);
        if (i == 7)
            first_a = pa;
        prev_b = last_b;
        pub("mem/b", payload, NULL, &last_b);
    }
    CHECK(zf_hub_history_bytes() <= 1024);
    CHECK(zf_hub_history_bytes() > 0);
    rec_init(&r);
    CHECK_EQ_INT(zf_hub_subscribe(&r.sub, "mem/a", &first_a), ZF_OK); /* trimmed: gap */
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
