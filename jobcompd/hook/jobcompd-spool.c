/*
 * jobcompd-spool (C): record one Slurm job event in the jobcompd spool.
 *
 * The same hook as the POSIX sh script beside it (jobcompd/hook/jobcompd-spool) -- same
 * options, environment, event detection, record names, dump, messages and exit statuses --
 * done with system calls in one process. slurmctld's jobcomp/script runs its hook serially, so the hook's run time
 * bounds how many jobs per second Slurm can record; the sh hook starts six programs per
 * record, this one none.
 *
 * It refuses a record (exit 74) while the spool's file system has less free space than the
 * threshold in SPOOL/.min-free-bytes (SpoolMinFreeBytes), before it creates anything.
 *
 *   JobCompLoc      of jobcomp/script   (JOBID set)                          -> event "end"
 *   PrologSlurmctld (SLURM_SCRIPT_CONTEXT=prolog_slurmctld, SLURM_JOB_ID)    -> event "start"
 *   EpilogSlurmctld (SLURM_SCRIPT_CONTEXT=epilog_slurmctld, SLURM_JOB_ID)    -> event "end"
 *
 * The record is the environment it was given (NUL-separated, plus JOBCOMPD_HOOK_TIME), named
 * <epoch-ns>.<jobid>.<event>.env, written into a new file in SPOOL/tmp/, fsynced, renamed into
 * SPOOL/new/<name> without replacing anything there, and new/ is fsynced: a file in new/ is
 * always complete, and survives a power cut once the hook has exited 0.
 *
 * Exit status: 0 on success. On failure the reason goes to stderr and to syslog (daemon.err,
 * tag jobcompd-spool) and the status is non-zero (sysexits) -- except as PrologSlurmctld,
 * which always exits 0, because a failing PrologSlurmctld requeues the job.
 *
 * The contract both hooks and the daemon follow (names, steps, modes, exit statuses) is
 * jobcompd/spool/SPEC.md.
 *
 * Build: cc -O2 -Wall -Wextra -std=c11 -D_GNU_SOURCE -o jobcompd-spool jobcompd-spool.c
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

/* sysexits(3), spelled out so that no header beyond libc's is needed */
enum { EX_USAGE = 64, EX_DATAERR = 65, EX_OSERR = 71, EX_CANTCREAT = 73,
       EX_IOERR = 74, EX_TEMPFAIL = 75 };

/* temporary names and new/ names (nanoseconds) tried before giving up */
enum { TRIES = 5 };

/* SpoolMinFreeBytes when SPOOL/.min-free-bytes does not say (SPEC.md, "Free space") */
static const uint64_t DEFAULT_MIN_FREE = UINT64_C(64) << 20;
static const char MIN_FREE_FILE[] = ".min-free-bytes";

extern char **environ;

static const char PROG[] = "jobcompd-spool";
static const char HOOK_TIME[] = "JOBCOMPD_HOOK_TIME";

/* What the sh hook leaves out of the dump: what a shell adds (PWD; SHLVL and _ under bash)
 * and the hook's own settings. The C hook removes the same names, so both give one dump. */
static const char *const DROPPED[] = { "PWD", "SHLVL", "_", "JOBCOMPD_SPOOL", HOOK_TIME };

static const char USAGE[] =
    "usage: jobcompd-spool [-d DIR] [-t EPOCH_NS]\n"
    "\n"
    "Record one Slurm job event in the jobcompd spool. Configure it in slurm.conf as\n"
    "  JobCompType=jobcomp/script  JobCompLoc=/path/to/jobcompd-spool        (job end)\n"
    "  PrologSlurmctld=/path/to/jobcompd-spool                                (job start)\n"
    "  EpilogSlurmctld=/path/to/jobcompd-spool                                (job end)\n"
    "It tells the event from SLURM_SCRIPT_CONTEXT (prolog/epilog) or JOBID (jobcomp/script).\n"
    "\n"
    "  -d DIR       spool directory (default: $JOBCOMPD_SPOOL, else /var/spool/jobcompd).\n"
    "               slurmctld passes neither arguments nor environment: for another\n"
    "               directory, call this hook from a wrapper script.\n"
    "  -t EPOCH_NS  use this 19-digit time stamp (nanoseconds) instead of the clock\n"
    "  -h, --help   show this help\n"
    "\n"
    "Exit status: 0, or non-zero (sysexits) on failure; always 0 as PrologSlurmctld.\n";

/* State the failure path needs: the temporary file to remove, whether we are the prolog, and
 * the job the messages name. */
static char *tmpf;
static int is_prolog;
static const char *jobid;
static const char *event;

/* The signals the sh hook traps. They stay blocked and are looked at between steps (the sh
 * hook's trap, too, runs only between commands), so a handler never runs in the middle of a
 * step and the failure path needs nothing async-signal-safe. */
static sigset_t trapped;

static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
}

/* Report a failure on stderr and to syslog (daemon.err), remove our temporary file and exit:
 * with STATUS, or 0 as the prolog. */
__attribute__((noreturn, format(printf, 2, 3)))
static void fail(int status, const char *fmt, ...)
{
    char *msg = NULL;
    va_list ap;

    if (tmpf != NULL) {
        unlink(tmpf);
        tmpf = NULL;
    }
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    if (msg == NULL)
        msg = (char *)"out of memory while reporting a failure; job not recorded";

    char *line = NULL;
    if (asprintf(&line, "%s: %s\n", PROG, msg) >= 0)
        write_all(STDERR_FILENO, line, strlen(line));
    openlog(PROG, 0, LOG_DAEMON);
    syslog(LOG_ERR, "%s", msg);
    closelog();
    exit(is_prolog ? 0 : status);
}

/* Between steps: a trapped signal that arrived fails the run, as the sh hook's trap does. */
static void check_signals(void)
{
    sigset_t pending;

    if (sigpending(&pending) != 0)
        return;
    if (sigismember(&pending, SIGHUP) || sigismember(&pending, SIGINT)
        || sigismember(&pending, SIGTERM))
        fail(EX_TEMPFAIL, "interrupted by a signal; job %s not recorded",
             jobid != NULL && *jobid != '\0' ? jobid : "?");
}

/* The value of NAME as a shell sees it: the last of several entries, NULL when unset. */
static const char *lookup(const char *name)
{
    size_t len = strlen(name);
    const char *value = NULL;

    for (char **e = environ; e != NULL && *e != NULL; e++)
        if (strncmp(*e, name, len) == 0 && (*e)[len] == '=')
            value = *e + len + 1;
    return value;
}

/* Length of an entry's name (up to its first '='), or -1 for an entry without '='. */
static ssize_t name_len(const char *entry)
{
    const char *eq = strchr(entry, '=');
    return eq == NULL ? -1 : eq - entry;
}

/* Whether entry E of environ goes into the dump. Like the environment a shell hands on:
 * no entry without '=' or with an empty name, one entry per name with the last value; then
 * without the DROPPED names. Unlike a shell, entries keep environ's order. */
static int dumped(char **e)
{
    ssize_t len = name_len(*e);

    if (len <= 0)
        return 0;
    for (size_t i = 0; i < sizeof DROPPED / sizeof DROPPED[0]; i++)
        if ((size_t)len == strlen(DROPPED[i]) && memcmp(*e, DROPPED[i], (size_t)len) == 0)
            return 0;
    for (char **later = e + 1; *later != NULL; later++)
        if (strncmp(*later, *e, (size_t)len + 1) == 0)
            return 0;
    return 1;
}

/* The dump: every kept entry NUL-terminated, then JOBCOMPD_HOOK_TIME=<seconds>. */
static char *build_dump(const char *seconds, size_t *size)
{
    size_t total = sizeof HOOK_TIME + strlen(seconds) + 1;
    char **env = environ != NULL ? environ : (char *[]){ NULL };

    for (char **e = env; *e != NULL; e++)
        if (dumped(e))
            total += strlen(*e) + 1;
    char *buf = malloc(total);
    if (buf == NULL)
        return NULL;
    char *p = buf;
    for (char **e = env; *e != NULL; e++) {
        if (dumped(e)) {
            size_t n = strlen(*e) + 1;
            memcpy(p, *e, n);
            p += n;
        }
    }
    p += sprintf(p, "%s=%s", HOOK_TIME, seconds) + 1;
    *size = (size_t)(p - buf);
    return buf;
}

static int all_digits(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s != '\0'; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

static void check_stamp(const char *stamp, const char *where)
{
    if (!all_digits(stamp) || strlen(stamp) != 19)
        fail(EX_USAGE, "time stamp '%s' (%s) is not 19 digits of epoch nanoseconds;"
             " job %s not recorded", stamp, where, jobid);
}

/* The clock as 19 digits of epoch nanoseconds, into BUF (at least 48 bytes). */
static void clock_stamp(char *buf, size_t size)
{
    struct timespec now;

    if (clock_gettime(CLOCK_REALTIME, &now) != 0)
        fail(EX_OSERR, "cannot read the clock: %s; job %s not recorded", strerror(errno),
             jobid);
    snprintf(buf, size, "%lld%09ld", (long long)now.tv_sec, now.tv_nsec);
    check_stamp(buf, "from the clock");
}

/* "uid N (name)": the user this hook runs as, for messages about permissions. */
static const char *whoami(void)
{
    static char buf[96];
    struct passwd *pw = getpwuid(geteuid());

    snprintf(buf, sizeof buf, "uid %lu (%s)", (unsigned long)geteuid(),
             pw != NULL ? pw->pw_name : "?");
    return buf;
}

/* Fail unless DIR is a folder this hook may enter, with the system's reason and the user. */
static void check_dir(const char *dir, const char *spool)
{
    struct stat st;
    int err = 0;

    if (stat(dir, &st) != 0)
        err = errno;
    else if (!S_ISDIR(st.st_mode))
        err = ENOTDIR;
    else if (access(dir, X_OK) != 0)
        err = errno;
    if (err != 0)
        fail(EX_CANTCREAT, "cannot use %s: %s (the hook runs as %s; the spool belongs to"
             " SlurmUser: check the owner and mode of %s and its tmp/ and new/, or create them"
             " with systemd-tmpfiles --create); job %s %s not recorded", dir, strerror(err),
             whoami(), spool, jobid, event);
}

static char *join(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *join(const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;

    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        fail(EX_OSERR, "out of memory; job %s not recorded", jobid != NULL ? jobid : "?");
    return s;
}

/* The threshold the daemon wrote into SPOOL/.min-free-bytes: its first line when that is 0 or
 * 1 to 18 digits without a leading zero (so the sh hook's arithmetic cannot overflow), else
 * the default -- also for an entry that is missing, unreadable, a symlink or not a file. NUL
 * bytes are dropped, as the sh hook's read drops them. One open, one read. */
static uint64_t min_free_bytes(const char *spool)
{
    char *path = join("%s/%s", spool, MIN_FREE_FILE);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    char buf[64];
    ssize_t n = -1;
    struct stat st;

    free(path);
    if (fd < 0)
        return DEFAULT_MIN_FREE;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
        n = read(fd, buf, sizeof buf);
    close(fd);
    char digits[19];
    size_t len = 0;
    for (ssize_t i = 0; i < n && buf[i] != '\n'; i++) {
        if (buf[i] == '\0')
            continue;
        if (buf[i] < '0' || buf[i] > '9' || len == sizeof digits - 1)
            return DEFAULT_MIN_FREE;
        digits[len++] = buf[i];
    }
    if (len == 0 || (len > 1 && digits[0] == '0'))
        return DEFAULT_MIN_FREE;
    uint64_t value = 0;
    for (size_t i = 0; i < len; i++)
        value = value * 10 + (uint64_t)(digits[i] - '0');
    return value;
}

/* Refuse the record, before anything is created, while the spool's file system has fewer than
 * the threshold's bytes free for an unprivileged user (f_bavail: root's reserved blocks are not
 * free space). A threshold of 0, or a file system that cannot tell, lets the write go on. */
static void check_free_space(const char *spool, const char *newdir)
{
    uint64_t min = min_free_bytes(spool);
    struct statvfs vfs;

    if (min == 0 || statvfs(newdir, &vfs) != 0 || vfs.f_frsize == 0)
        return;
    /* blocks < ceil(min / block size): the same comparison as the sh hook, without overflow */
    if ((uint64_t)vfs.f_bavail >= (min + vfs.f_frsize - 1) / vfs.f_frsize)
        return;
    fail(EX_IOERR, "spool nearly full: %s has %" PRIu64 " bytes free, less than"
         " SpoolMinFreeBytes=%" PRIu64 "; job %s %s not recorded", newdir,
         (uint64_t)vfs.f_bavail * vfs.f_frsize, min, jobid, event);
}

/* Rename FROM to TO unless TO exists. 0, or -1 with errno (EEXIST: the name is taken). */
static int rename_noreplace(const char *from, const char *to)
{
#ifdef SYS_renameat2
    if (syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
        return -1;
#endif
    /* A kernel or file system without RENAME_NOREPLACE: a checked rename, as the sh hook
     * does (the name was free a moment ago; nobody else creates names with our job id). */
    struct stat st;
    if (lstat(to, &st) == 0) {
        errno = EEXIST;
        return -1;
    }
    return rename(from, to);
}

/* One file per record: write DUMP into a new file in TMPDIR, fsync it, rename it into NEWDIR
 * under the name STAMP.<jobid>.<event>.env (or the next free nanosecond), fsync NEWDIR. */
static void write_file(const char *tmpdir, const char *newdir, const char *stamp,
                       const char *dump, size_t size)
{
    /* Create tmp/<jobid>.<event>.<pid>.<n> with O_EXCL|O_NOFOLLOW: an entry already there --
     * planted symlink, FIFO, a file left by a killed hook -- is never opened nor replaced. */
    int fd = -1;
    char *cand = NULL;
    for (int tries = 0; fd < 0; tries++) {
        if (tries == TRIES)
            fail(EX_CANTCREAT, "cannot create a file in %s (last tried %s); job %s %s not"
                 " recorded", tmpdir, cand, jobid, event);
        free(cand);
        cand = join("%s/%s.%s.%ld.%d", tmpdir, jobid, event, (long)getpid(), tries);
        fd = open(cand, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
        if (fd < 0 && (errno == EACCES || errno == EPERM)) {
            const char *why = strerror(errno);  /* before getpwuid() may change errno */
            fail(EX_CANTCREAT, "cannot create a file in %s (last tried %s): %s (the hook runs"
                 " as %s); job %s %s not recorded", tmpdir, cand, why, whoami(), jobid, event);
        }
        if (fd < 0 && errno != EEXIST)
            fail(EX_CANTCREAT, "cannot create a file in %s (last tried %s): %s; job %s %s"
                 " not recorded", tmpdir, cand, strerror(errno), jobid, event);
    }
    tmpf = cand;
    check_signals();

    /* Written by another user than the spool's owner (root, say): the record is given to the
     * owner of new/, as jobcompd runs as that user and must be able to read it (before the
     * fsync, which makes the owner durable too). A user who may not chown leaves it as it is:
     * jobcompd keeps such a record in new/ and says how to fix it. */
    struct stat nst;
    if (stat(newdir, &nst) == 0 && nst.st_uid != geteuid()
        && fchown(fd, nst.st_uid, nst.st_gid) != 0) {
        /* not ours to give away: the daemon reports it */
    }

    for (const char *p = dump; size > 0;) {
        ssize_t n = write(fd, p, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            fail(EX_IOERR, "cannot write %s (disk full?): %s; job %s %s not recorded", tmpf,
                 strerror(errno), jobid, event);
        p += n;
        size -= (size_t)n;
    }
    if (fsync(fd) != 0)
        fail(EX_IOERR, "cannot fsync %s: %s; job %s %s not recorded", tmpf, strerror(errno),
             jobid, event);
    if (close(fd) != 0)
        fail(EX_IOERR, "cannot write %s (disk full?): %s; job %s %s not recorded", tmpf,
             strerror(errno), jobid, event);
    check_signals();

    /* The name sorts by time. A name new/ already holds -- another record, a planted entry --
     * is never replaced: the next nanosecond is taken instead, which keeps the order. */
    uint64_t ns = strtoull(stamp, NULL, 10);
    char *name = join("%s.%s.%s.env", stamp, jobid, event);
    char *target = join("%s/%s", newdir, name);
    for (int tries = 0;;) {
        if (rename_noreplace(tmpf, target) == 0)
            break;
        if (errno != EEXIST)
            fail(EX_IOERR, "cannot rename %s into %s: %s; job %s %s not recorded", tmpf,
                 newdir, strerror(errno), jobid, event);
        if (++tries == TRIES)
            fail(EX_CANTCREAT, "%s already holds %s and the next names; job %s %s not"
                 " recorded", newdir, name, jobid, event);
        ns++;
        free(name);
        free(target);
        name = join("%" PRIu64 ".%s.%s.env", ns, jobid, event);
        target = join("%s/%s", newdir, name);
    }
    tmpf = NULL;  /* the record is in new/: from here on, a signal no longer undoes it */

    int dfd = open(newdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0)
        fail(EX_IOERR, "cannot fsync %s: %s: %s may not survive a power cut", newdir,
             strerror(errno), name);
}

int main(int argc, char **argv)
{
    const char *spool, *stamp = NULL, *idvar = NULL;
    char stampbuf[48];  /* room for any two longs: no truncation warning on any gcc */

    umask(077);  /* the record may hold job names, paths, comments: owner-only (0600) */

    /* slurmctld starts us with 0-2 on /dev/null; should one be closed, our file must not
     * become stderr. */
    for (int fd = 0; fd <= 2; fd++)
        if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) != fd)
            return EX_OSERR;

    sigemptyset(&trapped);
    sigaddset(&trapped, SIGHUP);
    sigaddset(&trapped, SIGINT);
    sigaddset(&trapped, SIGTERM);
    sigprocmask(SIG_BLOCK, &trapped, NULL);

    spool = lookup("JOBCOMPD_SPOOL");
    if (spool == NULL || *spool == '\0')
        spool = "/var/spool/jobcompd";

    /* Which hook are we? Decided before the options, so even a usage error exits 0 in the
     * prolog. */
    const char *context = lookup("SLURM_SCRIPT_CONTEXT");
    if (context == NULL)
        context = "";
    if (strcmp(context, "prolog_slurmctld") == 0) {
        is_prolog = 1;
        event = "start";
        idvar = "SLURM_JOB_ID";
    } else if (strcmp(context, "epilog_slurmctld") == 0) {
        event = "end";
        idvar = "SLURM_JOB_ID";
    } else if (*context == '\0') {
        event = "end";
        idvar = "JOBID";
    } else if (strncmp(context, "prolog", 6) == 0) {
        is_prolog = 1;
    }

    int i = 1;
    while (i < argc) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            write_all(STDOUT_FILENO, USAGE, sizeof USAGE - 1);
            return 0;
        } else if (strcmp(arg, "-d") == 0) {
            if (i + 1 >= argc)
                fail(EX_USAGE, "option -d needs a directory (see --help)");
            spool = argv[i + 1];
            i += 2;
        } else if (strcmp(arg, "-t") == 0) {
            if (i + 1 >= argc)
                fail(EX_USAGE, "option -t needs a time stamp (see --help)");
            stamp = argv[i + 1];
            i += 2;
        } else if (strcmp(arg, "--") == 0) {
            i++;
            break;
        } else {
            fail(EX_USAGE, "unknown argument '%s' (see --help)", arg);
        }
    }
    if (i < argc)
        fail(EX_USAGE, "unexpected argument '%s' (see --help)", argv[i]);
    if (*spool == '\0')
        fail(EX_USAGE, "the spool directory is empty (option -d or JOBCOMPD_SPOOL)");

    if (event == NULL)
        fail(EX_USAGE, "SLURM_SCRIPT_CONTEXT='%s' is not supported: use this hook as"
             " JobCompLoc (jobcomp/script), PrologSlurmctld or EpilogSlurmctld", context);

    jobid = lookup(idvar);
    if (jobid == NULL || *jobid == '\0') {
        jobid = NULL;
        fail(EX_DATAERR, "no job id: %s is not set (run by slurmctld as JobCompLoc of"
             " jobcomp/script, PrologSlurmctld or EpilogSlurmctld?); nothing recorded", idvar);
    }
    if (!all_digits(jobid) || jobid[0] == '0')
        fail(EX_DATAERR, "job id %s='%s' is not a positive decimal number; nothing recorded",
             idvar, jobid);
    if (strlen(jobid) > 10 || strtoull(jobid, NULL, 10) > 4294967295ULL)
        fail(EX_DATAERR, "job id %s='%s' is beyond Slurm's 32-bit range; nothing recorded",
             idvar, jobid);

    if (stamp != NULL && *stamp != '\0')
        check_stamp(stamp, "option -t");
    else
        stamp = NULL;  /* -t '' means the clock, as in the sh hook */

    char *tmpdir = join("%s/tmp", spool);
    char *newdir = join("%s/new", spool);
    check_dir(tmpdir, spool);
    check_dir(newdir, spool);
    check_free_space(spool, newdir);

    /* A write beyond a file-size limit fails with EFBIG instead of killing the hook without
     * a word. */
    signal(SIGXFSZ, SIG_IGN);
    check_signals();


    if (stamp == NULL) {
        clock_stamp(stampbuf, sizeof stampbuf);
        stamp = stampbuf;
    }
    char seconds[16];
    snprintf(seconds, sizeof seconds, "%.10s", stamp);  /* 19 digits minus 9 */

    size_t size = 0;
    char *dump = build_dump(seconds, &size);
    if (dump == NULL)
        fail(EX_OSERR, "out of memory; job %s %s not recorded", jobid, event);

    write_file(tmpdir, newdir, stamp, dump, size);
    return 0;
}
