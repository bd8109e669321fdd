"""The HTTP API's behaviour through Flask's test client."""
