"""What ships: the image, the compose files, the lock file."""
