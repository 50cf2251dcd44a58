/*
 * kurma-podinit: PID 1 of a Kurma pod.
 *
 * It holds the pod's namespaces, reaps every process re-parented to it, records the exit
 * status of each registered app in POD_DIR/exits/<pid>, copies the apps' output pipes (-f) to
 * POD_DIR/logs/NAME.log with size rotation, and on SIGTERM from outside the pod stops
 * everything (SIGTERM, grace, SIGKILL) and exits 0; signals 63 and 64 stop the apps but keep
 * the pod. The protocol is in README.md.
 *
 * Reaper mode (-r CGROUP_PROCS), for a pod sharing the host's PID namespace: podinit is not
 * PID 1 but a child subreaper, "the pod" is the processes of its cgroup (that cgroup.procs
 * and the same file in every cgroup below), and what PID 1 does with kill(-1, sig) it does
 * by signalling each of them, pass after pass until a pass finds none it has not signalled.
 *
 * Strategy (tini's, with poll): every signal is blocked and read synchronously from a
 * signalfd, polled together with the log pipes, so there are no handlers, no re-entrancy and
 * no malloc after start. The kernel protects a PID namespace's init from its own processes
 * only for signals it would deliver to SIG_DFL; a blocked signal is queued, so podinit itself
 * drops every signal whose sender is inside the pod (ssi_pid != 0; a sender in an ancestor
 * namespace or the kernel shows as ssi_pid 0).
 */
#define _GNU_SOURCE
#include <dirent.h> /* DT_DIR only */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h> /* renameat only; no stdio buffering is used */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NOTIFY_FD 3
#define DEFAULT_GRACE_MS 10000L
#define KILL_WAIT_MS 2000L /* after SIGKILL: wait for zombies held by parents outside */
#define GRACE_ENV "KURMA_PODINIT_GRACE"

/* Kernel signal numbers, not SIGRTMAX-n: musl and glibc reserve different low RT signals (so
 * their SIGRTMIN differ), but 63 and 64 are the same signals for every sender. */
#define SIG_TERMINATE_APPS 63 /* SIGRTMAX-1: SIGTERM + SIGCONT to every app; podinit stays */
#define SIG_KILL_APPS 64      /* SIGRTMAX: SIGKILL to every app; podinit stays */

#define MAX_STREAMS 64
#define LOG_NAME_MAX (255 - 7) /* NAME.log.99 must fit in a file name */
#define DEFAULT_LOG_BYTES 10485760LL
#define DEFAULT_LOG_KEEP 3
#define MIN_LOG_BYTES 4096LL
#define MAX_LOG_KEEP 99
#define DRAIN_READS 1024 /* at the end, per stream: a writer outside may never stop */

#define PID_LIMIT (1 << 22)  /* PID_MAX_LIMIT of 64-bit kernels: every pid is below it */
#define CGROUP_DEPTH 8       /* -r: cgroups this far below the pod's are walked too */
#define SIGNAL_PASSES 100    /* -r: at most this many passes of one signal_pod() */
#define REAPER_POLL_MS 100L  /* -r, stopping: look at the cgroup this often (exits of
				processes whose parent is outside send podinit nothing) */

static int notify_fd = -1; /* fd 3 if it was open; -1 once the reader is gone */
static int exits_fd = -1;  /* POD_DIR/exits */
static int pids_fd = -1;   /* POD_DIR/pids: one file per registered app, named by its pid */
static int logs_fd = -1;   /* POD_DIR/logs, when there are streams */
static int cgroup_fd = -1; /* -r: the directory of CGROUP_PROCS; -1: PID 1 mode */
static char procs_name[256]; /* -r: CGROUP_PROCS's file name, read in every cgroup below */
static pid_t self;

/* A log file, shared by every stream given its NAME. */
struct log {
	int fd; /* NAME.log opened for append, or -1 (opened again at the next write) */
	long long size;
	char name[LOG_NAME_MAX + 1];
};

/* -f FD:NAME, an app's output pipe: FD is polled[i].fd (-1 after EOF). */
struct stream {
	struct log *log;
	int warned; /* a write error was reported: once per stream */
};

static struct log logs[MAX_STREAMS];
static struct stream streams[MAX_STREAMS];
static struct pollfd polled[MAX_STREAMS + 1]; /* the streams, then the signalfd */
static int nlogs, nstreams;
static long long log_bytes = DEFAULT_LOG_BYTES; /* -l MAXBYTES: rotate before passing it */
static int log_keep = DEFAULT_LOG_KEEP;          /* -l KEEP: NAME.log.1 .. NAME.log.KEEP */

/* ---- output without stdio ---- */

/* Append `s` to the buffer [*p, end); always leaves room for a final byte. */
static void put(char **p, char *end, const char *s)
{
	while (*s && *p < end - 1)
		*(*p)++ = *s++;
}

static void put_uint(char **p, char *end, unsigned long v)
{
	char digits[24];
	int n = 0;
	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n && *p < end - 1)
		*(*p)++ = digits[--n];
}

/* Print "podinit: what[ detail]: strerror(err)" (err 0: no errno text) to stderr. */
static void warn(const char *what, const char *detail, int err)
{
	char line[512], *p = line, *end = line + sizeof line;
	put(&p, end, "podinit: ");
	put(&p, end, what);
	if (detail) {
		put(&p, end, " ");
		put(&p, end, detail);
	}
	if (err) {
		put(&p, end, ": ");
		put(&p, end, strerror(err));
	}
	*p++ = '\n';
	if (write(STDERR_FILENO, line, (size_t)(p - line)) < 0) {
		/* stderr is gone: nothing left to tell */
	}
}

static void die(const char *what, const char *detail, int err)
{
	warn(what, detail, err);
	_exit(2);
}

/* ---- notifications on fd 3 ---- */

static void notify(const char *line, size_t len)
{
	if (notify_fd < 0)
		return;
	ssize_t n = write(notify_fd, line, len);
	if (n == (ssize_t)len)
		return;
	/* Reader slow: drop the line, the exits/ files stay the truth. Anything else (EPIPE,
	 * a partial line on a stream socket): stop notifying for good. */
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	close(notify_fd);
	notify_fd = -1;
}

static void setup_notify(void)
{
	int fl;
	if (fcntl(NOTIFY_FD, F_SETFD, FD_CLOEXEC) < 0)
		return; /* fd 3 not open: no notifications */
	fl = fcntl(NOTIFY_FD, F_GETFL);
	if (fl < 0 || fcntl(NOTIFY_FD, F_SETFL, fl | O_NONBLOCK) < 0) {
		warn("fd 3", "O_NONBLOCK", errno);
		close(NOTIFY_FD);
		return;
	}
	notify_fd = NOTIFY_FD;
}

/* ---- exit records ---- */

static void decimal(char *buf, size_t size, unsigned long v)
{
	char *p = buf;
	put_uint(&p, buf + size, v);
	*p = '\0';
}

static int is_registered(pid_t pid)
{
	char name[24];
	struct stat st;
	decimal(name, sizeof name, (unsigned long)pid);
	return fstatat(pids_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static void unregister(const char *name)
{
	if (unlinkat(pids_fd, name, 0) < 0 && errno != ENOENT)
		warn("cannot unregister", name, errno);
}

/* exits/<pid> = "<code>\n" (temp name + rename), then unregister, then tell fd 3. */
static void record_exit(pid_t pid, int code)
{
	char name[24], tmp[32], line[48], *p;
	int fd;

	decimal(name, sizeof name, (unsigned long)pid);
	p = tmp;
	put(&p, tmp + sizeof tmp, ".");
	put(&p, tmp + sizeof tmp, name);
	put(&p, tmp + sizeof tmp, ".tmp");
	*p = '\0';
	p = line;
	put_uint(&p, line + sizeof line, (unsigned long)code);
	*p++ = '\n';

	fd = openat(exits_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0) {
		warn("cannot write exit record", name, errno);
	} else {
		ssize_t n = write(fd, line, (size_t)(p - line));
		int err = n < 0 ? errno : (n != p - line ? ENOSPC : 0);
		if (close(fd) < 0 && !err)
			err = errno;
		if (err || renameat(exits_fd, tmp, exits_fd, name) < 0) {
			warn("cannot write exit record", name, err ? err : errno);
			unlinkat(exits_fd, tmp, 0);
		}
	}
	unregister(name);

	p = line;
	put(&p, line + sizeof line, "exit ");
	put(&p, line + sizeof line, name);
	put(&p, line + sizeof line, " ");
	put_uint(&p, line + sizeof line, (unsigned long)code);
	*p++ = '\n';
	notify(line, (size_t)(p - line));
}

/* Reap every child that has ended; registered apps get a record, orphans nothing. */
static void reap(void)
{
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);
		if (pid <= 0) {
			if (pid < 0 && errno != ECHILD)
				warn("waitpid", NULL, errno);
			return;
		}
		int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		if (is_registered(pid))
			record_exit(pid, code);
	}
}

/* ---- logs ---- */

/* NAME.log, or NAME.log.K for K > 0. */
static void log_file(char *buf, size_t size, const struct log *l, int k)
{
	char *p = buf;
	put(&p, buf + size, l->name);
	put(&p, buf + size, ".log");
	if (k) {
		put(&p, buf + size, ".");
		put_uint(&p, buf + size, (unsigned long)k);
	}
	*p = '\0';
}

/* Open NAME.log for append (creating it); -1 with errno on failure. O_NONBLOCK: a FIFO
 * planted there fails with ENXIO instead of blocking PID 1. */
static int log_open(struct log *l)
{
	char name[LOG_NAME_MAX + 8];
	struct stat st;

	log_file(name, sizeof name, l, 0);
	l->fd = openat(logs_fd, name,
		       O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0640);
	if (l->fd < 0)
		return -1;
	l->size = fstat(l->fd, &st) == 0 ? (long long)st.st_size : 0;
	return 0;
}

/* NAME.log.(KEEP-1) -> NAME.log.KEEP ... NAME.log -> NAME.log.1 and close it (the next write
 * opens a fresh NAME.log); KEEP 0: truncate NAME.log instead. Returns 0 or an errno. */
static int log_rotate(struct log *l)
{
	char from[LOG_NAME_MAX + 8], to[LOG_NAME_MAX + 8];
	int err = 0;

	if (log_keep == 0) {
		if (ftruncate(l->fd, 0) < 0)
			return errno;
		l->size = 0;
		return 0;
	}
	for (int k = log_keep; k > 0; k--) {
		log_file(from, sizeof from, l, k - 1);
		log_file(to, sizeof to, l, k);
		if (renameat(logs_fd, from, logs_fd, to) < 0 && errno != ENOENT && !err)
			err = errno;
	}
	close(l->fd);
	l->fd = -1;
	return err;
}

/* Append buf to the log, rotating first if it would pass MAXBYTES. Returns 0 or an errno;
 * the data is dropped on error (an app must never block on a full pipe). */
static int log_write(struct log *l, const char *buf, size_t n)
{
	int err = 0;
	ssize_t w;

	if (l->fd >= 0 && l->size > 0 && l->size + (long long)n > log_bytes)
		err = log_rotate(l);
	if (l->fd < 0 && log_open(l) < 0)
		return errno;
	w = write(l->fd, buf, n);
	if (w > 0)
		l->size += w;
	if (w != (ssize_t)n && !err)
		err = w < 0 ? errno : ENOSPC;
	return err;
}

/* Copy one read of stream i to its log; EOF or a read error closes the stream. Returns the
 * bytes read (0: none now, or closed). A read never passes MAXBYTES, so neither does a file. */
static ssize_t copy_stream(int i)
{
	static char buf[16384];
	struct stream *s = &streams[i];
	size_t want = log_bytes < (long long)sizeof buf ? (size_t)log_bytes : sizeof buf;
	ssize_t n;
	int err;

	if (polled[i].fd < 0)
		return 0;
	n = read(polled[i].fd, buf, want);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n <= 0) {
		if (n < 0)
			warn("cannot read log stream of", s->log->name, errno);
		close(polled[i].fd);
		polled[i].fd = -1; /* poll() skips it */
		return 0;
	}
	err = log_write(s->log, buf, (size_t)n);
	if (err && !s->warned) {
		warn("cannot write log", s->log->name, err);
		s->warned = 1;
	}
	return n;
}

/* The pod has stopped: copy what the streams still hold (bounded: a writer outside the pod
 * could go on for ever). */
static void drain_streams(void)
{
	for (int i = 0; i < nstreams; i++)
		for (int k = 0; k < DRAIN_READS && copy_stream(i) > 0; k++)
			continue;
}

/* ---- signals ---- */

struct linux_dirent64 { /* getdents64(2); the libcs disagree on a wrapper */
	uint64_t d_ino;
	int64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

/* Call fn(name, arg) for every entry of pids/ (a static buffer: no malloc). */
static void each_registration(void (*fn)(const char *, int), int arg)
{
	static char buf[4096] __attribute__((aligned(8)));
	ssize_t n;

	if (lseek(pids_fd, 0, SEEK_SET) < 0)
		return;
	while ((n = syscall(SYS_getdents64, pids_fd, buf, sizeof buf)) > 0) {
		for (ssize_t off = 0; off < n;) {
			struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + off);
			off += d->d_reclen;
			if (strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0)
				fn(d->d_name, arg);
		}
	}
}

static void signal_app(const char *name, int sig)
{
	char *end;
	long pid = strtol(name, &end, 10);
	if (name[0] >= '1' && name[0] <= '9' && !*end && pid > 1)
		kill((pid_t)pid, sig);
}

/* ---- reaper mode: the pod is a cgroup ---- */

typedef void visit_fn(pid_t pid, void *arg);

/* Call fn for every pid listed in procs_name of the cgroup directory dfd. */
static void each_listed(int dfd, visit_fn *fn, void *arg)
{
	static char buf[4096];
	unsigned long v = 0;
	int digits = 0;
	ssize_t n;
	int fd = openat(dfd, procs_name, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return; /* a cgroup below removed meanwhile */
	while ((n = read(fd, buf, sizeof buf)) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] >= '0' && buf[i] <= '9') {
				if (v < PID_LIMIT)
					v = v * 10 + (unsigned long)(buf[i] - '0');
				digits = 1;
			} else {
				if (digits && v > 0 && v < PID_LIMIT)
					fn((pid_t)v, arg);
				v = 0;
				digits = 0;
			}
		}
	}
	if (digits && v > 0 && v < PID_LIMIT)
		fn((pid_t)v, arg);
	close(fd);
}

/* Call fn for every process of the cgroup dfd and of the cgroups below it (apps with limits
 * of their own sit in child cgroups). podinit is among them: fn must skip `self`. */
static void walk_cgroup(int dfd, int depth, visit_fn *fn, void *arg)
{
	char buf[1024] __attribute__((aligned(8)));
	ssize_t n;

	each_listed(dfd, fn, arg);
	if (depth >= CGROUP_DEPTH || lseek(dfd, 0, SEEK_SET) < 0)
		return;
	while ((n = syscall(SYS_getdents64, dfd, buf, sizeof buf)) > 0) {
		for (ssize_t off = 0; off < n;) {
			struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + off);
			off += d->d_reclen;
			if (d->d_type != DT_DIR || strcmp(d->d_name, ".") == 0 ||
			    strcmp(d->d_name, "..") == 0)
				continue;
			int sub = openat(dfd, d->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
			if (sub >= 0) {
				walk_cgroup(sub, depth + 1, fn, arg);
				close(sub);
			}
		}
	}
}

/* One bit per pid: signalled in this signal_pod() call. 512 KiB of bss, of which only the
 * pages holding the pod's pids are ever touched; madvise() gives them back after each call. */
static uint64_t signalled[PID_LIMIT / 64] __attribute__((aligned(4096)));

struct pass {
	int sig, cont;
	int fresh; /* processes signalled in this pass */
};

static void signal_one(pid_t pid, void *arg)
{
	struct pass *p = arg;
	uint64_t bit = 1ULL << (pid % 64);

	if (pid == self || (signalled[pid / 64] & bit))
		return;
	signalled[pid / 64] |= bit;
	p->fresh++;
	kill(pid, p->sig);
	if (p->cont)
		kill(pid, SIGCONT);
}

static void count_other(pid_t pid, void *arg)
{
	if (pid != self)
		++*(int *)arg;
}

struct find {
	pid_t pid;
	int found;
};

static void find_one(pid_t pid, void *arg)
{
	struct find *f = arg;
	if (pid == f->pid)
		f->found = 1;
}

/* Whether pid is a process of the pod (-r mode). */
static int in_pod(pid_t pid)
{
	struct find f = { pid, 0 };
	walk_cgroup(cgroup_fd, 0, find_one, &f);
	return f.found;
}

/* Send sig (then SIGCONT, if cont) to every process of the pod but podinit: kill(-1) as PID 1;
 * with -r every process of the cgroup, again while a pass finds one not signalled yet (a
 * fork racing the signal; a process signalled once is not signalled twice). */
static void signal_pod(int sig, int cont)
{
	struct pass p = { sig, cont, 0 };

	if (cgroup_fd < 0) {
		kill(-1, sig);
		if (cont)
			kill(-1, SIGCONT);
		return;
	}
	for (int i = 0; i < SIGNAL_PASSES; i++) {
		p.fresh = 0;
		walk_cgroup(cgroup_fd, 0, signal_one, &p);
		if (!p.fresh)
			break;
	}
	madvise(signalled, sizeof signalled, MADV_DONTNEED); /* all zero again, and freed */
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* True when no other process is left in the namespace (zombies count until reaped); with -r
 * when the cgroup holds no process but podinit (a zombie is no longer listed there). */
static int pod_is_empty(void)
{
	int others = 0;

	if (cgroup_fd < 0)
		return kill(-1, 0) < 0 && errno == ESRCH;
	walk_cgroup(cgroup_fd, 0, count_other, &others);
	return others == 0;
}

enum stage { RUNNING, TERMINATING, KILLING };

/* Every process but podinit; SIGCONT: stopped apps must see their SIGTERM. */
static void terminate_apps(void)
{
	signal_pod(SIGTERM, 1);
}

/* Whether pid is a live process (not gone, not a zombie): /proc/<pid>/stat's state. */
static int is_live(pid_t pid)
{
	char path[40], stat[512], *p = path, *end;
	ssize_t n;
	int fd;

	put(&p, path + sizeof path, "/proc/");
	put_uint(&p, path + sizeof path, (unsigned long)pid);
	put(&p, path + sizeof path, "/stat");
	*p = '\0';
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, stat, sizeof stat - 1);
	close(fd);
	if (n <= 0)
		return 0;
	stat[n] = '\0';
	end = strrchr(stat, ')'); /* "pid (comm) S ...": comm may hold anything */
	return end && end[1] == ' ' && end[2] && end[2] != 'Z' && end[2] != 'X';
}

/* A signal podinit must not obey: from inside the pod. As PID 1 that is ssi_pid != 0 (a
 * sender in an ancestor namespace or the kernel shows as 0). With -r (ssi_pid is a host pid)
 * it is a sender listed in the pod's cgroup, or one no longer alive when podinit looks: an
 * exited process is listed nowhere, so it may have been the pod's (`kill $PPID; exit`). */
static int from_inside(const struct signalfd_siginfo *si)
{
	pid_t sender = (pid_t)si->ssi_pid;

	if (cgroup_fd < 0 || sender == 0)
		return sender != 0;
	return in_pod(sender) || !is_live(sender); /* in this order: see above */
}

/* Act on one signal read from the signalfd. */
static void on_signal(const struct signalfd_siginfo *si, enum stage *stage, long *deadline,
		      long grace_ms)
{
	int sig = (int)si->ssi_signo;

	if (sig == SIGCHLD || sig == SIGPIPE || from_inside(si))
		return; /* SIGCHLD: the loop reaps; from inside the pod: ignored */
	if (sig == SIG_TERMINATE_APPS) {
		terminate_apps();
	} else if (sig == SIG_KILL_APPS) {
		signal_pod(SIGKILL, 0);
	} else if (sig != SIGTERM) {
		each_registration(signal_app, sig);
	} else if (*stage == RUNNING) {
		terminate_apps();
		*stage = TERMINATING;
		*deadline = now_ms() + grace_ms;
	} else if (*stage == TERMINATING) {
		*deadline = 0; /* a second SIGTERM: SIGKILL now */
	}
}

/* The main loop: reap, wait for a signal or log data, act. Returns podinit's exit status.
 * Reaping first also catches children that ended before the exec (their SIGCHLD is gone). */
static int serve(long grace_ms)
{
	struct pollfd *sigfd = &polled[nstreams];
	enum stage stage = RUNNING;
	long deadline = 0;

	for (;;) {
		struct signalfd_siginfo si;
		int timeout = -1;

		reap();
		if (stage != RUNNING) {
			long now = now_ms();
			if (pod_is_empty())
				return 0;
			if (now >= deadline) {
				if (stage == KILLING)
					return 0; /* leftovers are zombies of parents outside */
				signal_pod(SIGKILL, 0);
				stage = KILLING;
				deadline = now + KILL_WAIT_MS;
				continue;
			}
			timeout = (int)(deadline - now);
			if (cgroup_fd >= 0) {
				if (stage == KILLING) /* a pid reused within a pass escaped it */
					signal_pod(SIGKILL, 0);
				if (timeout > REAPER_POLL_MS)
					timeout = (int)REAPER_POLL_MS;
			}
		}
		if (poll(polled, (nfds_t)nstreams + 1, timeout) < 0) {
			if (errno != EINTR)
				warn("poll", NULL, errno);
			continue;
		}
		for (int i = 0; i < nstreams; i++)
			if (polled[i].revents)
				copy_stream(i);
		if (sigfd->revents)
			while (read(sigfd->fd, &si, sizeof si) == (ssize_t)sizeof si)
				on_signal(&si, &stage, &deadline, grace_ms);
	}
}

/* ---- start ---- */

static long parse_grace(const char *s)
{
	char *end;
	double v = strtod(s, &end);
	if (end == s || *end || !(v >= 0) || v > 86400.0)
		die("bad grace period (seconds)", s, 0);
	return (long)(v * 1000.0 + 0.5);
}

/* Parse a decimal number ending at `stop` (':' or '\0') from *s and step past it; -1 if
 * there is none or it exceeds max. */
static long long parse_number(const char **s, char stop, long long max)
{
	const char *p = *s;
	long long v = 0;

	if (*p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (max - (*p - '0')) / 10)
			return -1;
		v = v * 10 + (*p - '0');
	}
	if (*p != stop)
		return -1;
	*s = stop ? p + 1 : p;
	return v;
}

/* -f FD:NAME: FD above 3, NAME of [a-z0-9-]; streams naming the same NAME share its log. */
static void add_stream(const char *arg)
{
	const char *name = arg;
	long long fd = parse_number(&name, ':', 0x7fffffff);
	size_t len = strlen(name);
	int i;

	if (fd <= NOTIFY_FD || len == 0 || len > LOG_NAME_MAX ||
	    strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789-") != len)
		die("bad -f FD:NAME (FD above 3, NAME of a-z, 0-9 and -):", arg, 0);
	if (nstreams == MAX_STREAMS)
		die("too many -f streams (64 at most):", arg, 0);
	for (i = 0; i < nstreams; i++)
		if (polled[i].fd == fd)
			die("-f: fd given twice:", arg, 0);
	for (i = 0; i < nlogs && strcmp(logs[i].name, name) != 0; i++)
		continue;
	if (i == nlogs) {
		memcpy(logs[i].name, name, len + 1);
		logs[nlogs++].fd = -1;
	}
	streams[nstreams].log = &logs[i];
	polled[nstreams].fd = (int)fd;
	polled[nstreams++].events = POLLIN;
}

/* -l MAXBYTES:KEEP */
static void parse_rotation(const char *arg)
{
	const char *p = arg;
	long long bytes = parse_number(&p, ':', 1LL << 50);
	long long keep = bytes < MIN_LOG_BYTES ? -1 : parse_number(&p, '\0', MAX_LOG_KEEP);

	if (keep < 0)
		die("bad -l MAXBYTES:KEEP (MAXBYTES 4096 or more, KEEP 0 to 99):", arg, 0);
	log_bytes = bytes;
	log_keep = (int)keep;
}

/* close_range(lo, hi), or close() one by one on kernels without it. */
static void close_fds(unsigned lo, unsigned hi)
{
	if (syscall(SYS_close_range, lo, hi, 0) == 0)
		return;
	long max = sysconf(_SC_OPEN_MAX);
	unsigned long end = max > 0 && max < 65536 ? (unsigned long)max : 65536;
	for (unsigned long fd = lo; fd <= hi && fd < end; fd++)
		close((int)fd);
}

/* Close every fd above 3 but the log streams: the ranges between them. */
static void close_other_fds(void)
{
	unsigned lo = NOTIFY_FD + 1;

	for (;;) {
		unsigned next = ~0U; /* the lowest stream fd >= lo */
		for (int i = 0; i < nstreams; i++)
			if ((unsigned)polled[i].fd >= lo && (unsigned)polled[i].fd < next)
				next = (unsigned)polled[i].fd;
		if (next > lo)
			close_fds(lo, next == ~0U ? ~0U : next - 1);
		if (next == ~0U)
			return;
		lo = next + 1;
	}
}

/* The streams must be open; make them non-blocking (one full app never stalls the others)
 * and close-on-exec. */
static void setup_streams(void)
{
	for (int i = 0; i < nstreams; i++) {
		int fl = fcntl(polled[i].fd, F_GETFL);
		if (fl < 0 || fcntl(polled[i].fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
		    fcntl(polled[i].fd, F_SETFD, FD_CLOEXEC) < 0) {
			char fd[24];
			decimal(fd, sizeof fd, (unsigned long)polled[i].fd);
			die("-f: unusable fd", fd, errno);
		}
	}
}

/* Open (creating if needed) POD_DIR/<name> as a directory fd. */
static int open_subdir(int pod_fd, const char *name)
{
	int fd;
	if (mkdirat(pod_fd, name, 0755) < 0 && errno != EEXIST)
		die("cannot create", name, errno);
	fd = openat(pod_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		die("cannot open", name, errno);
	return fd;
}

/* Run the initial app given after `--`; it is registered before it can be reaped. */
static void spawn(char **cmd)
{
	sigset_t none;
	char name[24];
	pid_t pid = fork();
	int fd;

	if (pid < 0)
		die("fork", cmd[0], errno);
	if (pid == 0) {
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execvp(cmd[0], cmd);
		warn("cannot exec", cmd[0], errno);
		_exit(127);
	}
	decimal(name, sizeof name, (unsigned long)pid);
	fd = openat(pids_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		die("cannot register", name, errno);
	close(fd);
}

/* Make ps show "kurma-podinit <basename of POD_DIR>" (setproctitle over argv). */
static void set_title(int argc, char **argv, const char *pod_dir)
{
	char base[256], *p, *area = argv[0];
	const char *b = pod_dir;
	size_t len = (size_t)(argv[argc - 1] + strlen(argv[argc - 1]) + 1 - area);
	size_t blen;

	prctl(PR_SET_NAME, "kurma-podinit", 0, 0, 0);
	blen = strlen(pod_dir);
	while (blen > 1 && pod_dir[blen - 1] == '/')
		blen--;
	for (size_t i = 0; i < blen; i++)
		if (pod_dir[i] == '/' && i + 1 < blen)
			b = pod_dir + i + 1;
	blen -= (size_t)(b - pod_dir);
	if (blen >= sizeof base)
		blen = sizeof base - 1;
	memcpy(base, b, blen);
	base[blen] = '\0';

	p = area;
	put(&p, area + len, "kurma-podinit ");
	put(&p, area + len, base);
	*p++ = '\0';
	/* A non-NUL last byte makes the kernel show the title up to its first NUL. */
	memset(p, ' ', (size_t)(area + len - p));
}

static void usage(void)
{
	die("usage: kurma-podinit [-g GRACE_SECONDS] [-f FD:NAME]... [-l MAXBYTES:KEEP] "
	    "[-r CGROUP_PROCS] POD_DIR [-- CMD [ARG...]]", NULL, 0);
}

struct options {
	long grace_ms;       /* -g, else $KURMA_PODINIT_GRACE, else 10 s */
	char *procs;         /* -r: reaper mode, the pod's cgroup.procs; NULL: PID 1 mode */
	const char *pod_dir;
	char **cmd;          /* after `--`: the initial app, or NULL */
};

static struct options parse_args(int argc, char **argv)
{
	struct options o = { DEFAULT_GRACE_MS, NULL, NULL, NULL };
	const char *env = getenv(GRACE_ENV);
	int i = 1;

	if (env && *env)
		o.grace_ms = parse_grace(env);
	for (; i + 1 < argc && argv[i][0] == '-' && argv[i][1] && !argv[i][2]; i += 2) {
		if (argv[i][1] == 'g')
			o.grace_ms = parse_grace(argv[i + 1]);
		else if (argv[i][1] == 'f')
			add_stream(argv[i + 1]);
		else if (argv[i][1] == 'l')
			parse_rotation(argv[i + 1]);
		else if (argv[i][1] == 'r' && argv[i + 1][0])
			o.procs = argv[i + 1];
		else
			usage();
	}
	if (i >= argc || argv[i][0] == '-')
		usage();
	o.pod_dir = argv[i++];
	if (i < argc) {
		if (strcmp(argv[i], "--") != 0 || i + 1 >= argc)
			usage();
		o.cmd = argv + i + 1;
	}
	return o;
}

/* Open POD_DIR's exits/, pids/ and, with streams, logs/ and the log files (creating them).
 * Registrations in pids/ are kept: apps forked before the exec are podinit's children. */
static void open_pod_dir(const char *pod_dir)
{
	int pod_fd = open(pod_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (pod_fd < 0)
		die("cannot open", pod_dir, errno);
	exits_fd = open_subdir(pod_fd, "exits");
	pids_fd = open_subdir(pod_fd, "pids");
	if (nstreams) {
		logs_fd = open_subdir(pod_fd, "logs");
		for (int i = 0; i < nlogs; i++)
			log_open(&logs[i]); /* a failure is reported at the first write */
	}
	close(pod_fd);
}

/* -r CGROUP_PROCS: open its directory (the walks start there) and keep its file name; podinit
 * must be listed in it, which also keeps a wrong path (a parent's, the root's) from making
 * the machine's processes "the pod". */
static void open_cgroup(char *procs)
{
	char *slash = strrchr(procs, '/');
	const char *name = slash ? slash + 1 : procs;
	struct find f = { self, 0 };

	if (!*name || strlen(name) >= sizeof procs_name)
		die("-r: not a file:", procs, 0);
	memcpy(procs_name, name, strlen(name) + 1);
	if (slash) {
		*slash = '\0';
		cgroup_fd = open(slash == procs ? "/" : procs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		*slash = '/';
	} else {
		cgroup_fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}
	if (cgroup_fd < 0 || faccessat(cgroup_fd, procs_name, R_OK, 0) < 0)
		die("-r: cannot read", procs, errno);
	walk_cgroup(cgroup_fd, 0, find_one, &f); /* it may sit in a leaf below */
	if (!f.found)
		die("-r: podinit is not in the cgroup of", procs, 0);
}

int main(int argc, char **argv)
{
	sigset_t all;
	struct options o;
	int status;

	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, NULL); /* first: from here on no signal can kill us */
	signal(SIGCHLD, SIG_DFL); /* an inherited SIG_IGN would reap children unrecorded */
	o = parse_args(argc, argv);
	self = getpid();
	/* kill(-1) outside a PID namespace would hit the whole machine; -r signals a cgroup. */
	if (!o.procs && self != 1)
		die("must be PID 1 of a new PID namespace", NULL, 0);
	close_other_fds();
	setup_notify();
	setup_streams();
	open_pod_dir(o.pod_dir);
	if (o.procs) {
		open_cgroup(o.procs);
		/* Orphans of the apps come to us, not to the host's init. */
		if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
			die("PR_SET_CHILD_SUBREAPER", NULL, errno);
	}
	if (chdir("/") < 0)
		warn("chdir /", NULL, errno);
	polled[nstreams].fd = signalfd(-1, &all, SFD_NONBLOCK | SFD_CLOEXEC);
	polled[nstreams].events = POLLIN;
	if (polled[nstreams].fd < 0)
		die("signalfd", NULL, errno);
	if (o.cmd)
		spawn(o.cmd);
	set_title(argc, argv, o.pod_dir);
	notify("ready\n", 6);
	status = serve(o.grace_ms);
	drain_streams();
	return status;
}
