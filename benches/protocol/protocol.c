/* What filemap's create protocol costs when written directly in C, step by step, against
 * the raw POSIX create cycle: the floor that no Rust tuning can go below (issue 10, §4).
 *
 *   gcc -O2 -o /tmp/create_protocol benches/protocol/create_protocol.c && /tmp/create_protocol
 *
 * Every cycle creates, maps, unmaps and removes a 4 KiB object in a private directory
 * under /dev/shm. Medians of 15 rounds of 5000 cycles of each variant (the rounds take the
 * variants in turn), in microseconds per cycle. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

enum { RAW, PROTOCOL, XATTR_RECORD, NO_RECORD };

static const char *label[] = {
    "raw: open(O_CREAT, O_EXCL) + posix_fallocate + mmap + munmap + close + unlink",
    "filemap's protocol: O_TMPFILE, fallocate data + record page, pwrite record, read lock, fstat, linkat, mmap, munmap, write lock, fstatat, unlink, close",
    "the same with the record in a user xattr (no record page)",
    "the same with no record at all",
};

static int dir;
static char rec[52];

static int lk(int fd, short type, long start, long len) {
    struct flock f = {0};
    f.l_type = type;
    f.l_whence = SEEK_SET;
    f.l_start = start;
    f.l_len = len;
    return fcntl(fd, F_OFD_SETLK, &f);
}

static int cycle(int how) {
    struct stat st;
    int fd;
    if (how == RAW) {
        fd = openat(dir, "y", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 || posix_fallocate(fd, 0, 4096)) return -1;
    } else {
        (void)geteuid();
        fd = openat(dir, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd < 0) return -1;
        (void)getpid();
        if (how == PROTOCOL) {
            if (fallocate(fd, 0, 0, 8192) || pwrite(fd, rec, sizeof rec, 4096) != sizeof rec) return -1;
        } else if (fallocate(fd, 0, 0, 4096)) {
            return -1;
        }
        if (how == XATTR_RECORD && fsetxattr(fd, "user.filemap", rec, sizeof rec, 0)) return -1;
        if (lk(fd, F_RDLCK, (1L << 40) + 65536L * getpid(), 1)) return -1;
        if (fstat(fd, &st) || linkat(fd, "", dir, "y", AT_EMPTY_PATH)) return -1;
    }
    void *m = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) return -1;
    munmap(m, 4096);
    if (how != RAW) {
        if (lk(fd, F_WRLCK, (1L << 40) - 1, 0) || fstatat(dir, "y", &st, AT_SYMLINK_NOFOLLOW)) return -1;
    }
    if (unlinkat(dir, "y", 0)) return -1;
    return close(fd);
}

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(void) {
    char path[64];
    snprintf(path, sizeof path, "/dev/shm/filemap-protocol-bench-%d", getpid());
    if (mkdir(path, 0700) || (dir = open(path, O_DIRECTORY | O_RDONLY | O_CLOEXEC)) < 0) {
        perror(path);
        return 1;
    }
    memset(rec, 7, sizeof rec);
    /* Rounds interleave the variants, so that the machine's drift hits them alike. */
    double r[4][15], med[4];
    for (int round = 0; round < 15; round++) {
        for (int how = RAW; how <= NO_RECORD; how++) {
            double t = now_us();
            for (int i = 0; i < 5000; i++) {
                if (cycle(how)) {
                    perror(label[how]);
                    unlinkat(dir, "y", 0);
                    rmdir(path);
                    return 1;
                }
            }
            r[how][round] = (now_us() - t) / 5000;
        }
    }
    for (int how = RAW; how <= NO_RECORD; how++) {
        qsort(r[how], 15, sizeof r[how][0], cmp);
        med[how] = r[how][7];
    }
    rmdir(path);
    printf("| cycle, 4 KiB | µs | / raw |\n|---|---:|---:|\n");
    for (int how = RAW; how <= NO_RECORD; how++)
        printf("| %s | %.2f | %.2fx |\n", label[how], med[how], med[how] / med[RAW]);
    return 0;
}
