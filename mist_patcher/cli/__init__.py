"""The ``mist-patcher`` command: one module per subcommand, each returning a result object."""
