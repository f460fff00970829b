/* The metrics collections (metrics.c): families from several collectors
 * grouped under one header, histogram buckets, label escapes, the JSON
 * samples, requests by status class. Built without running the server:
 * collections are made by hand (the core's own samples need a pool). */
#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/core/metrics.c"
#include "check.h"

static char *text_of(struct zf_metrics *m, int json)
{
    struct evbuffer *b = evbuffer_new();
    CHECK((json ? zf_metrics_render_json(m, b) : zf_metrics_render_text(m, b)) == ZF_OK);
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = 0;
    evbuffer_free(b);
    return s;
}

static void count_lines(const char *text, const char *prefix, int expect)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, prefix)) != NULL; p++)
        n += p == text || p[-1] == '\n';
    CHECK_EQ_INT(n, expect);
}

int main(void)
{
    /* two modules adding to one family, interleaved with another family */
    struct zf_metrics *m = calloc(1, sizeof *m);
    zf_metrics_connections(m, "http1", 3, 10);
    zf_metrics_gauge(m, "zfront_other", "x", NULL, 1.5);
    zf_metrics_connections(m, "ssh", 1, UINT64_MAX);
    zf_metrics_counter(m, "zfront_other", "type clash", NULL, 7); /* dropped */
    char *t = text_of(m, 0);
    count_lines(t, "# TYPE zfront_connections gauge\n", 1);
    count_lines(t, "# HELP zfront_connections ", 1);
    CHECK(strstr(t, "zfront_connections{protocol=\"http1\"} 3\n"
                    "zfront_connections{protocol=\"ssh\"} 1\n") != NULL);
    CHECK(strstr(t, "zfront_connections_accepted_total{protocol=\"http1\"} 10\n") != NULL);
    CHECK(strstr(t, "accepted_total{protocol=\"ssh\"}") == NULL);
    CHECK(strstr(t, "zfront_other 1.5\n") != NULL);
    count_lines(t, "zfront_other ", 1);
    CHECK(zf_metrics_sum(m, "zfront_connections") == 4);
    free(t);
    zf_metrics_free(m);

    /* histogram: a bound belongs to its own bucket (le), buckets cumulative */
    static struct zf_histogram h;
    zf_histogram_observe(&h, 1000);     /* 0.001 s: le="0.001" */
    zf_histogram_observe(&h, 1001);     /* le="0.0025" */
    zf_histogram_observe(&h, 31000000); /* past 30 s: +Inf only */
    m = calloc(1, sizeof *m);
    zf_metrics_histogram(m, "zfront_h_seconds", "h", "channel=\"http\"", &h);
    t = text_of(m, 0);
    CHECK(strstr(t, "# TYPE zfront_h_seconds histogram\n") != NULL);
    CHECK(strstr(t, "zfront_h_seconds_bucket{channel=\"http\",le=\"0.001\"} 1\n") != NULL);
    CHECK(strstr(t, "zfront_h_seconds_bucket{channel=\"http\",le=\"0.0025\"} 2\n") != NULL);
    CHECK(strstr(t, "zfront_h_seconds_bucket{channel=\"http\",le=\"30\"} 2\n") != NULL);
    CHECK(strstr(t, "zfront_h_seconds_bucket{channel=\"http\",le=\"+Inf\"} 3\n") != NULL);
    CHECK(strstr(t, "zfront_h_seconds_count{channel=\"http\"} 3\n") != NULL);
    CHECK(strstr(t, "zfront_h_seconds_sum{channel=\"http\"} 31.002001\n") != NULL);
    free(t);
    /* the JSON keeps _sum and _count, not the buckets */
    t = text_of(m, 1);
    CHECK(strstr(t, "_bucket") == NULL);
    CHECK(strstr(t, "\"zfront_h_seconds_count{channel=\\\"http\\\"}\":3") != NULL);
    free(t);
    zf_metrics_free(m);

    /* label values from outside are escaped */
    char esc[32];
    CHECK(strcmp(zf_metrics_escape(esc, sizeof esc, "a\"b\\c\nd"), "a\\\"b\\\\c\\nd") == 0);
    zf_metrics_escape(esc, 6, "abcdefgh");
    CHECK(strlen(esc) < 6);

    /* requests: by channel and class; no status or a bogus one is "other" */
    zf_metrics_request("http", 200, 10);
    zf_metrics_request("http", 204, 10);
    zf_metrics_request("http", 0, 10);
    zf_metrics_request("http", 600, 10);
    zf_metrics_request("clock", 503, 10);
    zf_metrics_request(NULL, 404, 10);
    CHECK_EQ_INT(nchannels, 2);
    CHECK_EQ_INT(channels[0].by_class[1], 2);
    CHECK_EQ_INT(channels[0].by_class[3], 1);
    CHECK_EQ_INT(channels[0].by_class[5], 2);
    CHECK_EQ_INT(channels[1].by_class[4], 1);
    return zf_test_done("metrics");
}
