from catalog.tests.steam_fake import steam  # noqa: F401 (fixture)
