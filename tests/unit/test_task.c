/* task.c: the queue file written at a stop and read at the next start:
 * a round trip keeps every task whole and in order, and every truncation
 * or corruption of the file is refused without a crash or a leak. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/core/task.c"

#include "check.h"

static struct zf_task *pop_all(void)
{
    struct zf_task *all = NULL, **tail = &all;
    for (struct queue *q = queues; q; q = q->next) {
        *tail = q->head;
        while (*tail)
            tail = &(*tail)->next;
        q->head = q->tail = NULL;
        q->pending = 0;
    }
    return all;
}

static void free_list(struct zf_task *t)
{
    while (t) {
        struct zf_task *next = t->next;
        zf_task_free(t);
        t = next;
    }
}

static void free_queues(void)
{
    free_list(pop_all());
    while (queues) {
        struct queue *next = queues->next;
        free(queues->name);
        free(queues);
        queues = next;
    }
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(1 << 16);
    *len = fread(buf, 1, 1 << 16, f);
    fclose(f);
    return buf;
}

int main(void)
{
    int fds = zf_test_count_fds();
    char dir[] = "/tmp/zf-test-task-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    zf_cfg.state_dir = dir;
    task_cfg.concurrency = 1;

    /* two queues; a body with NUL and newlines; headers in order */
    static const char body[] = "a\nb\0c\n\n";
    struct zf_task *t = zf_task_new("mail", "POST", "/send?id=1", body, sizeof body);
    CHECK(zf_task_add_header(t, "X-One", 5, "1", 1) == ZF_OK);
    CHECK(zf_task_add_header(t, "X-Two", 5, "two words", 9) == ZF_OK);
    queue_push(queue_get("mail"), t, 0);
    queue_push(queue_get("default"), zf_task_new("default", "GET", "/tick", NULL, 0), 0);
    queue_push(queue_get("mail"), zf_task_new("mail", "GET", "/second", "", 0), 0);
    save_queue();
    char path[4096];
    snprintf(path, sizeof path, "%s/tasks.queue", dir);
    size_t len = 0;
    char *file = read_all(path, &len);
    CHECK(file != NULL && len > 0);
    free_queues();

    load_queue();
    CHECK(access(path, F_OK) != 0); /* taken: removed */
    CHECK_EQ_INT(pending_total(), 3);
    struct queue *mail = queue_get("mail");
    CHECK_EQ_INT(mail->pending, 2);
    struct zf_task *m = mail->head;
    CHECK(m && strcmp(m->method, "POST") == 0 && strcmp(m->target, "/send?id=1") == 0);
    CHECK(m && m->body_len == sizeof body && memcmp(m->body, body, sizeof body) == 0);
    CHECK(m && m->headers.n == 2 && strcmp(m->headers.v[1].value, "two words") == 0);
    CHECK(m && m->next && strcmp(m->next->target, "/second") == 0 && m->next->body_len == 0);
    CHECK(queue_get("default")->head && strcmp(queue_get("default")->head->target, "/tick") == 0);
    free_queues();

    /* every truncation is refused (or, at a task boundary, reads fewer
     * tasks), never read past its end (ASan) */
    for (size_t cut = 0; file && cut < len; cut++) {
        char *p = malloc(cut + 1);
        memcpy(p, file, cut);
        p[cut] = 0;
        long n = parse_queue(p, p + cut);
        CHECK(n < 3);
        free(p);
        free_queues();
    }
    /* corrupted lengths and counts */
    static const char *const bad[] = {
        "zfront-tasks 2\n",
        "zfront-tasks 1\ntask 99999999999999999999\n",
        "zfront-tasks 1\ntask 0\n18446744073709551615\nx\n",
        "zfront-tasks 1\ntask 0\n7\ndefault\n3\nGET\n2\n/x\n",
        "zfront-tasks 1\ntask 1\n1\nq\n1\nG\n1\n/\n1\nA\n",
        "zfront-tasks 1\nTASK 0\n",
    };
    for (size_t i = 0; i < ZF_ARRAY_LEN(bad); i++) {
        size_t n = strlen(bad[i]);
        char *p = malloc(n + 1);
        memcpy(p, bad[i], n + 1);
        CHECK_EQ_INT(parse_queue(p, p + n), -1);
        free(p);
        free_queues();
    }
    /* an empty queue file is fine: no task */
    static const char empty[] = "zfront-tasks 1\n";
    CHECK_EQ_INT(parse_queue(empty, empty + sizeof empty - 1), 0);

    free(file);
    rmdir(dir);
    zf_cfg.state_dir = NULL;
    zf_config_free();
    CHECK_EQ_INT(zf_test_count_fds(), fds);
    return zf_test_done("task");
}
