/*
 * The C API's error paths: each failing call returns NULL or -1, sets
 * *err with a message and an errno, and leaves the handles usable.
 * Built and run by tests/c_programs.rs and .ci/run.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ringpool.h"

static int failures = 0;

#define EXPECT(cond, ...)                                   \
    do {                                                    \
        if (!(cond)) {                                      \
            fprintf(stderr, "FAILED line %d: ", __LINE__);  \
            fprintf(stderr, __VA_ARGS__);                   \
            fprintf(stderr, "\n");                          \
            failures++;                                     \
        }                                                   \
    } while (0)

/* Checks that err is set with `want` errno and a message containing
 * `word`, and frees it. */
static void expect_error(rp_error **err, int want, const char *word, const char *what) {
    if (!*err) {
        EXPECT(0, "%s: no error", what);
        return;
    }
    const char *m = rp_error_message(*err);
    EXPECT(rp_error_errno(*err) == want, "%s: errno %d, expected %d (%s)", what, rp_error_errno(*err), want, m);
    EXPECT(m && strstr(m, word), "%s: message \"%s\" lacks \"%s\"", what, m, word);
    printf("%-28s -> errno %d: %s\n", what, rp_error_errno(*err), m);
    rp_error_free(*err);
    *err = NULL;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "/var/tmp/ringpool-c-errors.dat";
    rp_error *err = NULL;

    rp_pool *a = rp_pool_new(8u << 20, &err);
    rp_pool *b = rp_pool_new_shared(8u << 20, 0, &err);
    if (!a || !b) {
        fprintf(stderr, "pools: %s\n", rp_error_message(err));
        return 1;
    }
    rp_file *file = rp_file_open(path, &err);
    if (!file) {
        fprintf(stderr, "open: %s\n", rp_error_message(err));
        return 1;
    }
    rp_buf *buf = rp_buf_alloc(a, 65536, &err);
    rp_buf *other = rp_buf_alloc(b, 65536, &err);
    if (!buf || !other) {
        fprintf(stderr, "alloc: %s\n", rp_error_message(err));
        return 1;
    }
    memset(rp_buf_data(buf), 7, 65536);
    EXPECT(rp_write_at(a, file, 0, buf, 65536, &err) == 65536, "a good write fails: %s", rp_error_message(err));

    /* A bad path. */
    EXPECT(rp_file_open("/nonexistent-ringpool-dir/file", &err) == NULL, "opened a file in a missing directory");
    expect_error(&err, ENOENT, "nonexistent-ringpool-dir", "bad path");

    /* A misaligned length (O_DIRECT wants whole blocks). */
    EXPECT(rp_read_at(a, file, 0, buf, 100, &err) == -1, "a 100-byte O_DIRECT read succeeded");
    expect_error(&err, EINVAL, "align", "misaligned length");

    /* A misaligned offset. */
    EXPECT(rp_write_at(a, file, 1000, buf, 4096, &err) == -1, "a write at offset 1000 succeeded");
    expect_error(&err, EINVAL, "align", "misaligned offset");

    /* A buffer of another pool. */
    EXPECT(rp_read_at(a, file, 0, other, 4096, &err) == -1, "a read into another pool's buffer succeeded");
    expect_error(&err, EINVAL, "pool", "buffer of another pool");

    /* More bytes than the buffer has. */
    EXPECT(rp_read_at(a, file, 0, buf, 1u << 20, &err) == -1, "a read past the buffer succeeded");
    expect_error(&err, EINVAL, "buffer", "length past the buffer");

    /* NULL handles and an empty lease. */
    EXPECT(rp_read_at(NULL, file, 0, buf, 4096, &err) == -1, "a read on a NULL pool succeeded");
    expect_error(&err, EINVAL, "NULL", "NULL pool");
    EXPECT(rp_buf_alloc(a, 0, &err) == NULL, "a 0-byte lease succeeded");
    expect_error(&err, EINVAL, "0", "zero-length lease");
    EXPECT(rp_buf_alloc(a, 1ull << 40, &err) == NULL, "a 1 TiB lease succeeded");
    EXPECT(err && rp_error_errno(err) != 0, "a 1 TiB lease gave no errno");
    if (err) { printf("%-28s -> errno %d: %s\n", "lease larger than the pool", rp_error_errno(err), rp_error_message(err)); rp_error_free(err); err = NULL; }

    /* A private pool cannot hand rings over. */
    EXPECT(rp_pool_handover(a, 8, 0, 0, &err) == NULL, "a private pool handed a ring over");
    expect_error(&err, EINVAL, "shared", "handover of a private pool");

    /* A handed ring enabled twice: sent twice over a socket pair. */
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) { perror("socketpair"); return 1; }
    rp_handed *h = rp_pool_handover(b, 8, 0, 0, &err);
    EXPECT(h != NULL, "handover: %s", rp_error_message(err));
    EXPECT(rp_handed_send(h, sv[0], &err) == 0 && rp_handed_send(h, sv[0], &err) == 0, "send: %s", rp_error_message(err));
    rp_handed *first = rp_handed_receive(sv[1], &err);
    rp_handed *second = rp_handed_receive(sv[1], &err);
    EXPECT(first && second, "receive: %s", rp_error_message(err));
    rp_ring *ring = rp_handed_enable(first, &err);
    EXPECT(ring != NULL, "enable: %s", rp_error_message(err));
    EXPECT(rp_handed_enable(second, &err) == NULL, "a ring was enabled twice");
    expect_error(&err, EBADFD, "enabled already", "ring enabled twice");

    /* A malformed handover message. */
    const char junk[] = "RPH1 this is not a ring";
    EXPECT(write(sv[0], junk, sizeof junk) == (ssize_t)sizeof junk, "write junk");
    EXPECT(rp_handed_receive(sv[1], &err) == NULL, "a malformed message was accepted");
    expect_error(&err, EBADFD, "message", "malformed handover message");

    /* Everything still works after the errors. */
    EXPECT(rp_read_at(a, file, 0, buf, 65536, &err) == 65536, "a good read after the errors: %s", rp_error_message(err));
    EXPECT(rp_buf_data(buf)[65535] == 7, "wrong data after the errors");

    rp_ring_free(ring);
    rp_handed_free(h);
    close(sv[0]);
    close(sv[1]);
    rp_buf_free(buf);
    rp_buf_free(other);
    rp_file_close(file);
    rp_pool_free(a);
    rp_pool_free(b);
    rp_error_free(NULL);
    EXPECT(strcmp(rp_error_message(NULL), "") == 0, "the message of NULL");
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
