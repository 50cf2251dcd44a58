"""PID 1: boot steps, boot config, system services, shutdown. Built by the PID 1 issue.

Layers: `init` sits on `runtime` (Linux primitives) and never imports `api` (DESIGN.md).

    main        kurma-init: boot, supervise kurmad, shut down (checklist order)
    _steps      the boot plan: named steps, the runner, BootContext (what steps share)
    _mounts     leaving the initramfs root, the system mounts, mountinfo
    _blockdev   filesystem label/UUID from superblocks (ext4, vfat, iso9660, xfs, btrfs)
    _disks      the OEM disk (boot config layer) and the configured disks
    _modules    modules.dep order, finit_module(2)
    _network    loopback, static interfaces, routes, resolv.conf (pyroute2)
    _kmsg       PID 1's log lines into /dev/kmsg
    _shutdown   kill what is left, unmount everything
    _signals, _supervisor, _log, config
"""
