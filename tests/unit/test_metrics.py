"""Prometheus metrics without an app: the request duration histogram."""

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from postservice.ops import metrics

from ..support.metrics import parse, value


def test_durations_land_in_the_same_buckets_as_a_prometheus_histogram():
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    stats = metrics.RequestStats()
    ours.register(stats)
    reference = Histogram(
        "postservice_http_request_duration_seconds",
        "reference",
        ("endpoint", "method"),
        buckets=metrics.DURATION_BUCKETS,
        registry=theirs,
    ).labels("posts.get_posts", "GET")
    for seconds in (0.0001, 0.0004, 0.0005, 0.0006, 0.3, 0.5, 20.0):
        stats.record("posts.get_posts", "GET", 200, seconds)
        reference.observe(seconds)

    def histogram(registry):
        return {
            key: sample
            for key, sample in parse(generate_latest(registry).decode()).items()
            if key[0].startswith("postservice_http_request_duration_seconds")
            and not key[0].endswith("_created")
        }

    assert histogram(ours) == histogram(theirs)
    bucket = "postservice_http_request_duration_seconds_bucket"
    labels = {"endpoint": "posts.get_posts", "method": "GET"}
    seen = histogram(ours)
    assert value(seen, bucket, le="0.0005", **labels) == 3  # bounds are inclusive
    assert value(seen, bucket, le="+Inf", **labels) == 7
