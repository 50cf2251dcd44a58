"""PID 1: boot steps, boot config, system services, shutdown. Built by the PID 1 issue."""
