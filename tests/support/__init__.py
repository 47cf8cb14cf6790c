"""Test infrastructure shared by the test areas (and the benchmarks): PostgreSQL test databases, the
service in a thread or in a subprocess, loopback HTTP servers."""
