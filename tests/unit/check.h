/* A minimal check harness for the C unit tests: each test program counts
 * its failed checks and exits non-zero when any failed. */
#ifndef ZF_TEST_CHECK_H
#define ZF_TEST_CHECK_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>

static int zf_test_failures;
static int zf_test_checks;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        zf_test_checks++;                                                                          \
        if (!(cond)) {                                                                             \
            zf_test_failures++;                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);              \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long _a = (long long)(a), _b = (long long)(b);                                        \
        zf_test_checks++;                                                                          \
        if (_a != _b) {                                                                            \
            zf_test_failures++;                                                                    \
            fprintf(stderr, "%s:%d: %s == %lld, expected %lld\n", __FILE__, __LINE__, #a, _a, _b); \
        }                                                                                          \
    } while (0)

/* Number of open file descriptors of this process (leak checks). */
static inline int zf_test_count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static inline int zf_test_done(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, zf_test_checks, zf_test_failures);
    return zf_test_failures ? 1 : 0;
}

#endif
