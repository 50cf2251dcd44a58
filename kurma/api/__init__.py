"""The gRPC API: generated code (`v1`), the daemon `kurmad` (`daemon.main`), its services,
errors-to-status mapping, mutual TLS with roles (`_pki`, `_authz`) and callers' views.

Clients use `kurma.client`, which imports only grpc and the generated modules.
"""
