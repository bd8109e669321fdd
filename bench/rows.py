"""The rows of the benchmark table, in order: shared by the runner and the chart."""

ROWS = [
    ("get-posts cached, 20 posts", "cached20"),
    ("get-posts uncached, 20 posts", "uncached20"),
    ("read floor: one Redis GET, same bytes", "reference"),
    ("get-posts cached, 100 posts", "cached100"),
    ("get-posts uncached, 100 posts", "uncached100"),
    ("add-post 200 B", "add_small"),
    ("write floor: INSERT + COMMIT, 200 B", "insert_floor"),
    ("add-post 1 MiB", "add_big"),
    ("delete-post", "delete"),
    ("delete floor: DELETE + COMMIT", "delete_floor"),
    ("login", "login"),
]

# Each measured request type beside the floor app that bounds it.
FLOORS = {
    "cached20": "reference",
    "add_small": "insert_floor",
    "delete": "delete_floor",
}
