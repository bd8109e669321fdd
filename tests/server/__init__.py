"""The production server and the documented entry points, over real sockets."""
