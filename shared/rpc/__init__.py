"""gRPC plumbing shared by every service: server, interceptors, clients."""
