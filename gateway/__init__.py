"""The edge: REST/JSON over the services' gRPC, and the storefront (a backend-for-frontend)."""
