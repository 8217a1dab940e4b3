"""The server interceptor chain, for every shape of RPC: one module per interceptor.

Each interceptor wraps the method handler gRPC found, whatever its shape: unary,
server-streaming, client-streaming or bidirectional (reflection, which grpcurl and
ghz need, is a bidirectional stream). The wrapper runs inside the call, with its
context, so it sees the request, the caller's certificate and the outcome
(``base``). The chain is built in one place (``chain.default_chain``), outermost
first:

    span → metrics → deadline → error mapping → faults → auth → rate limits
    → request checks → the servicer
"""
