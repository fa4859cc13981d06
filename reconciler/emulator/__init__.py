"""The bundled Genesys Cloud LLM Gateway emulator (see app.py)."""
