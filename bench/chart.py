"""The benchmark table as a PNG: requests/s and p99 latency per request type."""

from rows import FLOORS, ROWS


def draw(report, connections, path):
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    labels = [label for label, _ in ROWS]
    keys = [key for _, key in ROWS]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 9), sharex=True)
    width = 0.8 / len(connections)
    for i, c in enumerate(connections):
        xs = [n + (i - (len(connections) - 1) / 2) * width for n in range(len(keys))]
        f = [report["figures"][k][str(c)] for k in keys]
        top.bar(xs, [x["rps"] for x in f], width, label=f"{c} connections")
        bottom.bar(xs, [x["p99_ms"] for x in f], width, label=f"{c} connections")
    top.set_yscale("log")
    top.set_ylabel("requests/s (log)")
    bottom.set_yscale("log")
    bottom.set_ylabel("p99 latency, ms (log)")
    bottom.set_xticks(range(len(keys)))
    bottom.set_xticklabels(labels, rotation=25, ha="right")
    top.legend()
    top.grid(axis="y", alpha=0.3)
    bottom.grid(axis="y", alpha=0.3)
    m = report["machine"]
    r = report["ratios"]
    fig.suptitle(
        f"postservice on {m['cpu']}, {m['cores']} cores, Python {m['python']}, "
        f"waitress {m['waitress']} x{m['waitress_threads']} threads, "
        f"MariaDB {m['mariadb']}, Redis {m['redis']}\n"
        + ", ".join(
            f"{ours}/{floor} {r[f'{ours}/{floor}']:.2f}"
            for ours, floor in FLOORS.items()
        )
        + f", cached/uncached (100 posts) {r['cached100/uncached100']:.1f}x, "
        f"login/bcrypt ceiling {r['login/bcrypt ceiling']:.2f}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
