"""The HTTP API's routers, one module per area of the contract."""
