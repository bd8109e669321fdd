"""How far generated signing keys score above the bar production sets.

Scores fresh ``secrets.token_urlsafe(32)`` and ``secrets.token_hex(32)``
keys (and ``token_urlsafe(64)``) with ``config.secret_guess_bits``, the
estimate ``config.secret_weakness`` refuses keys below
``MIN_SECRET_GUESS_BITS`` with, and prints the lowest score, the 0.1 % and
1 % quantiles, the median, the CPU time a key and the weakest key seen.

    .venv/bin/python bench/secret_strength.py            # 100,000 of each
    .venv/bin/python bench/secret_strength.py --keys 1000
"""

import argparse
import secrets
import statistics
import time

import config

KINDS = {
    "token_urlsafe(32)": lambda: secrets.token_urlsafe(32),
    "token_hex(32)": lambda: secrets.token_hex(32),
    "token_urlsafe(64)": lambda: secrets.token_urlsafe(64),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000, help="keys of each kind")
    keys = parser.parse_args().keys
    config.secret_guess_bits("x" * 43)  # loads the word lists
    print(f"bar: 2^{config.MIN_SECRET_GUESS_BITS} guesses; {keys} keys of each kind")
    for name, make in KINDS.items():
        scored = []
        started = time.process_time()
        for _ in range(keys):
            key = make()
            scored.append((config.secret_guess_bits(key), key))
        each = (time.process_time() - started) / keys
        scored.sort()
        bits = [score for score, _ in scored]
        print(
            f"{name}: lowest {bits[0]:.1f}, 0.1% {bits[keys // 1000]:.1f}, "
            f"1% {bits[keys // 100]:.1f}, median {statistics.median(bits):.1f} bits; "
            f"{each * 1e3:.2f} ms CPU a key; weakest {scored[0][1]}",
            flush=True,
        )


if __name__ == "__main__":
    main()
