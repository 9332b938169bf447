"""Shared by the Dask tests: a script that runs the rnndsl command line in a fresh
process and then says which Dask modules it imported (none, without --workers or
--scheduler)."""

import textwrap

import pytest

CLI_LISTING_DASK = textwrap.dedent("""
    import sys
    from rnndsl.cli.main import main
    code = main(sys.argv[1:])
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("dask", "distributed"))
    print("DASK MODULES:", loaded)
    sys.exit(code)
""")


@pytest.fixture(scope="session")
def cli_listing_dask() -> str:
    return CLI_LISTING_DASK
