"""The database layer every part uses: the engine, the tables and their migrations."""
