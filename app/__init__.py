"""mammogen's front end: settings, the HTTP API and the command line. Reads settings; never runs a model itself."""


def version() -> str:
    """The installed package's version (pyproject.toml is its one source), for ``--version`` and OpenAPI."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("mammogen")
    except PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"
