"""The patcher's core: everything that installs and updates games, with no Qt and no Django."""
