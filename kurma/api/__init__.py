"""The gRPC API: generated code, the server (`kurmad`) and its authorisation.

Built by the kurmad/kurmactl issue; until then only the `kurmad` entry point exists.
"""
