/*
 * kurma-podinit: PID 1 of a Kurma pod.
 *
 * It holds the pod's namespaces, reaps every process re-parented to it, records the exit
 * status of each registered app in POD_DIR/exits/<pid>, and on SIGTERM from outside the pod
 * stops everything (SIGTERM, grace, SIGKILL) and exits 0. The protocol is in README.md.
 *
 * Strategy (tini's): every signal is blocked and read synchronously with sigtimedwait(), so
 * there are no handlers, no re-entrancy and no malloc after start. The kernel protects a PID
 * namespace's init from its own processes only for signals it would deliver to SIG_DFL; a
 * blocked signal is queued, so podinit itself drops every signal whose sender is inside the
 * pod (si_pid != 0; a sender in an ancestor namespace or the kernel shows as si_pid 0).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h> /* renameat only; no stdio buffering is used */
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NOTIFY_FD 3
#define DEFAULT_GRACE_MS 10000L
#define KILL_WAIT_MS 2000L /* after SIGKILL: wait for zombies held by parents outside */
#define GRACE_ENV "KURMA_PODINIT_GRACE"

static int notify_fd = -1; /* fd 3 if it was open; -1 once the reader is gone */
static int exits_fd = -1;  /* POD_DIR/exits */
static int pids_fd = -1;   /* POD_DIR/pids: one file per registered app, named by its pid */

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

static void pid_name(char *buf, size_t size, pid_t pid)
{
	char *p = buf;
	put_uint(&p, buf + size, (unsigned long)pid);
	*p = '\0';
}

static int is_registered(pid_t pid)
{
	char name[24];
	struct stat st;
	pid_name(name, sizeof name, pid);
	return fstatat(pids_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static void unregister(const char *name, int unused)
{
	(void)unused;
	if (unlinkat(pids_fd, name, 0) < 0 && errno != ENOENT)
		warn("cannot unregister", name, errno);
}

/* exits/<pid> = "<code>\n" (temp name + rename), then unregister, then tell fd 3. */
static void record_exit(pid_t pid, int code)
{
	char name[24], tmp[32], line[48], *p;
	int fd;

	pid_name(name, sizeof name, pid);
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
	unregister(name, 0);

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

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* True when no other process is left in the namespace (zombies count until reaped). */
static int pod_is_empty(void)
{
	return kill(-1, 0) < 0 && errno == ESRCH;
}

enum stage { RUNNING, TERMINATING, KILLING };

/* The main loop: reap, wait for a signal, act. Returns podinit's exit status. */
static int serve(long grace_ms)
{
	sigset_t all;
	enum stage stage = RUNNING;
	long deadline = 0;

	sigfillset(&all);
	for (;;) {
		struct timespec left, *timeout = NULL;
		siginfo_t si;
		int sig;

		reap();
		if (stage != RUNNING) {
			long now = now_ms();
			if (pod_is_empty())
				return 0;
			if (now >= deadline) {
				if (stage == KILLING)
					return 0; /* leftovers are zombies of parents outside */
				kill(-1, SIGKILL);
				stage = KILLING;
				deadline = now + KILL_WAIT_MS;
				continue;
			}
			left.tv_sec = (deadline - now) / 1000;
			left.tv_nsec = (deadline - now) % 1000 * 1000000L;
			timeout = &left;
		}
		sig = sigtimedwait(&all, &si, timeout);
		if (sig < 0) {
			if (errno != EAGAIN && errno != EINTR)
				warn("sigtimedwait", NULL, errno);
			continue;
		}
		if (sig == SIGCHLD || sig == SIGPIPE || si.si_pid != 0)
			continue; /* reaped above; from inside the pod: ignored */
		if (sig != SIGTERM) {
			each_registration(signal_app, sig);
		} else if (stage == RUNNING) {
			kill(-1, SIGTERM);
			kill(-1, SIGCONT); /* stopped apps must see their SIGTERM */
			stage = TERMINATING;
			deadline = now_ms() + grace_ms;
		} else if (stage == TERMINATING) {
			deadline = 0; /* a second SIGTERM: SIGKILL now */
		}
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

static void close_other_fds(void)
{
	if (syscall(SYS_close_range, NOTIFY_FD + 1, ~0U, 0) == 0)
		return;
	long max = sysconf(_SC_OPEN_MAX);
	for (long fd = NOTIFY_FD + 1; fd < (max > 0 && max < 65536 ? max : 65536); fd++)
		close((int)fd);
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
	pid_name(name, sizeof name, pid);
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
	die("usage: kurma-podinit [-g GRACE_SECONDS] POD_DIR [-- CMD [ARG...]]", NULL, 0);
}

struct options {
	long grace_ms;       /* -g, else $KURMA_PODINIT_GRACE, else 10 s */
	const char *pod_dir;
	char **cmd;          /* after `--`: the initial app, or NULL */
};

static struct options parse_args(int argc, char **argv)
{
	struct options o = { DEFAULT_GRACE_MS, NULL, NULL };
	const char *env = getenv(GRACE_ENV);
	int i = 1;

	if (env && *env)
		o.grace_ms = parse_grace(env);
	if (i + 1 < argc && strcmp(argv[i], "-g") == 0) {
		o.grace_ms = parse_grace(argv[i + 1]);
		i += 2;
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

/* Open POD_DIR's exits/ and pids/ (creating them), and drop stale registrations. */
static void open_pod_dir(const char *pod_dir)
{
	int pod_fd = open(pod_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (pod_fd < 0)
		die("cannot open", pod_dir, errno);
	exits_fd = open_subdir(pod_fd, "exits");
	pids_fd = open_subdir(pod_fd, "pids");
	close(pod_fd);
	/* The namespace is new: no earlier registration can name one of its processes. */
	each_registration(unregister, 0);
}

int main(int argc, char **argv)
{
	sigset_t all;
	struct options o;

	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, NULL); /* first: from here on no signal can kill us */
	o = parse_args(argc, argv);
	/* kill(-1) outside a PID namespace would hit the whole machine. */
	if (getpid() != 1)
		die("must be PID 1 of a new PID namespace", NULL, 0);
	close_other_fds();
	setup_notify();
	open_pod_dir(o.pod_dir);
	if (chdir("/") < 0)
		warn("chdir /", NULL, errno);
	if (o.cmd)
		spawn(o.cmd);
	set_title(argc, argv, o.pod_dir);
	notify("ready\n", 6);
	return serve(o.grace_ms);
}
