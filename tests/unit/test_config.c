/* Config parsing: sizes, durations, booleans, list sources, unknown keys. */
#include <string.h>

#include "../../src/core/config.h"
#include "check.h"

static long t_int;
static uint64_t t_size, t_ms;
static int t_bool;
static char *t_str;
static struct zf_strlist t_list;

static const struct zf_cfg_key keys[] = {
    {"t.int", ZF_CFG_INT, &t_int, "4", "--t-int", ""},
    {"t.size", ZF_CFG_SIZE, &t_size, "1m", NULL, ""},
    {"t.ms", ZF_CFG_MSEC, &t_ms, "30s", NULL, ""},
    {"t.bool", ZF_CFG_BOOL, &t_bool, "false", "--t-bool", ""},
    {"t.str", ZF_CFG_STR, &t_str, "x", NULL, ""},
    {"t.list", ZF_CFG_LIST, &t_list, NULL, "--t-list", ""},
    {NULL},
};

int main(void)
{
    uint64_t v;
    CHECK(zf_parse_size("512", &v) == ZF_OK && v == 512);
    CHECK(zf_parse_size("64k", &v) == ZF_OK && v == 65536);
    CHECK(zf_parse_size("2MiB", &v) == ZF_OK && v == 2u << 20);
    CHECK(zf_parse_size("1g", &v) == ZF_OK && v == 1u << 30);
    CHECK(zf_parse_size("-1", &v) == ZF_ERROR);
    CHECK(zf_parse_size("1x", &v) == ZF_ERROR);
    CHECK(zf_parse_size("", &v) == ZF_ERROR);
    CHECK(zf_parse_msec("30s", &v) == ZF_OK && v == 30000);
    CHECK(zf_parse_msec("250ms", &v) == ZF_OK && v == 250);
    CHECK(zf_parse_msec("2m", &v) == ZF_OK && v == 120000);
    CHECK(zf_parse_msec("1.5", &v) == ZF_OK && v == 1500);
    CHECK(zf_parse_msec("soon", &v) == ZF_ERROR);
    CHECK(zf_parse_msec("1e300", &v) == ZF_ERROR); /* found by tests/fuzz/fuzz_config */
    int b;
    CHECK(zf_parse_bool("yes", &b) == ZF_OK && b == 1);
    CHECK(zf_parse_bool("Off", &b) == ZF_OK && b == 0);
    CHECK(zf_parse_bool("maybe", &b) == ZF_ERROR);

    zf_config_register(keys);
    CHECK_EQ_INT(t_int, 4);
    CHECK_EQ_INT(t_size, 1 << 20);
    CHECK_EQ_INT(t_ms, 30000);
    CHECK(strcmp(t_str, "x") == 0);
    CHECK(zf_config_find_flag("--t-bool") == &keys[3]);
    CHECK(zf_config_find("t.nope") == NULL);

    /* a file sets a list, the command line then replaces it, then appends */
    zf_config_begin_source();
    CHECK_EQ_INT(zf_config_set("t.list", "a", "file"), ZF_OK);
    CHECK_EQ_INT(zf_config_set("t.list", "b", "file"), ZF_OK);
    CHECK_EQ_INT(t_list.n, 2);
    zf_config_begin_source();
    CHECK_EQ_INT(zf_config_set("t.list", "c", "cli"), ZF_OK);
    CHECK_EQ_INT(zf_config_set("t.list", "d", "cli"), ZF_OK);
    CHECK_EQ_INT(t_list.n, 2);
    CHECK(strcmp(t_list.v[0], "c") == 0 && strcmp(t_list.v[1], "d") == 0);

    CHECK_EQ_INT(zf_config_set("t.int", "12", "cli"), ZF_OK);
    CHECK_EQ_INT(t_int, 12);
    zf_log_level = -1; /* keep the expected errors out of the test output */
    CHECK_EQ_INT(zf_config_set("t.int", "12abc", "cli"), ZF_ERROR);
    CHECK_EQ_INT(zf_config_set("t.unknown", "1", "cli"), ZF_ERROR);
    CHECK_EQ_INT(zf_config_set("t.size", "big", "cli"), ZF_ERROR);
    CHECK_EQ_INT(t_int, 12);
    zf_config_free();
    return zf_test_done("config");
}
