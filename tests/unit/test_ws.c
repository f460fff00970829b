/* The WebSocket module's grant rules (zf__ws_allowed): exact topics, prefix
 * rules ending in '/' or '*', and client prefix patterns that a rule must
 * cover entirely. */
#include "../../src/proto/ws/ws.h"
#include "check.h"

int main(void)
{
    char *rules[] = {"news/", "docs*", "private/bob", NULL};
    CHECK(zf__ws_allowed(rules, "news/a"));
    CHECK(zf__ws_allowed(rules, "news/a/b"));
    CHECK(zf__ws_allowed(rules, "news/"));
    CHECK(!zf__ws_allowed(rules, "news")); /* "news/" is a prefix with the slash */
    CHECK(!zf__ws_allowed(rules, "newsletter"));
    CHECK(zf__ws_allowed(rules, "docs")); /* "docs*": any topic starting with docs */
    CHECK(zf__ws_allowed(rules, "docs2/x"));
    CHECK(zf__ws_allowed(rules, "private/bob"));
    CHECK(!zf__ws_allowed(rules, "private/bob/x")); /* exact rule */
    CHECK(!zf__ws_allowed(rules, "private/bo"));
    CHECK(!zf__ws_allowed(rules, "private/alice"));
    /* client patterns: covered only by a prefix rule */
    CHECK(zf__ws_allowed(rules, "news/*"));
    CHECK(zf__ws_allowed(rules, "news/a*"));
    CHECK(!zf__ws_allowed(rules, "news*")); /* would include "newsletter" */
    CHECK(!zf__ws_allowed(rules, "*"));
    CHECK(!zf__ws_allowed(rules, "private/bob*"));
    CHECK(zf__ws_allowed(rules, "docs/*"));
    /* no rules, empty rules */
    char *none[] = {NULL};
    CHECK(!zf__ws_allowed(none, "news/a"));
    CHECK(!zf__ws_allowed(NULL, "news/a"));
    char *all[] = {"*", NULL};
    CHECK(zf__ws_allowed(all, "anything"));
    CHECK(zf__ws_allowed(all, "*"));
    return zf_test_done("ws");
}
