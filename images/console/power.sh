# poweroff and reboot in the console act on the machine through kurmad, not on this pod.
# Functions, because busybox's shell runs its own applets before searching PATH.
poweroff() { kurmactl poweroff "$@"; }
reboot() { kurmactl reboot "$@"; }
