"""What the tests share besides fixtures: settings, accounts, processes, servers.

Fixtures live in ``tests/conftest.py``; tests import helpers from here.
"""
