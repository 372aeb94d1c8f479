"""Launchers for the services a one-machine farm runs: Redis, a registry, PostgreSQL
and Docker engines, each started as a child process with its own state folder."""
