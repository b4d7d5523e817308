/* What filemap's create and attach protocols cost when written directly in C, against the
 * raw POSIX cycles that issue 10, §4 compares them with, and against the format changes
 * that could make them cheaper. It is the floor that no tuning of the Rust code can go
 * below, and the data for deciding on a format change.
 *
 *   gcc -O2 -o /tmp/protocol benches/protocol/protocol.c && /tmp/protocol
 *
 * Every create cycle creates, maps, unmaps and removes a 4 KiB object; every attach cycle
 * opens, maps, unmaps and closes a 4 KiB object that another descriptor holds (as a live
 * object's other holder does), all in a private directory under /dev/shm. Medians of 15
 * rounds of 5000 cycles of each variant (the rounds take the variants in turn, so that
 * the machine's drift hits them alike), in microseconds per cycle. */
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

enum {
    RAW,
    PROTOCOL,
    XATTR_RECORD,
    NO_RECORD,
    CREAT,
    CREAT_NO_RECORD,
    RAW_ATTACH,
    ATTACH,
    ATTACH_NO_IDS,
    ATTACH_NO_RECORD,
    VARIANTS
};

static const char *label[VARIANTS] = {
    "create, raw: open(O_CREAT, O_EXCL) + posix_fallocate + mmap + munmap + close + unlink",
    "create, filemap's protocol: O_TMPFILE, fallocate data + record page, pwrite record, read lock, fstat, linkat, mmap, munmap, write lock, fstatat, unlink, close",
    "create, the record in a user xattr (no record page; tmpfs needs Linux 6.6)",
    "create, no record at all",
    "create, O_CREAT instead of O_TMPFILE + linkat (the name is visible while the object is made: a write lock marks it, downgraded when done)",
    "create, O_CREAT and no record page",
    "attach, raw: open + mmap + munmap + close",
    "attach, filemap's protocol: geteuid, open, getpid, read lock, fstat, pread record, others?, mmap, munmap, write lock (fails), unlock, close",
    "attach, without geteuid and getpid",
    "attach, also without reading the record",
};

static int dir;
static char rec[52];

static int lk(int fd, int cmd, short type, long start, long len) {
    struct flock f = {0};
    f.l_type = type;
    f.l_whence = SEEK_SET;
    f.l_start = start;
    f.l_len = len;
    return fcntl(fd, cmd, &f);
}

#define HOLDERS (1L << 40)
#define UNLINK (HOLDERS - 1)

static int create_cycle(int how) {
    struct stat st;
    int fd;
    long byte = HOLDERS + 65536L * getpid();
    if (how == RAW) {
        fd = openat(dir, "y", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 || posix_fallocate(fd, 0, 4096)) return -1;
    } else if (how == CREAT || how == CREAT_NO_RECORD) {
        (void)geteuid();
        fd = openat(dir, "y", O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 || lk(fd, F_OFD_SETLK, F_WRLCK, byte, 1)) return -1;
        if (how == CREAT) {
            if (fallocate(fd, 0, 0, 8192) || pwrite(fd, rec, sizeof rec, 4096) != sizeof rec) return -1;
        } else if (fallocate(fd, 0, 0, 4096)) {
            return -1;
        }
        if (lk(fd, F_OFD_SETLK, F_RDLCK, byte, 1) || fstat(fd, &st)) return -1;
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
        if (lk(fd, F_OFD_SETLK, F_RDLCK, byte, 1)) return -1;
        if (fstat(fd, &st) || linkat(fd, "", dir, "y", AT_EMPTY_PATH)) return -1;
    }
    void *m = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) return -1;
    munmap(m, 4096);
    if (how != RAW) {
        if (lk(fd, F_OFD_SETLK, F_WRLCK, UNLINK, 0) || fstatat(dir, "y", &st, AT_SYMLINK_NOFOLLOW)) return -1;
    }
    if (unlinkat(dir, "y", 0)) return -1;
    return close(fd);
}

static int attach_cycle(int how) {
    struct stat st;
    char buf[sizeof rec];
    int fd;
    if (how == RAW_ATTACH) {
        fd = openat(dir, "held", O_RDWR | O_CLOEXEC);
        if (fd < 0) return -1;
    } else {
        if (how == ATTACH) (void)geteuid();
        fd = openat(dir, "held", O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd < 0) return -1;
        long pid = how == ATTACH ? getpid() : 1;
        if (lk(fd, F_OFD_SETLK, F_RDLCK, HOLDERS + 65536L * pid + 1, 1) || fstat(fd, &st)) return -1;
        if (how != ATTACH_NO_RECORD && pread(fd, buf, sizeof buf, 4096) != sizeof buf) return -1;
        if (lk(fd, F_OFD_GETLK, F_WRLCK, HOLDERS, 0)) return -1;
    }
    void *m = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) return -1;
    munmap(m, 4096);
    if (how != RAW_ATTACH) {
        /* Not the last holder: the removal's write lock fails, and the read lock goes. */
        if (!lk(fd, F_OFD_SETLK, F_WRLCK, UNLINK, 0)) return -1;
        if (lk(fd, F_OFD_SETLK, F_UNLCK, 0, 0)) return -1;
    }
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

static void cleanup(const char *path) {
    unlinkat(dir, "y", 0);
    unlinkat(dir, "held", 0);
    rmdir(path);
}

int main(void) {
    char path[64];
    snprintf(path, sizeof path, "/dev/shm/filemap-protocol-bench-%d", getpid());
    if (mkdir(path, 0700) || (dir = open(path, O_DIRECTORY | O_RDONLY | O_CLOEXEC)) < 0) {
        perror(path);
        return 1;
    }
    memset(rec, 7, sizeof rec);
    /* The attached object: 4 KiB of data and the record page, held by another
     * description's read lock, as a live object's other holder holds it. */
    int held = openat(dir, "held", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (held < 0 || fallocate(held, 0, 0, 8192) || pwrite(held, rec, sizeof rec, 4096) != sizeof rec ||
        lk(held, F_OFD_SETLK, F_RDLCK, HOLDERS + 65536L * getpid(), 1)) {
        perror("the attached object");
        cleanup(path);
        return 1;
    }
    double r[VARIANTS][15], med[VARIANTS];
    for (int round = 0; round < 15; round++) {
        for (int how = 0; how < VARIANTS; how++) {
            double t = now_us();
            for (int i = 0; i < 5000; i++) {
                if (how < RAW_ATTACH ? create_cycle(how) : attach_cycle(how)) {
                    perror(label[how]);
                    cleanup(path);
                    return 1;
                }
            }
            r[how][round] = (now_us() - t) / 5000;
        }
    }
    for (int how = 0; how < VARIANTS; how++) {
        qsort(r[how], 15, sizeof r[how][0], cmp);
        med[how] = r[how][7];
    }
    close(held);
    cleanup(path);
    printf("| cycle, 4 KiB | µs | / raw |\n|---|---:|---:|\n");
    for (int how = 0; how < VARIANTS; how++) {
        double raw = how < RAW_ATTACH ? med[RAW] : med[RAW_ATTACH];
        printf("| %s | %.2f | %.2fx |\n", label[how], med[how], med[how] / raw);
    }
    return 0;
}
