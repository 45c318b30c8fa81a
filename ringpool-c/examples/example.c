/*
 * ringpool from C: a shared pool, blocking reads and writes, asynchronous
 * reads reaped from an epoll loop, and a ring handed to a forked child that
 * does fixed I/O with its own leases. Every byte read is checked.
 *
 *   cargo build --release -p ringpool-c
 *   cc -O2 -Wall -Wextra -I ringpool-c/include ringpool-c/examples/example.c \
 *      -L target/release -lringpool_c -Wl,-rpath,$PWD/target/release -o example
 *   ./example [file]      # default /var/tmp/ringpool-c-example.dat
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ringpool.h"

#define MIB (1024u * 1024u)
#define BLOCK (64u * 1024u)
#define BLOCKS 16

static void die(const char *what, rp_error *err) {
    fprintf(stderr, "%s: %s (errno %d)\n", what, rp_error_message(err), rp_error_errno(err));
    rp_error_free(err);
    exit(1);
}

/* In the forked child: leave without flushing the parent's stdio buffers. */
static void child_die(const char *what, rp_error *err) {
    fprintf(stderr, "child: %s: %s (errno %d)\n", what, rp_error_message(err), rp_error_errno(err));
    rp_error_free(err);
    _exit(1);
}

static uint8_t pattern(uint64_t i) { return (uint8_t)((i * 2654435761u) >> 13); }

static int check(const uint8_t *p, uint64_t file_offset, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (p[i] != pattern(file_offset + i)) {
            fprintf(stderr, "wrong byte at file offset %llu\n", (unsigned long long)(file_offset + i));
            return 0;
        }
    return 1;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "/var/tmp/ringpool-c-example.dat";
    rp_error *err = NULL;

    /* 64 MiB of shared memory in 4 segments of 16 MiB. */
    rp_pool *pool = rp_pool_new_shared(64 * MIB, 16 * MIB, &err);
    if (!pool) die("rp_pool_new_shared", err);
    rp_file *file = rp_file_open(path, &err);
    if (!file) die("rp_file_open", err);

    /* A ring for a child process, with segments 2 and 3 to lease from
     * alone: handed over before this process leases anything there. */
    rp_handed *handed = rp_pool_handover(pool, 64, 2, 2, &err);
    if (!handed) die("rp_pool_handover", err);

    /* 1. Blocking: write 1 MiB, read it back. */
    rp_buf *buf = rp_buf_alloc(pool, MIB, &err);
    if (!buf) die("rp_buf_alloc", err);
    uint8_t *p = rp_buf_data(buf);
    for (size_t i = 0; i < MIB; i++) p[i] = pattern(i);
    if (rp_write_at(pool, file, 0, buf, MIB, &err) != (int64_t)MIB) die("rp_write_at", err);
    memset(p, 0, MIB);
    if (rp_read_at(pool, file, 0, buf, MIB, &err) != (int64_t)MIB) die("rp_read_at", err);
    if (!check(p, 0, MIB)) return 1;
    printf("blocking: wrote and read back 1 MiB\n");

    /* 2. Asynchronous: 16 reads of 64 KiB, completions from epoll. */
    rp_queue *q = rp_queue_new(pool, &err);
    if (!q) die("rp_queue_new", err);
    rp_buf *bufs[BLOCKS];
    for (int i = 0; i < BLOCKS; i++) {
        bufs[i] = rp_buf_alloc(pool, BLOCK, &err);
        if (!bufs[i]) die("rp_buf_alloc", err);
        if (rp_submit_read(q, file, (uint64_t)i * BLOCK, bufs[i], BLOCK, (uint64_t)i, &err) != 0) die("rp_submit_read", err);
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, rp_queue_fd(q), &ev) != 0) { perror("epoll"); return 1; }
    int done = 0;
    while (done < BLOCKS) {
        struct epoll_event out;
        int n = epoll_wait(ep, &out, 1, 5000);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) { fprintf(stderr, "epoll_wait: no completion in 5 s\n"); return 1; }
        rp_completion c[BLOCKS];
        size_t k = rp_queue_reap(q, c, BLOCKS);
        for (size_t j = 0; j < k; j++) {
            if (c[j].error) die("asynchronous read", c[j].error);
            if (c[j].result != (int64_t)BLOCK) { fprintf(stderr, "short read\n"); return 1; }
            uint64_t i = c[j].user_data;
            if (!check(rp_buf_data(bufs[i]), i * BLOCK, BLOCK)) return 1;
            done++;
        }
    }
    close(ep);
    rp_queue_free(q);
    printf("asynchronous: %d reads of 64 KiB reaped from epoll\n", BLOCKS);

    /* 3. A forked child enables the handed ring, reads with READ_FIXED into
     * its own lease and writes a block the parent then reads. */
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 1; }
    if (pid == 0) {
        rp_ring *ring = rp_handed_enable(handed, &err);
        if (!ring) child_die("rp_handed_enable", err);
        rp_buf *b = rp_ring_buf_alloc(ring, BLOCK, &err);
        if (!b) child_die("rp_ring_buf_alloc", err);
        if (rp_ring_read_at(ring, file, 3 * BLOCK, b, BLOCK, &err) != (int64_t)BLOCK) child_die("rp_ring_read_at", err);
        if (!check(rp_buf_data(b), 3 * BLOCK, BLOCK)) _exit(2);
        uint8_t *d = rp_buf_data(b);
        for (size_t i = 0; i < BLOCK; i++) d[i] = pattern(MIB + i);
        if (rp_ring_write_at(ring, file, MIB, b, BLOCK, &err) != (int64_t)BLOCK) child_die("rp_ring_write_at", err);
        rp_buf_free(b);
        rp_ring_free(ring);
        _exit(0);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "the child failed (status %d)\n", status);
        return 1;
    }
    rp_handed_free(handed);
    if (rp_read_at(pool, file, MIB, bufs[0], BLOCK, &err) != (int64_t)BLOCK) die("rp_read_at", err);
    if (!check(rp_buf_data(bufs[0]), MIB, BLOCK)) return 1;
    printf("handover: a forked child did fixed I/O on its own ring and leases\n");

    for (int i = 0; i < BLOCKS; i++) rp_buf_free(bufs[i]);
    rp_buf_free(buf);
    rp_file_close(file);
    rp_pool_free(pool);
    printf("ok\n");
    return 0;
}
