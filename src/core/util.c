/* Small process-wide helpers: allocation that aborts, the monotonic clock. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "zfront.h"

static void oom(size_t n)
{
    fprintf(stderr, "zfront: out of memory allocating %zu bytes\n", n);
    abort();
}

void *zf_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *zf_xcalloc(size_t n, size_t m)
{
    void *p = calloc(n ? n : 1, m ? m : 1);
    if (!p)
        oom(n * m);
    return p;
}

char *zf_xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p)
        oom(strlen(s));
    return p;
}

uint64_t zf_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}
