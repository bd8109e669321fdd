"""Prometheus scrapes as ``{(sample name, sorted labels): value}``."""

from prometheus_client.parser import text_string_to_metric_families


def parse(exposition):
    """``{(sample name, sorted labels): value}`` for every sample in a scrape."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(scrape, name, **labels):
    """One sample's value; a series that does not exist yet is 0."""
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def requests_total(scrape, endpoint, method, status):
    return value(
        scrape,
        "postservice_http_requests_total",
        endpoint=endpoint,
        method=method,
        status=str(status),
    )


def cache(scrape, result):
    return value(scrape, "postservice_cache_requests_total", result=result)
