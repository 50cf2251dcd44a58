"""The pod runtime: Linux primitives, cgroups, pods, apps, isolators, metadata service.

Lowest layer beside `kurma.store`: no gRPC, no boot config.
"""
