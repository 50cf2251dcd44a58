/*
 * kurma-stage0: the initrd's /init, the machine's PID 1 for its first moments.
 *
 * The kernel copies every byte of an initramfs into RAM before it runs /init (slow under
 * qemu without KVM), so the bulk of the machine, /usr, travels as one squashfs that is
 * mounted, not unpacked (build/initrd.py). This program:
 *   1. mounts devtmpfs on /dev and loads the modules that mounting needs (loop, squashfs),
 *      and starts loading the machine's base modules in the background (load_modules),
 *   2. attaches /usr.squashfs to a loop device, read-only, and mounts it on /usr,
 *   3. leaves the initramfs as kurma-init would (rprivate, rbind / onto /newroot, move it
 *      onto /, chroot): containers cannot pivot_root away from the initramfs itself,
 *   4. mounts /proc, /sys and /run, and starts kurmad (`--wait-for-config`: its imports take
 *      seconds there and overlap with PID 1's boot), its output to the kernel log,
 *   5. becomes kurma-init (Python), telling it kurmad's pid in $KURMA_KURMAD_PID.
 * kurma-init's steps skip what is done here. When a step fails the console says which and
 * why; without /usr there is no shell to fall back to, so PID 1 then waits (it must never
 * exit: the kernel would panic).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

/* <linux/loop.h>, which musl's headers lack: the kernel ABI (LOOP_CONFIGURE since 5.8). */
#define LOOP_CTL_GET_FREE 0x4C82
#define LOOP_CONFIGURE 0x4C0A
#define LO_FLAGS_READ_ONLY 1
struct loop_info64 {
    unsigned long long lo_device, lo_inode, lo_rdevice, lo_offset, lo_sizelimit;
    unsigned int lo_number, lo_encrypt_type, lo_encrypt_key_size, lo_flags;
    unsigned char lo_file_name[64], lo_crypt_name[64], lo_encrypt_key[32];
    unsigned long long lo_init[2];
};
struct loop_config {
    unsigned int fd, block_size;
    struct loop_info64 info;
    unsigned long long reserved[8];
};

#define IMAGE "/usr.squashfs"
#define MODULE_LIST "/etc/kurma/stage0-modules"
#define NEWROOT "/newroot"
#define KURMAD "/usr/bin/kurmad"
#define KURMAD_CONFIG "/run/kurma/kurmad.yml"
#define PYTHON "/usr/bin/python3.11"
#define KURMA_INIT "/usr/sbin/kurma-init"
#define EMERGENCY_SHELL "/bin/sh"

static void say(const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    int fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
    if (write(fd >= 0 ? fd : 2, line, n) < 0) { /* nowhere else to say it */ }
    if (fd >= 0)
        close(fd);
}

/* The last resort: a shell if /usr has one, else wait forever (PID 1 must not exit). */
_Noreturn static void give_up(void) {
    char *argv[] = {EMERGENCY_SHELL, NULL};
    say("kurma-stage0: emergency shell");
    execv(EMERGENCY_SHELL, argv);
    say("kurma-stage0: no shell (%s: %s); waiting", EMERGENCY_SHELL, strerror(errno));
    for (;;)
        pause();
}

static int try_mount(const char *src, const char *dst, const char *type, unsigned long flags,
                     const char *data) {
    if (mount(src, dst, type, flags, data) == 0 || errno == EBUSY)
        return 0;
    say("kurma-stage0: mount %s on %s (%s): %s", src ? src : "-", dst, type ? type : "-",
        strerror(errno));
    return -1;
}

/* Loads the modules of /etc/kurma/stage0-modules (paths relative to /lib/modules/<release>/,
 * in dependency order) up to a line "&": those that mounting /usr needs. The rest load in a
 * child, in the background, while Python starts: kurma-init's own pass over its base modules
 * then finds them loaded (or waits for a load in progress, as finit_module does). */
static void load_modules(void) {
    static char list[8192];
    struct utsname u;
    char path[512];
    int fd = open(MODULE_LIST, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, list, sizeof list - 1);
    if (fd >= 0)
        close(fd);
    if (n <= 0 || uname(&u) != 0)
        return;
    list[n] = '\0'; /* read whole before any fork: the child must not share a FILE's offset */
    char *save = NULL;
    for (char *rel = strtok_r(list, "\n", &save); rel; rel = strtok_r(NULL, "\n", &save)) {
        if (rel[0] == '\0' || rel[0] == '#')
            continue;
        if (strcmp(rel, "&") == 0) {
            if (fork() != 0)
                return; /* PID 1 goes on; kurma-init reaps the loader as an orphan */
            continue;
        }
        snprintf(path, sizeof path, "/lib/modules/%s/%s", u.release, rel);
        int ko = open(path, O_RDONLY | O_CLOEXEC);
        if (ko < 0) {
            say("kurma-stage0: %s: %s", path, strerror(errno));
            continue;
        }
        if (syscall(SYS_finit_module, ko, "", 0) != 0 && errno != EEXIST)
            say("kurma-stage0: loading %s: %s", path, strerror(errno));
        close(ko);
    }
    if (getpid() != 1)
        _exit(0); /* the background loader is done */
}

/* A read-only loop device over `image`; its path in `dev`. */
static int attach_loop(const char *image, char *dev, size_t len) {
    int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0) {
        say("kurma-stage0: /dev/loop-control: %s", strerror(errno));
        return -1;
    }
    int n = ioctl(ctl, LOOP_CTL_GET_FREE);
    close(ctl);
    if (n < 0) {
        say("kurma-stage0: no free loop device: %s", strerror(errno));
        return -1;
    }
    snprintf(dev, len, "/dev/loop%d", n);
    int file = open(image, O_RDONLY | O_CLOEXEC);
    int loop = open(dev, O_RDWR | O_CLOEXEC);
    if (file < 0 || loop < 0) {
        say("kurma-stage0: %s: %s", file < 0 ? image : dev, strerror(errno));
        return -1;
    }
    struct loop_config config;
    memset(&config, 0, sizeof config);
    config.fd = (unsigned int)file;
    config.info.lo_flags = LO_FLAGS_READ_ONLY;
    int rc = ioctl(loop, LOOP_CONFIGURE, &config);
    if (rc != 0)
        say("kurma-stage0: attaching %s to %s: %s", image, dev, strerror(errno));
    close(file);
    close(loop);
    return rc;
}

static int leave_initramfs(void) {
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        (mkdir(NEWROOT, 0700) != 0 && errno != EEXIST) ||
        mount("/", NEWROOT, NULL, MS_BIND | MS_REC, NULL) != 0 || chdir(NEWROOT) != 0 ||
        mount(".", "/", NULL, MS_MOVE, NULL) != 0 || chroot(".") != 0 || chdir("/") != 0) {
        say("kurma-stage0: leaving the initramfs: %s", strerror(errno));
        return -1;
    }
    rmdir(NEWROOT); /* the same directory seen through the new mount: empty */
    return 0;
}

static pid_t start_kurmad(void) {
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int null = open("/dev/null", O_RDONLY);
    int out = open("/dev/kmsg", O_WRONLY);
    if (null >= 0)
        dup2(null, 0);
    if (out >= 0) {
        dup2(out, 1);
        dup2(out, 2);
    }
    char *argv[] = {KURMAD, "--config", KURMAD_CONFIG, "--wait-for-config", NULL};
    execv(KURMAD, argv);
    _exit(127);
}

int main(void) {
    setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin", 1);
    try_mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID | MS_RELATIME, "mode=0755");
    load_modules();
    char dev[64];
    if (attach_loop(IMAGE, dev, sizeof dev) != 0 ||
        try_mount(dev, "/usr", "squashfs", MS_RDONLY | MS_NODEV, NULL) != 0)
        give_up();
    if (leave_initramfs() != 0)
        give_up();
    const unsigned long safe = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME;
    try_mount("proc", "/proc", "proc", safe, NULL);
    try_mount("sysfs", "/sys", "sysfs", safe, NULL);
    try_mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
    mkdir("/run/kurma", 0755);
    pid_t kurmad = start_kurmad();
    if (kurmad > 0) {
        char pid[16];
        snprintf(pid, sizeof pid, "%d", (int)kurmad);
        setenv("KURMA_KURMAD_PID", pid, 1);
    }
    char *argv[] = {PYTHON, "-I", KURMA_INIT, NULL};
    execv(PYTHON, argv);
    say("kurma-stage0: cannot run %s: %s", PYTHON, strerror(errno));
    give_up();
}
