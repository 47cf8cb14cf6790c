"""The ``sapo-monitor`` command line: one Typer app, one module per subcommand group.

Subcommand modules keep heavy imports (torch, SQLAlchemy, FastAPI) inside their functions so that
``sapo-monitor --help`` stays fast and works on the light core install.
"""
