"""Collection settings for the whole repository; the tests' own fixtures are in tests/conftest.py.

pyproject.toml runs the docstring examples of the four packages (``--doctest-modules`` over controller, trainers,
monitors and lineage), which imports every module there. Each imports without a running service, except the one
ignored here: controller/store/migrations/env.py is Alembic's environment script. It runs the migrations when it is
imported and needs the context only an Alembic command sets up (``alembic.context.config``); it has no examples.
"""

collect_ignore = ["controller/store/migrations/env.py"]
