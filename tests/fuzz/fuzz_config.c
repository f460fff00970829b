/* libFuzzer target: the value parsers of src/core/config.c (zf_parse_size,
 * zf_parse_msec, zf_parse_bool), which read command-line flags and TOML
 * values, and the loader entry zf_config_set, which every TOML value and
 * flag goes through. The input is one C string (it ends at the first NUL);
 * when it holds a '=', the part before is also tried as a key name of the
 * core's table and the rest as its value.
 *
 * Checks, beyond "no crash, no undefined behaviour" (UBSan catches a
 * double-to-integer conversion that overflows): a failed parse leaves the
 * output alone; a plain number of bytes is read exactly; "<n>k" is 1024
 * times "<n>"; "<n>ms" is n milliseconds and "<n>s" is 1000 times that.
 * zf_config_set succeeds only for a registered key, and a size, time or
 * boolean key then holds what the value parser reads from the value. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/core/config.h"

static void fail(const char *s, const char *what)
{
    fprintf(stderr, "\n==== zfront fuzz_config: %s\nvalue \"%s\"\n", what, s);
    abort();
}

static int all_digits(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    zf_log_level = -1; /* zf_config_set logs every refusal */
    zf_core_config_register();
    return 0;
}

static void check_set(const char *s)
{
    const char *eq = strchr(s, '=');
    if (!eq)
        return;
    char name[128];
    size_t nlen = (size_t)(eq - s);
    if (nlen >= sizeof name)
        return;
    memcpy(name, s, nlen);
    name[nlen] = 0;
    const char *value = eq + 1;
    const struct zf_cfg_key *k = zf_config_find(name);
    zf_config_begin_source();
    int rc = zf_config_set(name, value, "fuzz");
    if (!k) {
        if (rc == ZF_OK)
            fail(s, "zf_config_set accepted an unknown key");
        return;
    }
    if (rc != ZF_OK)
        return;
    uint64_t u = 0;
    int b = 0;
    switch (k->type) {
    case ZF_CFG_SIZE:
        if (zf_parse_size(value, &u) != ZF_OK || *(uint64_t *)k->ptr != u)
            fail(s, "zf_config_set stored another size than zf_parse_size reads");
        break;
    case ZF_CFG_MSEC:
        if (zf_parse_msec(value, &u) != ZF_OK || *(uint64_t *)k->ptr != u)
            fail(s, "zf_config_set stored another time than zf_parse_msec reads");
        break;
    case ZF_CFG_BOOL:
        if (zf_parse_bool(value, &b) != ZF_OK || *(int *)k->ptr != b)
            fail(s, "zf_config_set stored another boolean than zf_parse_bool reads");
        break;
    case ZF_CFG_STR:
        if (!*(char **)k->ptr || strcmp(*(char **)k->ptr, value) != 0)
            fail(s, "zf_config_set stored another string");
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    char *s = malloc(n + 4);
    if (!s)
        abort();
    memcpy(s, data, n);
    s[n] = 0;
    const uint64_t poison = 0xdeadbeefdeadbeefULL;

    uint64_t v = poison;
    int rc = zf_parse_size(s, &v);
    if (rc != ZF_OK && v != poison)
        fail(s, "zf_parse_size wrote its output and failed");
    if (all_digits(s) && strlen(s) < 19) {
        if (rc != ZF_OK || v != strtoull(s, NULL, 10))
            fail(s, "zf_parse_size misread a plain number");
        size_t k = strlen(s);
        s[k] = 'k';
        s[k + 1] = 0;
        uint64_t vk = poison;
        if (zf_parse_size(s, &vk) == ZF_OK && vk != v * 1024)
            fail(s, "zf_parse_size: <n>k is not 1024 * <n>");
        s[k] = 0;
    }

    uint64_t ms = poison;
    rc = zf_parse_msec(s, &ms);
    if (rc != ZF_OK && ms != poison)
        fail(s, "zf_parse_msec wrote its output and failed");
    if (all_digits(s) && strlen(s) < 12) {
        size_t k = strlen(s);
        uint64_t a = poison, b = poison;
        memcpy(s + k, "ms", 3);
        if (zf_parse_msec(s, &a) != ZF_OK || a != strtoull(s, NULL, 10))
            fail(s, "zf_parse_msec misread <n>ms");
        memcpy(s + k, "s", 2);
        if (zf_parse_msec(s, &b) != ZF_OK || b != a * 1000)
            fail(s, "zf_parse_msec: <n>s is not 1000 * <n>ms");
        s[k] = 0;
    }

    int b = 12345;
    rc = zf_parse_bool(s, &b);
    if (rc == ZF_OK ? (b != 0 && b != 1) : b != 12345)
        fail(s, "zf_parse_bool");
    check_set(s);
    free(s);
    return 0;
}
