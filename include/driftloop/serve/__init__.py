"""Serve: what a serving application runs. ``router`` (sticky hash assignment of units to champion and
challenger, allocation read from ``ops.traffic_allocation`` with a TTL, models from the registry) and
``events`` (the logger that publishes contract event files into the landing zone). Reads
``ops.traffic_allocation``; owns no table.
"""
